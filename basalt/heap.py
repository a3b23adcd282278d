"""Give the C heap's free pages back to the system (glibc ``malloc_trim``).

An S3 worker's streams allocate and free many buffers of 64 KiB-1 MiB (socket
reads, TLS records, body pieces). glibc serves them from the heap once it has
freed one such block (its mmap threshold rises with it) and keeps what is freed
in the middle of the heap resident: in a 1 GiB ``aws s3 cp`` each worker's heap
went from ~10 to ~24 MiB with 4-10 MiB of it free, never returned (the top is
trimmed only past ``M_TRIM_THRESHOLD``, the middle never).

:func:`keep_trimmed` calls ``malloc_trim(0)``, which gives back every whole free
page (``MADV_DONTNEED``; a page used again faults back in zeroed), whenever the
process's anonymous memory grew by more than a budget since the last call: a
call walks the heap's free chunks with the allocator locked (~1-5 ms on a
fragmented 25 MiB heap), so a worker whose memory holds steady never pays it.
"""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import sys

CHECK_SECONDS = 0.5
GROWTH_BUDGET = 2 << 20

_trim = None
if sys.platform == "linux":
    try:
        _trim = ctypes.CDLL(None).malloc_trim  # glibc only (not musl)
        _trim.argtypes = (ctypes.c_size_t,)
        _trim.restype = ctypes.c_int
    except AttributeError:
        _trim = None

trims = 0  # calls made (tests assert on it)


def trim() -> bool:
    """Return the heap's free pages now; True if any went back."""
    global trims
    if _trim is None:
        return False
    trims += 1
    return bool(_trim(0))


def anonymous_bytes() -> int:
    """Resident memory not backed by a file (statm: resident minus shared)."""
    with open("/proc/self/statm") as f:
        fields = f.read().split()
    return (int(fields[1]) - int(fields[2])) * mmap.PAGESIZE


async def keep_trimmed(every: float = CHECK_SECONDS, budget: int = GROWTH_BUDGET) -> None:
    """Trim whenever anonymous memory grew by more than ``budget`` since the last
    trim (checked every ``every`` s); the mark follows it down as memory is freed."""
    if _trim is None:
        return
    mark = anonymous_bytes()
    while True:
        await asyncio.sleep(every)
        now = anonymous_bytes()
        if now - mark > budget:
            trim()
            mark = anonymous_bytes()
        elif now < mark:
            mark = now
