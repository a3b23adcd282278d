"""ChunkPool.read_range: views of the mapped slab for the event loop, only of
blocks that are in the page cache and intact; anything else is left to the
careful path (other replicas, repairs, disk reads in a thread)."""

from __future__ import annotations

import os

import pytest
from volume_helpers import close, open_manager

from blockd.pool import BLOCK, CHUNK


def cached(fd: int, offset: int) -> bool:
    try:
        return os.preadv(fd, [bytearray(1)], offset, os.RWF_NOWAIT) == 1
    except BlockingIOError:
        return False


def preferred(pool, slot: int) -> int:
    return pool.preferred(slot)


async def test_views_of_intact_cached_blocks_only(dirs):
    store, vm = await open_manager(dirs)
    pool = vm.pool
    try:
        data = os.urandom(CHUNK)
        pool.write(3, 0, data)
        view = pool.read_range(3, 0, CHUNK)
        assert isinstance(view, memoryview) and view.readonly and view == data
        assert pool.read_range(3, BLOCK, 2 * BLOCK) == data[BLOCK:3 * BLOCK]
        assert pool.read_range(3, 100, BLOCK) is None  # not whole blocks

        # Bitrot on the replica reads go to: no view; the careful path repairs it.
        slab = pool._files[preferred(pool, 3)][1]
        os.pwrite(slab.fd, b"\xff" * 16, 3 * CHUNK + 2 * BLOCK + 7)
        assert pool.read_range(3, 0, CHUNK) is None
        assert pool.read(3, 0, CHUNK) == data and pool.repaired == 1
        assert pool.read_range(3, 0, CHUNK) == data

        # Unwritten blocks (zeros, no checksum) go the careful way.
        pool.write(5, 0, data[:BLOCK])
        assert pool.read_range(5, 0, CHUNK) is None
        assert pool.read_range(5, 0, BLOCK) == data[:BLOCK]

        # A slot past the mapped end: the slab has grown, it is mapped again;
        # views of the old mapping stay valid.
        pool.write(40, 0, data[::-1])
        assert pool.read_range(40, 0, CHUNK) == data[::-1]
        assert view == data
    finally:
        await close(store, vm)


async def test_no_views_of_blocks_not_in_the_page_cache(dirs):
    """The event loop must not wait for a disk (nor fault on one)."""
    store, vm = await open_manager(dirs)
    pool = vm.pool
    try:
        data = os.urandom(CHUNK)
        pool.write(7, 0, data)
        pool.sync()  # clean pages can be dropped
        slab = pool._files[preferred(pool, 7)][1]
        os.posix_fadvise(slab.fd, 7 * CHUNK, CHUNK, os.POSIX_FADV_DONTNEED)
        if cached(slab.fd, 7 * CHUNK):
            pytest.skip("this file system keeps the pages (tmpfs?)")
        assert pool.read_range(7, 0, CHUNK) is None
        assert pool.read(7, 0, CHUNK) == data  # read in, cached again
        assert pool.read_range(7, 0, CHUNK) == data
    finally:
        await close(store, vm)


def slab_rss_kib() -> int:
    """This process's resident pages of mapped volume slabs."""
    total, in_slab = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if "-" in line.split()[0]:
                in_slab = line.rstrip().endswith("volumes.slab")
            elif in_slab and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


async def test_consumed_views_do_not_stay_mapped(dirs, monkeypatch):
    """Mapped pages count in the server's RSS: reading a whole volume through
    views must not leave it all mapped."""
    from blockd import pool as pool_module
    monkeypatch.setattr(pool_module, "RELEASE_BYTES", 4 << 20)
    store, vm = await open_manager(dirs)
    pool = vm.pool
    try:
        data = os.urandom(CHUNK)
        for slot in range(1024):  # 64 MiB
            pool.write(slot, 0, data)
        for slot in range(1024):
            view = pool.read_range(slot, 0, CHUNK)
            assert view == data
            pool.release_view(view)
        assert slab_rss_kib() < 16 << 10  # without unmapping: ~44 MiB here
    finally:
        await close(store, vm)
