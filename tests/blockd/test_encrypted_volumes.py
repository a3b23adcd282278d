"""Encrypted volumes in-process: what reaches the disks is ciphertext; holes,
partial blocks, trims, shrinks, snapshots, clones, restarts, bitrot and KMS keys."""

import errno
import glob
import json
import os

import pytest
from volume_helpers import close, count_cipher_calls, open_manager

from blockd import VolumeError
from blockd.export import NBDError
from blockd.pool import BLOCK, CHUNK

MASTER = bytes(range(32))
PATTERN = b"PLAINTEXT-PATTERN-0123456789abcd"  # 32 bytes


def pattern(n: int) -> bytes:
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def assert_no_plaintext(dirs) -> None:
    """No volume file on any disk holds the pattern (nor a 16-byte piece of it)."""
    slabs = [p for d in dirs for p in glob.glob(os.path.join(d, "files", "volumes.*"))]
    assert slabs
    for path in slabs:
        with open(path, "rb") as f:
            body = f.read()
        assert PATTERN[:16] not in body and PATTERN[16:] not in body, path


async def opened(vm, name):
    vol = await vm.lookup(name)
    await vol.open()
    return vol


async def test_data_is_ciphertext_on_disk_and_reads_back(dirs):
    store, vm = await open_manager(dirs, MASTER)
    try:
        info = (await vm.create("e", 16 * CHUNK, encrypted=True)).as_dict()
        assert info["encrypted"] and info["key_id"]
        assert "key" not in json.dumps(info).replace("key_id", "")
        vol = await opened(vm, "e")
        whole, odd = pattern(3 * CHUNK), pattern(5000)
        await vol.pwrite(CHUNK, memoryview(whole), fua=False)
        assert vol.write_now(100, memoryview(odd))  # partial blocks, on the loop
        await vol.pwrite(7 * CHUNK - 10, memoryview(odd), fua=True)  # across two chunks
        assert await vol.pread(CHUNK, len(whole)) == whole
        assert await vol.pread(0, 5100) == bytes(100) + odd
        assert await vol.pread(7 * CHUNK - 10, 5000) == odd
        buf = bytearray(BLOCK)
        assert vol.read_now(2 * CHUNK + 3, memoryview(buf))
        assert bytes(buf) == whole[CHUNK + 3:CHUNK + 3 + BLOCK]
        # holes: never written blocks in a written chunk, and trimmed ones
        assert await vol.pread(8 * BLOCK, BLOCK) == bytes(BLOCK)
        await vol.zero(CHUNK + 10, 3 * BLOCK, may_trim=True, fast_only=False, fua=False)
        got = await vol.pread(CHUNK, 4 * BLOCK)
        assert got == whole[:10] + bytes(3 * BLOCK) + whole[10 + 3 * BLOCK:4 * BLOCK]
        await vol.flush()
        assert_no_plaintext(dirs)
        plain = (await vm.create("p", CHUNK)).as_dict()
        assert not plain["encrypted"] and plain["key_id"] is None
    finally:
        await close(store, vm)


async def test_snapshot_clone_restart_and_shrink(dirs):
    store, vm = await open_manager(dirs, MASTER)
    data = pattern(2 * CHUNK)
    try:
        await vm.create("v", 4 * CHUNK, encrypted=True)
        vol = await opened(vm, "v")
        await vol.pwrite(0, memoryview(data), fua=True)
        await vm.snapshot("v", "s")
        await vol.pwrite(0, memoryview(b"\xee" * BLOCK), fua=True)  # copy on write
        clone = (await vm.clone("v@s", "c")).as_dict()
        assert clone["encrypted"] and clone["key_id"] == vm.info("v").key_id
        c = await opened(vm, "c")
        assert await c.pread(0, 2 * CHUNK) == data
        await c.pwrite(BLOCK, memoryview(b"\xcc" * 100), fua=True)
        snap = await opened(vm, "v@s")
        assert await snap.pread(0, 2 * CHUNK) == data
        assert (await vol.pread(0, 2 * BLOCK)) == b"\xee" * BLOCK + data[BLOCK:2 * BLOCK]
        await vm.resize("v", CHUNK + 1000, force=True)  # mid-block: the tail is zeroed
        await vm.resize("v", 2 * CHUNK)
        assert await vol.pread(CHUNK, CHUNK) == data[CHUNK:CHUNK + 1000] + bytes(CHUNK - 1000)
    finally:
        await close(store, vm)
    store, vm = await open_manager(dirs, MASTER)
    try:
        c = await opened(vm, "c")
        assert await c.pread(0, 2 * CHUNK) == data[:BLOCK] + b"\xcc" * 100 + data[BLOCK + 100:]
        assert await (await opened(vm, "v@s")).pread(0, 2 * CHUNK) == data
        assert_no_plaintext(dirs)
    finally:
        await close(store, vm)


async def test_wrong_master_key_or_locked_volume_never_serves(dirs):
    store, vm = await open_manager(dirs, MASTER)
    await vm.create("v", CHUNK, encrypted=True)
    vol = await vm.lookup("v")
    with pytest.raises(NBDError):  # not opened: no I/O, so no plaintext written
        await vol.pwrite(0, memoryview(bytes(BLOCK)), fua=False)
    await close(store, vm)
    store, vm = await open_manager(dirs, os.urandom(32))
    try:
        with pytest.raises(NBDError) as refused:
            await (await vm.lookup("v")).open()
        assert refused.value.errno == errno.EPERM
    finally:
        await close(store, vm)


async def test_disabled_kms_key_refuses_new_connections_only(dirs):
    store, vm = await open_manager(dirs, MASTER)
    try:
        with pytest.raises(VolumeError) as missing:
            await vm.create("x", CHUNK, encrypted=True, kms_key="no-such-key")
        assert missing.value.code == "NotFoundException" and "x" not in vm.records
        key = await vm.keys.create("vols")
        info = await vm.create("k", CHUNK, encrypted=True, kms_key="alias/vols")
        assert info.key_id == key.id
        vol = await opened(vm, "k")
        await vol.pwrite(0, memoryview(pattern(BLOCK)), fua=True)
        await vm.keys.set_enabled("vols", False)
        with pytest.raises(NBDError, match="disabled") as refused:
            await vol.open()
        assert refused.value.errno == errno.EPERM
        assert await vol.pread(0, BLOCK) == pattern(BLOCK)  # the open one keeps working
        await vm.keys.set_enabled("vols", True)
        await vm.keys.rotate("vols")
        await vol.open()
    finally:
        await close(store, vm)
    store, vm = await open_manager(dirs, MASTER)
    try:
        assert await (await opened(vm, "k")).pread(0, BLOCK) == pattern(BLOCK)
    finally:
        await close(store, vm)


async def test_bitrot_in_a_replica_is_repaired(dirs):
    store, vm = await open_manager(dirs, MASTER)
    try:
        await vm.create("b", CHUNK, encrypted=True)
        vol = await opened(vm, "b")
        data = pattern(CHUNK)
        await vol.pwrite(0, memoryview(data), fua=True)
        slot = vm.map_of("b")[0]
        for pos in vm.pool.positions(slot)[:2]:
            with open(os.path.join(dirs[pos], "files", "volumes.slab"), "r+b") as f:
                f.seek(slot * CHUNK + 5000)
                f.write(b"\x00\x01\x02")
        assert await vol.pread(0, CHUNK) == data
        assert vm.pool.repaired >= 1
    finally:
        await close(store, vm)


async def test_no_key_service_refuses_encrypted_volumes(dirs):
    store, vm = await open_manager(dirs)
    try:
        with pytest.raises(VolumeError) as refused:
            await vm.create("e", CHUNK, encrypted=True)
        assert refused.value.code == "EncryptionUnavailable"
    finally:
        await close(store, vm)


async def test_cost_guard_one_cipher_call_per_block_and_no_extra_system_call(
        dirs, monkeypatch):
    """A CI guard from counters, not timings: an encrypted 4 KiB READ makes one
    decryption call and the same two block-file calls as a plain one; a
    4 KiB WRITE one encryption call and 2R calls; a hole, none."""
    import collections

    from storaged.block_file import LocalBlockFile
    calls: collections.Counter[str] = collections.Counter()
    for name in ("pread", "preadinto", "pwrite", "punch"):
        original = getattr(LocalBlockFile, name)

        def counted(self, *args, _original=original, _name=name):
            calls[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(LocalBlockFile, name, counted)
    store, vm = await open_manager(dirs, MASTER)
    try:
        await vm.create("g", 4 * CHUNK, encrypted=True)
        vol = await opened(vm, "g")
        count_cipher_calls(vol.cipher, calls)
        assert vol.write_now(0, memoryview(pattern(CHUNK)))  # allocate the chunk first
        buf = memoryview(bytearray(BLOCK))
        calls.clear()
        assert vol.write_now(BLOCK, memoryview(pattern(BLOCK)))
        assert dict(calls) == {"encrypt": 1, "pwrite": 2 * vm.pool.replicas}
        calls.clear()
        assert vol.read_now(2 * BLOCK, buf)
        assert dict(calls) == {"decrypt_into": 1, "preadinto": 1, "pread": 1}
        calls.clear()
        assert vol.read_now(CHUNK, buf) and bytes(buf) == bytes(BLOCK)  # unmapped: no call
        assert not calls
    finally:
        await close(store, vm)


async def test_whole_chunk_runs_are_encrypted_together_into_reused_buffers(dirs, monkeypatch):
    """A sequential write of whole chunks to an encrypted volume is encrypted
    run by run (up to ENCRYPTED_RUN) into reused buffers and written like a plain
    volume's runs, one pool write each, not chunk by chunk; each chunk's
    ciphertext is what the chunk-by-chunk path writes (its blocks' own tweaks).
    A buffer whose write failed is never handed out again."""
    from blockd import volume as volume_module
    from blockd.volume import ENCRYPTED_RUN
    store, vm = await open_manager(dirs, MASTER)
    try:
        await vm.create("r", 96 * CHUNK, encrypted=True)
        vol = await opened(vm, "r")
        runs: list[int] = []
        write_chunks = vm.pool.write_chunks
        monkeypatch.setattr(vm.pool, "write_chunks", lambda slot, data, direct=False: (
            runs.append(len(data)), write_chunks(slot, data, direct))[1])
        data = os.urandom(83 * CHUNK)
        buffers = volume_module._cipher_buffers
        made = buffers.made
        for _ in range(3):
            await vol.pwrite(CHUNK, memoryview(data), fua=False)
        assert runs == [ENCRYPTED_RUN, 83 * CHUNK - ENCRYPTED_RUN] * 3
        assert buffers.made - made <= 1
        assert await vol.pread(CHUNK, len(data)) == data
        for i in range(83):
            index = 1 + i
            stored = bytearray(CHUNK)
            vm.pool.read_into(vol.map[index], 0, memoryview(stored))
            assert stored == vol.cipher.encrypt(index * CHUNK // BLOCK,
                                                data[i * CHUNK:(i + 1) * CHUNK]), index
        await vol.flush()
        assert_no_plaintext(dirs)

        def broken(slot, data, direct=False):
            raise OSError(errno.EIO, "disk gone")
        monkeypatch.setattr(vm.pool, "write_chunks", broken)
        taken = buffers._free[-1]  # what the next run gets
        with pytest.raises(NBDError):
            await vol.pwrite(CHUNK, memoryview(data[:2 * CHUNK]), fua=False)
        monkeypatch.setattr(vm.pool, "write_chunks", write_chunks)
        await vol.pwrite(CHUNK, memoryview(data[:2 * CHUNK]), fua=False)
        assert buffers._free and all(b is not taken for b in buffers._free)
    finally:
        await close(store, vm)
