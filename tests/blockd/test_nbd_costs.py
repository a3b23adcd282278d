"""The NBD data path's cost per request, from counters: a CI guard, not a timing.

A volume served by an in-process NBDServer, driven by blockd's NBD client one
request at a time. Counted per READ and WRITE of 4 KiB and of 1 MiB: calls
into the disks' block files (each one system call: pread, preadv or pwrite),
tasks created, large buffers allocated, and WRITE payload bytes copied out of
the receive buffer; for a 1 MiB READ, the system calls and thread hops that
check it and the bytes copied to send it. A change that adds a system call,
a task, a fresh payload buffer or a payload copy per request fails here; so does a punch of a
freshly allocated slot past the files' ends, and an encrypted volume's 4 KiB
request that leaves the inline path or makes more than one cipher call.
"""

from __future__ import annotations

import asyncio
import collections
import os

import pytest
from volume_helpers import close, count_cipher_calls, open_manager

from blockd import pool as pool_module
from blockd.nbd_client import NBDClient
from blockd.nbd_connection import RECV_BUFFER
from blockd.nbd_server import NBDServer
from blockd.pool import BLOCK, BLOCKS, CHUNK
from storaged.block_file import LocalBlockFile

MiB = 1 << 20
ROUNDS = 20


@pytest.fixture
def file_calls(monkeypatch):
    """Calls of each LocalBlockFile method (each is one system call)."""
    calls: collections.Counter[str] = collections.Counter()
    for name in ("pread", "preadinto", "pwrite", "punch", "sync", "size"):
        original = getattr(LocalBlockFile, name)

        def counted(self, *args, _original=original, _name=name):
            calls[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(LocalBlockFile, name, counted)
    return calls


@pytest.fixture
def os_calls(monkeypatch):
    """Calls of os.preadv and os.writev (the pool's and the connection's own)."""
    calls: collections.Counter[str] = collections.Counter()
    for name in ("preadv", "writev"):
        original = getattr(os, name)

        def counted(*args, _original=original, _name=name):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(os, name, counted)
    return calls


def count_views(monkeypatch, conn) -> list[int]:
    """Count the slab views each large READ reply sends (one count per reply)."""
    sent: list[int] = []
    original = conn._cmds.send_views

    async def counted(items):
        sent.append(sum(isinstance(item, memoryview) and item.readonly for item in items))
        return await original(items)

    monkeypatch.setattr(conn._cmds, "send_views", counted)
    return sent


def count_tasks() -> list[int]:
    """Count the tasks created on the running loop from now on (in [0])."""
    created = [0]

    def factory(loop, coro, **kwargs):
        created[0] += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    asyncio.get_running_loop().set_task_factory(factory)
    return created


def replica_runs(vm, name: str, offset: int, length: int) -> int:
    """Runs of consecutive slots each disk holds, over the chunks of a range."""
    mapping = vm.map_of(name)
    held: dict[int, list[int]] = {}
    for index in range(offset // CHUNK, (offset + length) // CHUNK):
        slot = mapping[index]
        for pos in vm.pool.positions(slot):
            held.setdefault(pos, []).append(slot)
    return sum(1 + sum(b != a + 1 for a, b in zip(slots, slots[1:])) for slots in held.values())


def read_runs(vm, name: str, offset: int, length: int) -> int:
    """Runs of consecutive slots read from one replica (its preferred one), over
    the chunks of a range: what a large READ checks and sends a view of each."""
    mapping, pool = vm.map_of(name), vm.pool
    slots = [mapping[index] for index in range(offset // CHUNK, (offset + length) // CHUNK)]
    runs, i = 0, 0
    while i < len(slots):
        j, end = i + 1, min(len(slots), i + pool.run_length(slots[i]))
        while j < end and slots[j] == slots[i] + j - i:
            j += 1
        assert len({pool.preferred(slot) for slot in slots[i:j]}) == 1
        runs, i = runs + 1, j
    return runs


async def test_system_calls_tasks_and_buffers_per_request(dirs, file_calls, os_calls,
                                                          monkeypatch):
    new_tasks = count_tasks()
    store, vm = await open_manager(dirs)
    server = NBDServer(vm)
    await server.start("127.0.0.1", 0)
    replicas = vm.pool.replicas
    try:
        await vm.create("v", 64 * MiB)
        async with NBDClient("127.0.0.1", server.port, "v") as client:
            data = os.urandom(MiB)
            for offset in range(0, 8 * MiB, MiB):  # allocate: first writes punch and map
                await client.write(offset, data)
            await client.read(0, MiB)  # the read buffer pool warms up

            (conn,) = server._connections

            async def per_request(request, offsets):
                file_calls.clear()
                tasks, buffers = new_tasks[0], server.buffers.allocated
                for offset in offsets:
                    await request(offset)
                n = len(offsets)
                return ({k: v / n for k, v in file_calls.items() if v},
                        (new_tasks[0] - tasks) / n, server.buffers.allocated - buffers)

            small = [i * 7 * BLOCK for i in range(ROUNDS)]  # inside the written 8 MiB
            large = [(i % 8) * MiB for i in range(ROUNDS)]

            async def read4k(offset):
                assert await client.read(offset, BLOCK) == data[offset % MiB:][:BLOCK]

            async def write4k(offset):  # the same bytes again
                await client.write(offset, data[offset % MiB:][:BLOCK])

            async def read1m(offset):
                assert await client.read(offset, MiB) == data

            async def write1m(offset):
                await client.write(offset, data)

            # 4 KiB: answered at once (no task); a read is the block and its
            # checksum from one replica, a write both to every replica.
            assert await per_request(read4k, small) == ({"preadinto": 1, "pread": 1}, 0, 0)
            assert await per_request(write4k, small) == ({"pwrite": 2 * replicas}, 0, 0)
            # 1 MiB: one task, and no thread hop, no block-file call, no
            # buffer: each run of consecutive slots read from one replica is
            # checked straight from the mapped slab (one mincore, one read of
            # its checksums) and the reply written from one view per run in
            # one writev (no read copy; nothing copied to be sent later). A
            # disk holds R consecutive slots of every N, so about 16/R runs.
            chunks = MiB // CHUNK
            hops = collections.Counter()
            run = store.run
            monkeypatch.setattr(store, "run", lambda *a: hops.update(["run"]) or run(*a))
            mincore = pool_module._mincore
            monkeypatch.setattr(pool_module, "_mincore",
                                lambda *a: os_calls.update(["mincore"]) or mincore(*a))
            sent = count_views(monkeypatch, conn)
            os_calls.clear()
            copied = conn.tx_copied
            views = sum(read_runs(vm, "v", offset, MiB) for offset in large) / len(large)
            assert views <= -(-chunks // replicas) + 1
            assert await per_request(read1m, large) == ({}, 1, 0)
            assert {k: v / ROUNDS for k, v in os_calls.items()} == {
                "mincore": views, "preadv": views, "writev": 1}
            assert sum(sent) / ROUNDS == views
            assert not hops and conn.tx_copied == copied
            # A WRITE of whole chunks in consecutive slots (a volume filled in
            # order): one pwrite of data and one of checksums per run of those
            # slots a disk holds, not two per slot and replica.
            runs = sum(replica_runs(vm, "v", offset, MiB) for offset in large) / len(large)
            assert runs < replicas * chunks / 2
            copied = conn.rx_copied
            assert await per_request(write1m, large) == ({"pwrite": 2 * runs}, 1, 0)
            # Each payload is received into its buffer, not copied out of the
            # receive buffer (after the first: only a header is read after a
            # payload, so the next payload does not land there).
            assert conn.rx_copied - copied <= RECV_BUFFER
            # First writes allocate fresh slots above any slot a file holds
            # (ChunkPool._top), holes already: no fstat, no punch (a restore
            # allocates so).
            file_calls.clear()
            await client.write(16 * MiB, data)
            assert dict(file_calls) == {"pwrite": 2 * replica_runs(vm, "v", 16 * MiB, MiB)}
            # A hole costs no system call at all.
            hole = 32 * MiB
            file_calls.clear()
            assert await client.read(hole, BLOCK) == bytes(BLOCK)
            assert await client.read(hole, MiB) == bytes(MiB)
            assert not file_calls
    finally:
        await server.close()
        await close(store, vm)
        asyncio.get_running_loop().set_task_factory(None)


async def test_encrypted_small_io_is_answered_inline(dirs, file_calls):
    """An encrypted volume's 4 KiB WRITE and READ take the inline path a plain
    one's take (no task), with one cipher call each and the same block-file
    calls: encryption adds one cipher call per block, nothing else."""
    new_tasks = count_tasks()
    store, vm = await open_manager(dirs, bytes(range(32)))
    server = NBDServer(vm)
    await server.start("127.0.0.1", 0)
    replicas = vm.pool.replicas
    try:
        await vm.create("e", 8 * MiB, encrypted=True)
        async with NBDClient("127.0.0.1", server.port, "e") as client:
            data = os.urandom(CHUNK)
            await client.write(0, data)  # allocate the chunk
            ciphered: collections.Counter[str] = collections.Counter()
            count_cipher_calls(vm.exports["e"].cipher, ciphered)

            async def per_request(request):
                file_calls.clear()
                ciphered.clear()
                tasks = new_tasks[0]
                for i in range(ROUNDS):
                    await request(i % BLOCKS * BLOCK)
                return ({k: v / ROUNDS for k, v in (file_calls + ciphered).items()},
                        (new_tasks[0] - tasks) / ROUNDS)

            async def write4k(offset):
                await client.write(offset, data[offset:offset + BLOCK])

            async def read4k(offset):
                assert await client.read(offset, BLOCK) == data[offset:offset + BLOCK]

            assert await per_request(write4k) == ({"encrypt": 1, "pwrite": 2 * replicas}, 0)
            assert await per_request(read4k) == ({"decrypt_into": 1, "preadinto": 1, "pread": 1}, 0)
    finally:
        await server.close()
        await close(store, vm)
        asyncio.get_running_loop().set_task_factory(None)


async def test_encrypted_reads_arriving_together_are_decrypted_together(dirs, monkeypatch):
    """READs of an encrypted volume parsed in one event-loop turn are read
    first and decrypted one after another just before their replies leave: in
    the server, between requests, the cipher's code and keys leave the CPU's
    caches, and a decryption per request interleaved with everything else cost
    ~1 us more each (nbd_bench.py --encrypted: 0.77x -> 0.84x of plain)."""
    store, vm = await open_manager(dirs, bytes(range(32)))
    server = NBDServer(vm)
    await server.start("127.0.0.1", 0)
    try:
        await vm.create("e", 8 * MiB, encrypted=True)
        async with NBDClient("127.0.0.1", server.port, "e") as client:
            data = os.urandom(CHUNK)
            await client.write(0, data)
            events: list[str] = []
            original = LocalBlockFile.preadinto

            def reading(self, *args):
                events.append("read")
                return original(self, *args)

            monkeypatch.setattr(LocalBlockFile, "preadinto", reading)
            cipher = vm.exports["e"].cipher
            decrypt = cipher.decrypt_into

            def decrypting(*args):
                events.append("decrypt")
                return decrypt(*args)

            cipher.decrypt_into = decrypting
            offsets = [i % BLOCKS * BLOCK for i in range(32)]
            got = await asyncio.gather(*(client.read(o, BLOCK) for o in offsets))
            assert got == [data[o:o + BLOCK] for o in offsets]
            assert events.count("decrypt") == 32
            switches = sum(a == "read" and b == "decrypt" for a, b in zip(events, events[1:]))
            assert switches <= 4, events  # one per turn (32 without the batching)
    finally:
        await server.close()
        await close(store, vm)


async def test_a_reply_that_cannot_be_completed_is_never_sent(dirs):
    """When decrypting a queued reply fails, no reply of its batch leaves (it
    would carry ciphertext as if it were the data): the connection is dropped,
    and the next connection reads normally."""
    from blockd.nbd_client import NBDClientError
    store, vm = await open_manager(dirs, bytes(range(32)))
    server = NBDServer(vm)
    await server.start("127.0.0.1", 0)
    try:
        await vm.create("e", 8 * MiB, encrypted=True)
        data = os.urandom(CHUNK)
        async with NBDClient("127.0.0.1", server.port, "e") as client:
            await client.write(0, data)
            cipher = vm.exports["e"].cipher
            decrypt = cipher.decrypt_into

            def failing(*args):
                raise RuntimeError("OpenSSL AES-XTS failed")

            cipher.decrypt_into = failing
            with pytest.raises(NBDClientError, match="connection lost"):
                await client.read(0, BLOCK)
            cipher.decrypt_into = decrypt
        async with NBDClient("127.0.0.1", server.port, "e") as client:
            assert await client.read(BLOCK, BLOCK) == data[BLOCK:2 * BLOCK]
    finally:
        await server.close()
        await close(store, vm)


async def test_a_slot_a_file_holds_is_punched_when_allocated(dirs, file_calls):
    """Allocation skips the fstat only for slots above all a file may hold
    (ChunkPool._top, from the files' sizes when opened and every write since):
    data a crash left past the recorded slots, or written in this life, is
    still punched when its slot is handed out again."""
    store, vm = await open_manager(dirs)
    data = os.urandom(CHUNK)
    try:
        vm.pool.write(3, 0, data)
        vm.pool.sync()
    finally:
        await close(store, vm)
    for d in dirs:  # slot 43 (on slot 3's disks) written, the crash before its map said so
        for name, size in (("volumes.slab", CHUNK), ("volumes.sums", BLOCKS * 8)):
            path = os.path.join(d, "files", name)
            with open(path, "r+b") as f:
                f.seek(3 * size)
                copy = f.read(size)
                if copy:
                    f.seek(43 * size)
                    f.write(copy)
    store, vm = await open_manager(dirs)
    pool = vm.pool
    try:
        assert pool.read(43, 0, CHUNK) == data  # what a reused slot 43 would show
        file_calls.clear()
        pool.clear(43)
        assert file_calls["punch"] and pool.read(43, 0, CHUNK) == bytes(CHUNK)
        file_calls.clear()
        pool.clear(44)  # above everything: no system call
        assert not file_calls
        pool.write(50, 0, data)
        file_calls.clear()
        pool.clear(50)
        assert file_calls["punch"] and pool.read(50, 0, CHUNK) == bytes(CHUNK)
    finally:
        await close(store, vm)
