"""Volumes in-process: thin allocation, COW, trim, resize, durability, damage."""

import asyncio
import os
import shutil

import pytest
from volume_helpers import close, open_manager

from blockd import VolumeError
from blockd.pool import BLOCK, CHUNK


async def test_thin_allocation_and_block_status(dirs):
    store, vm = await open_manager(dirs)
    try:
        await vm.create("v", 10 * CHUNK)
        vol = await vm.lookup("v")
        assert await vol.pread(0, 3 * CHUNK) == bytes(3 * CHUNK)
        assert vm.info("v").allocated == 0
        await vol.pwrite(CHUNK + 100, memoryview(b"x" * 5000), fua=False)
        assert vm.info("v").allocated == CHUNK
        got = await vol.pread(CHUNK, CHUNK)
        assert got[100:5100] == b"x" * 5000 and got[:100] == bytes(100)
        status = await vol.block_status(0, 3 * CHUNK)
        assert status == [(CHUNK, 3), (CHUNK, 0), (CHUNK, 3)]
        # a write spanning chunks
        data = os.urandom(3 * CHUNK)
        await vol.pwrite(5 * CHUNK - 7, memoryview(data), fua=True)
        assert await vol.pread(5 * CHUNK - 7, len(data)) == data
    finally:
        await close(store, vm)


async def test_trim_and_zero_release_whole_chunks(dirs):
    store, vm = await open_manager(dirs)
    try:
        await vm.create("v", 8 * CHUNK)
        vol = await vm.lookup("v")
        await vol.pwrite(0, memoryview(os.urandom(4 * CHUNK)), fua=False)
        await vol.trim(CHUNK, 2 * CHUNK, fua=False)
        assert vm.info("v").allocated == 2 * CHUNK
        assert await vol.pread(CHUNK, 2 * CHUNK) == bytes(2 * CHUNK)
        await vol.zero(10, BLOCK * 3, may_trim=False, fast_only=False, fua=False)
        assert (await vol.pread(0, BLOCK * 4))[10:10 + BLOCK * 3] == bytes(BLOCK * 3)
        await vol.zero(3 * CHUNK, CHUNK, may_trim=True, fast_only=True, fua=True)
        assert vm.info("v").allocated == CHUNK
        await vol.flush()
        await vm.reclaimed()
        assert vm.free  # released slots are reusable once no I/O is in flight
    finally:
        await close(store, vm)


async def test_released_slots_are_punched_off_the_event_loop(dirs, monkeypatch):
    """Deleting a volume punches its slots (six fallocates each) in a thread,
    not on the event loop every volume's I/O shares; until punched they are
    neither free nor handed to a new write, and then they read as holes."""
    import threading

    from blockd.pool import ChunkPool
    store, vm = await open_manager(dirs)
    try:
        await vm.create("old", 64 * CHUNK)
        vol = await vm.lookup("old")
        await vol.pwrite(0, memoryview(os.urandom(64 * CHUNK)), fua=True)
        slots = set(vm.map_of("old").values())
        punched_in: set[str] = set()
        gate = threading.Event()
        clear = ChunkPool.clear

        def slow_clear(self, slot, *args):
            if slot in slots:  # the deleted volume's, not a new write's
                punched_in.add(threading.current_thread().name)
                if threading.current_thread() is not threading.main_thread():
                    gate.wait(10)  # (never the loop's: a punch there fails below)
            return clear(self, slot, *args)
        monkeypatch.setattr(ChunkPool, "clear", slow_clear)
        await vm.delete("old")  # returns while the punches wait on the gate
        assert vm.chunks.reclaiming == slots and not slots & vm.free
        await vm.create("new", 8 * CHUNK)
        new = await vm.lookup("new")
        await new.pwrite(0, memoryview(os.urandom(8 * CHUNK)), fua=True)
        assert not slots & set(vm.map_of("new").values())
        gate.set()
        await vm.reclaimed()
        assert slots <= vm.free and not vm.chunks.reclaiming
        assert punched_in and threading.current_thread().name not in punched_in
        assert all(not vm.pool.read(s, 0, CHUNK).strip(b"\0") for s in slots)
    finally:
        await close(store, vm)


async def test_flushed_data_and_maps_survive_a_restart(dirs):
    store, vm = await open_manager(dirs)
    data = os.urandom(5 * CHUNK + 123)
    await vm.create("keep", 16 * CHUNK)
    vol = await vm.lookup("keep")
    await vol.pwrite(777, memoryview(data), fua=False)
    await vol.flush()
    await close(store, vm)
    store, vm = await open_manager(dirs)
    try:
        vol = await vm.lookup("keep")
        assert await vol.pread(777, len(data)) == data
        assert vm.info("keep").size == 16 * CHUNK
    finally:
        await close(store, vm)


async def test_resize_grow_and_forced_shrink(dirs):
    store, vm = await open_manager(dirs)
    try:
        await vm.create("r", 4 * CHUNK)
        vol = await vm.lookup("r")
        await vol.pwrite(0, memoryview(b"\xff" * 4 * CHUNK), fua=False)
        await vm.resize("r", 8 * CHUNK)
        assert vol.size == 8 * CHUNK
        with pytest.raises(VolumeError, match="--force"):
            await vm.resize("r", CHUNK + 5)
        await vm.resize("r", CHUNK + 5, force=True)
        assert vm.info("r").allocated == 2 * CHUNK
        await vm.resize("r", 4 * CHUNK)  # regrown: the cut part reads as zeros
        got = await vol.pread(0, 4 * CHUNK)
        assert got[:CHUNK + 5] == b"\xff" * (CHUNK + 5) and got[CHUNK + 5:] == bytes(3 * CHUNK - 5)
    finally:
        await close(store, vm)


async def test_names_sizes_and_deletion(dirs):
    store, vm = await open_manager(dirs)
    try:
        for bad in ("", "-x", "a/b", "x" * 64):
            with pytest.raises(VolumeError):
                await vm.create(bad, CHUNK)
        with pytest.raises(VolumeError):
            await vm.create("ok", 0)
        await vm.create("ok", CHUNK)
        with pytest.raises(VolumeError, match="already exists"):
            await vm.create("ok", CHUNK)
        vol = await vm.lookup("ok")
        await vol.pwrite(0, memoryview(b"a" * 10), fua=False)
        await vol.open()
        with pytest.raises(VolumeError, match="connections"):
            await vm.delete("ok")
        await vol.close()
        await vm.delete("ok")
        assert await vm.lookup("ok") is None and vm.list() == []
        with pytest.raises(VolumeError):
            vm.info("ok")
    finally:
        await close(store, vm)


async def test_bitrot_is_repaired_from_a_replica(dirs):
    store, vm = await open_manager(dirs)
    try:
        await vm.create("b", 2 * CHUNK)
        vol = await vm.lookup("b")
        data = os.urandom(CHUNK)
        await vol.pwrite(0, memoryview(data), fua=True)
        slot = vm.map_of("b")[0]
        for pos in vm.pool.positions(slot)[:2]:  # damage two of three copies
            path = os.path.join(dirs[pos], "files", "volumes.slab")
            with open(path, "r+b") as f:
                f.seek(slot * CHUNK + 5000)
                f.write(b"\x00\x01\x02")
        assert await vol.pread(0, CHUNK) == data
        assert vm.pool.repaired >= 1
        assert await vol.pread(0, CHUNK) == data
    finally:
        await close(store, vm)


async def test_lost_disks_and_heal(dirs):
    store, vm = await open_manager(dirs)
    data = os.urandom(6 * CHUNK)
    await vm.create("h", 8 * CHUNK)
    vol = await vm.lookup("h")
    await vol.pwrite(100, memoryview(data), fua=True)
    await close(store, vm)
    for victims in ([1], [0, 2]):  # one wiped, healed; then two others
        for i in victims:
            shutil.rmtree(dirs[i])
        store, vm = await open_manager(dirs)
        try:
            vol = await vm.lookup("h")
            assert await vol.pread(100, len(data)) == data
            await store.heal()
            report = await vm.heal()
            assert report["slots"] == 7
            assert not vm.pool.untrusted
        finally:
            await close(store, vm)
    store, vm = await open_manager(dirs)
    try:
        assert await (await vm.lookup("h")).pread(100, len(data)) == data
    finally:
        await close(store, vm)


async def test_concurrent_writers_to_fresh_chunks(dirs):
    store, vm = await open_manager(dirs)
    try:
        await vm.create("c", 64 * CHUNK)
        vol = await vm.lookup("c")
        blocks = {i: os.urandom(BLOCK) for i in range(256)}
        await asyncio.gather(*(vol.pwrite(i * BLOCK * 4, memoryview(b), fua=False)
                               for i, b in blocks.items()))
        for i, b in blocks.items():
            assert await vol.pread(i * BLOCK * 4, BLOCK) == b
        assert len(set(vm.map_of("c").values())) == len(vm.map_of("c"))
    finally:
        await close(store, vm)


async def test_snapshots_share_until_written_and_give_space_back(dirs):
    store, vm = await open_manager(dirs)
    try:
        await vm.create("v", 4 * CHUNK)
        vol = await vm.lookup("v")
        await vol.pwrite(0, memoryview(b"a" * 4 * CHUNK), fua=False)
        await vm.snapshot("v", "s")
        assert len(vm.refcounts) == 4 and set(vm.refcounts.values()) == {2}
        await vol.pwrite(10, memoryview(b"b" * 10), fua=False)  # copy-on-write of chunk 0
        snap = await vm.lookup("v@s")
        assert snap.read_only and (await snap.pread(0, 20)) == b"a" * 20
        assert (await vol.pread(0, 20)) == b"a" * 10 + b"b" * 10
        assert len(vm.refcounts) == 5
        await vm.clone("v@s", "c")
        await vm.delete("v@s")  # the clone keeps the shared chunks alive
        c = await vm.lookup("c")
        assert (await c.pread(0, 4 * CHUNK)) == b"a" * 4 * CHUNK
        await vm.delete("c")
        await vol.flush()
        await vm.reclaimed()
        assert len(vm.refcounts) == 4 and set(vm.refcounts.values()) == {1}
        assert len(vm.free) == 1  # the snapshot's copy of chunk 0 came back
        await vm.snapshot("v", "t")
        await vol.pwrite(0, memoryview(b"z" * CHUNK), fua=True)
        await vm.rollback("v@t")
        assert (await vol.pread(0, 20)) == b"a" * 10 + b"b" * 10
        entries, changed = vm.diff("v@t", None)
        assert changed == sorted(entries) == [0, 1, 2, 3]
    finally:
        await close(store, vm)


async def test_snapshot_state_survives_restart(dirs):
    store, vm = await open_manager(dirs)
    await vm.create("v", 2 * CHUNK)
    vol = await vm.lookup("v")
    await vol.pwrite(0, memoryview(b"1" * CHUNK), fua=False)
    await vm.snapshot("v", "s")
    await vol.pwrite(0, memoryview(b"2" * CHUNK), fua=True)
    await close(store, vm)
    store, vm = await open_manager(dirs)
    try:
        assert (await (await vm.lookup("v@s")).pread(0, 4)) == b"1111"
        assert (await (await vm.lookup("v")).pread(0, 4)) == b"2222"
        assert vm.refcounts == {s: 1 for s in vm.refcounts}
        assert len(vm.refcounts) == 2
    finally:
        await close(store, vm)
