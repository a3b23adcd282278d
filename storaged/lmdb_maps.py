"""Give back the LMDB pages a process has mapped.

LMDB reads through a shared memory map of its data file, and every page a
process touches stays in its page tables. After ~10,000 small PUTs each S3
worker had mapped all of its disks' metadata (~170 MiB per worker, 4 disks of
~36 MiB), counted in every process's RSS again although it is one copy of the
page cache, clean and reclaimable: the server "held" ~300 MiB at rest, and a
5 GiB upload after the small-object rows peaked at 333 MiB RSS.

:func:`release` drops those page-table entries (``MADV_DONTNEED`` on a shared
file mapping): the pages stay in the page cache and fault back in on the next
read (a minor fault each, ~1 us), nothing is written or lost. Every server
process (the S3 workers, and the owner: heals, usage and lifecycle scans read
LMDB there) runs :func:`keep_released`.
"""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import os
import sys
import threading

# Small GETs map ~28 LMDB pages each (a few tables on every disk): a worker
# serving 2,000 hot keys maps ~35 MiB within a second. Past the budget the pages
# are dropped, at most once a check: ~9,000 minor faults (~1% of a worker's
# CPU) bring the hot ones back.
CHECK_SECONDS = 1.0
MAPPED_BUDGET = 8 << 20

# Held while a data file's mappings are read from /proc and released, and by
# MetaDB.close around its munmap: a range unmapped between the two (a disk
# closed by another thread) could be reused by anonymous memory, which
# MADV_DONTNEED would zero.
MAPS_LOCK = threading.Lock()
_registered: set[str] = set()  # real paths of open MetaDBs' data files

_MADV_DONTNEED = 4
_libc: ctypes.CDLL | None = None
if sys.platform == "linux":
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def register(data_file: str) -> None:
    """Let :func:`release` drop the mappings of ``data_file`` (an open MetaDB's
    ``data.mdb``). Only registered files are touched: another LMDB in the process
    (compute, networks) closes without this module's lock."""
    with MAPS_LOCK:
        _registered.add(os.path.realpath(data_file))


def forget(data_file: str) -> None:
    """Stop releasing ``data_file``; call with MAPS_LOCK held, around its munmap."""
    _registered.discard(os.path.realpath(data_file))


def release(maps: str = "/proc/self/maps") -> int:
    """Drop this process's mapped pages of every registered data file; returns
    how many bytes of mappings were released."""
    if _libc is None:
        return 0
    with MAPS_LOCK:
        return _release(maps, frozenset(_registered))


def _release(maps: str, files: frozenset[str]) -> int:
    assert _libc is not None
    released = 0
    if not files:
        return 0
    with open(maps) as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) < 6:
                continue
            path = fields[5].rstrip("\n")
            if path not in files:
                continue  # also skips a "(deleted)" file's mapping
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                size = os.path.getsize(path)  # the map is reserved far beyond it
            except OSError:
                continue
            length = min(end - start, -(-size // mmap.PAGESIZE) * mmap.PAGESIZE)
            if length and _libc.madvise(start, length, _MADV_DONTNEED) == 0:
                released += length
    return released


def mapped_file_bytes() -> int:
    """The file-backed (and shared) part of this process's RSS, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[2]) * mmap.PAGESIZE


async def keep_released(every: float = CHECK_SECONDS, budget: int = MAPPED_BUDGET) -> None:
    """Release this process's LMDB pages whenever its file-backed RSS grew by
    more than ``budget`` since the last release (checked every ``every`` s)."""
    floor = mapped_file_bytes()
    while True:
        await asyncio.sleep(every)
        if mapped_file_bytes() - floor > budget:
            release()
            floor = mapped_file_bytes()
