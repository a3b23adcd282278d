"""Server-side restores (blockd/restore.py) against a small ranged-GET server.

The cost guard is counted, not timed: one GET per pack for exactly the bytes
of its chunks, and one volume write per run of up to 4 MiB of neighbouring
chunks, whatever the machine's speed."""

import hashlib
import os
import threading

import pytest
from aiohttp import web
from volume_helpers import close, open_manager

from blockd import restore
from blockd.pool import CHUNK
from tests.storaged.helpers import cached_bytes

MiB = 1 << 20


@pytest.fixture
async def packs_server():
    """Serves ``/NAME`` from a dict, honouring ``Range: bytes=LO-HI``."""
    objects: dict[str, bytes] = {}

    async def get(request: web.Request) -> web.Response:
        body = objects.get(request.match_info["name"])
        if body is None:
            return web.Response(status=404, text="NoSuchKey")
        lo, hi = request.headers["Range"].removeprefix("bytes=").split("-")
        return web.Response(status=206, body=body[int(lo):int(hi) + 1])

    app = web.Application()
    app.router.add_get("/{name}", get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield objects, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def pack(objects: dict, url: str, name: str, chunks: dict[int, bytes]) -> dict:
    """A pack of ``chunks`` (index → data) in that order, as a restore request names it."""
    entries, body = [], b""
    for index, data in chunks.items():
        entries.append([index, len(body), len(data), hashlib.sha256(data).hexdigest()])
        body += data
    objects[name] = body
    return {"url": f"{url}/{name}", "key": name, "chunks": entries}


async def test_restore_writes_verified_chunks_with_one_get_per_pack(dirs, packs_server):
    objects, url = packs_server
    store, vm = await open_manager(dirs)
    try:
        await vm.create("v", 16 * MiB + 1000)  # the last chunk is short
        first = {i: os.urandom(CHUNK) for i in range(128)}       # 8 MiB side by side
        scattered = {200: os.urandom(CHUNK), 140: os.urandom(CHUNK), 256: os.urandom(1000)}
        body = {"chunk_size": CHUNK, "packs": [pack(objects, url, "a", first),
                                               pack(objects, url, "b", scattered)]}
        packs = restore.parse_packs(body, vm.records["v"].size)
        before = dict(restore.COUNTS)
        seen: list[int] = []
        written = await restore.restore(vm, "v", packs, None, seen.append)
        counts = {k: restore.COUNTS[k] - before.get(k, 0) for k in restore.COUNTS}
        total = 128 * CHUNK + 2 * CHUNK + 1000
        assert written == total and seen[-1] == total
        # the guard: one GET per pack, every byte fetched once, one volume
        # write per 4 MiB run of neighbours (2 for pack a) and per lone chunk
        assert counts == {"requests": 2, "fetched": total, "chunks": 131, "writes": 2 + 3}
        vol = await vm.lookup("v")
        assert await vol.pread(0, 128 * CHUNK) == b"".join(first.values())
        for index, data in scattered.items():
            assert await vol.pread(index * CHUNK, len(data)) == data
        assert await vol.pread(128 * CHUNK, CHUNK) == bytes(CHUNK)  # never written: a hole
        assert vm.info("v").allocated == 131 * CHUNK
        # durable when it returns: nothing left for a later flush to commit
        assert not vm.chunks.changes.maps and not vm.chunks.changes.refcounts
    finally:
        await close(store, vm)


def cached_slab_bytes(vm) -> int:
    """Bytes of the pool's slab files in the page cache."""
    return sum(cached_bytes(vm.pool._disk_files(pos)[0].fd) for pos in range(vm.pool.n))


@pytest.mark.parametrize("encrypted", [False, True])
async def test_restored_chunks_go_past_the_page_cache(dirs, packs_server, monkeypatch, encrypted):
    """A restore writes M+1 copies of every chunk that nobody is about to read:
    with O_DIRECT (where the disks' filesystem has it) none of them lands in
    the page cache, where it would cost a copy into fresh pages, dirty-page
    throttling and the cache's other contents, and the disks are written in
    parallel (each write waits on its device). An ordinary write still goes
    through the cache. Onto an encrypted volume alike (its runs are encrypted
    into page-aligned buffers)."""
    from storaged.block_file import LocalBlockFile
    writers: set[str] = set()
    direct = LocalBlockFile.pwrite_direct
    monkeypatch.setattr(LocalBlockFile, "pwrite_direct", lambda self, *a: writers.add(
        threading.current_thread().name) or direct(self, *a))
    objects, url = packs_server
    store, vm = await open_manager(dirs, bytes(range(32)) if encrypted else None)
    try:
        await vm.create("v", 16 * MiB, encrypted=encrypted)
        vm.pool.open(0)
        if not vm.pool._disk_files(0)[0].direct_capable():
            pytest.skip("no O_DIRECT on this filesystem")
        chunks = {i: os.urandom(CHUNK) for i in range(64)}
        body = {"chunk_size": CHUNK, "packs": [pack(objects, url, "a", dict(list(chunks.items())[:40])),
                                               pack(objects, url, "b", dict(list(chunks.items())[40:]))]}
        await restore.restore(vm, "v", restore.parse_packs(body, 16 * MiB), None, lambda n: None)
        assert cached_slab_bytes(vm) == 0
        assert len({w for w in writers if w.startswith("volume-disk")}) > 1
        vol = await vm.lookup("v")
        await vol.open()
        assert await vol.pread(0, 64 * CHUNK) == b"".join(chunks.values())
        await vol.pwrite(128 * CHUNK, memoryview(os.urandom(4 * CHUNK)), fua=True)
        assert cached_slab_bytes(vm) >= 64 * CHUNK + 4 * CHUNK * vm.pool.replicas
    finally:
        await close(store, vm)


async def test_a_damaged_or_missing_pack_stops_the_restore(dirs, packs_server):
    objects, url = packs_server
    store, vm = await open_manager(dirs)
    try:
        await vm.create("v", MiB)
        good = pack(objects, url, "good", {0: os.urandom(CHUNK)})
        bad = pack(objects, url, "bad", {1: os.urandom(CHUNK)})
        objects["bad"] = os.urandom(CHUNK)  # bitrot on the target
        packs = restore.parse_packs({"chunk_size": CHUNK, "packs": [good, bad]}, MiB)
        with pytest.raises(restore.BackupDamaged, match="chunk 1 in bad fails its checksum"):
            await restore.restore(vm, "v", packs, None, lambda n: None)
        missing = dict(good, url=f"{url}/gone", key="gone")
        packs = restore.parse_packs({"chunk_size": CHUNK, "packs": [missing]}, MiB)
        with pytest.raises(restore.BackupDamaged, match="pack gone unreadable .HTTP 404"):
            await restore.restore(vm, "v", packs, None, lambda n: None)
    finally:
        await close(store, vm)


async def test_requests_outside_the_volume_are_refused(dirs):
    from blockd import VolumeError
    entry = [16, 0, CHUNK, "0" * 64]
    for body in ({"chunk_size": 4096, "packs": []},
                 {"chunk_size": CHUNK, "packs": [{"url": "http://x/p", "chunks": [entry]}]},
                 {"chunk_size": CHUNK, "packs": [{"url": "file:///etc/passwd",
                                                  "chunks": [[0, 0, CHUNK, "0" * 64]]}]},
                 {"chunk_size": CHUNK, "packs": [{"chunks": [entry]}]}):
        with pytest.raises(VolumeError):
            restore.parse_packs(body, 16 * CHUNK)


async def test_sealed_chunks_are_checked_opened_and_written_encrypted(dirs, packs_server):
    """An encrypted backup's chunks: the sha256 of the sealed bytes is checked,
    each chunk opened with the backup key its entry names (given in clear, or
    sealed by this server), and the target volume stores them encrypted."""
    from blockd.backup_cipher import OVERHEAD, ChunkSealer, b64, seal_for_server
    objects, url = packs_server
    store, vm = await open_manager(dirs, bytes(range(32)))
    try:
        await vm.create("v", 8 * CHUNK, encrypted=True)
        k1, k2 = os.urandom(32), os.urandom(32)
        plain = {i: bytes([65 + i]) * CHUNK for i in range(4)}
        plain[4] = b"tail" * 250
        one = pack(objects, url, "one", {i: ChunkSealer(k1).seal(i, plain[i]) for i in (0, 1, 2)})
        two = pack(objects, url, "two", {i: ChunkSealer(k2).seal(i, plain[i]) for i in (3, 4)})
        for p, tag in ((one, "r1"), (two, "r2")):
            for entry in p["chunks"]:
                entry.append(tag)
        sealed = seal_for_server(restore.server_key(vm), k2)
        body = {"chunk_size": CHUNK, "packs": [one, two],
                "keys": {"r1": {"key": b64(k1)}, "r2": {"sealed": b64(sealed)}}}
        keys = restore.parse_keys(body, vm)
        packs = restore.parse_packs(body, vm.records["v"].size, keys)
        before = dict(restore.COUNTS)
        written = await restore.restore(vm, "v", packs, None, lambda n: None, keys)
        counts = {k: restore.COUNTS[k] - before.get(k, 0) for k in restore.COUNTS}
        assert written == 4 * CHUNK + 1000
        assert counts["requests"] == 2 and counts["opened"] == 5
        assert counts["fetched"] == 4 * CHUNK + 1000 + 5 * OVERHEAD
        vol = await vm.lookup("v")
        await vol.open()
        for index, data in plain.items():
            assert await vol.pread(index * CHUNK, len(data)) == data
        for d in dirs:
            with open(os.path.join(d, "files", "volumes.slab"), "rb") as f:
                assert b"tail" * 4 not in f.read()
        # a wrong key, or a chunk moved to another place, is refused before a write
        moved = pack(objects, url, "moved", {5: ChunkSealer(k1).seal(0, plain[0])})
        moved["chunks"][0].append("r1")
        bad = {"chunk_size": CHUNK, "packs": [moved], "keys": {"r1": {"key": b64(k1)}}}
        keys = restore.parse_keys(bad, vm)
        with pytest.raises(restore.BackupDamaged, match="chunk 5 does not open"):
            await restore.restore(vm, "v", restore.parse_packs(bad, 8 * CHUNK, keys), None,
                                  lambda n: None, keys)
        other = seal_for_server(os.urandom(32), k2)
        with pytest.raises(restore.BackupKeyInvalid, match="another master key"):
            restore.parse_keys({"keys": {"x": {"sealed": b64(other)}}}, vm)
    finally:
        await close(store, vm)
