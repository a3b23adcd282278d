"""The object API: buckets, put/get/head/delete/copy, ranges, metadata, errors."""

import asyncio
import hashlib
import os

import pytest

from storaged import (
    BucketExists,
    BucketNotEmpty,
    Condition,
    DigestMismatch,
    IncompleteBody,
    InvalidRange,
    NoSuchBucket,
    NoSuchKey,
    ObjectAttrs,
    PreconditionFailed,
    ReadOnly,
    WriteQuorumError,
)
from storaged.store import BLOCK_SIZE, INLINE_LIMIT, DeleteResult

from .helpers import chunks, read, sizes_around

SIZES = [0, 1] + sizes_around(INLINE_LIMIT, BLOCK_SIZE, 2 * BLOCK_SIZE, 3 * BLOCK_SIZE) + [7_654_321]


async def test_buckets(open_store):
    store = await open_store()
    assert await store.list_buckets() == []
    await store.make_bucket("photos")
    await store.make_bucket("archive")
    assert [b.name for b in await store.list_buckets()] == ["archive", "photos"]
    with pytest.raises(BucketExists):
        await store.make_bucket("photos")
    await store.put_object("photos", "a.jpg", chunks(b"jpeg"))
    with pytest.raises(BucketNotEmpty):
        await store.delete_bucket("photos")
    await store.delete_object("photos", "a.jpg")
    await store.delete_bucket("photos")
    assert [b.name for b in await store.list_buckets()] == ["archive"]
    with pytest.raises(NoSuchBucket):
        await store.delete_bucket("photos")
    with pytest.raises(NoSuchBucket):
        await store.put_object("photos", "x", chunks(b"x"))
    with pytest.raises(NoSuchBucket):
        await store.head_object("photos", "x")


@pytest.mark.parametrize("ec,n", [((2, 2), 4), ((4, 2), 6), ((1, 0), 1), ((3, 1), 4)])
async def test_round_trip_sizes(open_store, ec, n):
    store = await open_store(n, ec=ec)
    await store.make_bucket("b")
    for size in SIZES:
        data = os.urandom(size)
        info = await store.put_object("b", f"obj-{size}", chunks(data, 100_003))
        assert info.size == size
        assert info.etag == hashlib.md5(data).hexdigest()
        assert info.inline == (size <= INLINE_LIMIT)
        assert await read(store, "b", f"obj-{size}") == data
        assert (await store.head_object("b", f"obj-{size}")).etag == info.etag


async def test_unknown_and_known_length_bodies(open_store):
    store = await open_store()
    await store.make_bucket("b")
    data = os.urandom(3 * BLOCK_SIZE + 17)
    await store.put_object("b", "known", chunks(data), size=len(data))
    await store.put_object("b", "unknown", chunks(data, 1 << 20))
    assert await read(store, "b", "known") == await read(store, "b", "unknown") == data


async def test_ranges_read_only_touched_blocks(open_store):
    store = await open_store(6, ec=(4, 2))
    await store.make_bucket("b")
    data = os.urandom(5 * BLOCK_SIZE + 1234)
    await store.put_object("b", "big", chunks(data))
    cases = [(0, 1), (0, len(data)), (BLOCK_SIZE - 1, 2), (BLOCK_SIZE, BLOCK_SIZE),
             (len(data) - 1, 1), (12345, 3 * BLOCK_SIZE), (len(data) - 10, None), (7, 0)]
    for offset, length in cases:
        end = len(data) if length is None else offset + length
        assert await read(store, "b", "big", offset, length) == data[offset:end]
    # Reading past the end is clamped; starting past it is an error.
    assert await read(store, "b", "big", len(data) - 3, 100) == data[-3:]
    with pytest.raises(InvalidRange):
        await store.get_object("b", "big", len(data) + 1)


async def test_ranges_of_small_objects(open_store):
    store = await open_store()
    await store.make_bucket("b")
    await store.put_object("b", "s", chunks(b"0123456789"))
    assert await read(store, "b", "s", 2, 3) == b"234"
    assert await read(store, "b", "s", 9) == b"9"


async def test_metadata_and_content_headers(open_store):
    store = await open_store()
    await store.make_bucket("b")
    attrs = ObjectAttrs("text/plain; charset=utf-8",
                        {"content-encoding": "gzip", "cache-control": "no-cache"},
                        {"owner": "ada", "ünï": "cödé"})
    await store.put_object("b", "doc", chunks(b"hello"), attrs=attrs)
    info = await store.head_object("b", "doc")
    assert info.content_type == "text/plain; charset=utf-8"
    assert info.headers == {"content-encoding": "gzip", "cache-control": "no-cache"}
    assert info.user_meta == {"owner": "ada", "ünï": "cödé"}
    assert info.last_modified.tzinfo is not None


async def test_overwrite_and_delete(open_store, tmp_path):
    store = await open_store()
    await store.make_bucket("b")
    big1, big2 = os.urandom(2 * BLOCK_SIZE), os.urandom(BLOCK_SIZE + 5)
    v1 = await store.put_object("b", "k", chunks(big1))
    v2 = await store.put_object("b", "k", chunks(big2))
    assert v1.version_id != v2.version_id
    assert await read(store, "b", "k") == big2
    await store.put_object("b", "k", chunks(b"small now"))
    assert await read(store, "b", "k") == b"small now"
    await asyncio.sleep(0.05)  # background purge of replaced shard files
    await asyncio.gather(*store._tasks)
    leftovers = [f for d in store.disks for _, _, fs in os.walk(os.path.join(d.root, "data"))
                 for f in fs]
    assert leftovers == []
    assert (await store.delete_object("b", "k")).delete_marker is False
    with pytest.raises(NoSuchKey):
        await store.head_object("b", "k")
    # deleting nothing is fine
    assert (await store.delete_object("b", "k")) == DeleteResult(None, False)


async def test_copy_object(open_store):
    store = await open_store()
    await store.make_bucket("src")
    await store.make_bucket("dst")
    data = os.urandom(BLOCK_SIZE * 2 + 3)
    await store.put_object("src", "a", chunks(data), attrs=ObjectAttrs("image/png", {}, {"x": "1"}))
    info = await store.copy_object("src", "a", "dst", "b")
    assert info.content_type == "image/png" and info.user_meta == {"x": "1"}
    assert await read(store, "dst", "b") == data
    replaced = await store.copy_object("src", "a", "src", "a", attrs=ObjectAttrs("text/plain"))
    assert replaced.content_type == "text/plain" and replaced.user_meta == {}
    assert await read(store, "src", "a") == data


async def test_bad_bodies_leave_nothing(open_store):
    store = await open_store()
    await store.make_bucket("b")
    await store.put_object("b", "k", chunks(b"original"))

    async def broken():
        yield os.urandom(BLOCK_SIZE)
        yield os.urandom(BLOCK_SIZE)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put_object("b", "k", broken())
    with pytest.raises(IncompleteBody):
        await store.put_object("b", "k", chunks(os.urandom(3 * BLOCK_SIZE)), size=4 * BLOCK_SIZE)
    with pytest.raises(IncompleteBody):
        await store.put_object("b", "k", chunks(b"short"), size=10)
    data = os.urandom(BLOCK_SIZE * 2)
    with pytest.raises(DigestMismatch):
        await store.put_object("b", "k", chunks(data), content_md5=hashlib.md5(b"other").digest())
    with pytest.raises(DigestMismatch):
        await store.put_object("b", "small", chunks(b"abc"), content_md5=b"\0" * 16)

    def reject(md5_hex):
        raise ValueError("checksum mismatch")

    with pytest.raises(ValueError):
        await store.put_object("b", "k", chunks(data), finalize=reject)
    assert await read(store, "b", "k") == b"original"
    with pytest.raises(NoSuchKey):
        await store.head_object("b", "small")
    await asyncio.gather(*store._tasks)
    for d in store.disks:
        assert os.listdir(os.path.join(d.root, "tmp")) == []
        assert [f for _, _, fs in os.walk(os.path.join(d.root, "data")) for f in fs] == []
        assert d.pending() == []


async def test_hashers_and_finalize_store_checksums(open_store):
    store = await open_store()
    await store.make_bucket("b")
    data = os.urandom(3 * BLOCK_SIZE + 1)
    sha = hashlib.sha256()
    seen = []

    def finalize(md5_hex):
        seen.append(md5_hex)
        return {"SHA256": sha.hexdigest()}

    info = await store.put_object("b", "k", chunks(data), hashers=[sha], finalize=finalize)
    assert seen == [hashlib.md5(data).hexdigest()]
    assert info.checksums == {"SHA256": hashlib.sha256(data).hexdigest()}
    assert (await store.head_object("b", "k")).checksums == info.checksums


async def test_conditional_writes(open_store):
    store = await open_store()
    await store.make_bucket("b")
    first = await store.put_object("b", "k", chunks(b"one"), condition=Condition(absent=True))
    with pytest.raises(PreconditionFailed):
        await store.put_object("b", "k", chunks(b"two"), condition=Condition(absent=True))
    with pytest.raises(PreconditionFailed):
        await store.put_object("b", "k", chunks(b"two"), condition=Condition(etag="nope"))
    await store.put_object("b", "k", chunks(b"two"), condition=Condition(etag=first.etag))
    assert await read(store, "b", "k") == b"two"


async def test_concurrent_overwrites_converge(open_store):
    store = await open_store()
    await store.make_bucket("b")
    datas = [os.urandom(BLOCK_SIZE + i) for i in range(8)]
    await asyncio.gather(*(store.put_object("b", "k", chunks(d)) for d in datas))
    got = await read(store, "b", "k")
    assert got in datas
    records = {d.get_object("b", "k") for d in store.disks}
    assert len(records) == 1  # every disk agrees on the winner


async def test_long_and_unicode_keys(open_store):
    store = await open_store()
    await store.make_bucket("b")
    keys = ["é/ü/€", "a" * 1024, "a" * 1023 + "b", "a" * 600 + "z", "a" * 400, "a" * 401,
            "tab\tnew\nline", "💾"]
    for key in keys:
        await store.put_object("b", key, chunks(key.encode()))
    for key in keys:
        assert await read(store, "b", key) == key.encode()
    listed = [o.key for o in (await store.list_objects("b")).objects]
    assert listed == sorted(keys, key=lambda k: k.encode())


async def test_concurrent_bucket_creation_has_one_winner(open_store):
    """Creators that all saw the name free race to the disks: one wins, the
    others are told the bucket exists, and the winner's bucket is untouched."""
    store = await open_store()
    for round_ in range(5):
        name = f"race{round_}"
        results = await asyncio.gather(*(store.make_bucket(name) for _ in range(8)),
                                       return_exceptions=True)
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1, results
        assert all(isinstance(e, BucketExists) for e in losers), losers
        info = await store.bucket_info(name)
        assert info is not None and info.created_ns == winners[0].created_ns
        assert len({d.get_bucket(name) for d in store.disks}) == 1  # one record everywhere


async def test_a_read_only_store_refuses_every_write_and_serves_reads(open_store):
    store = await open_store()
    await store.make_bucket("b")
    await store.put_object("b", "k", chunks(b"kept"))
    upload = await store.create_upload("b", "u")
    store.read_only = "etcd is away"
    attempts = [
        store.put_object("b", "k2", chunks(b"x")),
        store.delete_object("b", "k"),
        store.make_bucket("c"),
        store.delete_bucket("b"),
        store.set_bucket_config("b", "versioning", b"Enabled"),
        store.update_object("b", "k", None, tags={"a": "b"}),
        store.create_upload("b", "u2"),
        store.upload_part("b", "u", upload.upload_id, 1, chunks(b"p")),
        store.complete_upload("b", "u", upload.upload_id, [(1, "x")]),
        store.abort_upload("b", "u", upload.upload_id),
    ]
    for attempt in attempts:
        with pytest.raises(ReadOnly, match="etcd is away"):
            await attempt
    assert await read(store, "b", "k") == b"kept"
    assert [o.key for o in (await store.list_objects("b")).objects] == ["k"]
    store.read_only = None
    await store.put_object("b", "k2", chunks(b"x"))
    assert await read(store, "b", "k2") == b"x"


class Names:
    """A register of bucket names like a cluster's etcd (ObjectStore.bucket_names)."""

    def __init__(self, taken=()):
        self.held = {name: b"someone else" for name in taken}
        self.released = []

    async def claim(self, name, record):
        return self.held.setdefault(name, record) == record

    async def release(self, name, record):
        self.released.append(name)
        if self.held.get(name) == record:
            del self.held[name]


async def test_bucket_names_are_claimed_first_and_released_on_failure_and_deletion(open_store):
    store = await open_store()
    store.bucket_names = names = Names(taken=["elsewhere"])
    with pytest.raises(BucketExists):       # claimed through another node
        await store.make_bucket("elsewhere")
    assert await store.bucket_info("elsewhere") is None
    await store.make_bucket("b")
    assert "b" in names.held
    await store.delete_bucket("b")
    assert "b" not in names.held
    for disk in store.disks[:2]:            # below the write quorum: the claim goes back
        disk.close()
    with pytest.raises(WriteQuorumError):
        await store.make_bucket("c")
    assert "c" not in names.held and names.released[-1] == "c"


def count_queries(store) -> list[str]:
    """The names of the metadata queries the store's set asks from now on."""
    asked: list[str] = []
    real_ask = store.set.ask

    async def counting_ask(query, *args, **kwargs):
        asked.append(query)
        return await real_ask(query, *args, **kwargs)
    store.set.ask = counting_ask
    return asked


async def test_a_request_scope_reads_bucket_records_and_settings_once(open_store):
    from storaged import request_scope
    store = await open_store()
    await store.make_bucket("b")
    asked = count_queries(store)
    with request_scope():
        for _ in range(3):
            await store.require_bucket("b")
            await store.versioning("b")
            await store.bucket_config("b", "lock")
        assert asked == ["bucket_state"]          # record and settings in one query
        await store.set_bucket_config("b", "versioning", b"Enabled")  # a change is seen at once
        assert await store.versioning("b") == "Enabled"
    asked.clear()
    await store.versioning("b")
    await store.versioning("b")
    assert asked == ["bucket_state"] * 2          # outside a request: read every time


async def test_a_small_get_asks_each_disk_one_query(open_store):
    """A GET of a small object in a request scope asks each disk once for the
    record, the bucket's state and the inline shard (a round trip per remote disk)."""
    from storaged import request_scope
    store = await open_store()
    await store.make_bucket("b")
    body = b"small object " * 100
    await store.put_object("b", "k", chunks(body))
    asked = count_queries(store)
    with request_scope():
        info = await store.head_object("b", "k", body=True)
        await store.versioning("b")
        assert await (await store.get_object("b", "k", info=info)).read() == body
    assert asked == ["object_view"]
    asked.clear()
    with request_scope():   # a HEAD does not fetch the shards; a GET after it asks for them
        info = await store.head_object("b", "k")
        assert await (await store.get_object("b", "k", info=info)).read() == body
    assert asked == ["object_view", "version_inline"]
    asked.clear()
    with request_scope():   # judged by the bucket's settings first: still one query
        await store.prefetch("b", "k", body=True)
        await store.bucket_configs("b")
        info = await store.head_object("b", "k", body=True)
        assert await (await store.get_object("b", "k", info=info)).read() == body
    assert asked == ["object_view"]


async def test_a_small_get_reads_the_disks_the_resolve_did_not_bring(open_store):
    """A disk that missed the latest write gives no inline shard to the resolve:
    the reader asks the others again and the object reads whole."""
    from storaged import request_scope
    store = await open_store()
    await store.make_bucket("b")
    await store.put_object("b", "k", chunks(b"old" * 500))
    store.disks[0].online = False            # misses the overwrite
    await store.put_object("b", "k", chunks(b"new" * 500))
    store.disks[0].online = True
    with request_scope():
        info = await store.head_object("b", "k", body=True)
        assert await (await store.get_object("b", "k", info=info)).read() == b"new" * 500


async def test_an_upload_stops_when_the_store_turns_read_only(open_store):
    """A node that goes read-only mid-upload (its cluster lease lost) refuses
    the rest of the body at once and stores nothing."""
    from storaged import ReadOnly
    store = await open_store()
    await store.make_bucket("b")

    async def body():
        yield bytes(BLOCK_SIZE * 4)
        store.read_only = "cluster lease lost"
        yield bytes(BLOCK_SIZE * 4)
    with pytest.raises(ReadOnly, match="lease lost"):
        await store.put_object("b", "k", body())
    store.read_only = None
    assert (await store.list_objects("b")).objects == []
    for disk in store.disks:
        assert os.listdir(os.path.join(disk.root, "tmp")) == []
