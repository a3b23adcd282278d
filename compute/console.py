"""Guest serial console: what the guest printed, from the log file libvirt writes.

The domain's first serial port is ``<serial type='file'>`` with
``append='on'``: QEMU appends everything the guest writes to ttyS0 to one file
per VM, across restarts of the guest. This module only reads that file:
`read` returns what is there so far, `follow` yields new output as it
arrives (like ``tail -f``) until told to stop. Reading never blocks the guest
and needs no connection to libvirt or QEMU.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable

CHUNK = 64 << 10
POLL_INTERVAL = 0.2


def size(path: str) -> int:
    """Bytes logged so far (0 when the guest never printed anything)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def read(path: str, offset: int = 0, limit: int | None = None) -> tuple[bytes, int]:
    """The log from `offset` (negative: that many bytes before the end), at most `limit` bytes.

    Returns (data, next_offset); pass next_offset back to continue where this
    read stopped. A missing log reads as empty.
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return b"", max(offset, 0)
    with f:
        end = os.fstat(f.fileno()).st_size
        if offset < 0:
            offset = max(end + offset, 0)
        if offset > end:  # the log was truncated or replaced: start over
            offset = 0
        f.seek(offset)
        data = f.read(end - offset if limit is None else min(limit, end - offset))
    return data, offset + len(data)


async def follow(
    path: str,
    offset: int = 0,
    until: Callable[[], bool] | None = None,
    poll: float = POLL_INTERVAL,
) -> AsyncIterator[bytes]:
    """Yield the log from `offset` on as it grows.

    Stops after `until()` turns true and everything written before that has
    been yielded (e.g. ``until`` = "the domain is no longer running");
    without `until` it runs until the consumer stops iterating. `until` is
    called in a thread, so it may block (a libvirt query).
    """
    while True:
        done = bool(until and await asyncio.to_thread(until))
        while True:
            data, offset = read(path, offset, CHUNK)
            if not data:
                break
            yield data
        if done:
            return
        await asyncio.sleep(poll)
