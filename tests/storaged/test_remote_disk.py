"""RemoteDisk against a real disk server (node API) in this process.

The server runs on 127.0.0.1 in a background thread with its own event loop,
so the engine's blocking calls from worker threads and its async calls from the
test's loop both reach it for real. Stores here mix LocalDisks and RemoteDisks
of one erasure set, formatted together.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import ssl
import threading
import time

import pytest
import urllib3
from aiohttp import web

from storaged import DiskFull, ObjectStore
from storaged.disk import DIRECT_ALIGN, LocalDisk
from storaged.disk_server import PREFIX, disk_app
from storaged.format import assemble
from storaged.metadb import PutBucket, PutBucketConfig
from storaged.remote_disk import NodeClient, NodeRefused, NodeUnavailable, RemoteDisk, remote_disks
from storaged.store import BLOCK_SIZE

from .helpers import cached_bytes, chunks, need_direct, payload, read

SECRET = b"cluster-secret-for-tests-0123456789"
MIB = 1 << 20


class Node:
    """A disk server for some LocalDisks, on its own loop in a background thread."""

    def __init__(self, name: str, disks, *, secret: bytes = SECRET, port: int = 0,
                 ssl_context: ssl.SSLContext | None = None, **options) -> None:
        self.name, self.disks, self.secret = name, disks, secret
        self.ssl_context, self.options = ssl_context, options
        self.port = port
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Node:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"node-{self.name}",
                                       daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        app = disk_app(self.disks, self.secret, self.name, **self.options)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def stop(self) -> None:
        if self.loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.loop = None

    def remote(self, disk: LocalDisk, **kw) -> RemoteDisk:
        """A RemoteDisk of ``disk`` as another node sees it."""
        kw.setdefault("secret", self.secret)
        return RemoteDisk(self.url, disk.format.disk_id, disk.position, disk.format,
                          node=self.name, caller="test-client", **kw)


def formatted(tmp_path, n=4, ec=(2, 2), block_size=BLOCK_SIZE, kinds=None, **kw
              ) -> list[LocalDisk]:
    """The disks of one new erasure set, opened (``kinds``: position → class)."""
    slots = assemble([str(tmp_path / f"disk{i}") for i in range(n)], *ec, block_size)
    disks = [(kinds or {}).get(i, LocalDisk)(slot, sync=False, **kw)
             for i, slot in enumerate(slots)]
    for disk in disks:
        disk.open()
    return disks


@pytest.fixture
def cluster(tmp_path):
    """make(per_node) → (store, nodes, LocalDisks): a 2+2 set whose disks 0, 1 are
    local and 2, 3 served by nodes (``per_node`` disks each). Close the store
    with ``closing`` (on the test's loop)."""
    nodes: list[Node] = []
    opened: list[LocalDisk] = []

    async def make(per_node=(1, 1), **store_kw):
        disks = formatted(tmp_path)
        opened.extend(disks)
        local = disks[:2]
        remote, served = [], disks[2:]
        for i, count in enumerate(per_node):
            mine, served = served[:count], served[count:]
            node = Node(f"node{i}", mine).start()
            nodes.append(node)
            remote += remote_disks(node.url, SECRET, node.name, caller="test-client")
        store = ObjectStore(local + remote, **store_kw)
        await store.start(heal=False)
        return store, nodes[-len(per_node):], disks

    yield make
    for node in nodes:
        node.stop()
    for disk in opened:
        disk.close()


@pytest.fixture
async def closing():
    """Close stores at the end of a test, on its loop."""
    stores = []
    yield stores.append
    for store in stores:
        await store.close()


async def test_object_store_over_local_and_remote_disks(cluster, closing):
    store, nodes, disks = await cluster((2,), min_part_size=64 * 1024)
    closing(store)
    assert [d.local for d in store.disks] == [True, True, False, False]
    assert store.disks[2].name == f"node0:{disks[2].root}"
    await store.make_bucket("b")
    bodies = {"small": payload("small", 1000), "big": payload("big", 2 * BLOCK_SIZE + 7),
              "a/1": b"", "a/2": payload("a2", 300_000), "c": b"c"}
    for key, body in bodies.items():
        await store.put_object("b", key, chunks(body), size=len(body))
    for key, body in bodies.items():
        assert await read(store, "b", key) == body
    big = bodies["big"]
    for off, length in [(0, 10), (BLOCK_SIZE - 3, 9), (2 * BLOCK_SIZE, 7), (12345, BLOCK_SIZE)]:
        assert await read(store, "b", "big", off, length) == big[off:off + length]
    # The remote disks really hold their records and shards.
    for disk in disks[2:]:
        assert disk.get_object("b", "big") is not None
        assert disk.get_inline("b", "small") is not None
        assert any(files for _, _, files in os.walk(os.path.join(disk.root, "data")))
    page = await store.list_objects("b", delimiter="/")
    assert [o.key for o in page.objects] == ["big", "c", "small"] and page.prefixes == ["a/"]
    page = await store.list_objects("b", prefix="a/")
    assert [o.key for o in page.objects] == ["a/1", "a/2"]
    assert [b.name for b in await store.list_buckets()] == ["b"]

    # versions
    await store.make_bucket("v")
    await store.set_bucket_config("v", "versioning", b"Enabled")
    v1 = await store.put_object("v", "k", chunks(b"one"))
    v2 = await store.put_object("v", "k", chunks(payload("two", 200_000)))
    marker = await store.delete_object("v", "k")
    assert marker.delete_marker
    versions = (await store.list_versions("v")).entries
    assert [e.info.version for e in versions][1:] == [v2.version, v1.version]
    info = await store.head_object("v", "k", v1.version)
    assert await (await store.get_object("v", "k", info=info)).read() == b"one"
    await store.delete_object("v", "k", v2.version)
    assert len((await store.list_versions("v")).entries) == 2

    # multipart
    up = await store.create_upload("b", "mp")
    parts_data = [payload("p1", 100_000), payload("p2", 70_000)]
    parts = []
    for n, data in enumerate(parts_data, 1):
        part = await store.upload_part("b", "mp", up.upload_id, n, chunks(data), size=len(data))
        parts.append((n, part.etag))
    await store.complete_upload("b", "mp", up.upload_id, parts)
    assert await read(store, "b", "mp") == b"".join(parts_data)

    # Wipe one remote disk: reads still right, then a heal rebuilds it remotely.
    wiped = disks[3]
    shutil.rmtree(wiped.root)
    assert await read(store, "b", "big") == big
    report = await store.heal(deep=True)
    assert report.failed == 0 and report.shards_rebuilt > 0
    remote = store.disks[3]
    assert remote.online and not remote.healing
    assert not os.path.exists(os.path.join(wiped.root, ".healing"))
    assert wiped.get_object("b", "big") is not None
    # Only the healed disk and the other remote one left: everything is still there.
    store.disks[0].close()
    store.disks[1].close()
    for key, body in bodies.items():
        assert await read(store, "b", key) == body
    assert await read(store, "b", "mp") == b"".join(parts_data)
    info = await store.head_object("v", "k", v1.version)
    assert await (await store.get_object("v", "k", info=info)).read() == b"one"


async def test_a_parts_shards_skip_the_nodes_page_cache_too(cluster, closing):
    """A multipart part's shards on other nodes' disks are written past their
    page cache, as on local disks (storaged.writer); a PUT's are not."""
    store, _, disks = await cluster((1, 1))
    closing(store)
    need_direct(disks[2])
    await store.make_bucket("b")
    body = os.urandom(6 * MIB)
    up = await store.create_upload("b", "parts")
    part = await store.upload_part("b", "parts", up.upload_id, 1, chunks(body), size=len(body))
    await store.put_object("b", "single", chunks(body), size=len(body))

    def cached_on_nodes(files) -> int:
        return sum(cached_bytes(d.shard_path(data_id, n)) for d in disks[2:]
                   for data_id, numbers in files.items() for n in numbers)

    single = (await store.head_object("b", "single")).files()
    assert cached_on_nodes(single) >= len(body) // 2  # 2 of the 4 shards, all cached
    edges = 2 * DIRECT_ALIGN * 6 * 2  # two edge pages per write, six batches, two disks
    assert cached_on_nodes({part.data_id: [1]}) <= edges
    await store.complete_upload("b", "parts", up.upload_id, [(1, part.etag)])
    assert await read(store, "b", "parts") == body


async def test_volume_slots_through_remote_block_files(cluster, closing):
    from blockd.pool import BLOCK, CHUNK, ChunkPool

    store, nodes, disks = await cluster((2,))
    closing(store)
    pool = ChunkPool(store)
    pool.has_data = lambda: False  # new disks: their empty slabs are trusted
    try:
        data = {slot: os.urandom(CHUNK) for slot in range(8)}
        for slot, body in data.items():
            pool.write(slot, 0, body)
        pool.sync()
        pool.clear(5, BLOCK, 2 * BLOCK)
        data[5] = data[5][:BLOCK] + bytes(2 * BLOCK) + data[5][3 * BLOCK:]
        # The copies on remote positions are in the served disks' files.
        for slot, body in data.items():
            for pos in pool.positions(slot):
                if pos >= 2:
                    with disks[pos].open_block_file("volumes.slab", create=False) as f:
                        assert f.pread(CHUNK, slot * CHUNK) == body
        # With the local disks gone every read is served remotely (pread and preadinto).
        store.disks[0].close()
        store.disks[1].close()
        for slot, body in data.items():
            assert pool.read(slot, 0, CHUNK) == body
            assert pool.read(slot, 100, 5000) == body[100:5100]
        assert pool.repaired == 0 and not pool.untrusted
        slab, sums = pool._disk_files(2)
        assert slab.size() == (max(s for s in data if 2 in pool.positions(s)) + 1) * CHUNK
        pool.write(9, 0, b"x" * BLOCK)
        pool.sync()
        assert pool.read(9, 0, BLOCK) == b"x" * BLOCK
    finally:
        pool.close()


async def test_shard_files_over_the_wire(tmp_path):
    disks = formatted(tmp_path)
    node = Node("n", disks[2:]).start()
    remote = node.remote(disks[2])
    try:
        writer = remote.create_shard("ab" * 16, 1)
        second = payload("second", 3 * MIB + 5)
        writer.write([memoryview(second)[:MIB], second[MIB:]], 1000)  # out of order
        writer.write([b"h" * 16, memoryview(bytearray(b"x" * 984))], 0)
        writer.commit()
        expected = b"h" * 16 + b"x" * 984 + second
        assert remote.shard_size("ab" * 16, 1) == len(expected)
        assert disks[2].shard_size("ab" * 16, 1) == len(expected)
        bufs = [bytearray(16), bytearray(MIB), bytearray(2 * MIB + 100)]
        assert remote.read_shard("ab" * 16, 1, 0, bufs) == 16 + 3 * MIB + 100
        assert b"".join(bufs) == expected[:16 + 3 * MIB + 100]
        tail = [bytearray(10), bytearray(10)]
        assert remote.read_shard("ab" * 16, 1, len(expected) - 12, tail) == 12  # short at EOF
        assert bytes(tail[0]) + bytes(tail[1][:2]) == expected[-12:]
        with pytest.raises(FileNotFoundError):
            remote.read_shard("cd" * 16, 1, 0, [bytearray(4)])
        aborted = remote.create_shard("ef" * 16, 0)
        aborted.write([b"z" * 100], 0)
        aborted.abort()
        assert remote.shard_size("ef" * 16, 0) is None
        assert os.listdir(os.path.join(disks[2].root, "tmp")) == []
        remote.purge("ab" * 16, [1, 2])
        assert remote.shard_size("ab" * 16, 1) is None
        # metadata getters and space/status from a worker thread
        assert remote.buckets() == {} and remote.stored() == (0, 0)
        assert remote.status() == ("online", None) and remote.check()
        assert remote.space()[3] == disks[2].space()[3]
    finally:
        remote.close()
        node.stop()
        for d in disks:
            d.close()


class FailingDisk(LocalDisk):
    """A disk whose shard reads fail past the first MiB."""

    def read_shard(self, vid, part, offset, iov):
        if offset >= MIB:
            raise OSError(errno.EIO, "Input/output error")
        return super().read_shard(vid, part, offset, iov)


async def test_read_failing_midway_is_an_error_not_a_short_read(tmp_path):
    disks = formatted(tmp_path, kinds={3: FailingDisk})
    node = Node("n", disks[2:]).start()
    remote = node.remote(disks[3])
    try:
        writer = disks[3].create_shard("ab" * 16, 0)
        writer.write([bytes(3 * MIB)], 0)
        writer.commit()
        assert remote.read_shard("ab" * 16, 0, 0, [bytearray(MIB)]) == MIB
        with pytest.raises(OSError) as err:
            remote.read_shard("ab" * 16, 0, 0, [bytearray(3 * MIB)])  # streamed: breaks off
        assert not isinstance(err.value, FileNotFoundError)
        with pytest.raises(OSError) as err:
            remote.read_shard("ab" * 16, 0, 2 * MIB, [bytearray(10)])  # fails up front
        assert err.value.errno == errno.EIO
        assert remote.read_shard("ab" * 16, 0, 0, [bytearray(10)]) == 10  # the node goes on
    finally:
        remote.close()
        node.stop()
        for d in disks:
            d.close()


async def test_idle_shard_writer_is_aborted(tmp_path):
    disks = formatted(tmp_path)
    node = Node("n", disks[2:], writer_idle=0.2).start()
    remote = node.remote(disks[2])
    try:
        writer = remote.create_shard("ab" * 16, 0)
        writer.write([b"x" * 100], 0)
        assert len(os.listdir(os.path.join(disks[2].root, "tmp"))) == 1
        for _ in range(100):
            if not os.listdir(os.path.join(disks[2].root, "tmp")):
                break
            await asyncio.sleep(0.05)
        assert os.listdir(os.path.join(disks[2].root, "tmp")) == []
        with pytest.raises(OSError) as err:
            writer.write([b"y"], 100)
        assert err.value.errno == errno.EBADF
    finally:
        remote.close()
        node.stop()
        for d in disks:
            d.close()


async def test_wrong_secret_is_refused_and_logged(tmp_path, caplog):
    disks = formatted(tmp_path)
    node = Node("n", disks[2:]).start()
    wrong = node.remote(disks[2], secret=b"another-secret-0123456789")
    try:
        with caplog.at_level(logging.WARNING, logger="basalt.storaged.disk_server"):
            with pytest.raises(NodeRefused, match="signature does not match"):
                wrong.read_now("buckets")
            with pytest.raises(NodeRefused):
                await wrong.read("buckets")
            with pytest.raises(NodeRefused):
                wrong.create_shard("ab" * 16, 0)
            assert not wrong.check()
        refusals = [r for r in caplog.records if r.getMessage() == "node request refused"]
        assert len(refusals) >= 3
        assert refusals[0].fields["node"] == "test-client"
        assert "signature" in refusals[0].fields["reason"]
        with pytest.raises(NodeRefused):
            remote_disks(node.url, b"another-secret-0123456789", "n")
        assert [d.disk_id for d in remote_disks(node.url, SECRET, "n")] == \
            [d.format.disk_id for d in disks[2:]]
    finally:
        await wrong.aclose()
        node.stop()
        for d in disks:
            d.close()


def _raw(node: Node, method: str, path: str, body: bytes = b"", headers=None):
    http = urllib3.PoolManager(retries=False)
    return http.request(method, node.url + path, body=body or None, headers=headers or {})


async def test_replayed_stale_unsigned_and_tampered_requests_are_refused(tmp_path):
    from storaged import node_auth

    disks = formatted(tmp_path)
    node = Node("n", disks[2:]).start()
    client = NodeClient(node.url, SECRET, "test-client")
    path = f"{PREFIX}/disks"
    try:
        assert _raw(node, "GET", path).status == 401  # nothing without a signature
        assert _raw(node, "GET", PREFIX + "/nowhere").status == 401
        url, headers = client.prepare("GET", path, None, b"")
        assert _raw(node, "GET", path, headers=headers).status == 200
        replay = _raw(node, "GET", path, headers=headers)
        assert replay.status == 401 and b"replayed" in replay.data
        stale = node_auth.sign(SECRET, "GET", path, "", "test-client", node_auth.body_digest(b""),
                               now_ns=time.time_ns() - 400 * 10**9)
        refused = _raw(node, "GET", path, headers=stale)
        assert refused.status == 401 and b"off" in refused.data
        read = f"{PREFIX}/disks/{disks[2].format.disk_id}/read"
        _, headers = client.prepare("POST", read, None, None)  # UNSIGNED-PAYLOAD
        refused = _raw(node, "POST", read, b"\x92\xa7buckets\x90", headers)
        assert refused.status == 401 and b"unsigned" in refused.data
        _, headers = client.prepare("POST", read, None, b"\x92\xa7buckets\x90")
        tampered = _raw(node, "POST", read, b"\x92\xa7pending\x90", headers)
        assert tampered.status == 401 and b"body does not match" in tampered.data
        _, headers = client.prepare("POST", read, None, b"\x92\xa7buckets\x90")
        assert _raw(node, "POST", read, b"\x92\xa7buckets\x90", headers).status == 200
    finally:
        client.close()
        node.stop()
        for d in disks:
            d.close()


async def test_node_down_store_serves_from_quorum_then_heals(cluster, closing):
    store, (node_a, node_b), disks = await cluster((1, 1))
    closing(store)
    await store.make_bucket("b")
    before = {"small": payload("s", 5000), "big": payload("b", BLOCK_SIZE + 99)}
    for key, body in before.items():
        await store.put_object("b", key, chunks(body))
    node_b.stop()
    gone = store.disks[3]
    with pytest.raises(OSError):
        gone.read_now("buckets")
    with pytest.raises(OSError):
        await gone.read("buckets")
    with pytest.raises(OSError):
        await gone.commit([PutBucketConfig("b", "tagging", 1, b"x")])
    with pytest.raises(OSError):
        gone.read_shard("ab" * 16, 0, 0, [bytearray(10)])
    with pytest.raises(NodeUnavailable):
        gone.create_shard("ab" * 16, 0)
    assert not gone.check()
    assert gone.status()[0] == "offline"
    # The store goes on with three disks: reads rebuild, writes reach the quorum.
    for key, body in before.items():
        assert await read(store, "b", key) == body
    during = {"new-small": payload("ns", 700), "new-big": payload("nb", 2 * BLOCK_SIZE + 1)}
    for key, body in during.items():
        await store.put_object("b", key, chunks(body))
    assert [o.key for o in (await store.list_objects("b")).objects] == \
        ["big", "new-big", "new-small", "small"]
    store.healer.watch_disks()
    assert not gone.online and gone.reason
    # The node comes back: the disk missed writes, so it is healed completely.
    node_b.start()
    store.healer.watch_disks()
    assert gone.online and gone.healing
    report = await store.heal(deep=False)
    assert report.failed == 0 and not gone.healing
    store.disks[0].close()
    store.disks[2].close()
    for key, body in {**before, **during}.items():
        assert await read(store, "b", key) == body


class _FullWriter:
    def write(self, iov, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    def commit(self):
        raise AssertionError("not reached")

    def abort(self):
        pass


class FullDisk(LocalDisk):
    """A disk whose data writes find no space (its LMDB map is small too)."""

    def create_shard(self, vid, part, stage=None):
        return _FullWriter()


async def test_disk_full_round_trips(tmp_path):
    disks = formatted(tmp_path, map_size=1 << 20, kinds={3: FullDisk})
    node = Node("n", disks[2:]).start()
    remote = node.remote(disks[2])
    full = node.remote(disks[3])
    try:
        writer = full.create_shard("ab" * 16, 0)
        with pytest.raises(OSError) as err:  # as from a local disk: the writer maps it
            writer.write([b"x" * 10], 0)
        assert err.value.errno == errno.ENOSPC
        writer.abort()
        assert remote.commit_now([PutBucket("b", b"info"),
                                  PutBucketConfig("b", "tagging", 1, b"small")]) == [True, True]
        huge = [PutBucketConfig("b", "tagging", 2, bytes(4 << 20))]
        with pytest.raises(DiskFull):
            await remote.commit(huge)
        with pytest.raises(DiskFull):
            remote.commit_now(huge)
        assert await remote.read("bucket_config", "b") == {"tagging": (1, b"small")}
    finally:
        await remote.aclose()
        full.close()
        node.stop()
        for d in disks:
            d.close()


async def test_unresponsive_node_times_out(tmp_path):
    """A node that accepts connections and never answers: calls fail within
    the read timeout, blocking and async alike."""
    import socket

    disks = formatted(tmp_path)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    remote = RemoteDisk(url, disks[2].format.disk_id, 2, disks[2].format, SECRET, "mute",
                        timeout=0.3, connect_timeout=0.3)
    try:
        with pytest.raises(NodeUnavailable, match="timed out"):
            remote.read_now("buckets")
        started = time.monotonic()   # stalled once: the next calls fail at once
        with pytest.raises(NodeUnavailable, match="stalled just now"):
            await remote.read("buckets")
        with pytest.raises(NodeUnavailable, match="stalled just now"):
            remote.read_now("buckets")
        assert time.monotonic() - started < 0.1
        time.sleep(0.3)              # for as long as the timeout, then tried again
        with pytest.raises(NodeUnavailable, match="timed out"):
            await remote.read("buckets")
        assert not remote.check()
        assert remote.online  # a failed call changes nothing: the healer's check decides
    finally:
        await remote.aclose()
        silent.close()
        for d in disks:
            d.close()


async def test_reopened_disk_makes_open_block_files_stale(tmp_path):
    disks = formatted(tmp_path)
    node = Node("n", disks[2:]).start()
    remote = node.remote(disks[2])
    try:
        f = remote.open_block_file("vol")
        f.pwrite(b"data", 0)
        generation = remote.generation
        node.stop()
        node.start()  # same port, a new server: files must be reopened
        with pytest.raises(OSError) as err:
            f.pread(4, 0)
        assert err.value.errno == errno.ESTALE
        assert remote.generation == generation + 1
        assert remote.open_block_file("nothing", create=False) is None
        g = remote.open_block_file("vol", create=False)
        assert g.pread(10, 0) == b"data"
        buf = bytearray(6)
        assert g.preadinto(buf, 2) == 2 and buf[:2] == b"ta"
        g.punch(0, 4)
        assert g.pread(4, 0) == bytes(4) and g.size() == 4
        g.sync()
        assert remote.has_file("vol")
        remote.remove_file("vol")
        assert not remote.has_file("vol")
        with pytest.raises(FileNotFoundError):
            g.pread(4, 0)
        g.close()
        with pytest.raises(OSError):
            g.size()
    finally:
        remote.close()
        node.stop()
        for d in disks:
            d.close()


async def test_tls(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    disks = formatted(tmp_path)
    node = Node("n", disks[2:], ssl_context=server_ctx).start()
    remote = node.remote(disks[2], ssl=client_ctx)
    untrusting = node.remote(disks[2])
    try:
        assert remote.read_now("buckets") == {}
        assert await remote.read("buckets") == {}
        with pytest.raises(OSError):
            untrusting.read_now("buckets")
    finally:
        await remote.aclose()
        untrusting.close()
        node.stop()
        for d in disks:
            d.close()


async def test_bucket_state_is_asked_of_k_disks_when_they_agree(cluster, closing):
    """With remote disks, a bucket's state is read from K disks (the local ones
    first) when their records agree; when they do not, from every disk."""
    from storaged.metadb import DeleteBucket

    store, nodes, disks = await cluster((1, 1))
    closing(store)
    await store.make_bucket("b")
    await store.set_bucket_config("b", "versioning", b"Enabled")
    asked = []
    real_ask = store.set.ask

    async def counting_ask(query, *args, positions=None):
        asked.append(sorted(positions) if positions is not None else "all")
        return await real_ask(query, *args, positions=positions)
    store.set.ask = counting_ask
    assert await store.versioning("b") == "Enabled"
    assert asked == [[0, 1]]                # the two local disks: K = 2, no round trip
    disks[0].commit_now([DeleteBucket("b", force=True)])   # disk 0 lost the record
    asked.clear()
    assert await store.bucket_info("b") is not None
    assert await store.versioning("b") == "Enabled"
    assert asked[:2] == [[0, 1], [2, 3]]    # they disagree: the other disks are asked
    asked.clear()
    assert await store.bucket_info("nosuch") is None
    assert asked == [[0, 1]]                # K disks without it: no such bucket


def test_a_worker_learns_that_the_owner_healed_a_disk(tmp_path):
    """A process that opened a disk while it needed healing (an S3 worker)
    learns at its next check that the owner healed it."""
    from storaged.format import Slot, clear_healing, mark_healing

    disks = formatted(tmp_path)
    try:
        mark_healing(disks[1].root)
        disks[1].close()  # (one LMDB environment per process: it stands for the owner)
        worker = LocalDisk(Slot(disks[1].root, disks[1].format, fresh=True), sync=False)
        worker.open()
        assert worker.healing and worker.check() and worker.healing  # still marked
        clear_healing(disks[1].root)                               # the owner healed it
        assert worker.check() and not worker.healing
        worker.close()
    finally:
        for d in disks:
            d.close()
