"""Guest serial console: what the guest printed (a log file) and what is typed into it.

The domain's first serial port is a Unix socket QEMU listens on
(``<serial type='unix'><source mode='bind'>``) with a log
(``<log append='on'>``): QEMU appends everything the guest writes to ttyS0 to
one file per VM, across restarts of the guest, whether or not anyone is
connected. Output is only ever read from that file: `read` returns what is
there so far, `follow` yields new output as it arrives (like ``tail -f``)
until told to stop; reading never blocks the guest and needs no connection to
libvirt or QEMU.

Input goes through the socket: `send` connects, writes, waits until QEMU has
taken every byte, and disconnects. QEMU serves one connection at a time, so
holding none between writes lets any number of consoles (and a restarted
server) take turns; a guest that never reads its serial port makes `send`
time out instead of blocking its caller.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import os
import select
import socket
import termios
import time
from collections.abc import AsyncIterator, Callable

CHUNK = 64 << 10
POLL_INTERVAL = 0.2
SOCKET_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
INPUT_MAX = 64 << 10
INPUT_TIMEOUT = 5.0
_INPUT_POLL = 0.005


class ConsoleClosed(Exception):
    """Nobody listens on the console socket (the VM is off, or its serial port is output-only)."""


class ConsoleTimeout(Exception):
    """The guest did not take the input in time; ``taken`` bytes of it went in."""

    def __init__(self, taken: int, total: int) -> None:
        super().__init__(f"{taken} of {total} bytes taken")
        self.taken, self.total = taken, total


def socket_path(log_path: str) -> str | None:
    """The console socket beside the log ``NAME.log`` (``NAME.sock``), or None when
    that path is too long for a Unix socket."""
    path = os.path.splitext(log_path)[0] + ".sock"
    return path if len(os.fsencode(path)) <= SOCKET_MAX else None


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


def _unsent(sock: socket.socket) -> int:
    """Bytes written to `sock` that the peer has not read yet (SIOCOUTQ)."""
    out = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, out)
    return out[0]


def _connect(sock: socket.socket, path: str, deadline: float, total: int) -> None:
    while True:
        try:
            sock.connect(path)
            return
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ConsoleClosed(f"nothing listens on {path}: {exc.strerror}") from None
        except BlockingIOError:  # its backlog is full: another connection is being served
            if time.monotonic() >= deadline:
                raise ConsoleTimeout(0, total) from None
            time.sleep(_INPUT_POLL)


def send(path: str, data: bytes, timeout: float = INPUT_TIMEOUT) -> None:
    """Type `data` into the guest's serial port through the console socket at `path`.

    Returns once QEMU has read every byte (the socket's send queue is empty):
    closing earlier could drop bytes still queued. What the guest prints
    meanwhile is read and dropped (the log has it). Raises ConsoleClosed when
    nothing listens, ConsoleTimeout when the guest has not taken it all
    within `timeout` seconds (a guest that does not read its serial port).
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        _connect(sock, path, deadline, len(data))
        rest = memoryview(data)
        while True:
            if rest:
                try:
                    rest = rest[sock.send(rest):]
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    raise ConsoleClosed("the console socket closed mid-write") from None
            if not rest and _unsent(sock) == 0:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConsoleTimeout(len(data) - len(rest) - _unsent(sock), len(data))
            readable, _, _ = select.select([sock], [], [], min(left, _INPUT_POLL))
            if readable:
                try:
                    if not sock.recv(CHUNK):
                        raise ConsoleClosed("the console socket closed mid-write")
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    raise ConsoleClosed("the console socket closed mid-write") from None
