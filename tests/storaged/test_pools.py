"""PooledStore: one store over several erasure sets in pools (storaged/pools.py),
on real ObjectStores over local disks (sets of 3 disks, 2+1)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time

import pytest

from storaged import (
    BucketExists,
    BucketNotEmpty,
    DeleteMarker,
    NoSuchKey,
    NoSuchVersion,
    ObjectAttrs,
    ObjectLocked,
    ObjectStore,
    StorageError,
)
from storaged import pools as pools_module
from storaged.pools import NoActivePool, PooledStore, StorePool, set_index

from .helpers import chunks, payload

BLOCK = 64 * 1024
INLINE = 4096
MIN_PART = 1024


@pytest.fixture
async def make_sets(tmp_path):
    """Open ``count`` erasure sets of ``n`` disks each (new directories every call)."""
    opened: list[ObjectStore] = []
    numbers = itertools.count()

    async def make(count: int, n: int = 3, ec: tuple[int, int] = (2, 1)) -> list[ObjectStore]:
        out = []
        for _ in range(count):
            i = next(numbers)
            roots = [str(tmp_path / f"set{i}" / f"d{j}") for j in range(n)]
            s = ObjectStore.open(roots, ec=ec, sync=False, block_size=BLOCK, inline_limit=INLINE,
                                 min_part_size=MIN_PART)
            await s.start(heal=False)
            opened.append(s)
            out.append(s)
        return out

    yield make
    for s in opened:
        await s.close()


def set_free(pool: StorePool, free: int) -> None:
    """Make every disk of ``pool`` report ``free`` bytes on one filesystem."""
    for s in pool.sets:
        for disk in s.disks:
            disk.space = lambda free=free, name=pool.name: (free * 2, free, free, f"fs-{name}")


async def put(store, bucket, key, data, **attrs):
    return await store.put_object(bucket, key, chunks(data), size=len(data),
                                  attrs=ObjectAttrs(**attrs) if attrs else None)


async def read(store, bucket, key, info=None):
    reader = await store.get_object(bucket, key, info=info)
    return await reader.read()


async def pools_holding(ps: PooledStore, bucket: str, key: str) -> list[str]:
    """The pools whose sets hold any version of the key (checking it is in the
    key's own set of that pool and in no other)."""
    out = []
    for pool in ps.pools:
        holders = [i for i, s in enumerate(pool.sets) if await s.resolve(bucket, key) is not None]
        assert holders in ([], [set_index(bucket, key, len(pool.sets))]), (key, pool.name, holders)
        if holders:
            out.append(pool.name)
    return out


async def all_keys(store, bucket, max_keys=1000, **kw):
    keys, after = [], ""
    while True:
        page = await store.list_objects(bucket, after=after, max_keys=max_keys, **kw)
        keys += sorted([o.key for o in page.objects] + page.prefixes)
        if not page.truncated:
            return keys
        after = page.next_marker


async def all_versions(store, bucket, max_keys=1000, **kw):
    out, km, vm = [], "", ""
    while True:
        page = await store.list_versions(bucket, key_marker=km, version_marker=vm,
                                         max_keys=max_keys, **kw)
        items = [(e.info.key, e.info.version, e.is_latest, e.info.delete_marker)
                 for e in page.entries]
        items += [(p, "", None, None) for p in page.prefixes]
        out += sorted(items, key=lambda item: item[0])   # stable: versions keep their order
        if not page.truncated:
            return out
        km, vm = page.next_key_marker, page.next_version_marker


def key_in_set(bucket: str, index: int, count: int, stem: str = "k") -> str:
    return next(f"{stem}{i}" for i in itertools.count() if set_index(bucket, f"{stem}{i}", count)
                == index)


# placement ------------------------------------------------------------------------


def test_set_index_is_the_layouts_and_spreads():
    from cluster.layout import ErasureSetLayout, Pool, set_for_key
    pool = Pool("p", 2, 1, tuple(ErasureSetLayout(i, ()) for i in range(4)))
    chosen = [set_index("bucket", f"key-{i}", 4) for i in range(2000)]
    assert chosen == [set_for_key(pool, "bucket", f"key-{i}") for i in range(2000)]
    assert all(350 < chosen.count(i) < 650 for i in range(4))
    # Independent of the disk rotation inside a set (seed 0 on the same name).
    from storaged.layout import distribution
    rotation = [distribution("bucket", f"key-{i}", 4)[0] for i in range(2000)]
    assert sum(a == b for a, b in zip(chosen, rotation)) < 700


async def test_keys_spread_over_sets_and_read_back(make_sets):
    a, b = await make_sets(2), await make_sets(2)
    ps = PooledStore([StorePool("A", "active", a), StorePool("B", "active", b)], free_ttl=0)
    set_free(ps.pools[0], 100)
    set_free(ps.pools[1], 50)
    await ps.make_bucket("bk")
    data = {f"k{i:02d}": payload(f"k{i}", 100 + i * 3000) for i in range(30)}
    for key, body in data.items():
        await put(ps, "bk", key, body)
    per_set = [0, 0]
    for key, body in data.items():
        assert await pools_holding(ps, "bk", key) == ["A"]   # the emptiest pool
        per_set[set_index("bk", key, 2)] += 1
        assert await read(ps, "bk", key) == body
        assert (await ps.head_object("bk", key)).size == len(body)
    assert min(per_set) >= 5
    assert await all_keys(ps, "bk") == sorted(data)
    # Each set alone holds only its share.
    assert sorted(await all_keys(a[0], "bk") + await all_keys(a[1], "bk")) == sorted(data)
    assert 0 < len(await all_keys(a[0], "bk")) < len(data)


# buckets --------------------------------------------------------------------------


async def test_bucket_created_once_on_every_set_and_deleted_only_when_empty(make_sets):
    a, b = await make_sets(2), await make_sets(2)
    ps = PooledStore([StorePool("A", "active", a), StorePool("B", "active", b)], free_ttl=0)
    await ps.make_bucket("bk", {"versioning": b"Enabled"})
    with pytest.raises(BucketExists):
        await ps.make_bucket("bk")
    for s in a + b:
        assert await s.bucket_info("bk") is not None
        assert await s.versioning("bk") == "Enabled"
    assert [x.name for x in await ps.list_buckets()] == ["bk"]
    # The deciding set decides even when another set already has the name.
    await b[1].make_bucket("other")
    await ps.make_bucket("other")
    for s in a + b:
        assert await s.bucket_info("other") is not None
    # Settings go to every set.
    await ps.set_bucket_config("bk", "versioning", b"Suspended")
    for s in a + b:
        assert await s.versioning("bk") == "Suspended"
    # A key in the last set of the last pool keeps the bucket.
    set_free(ps.pools[0], 1)
    set_free(ps.pools[1], 100)
    key = key_in_set("bk", 1, 2)
    await put(ps, "bk", key, b"x")
    assert await pools_holding(ps, "bk", key) == ["B"]
    with pytest.raises(BucketNotEmpty):
        await ps.delete_bucket("bk")
    for s in a + b:
        assert await s.bucket_info("bk") is not None
    for entry in await all_versions(ps, "bk"):
        await ps.delete_object("bk", entry[0], entry[1])
    await ps.delete_bucket("bk")
    for s in a + b:
        assert await s.bucket_info("bk") is None
    assert await ps.bucket_info("bk") is None


async def test_a_set_the_creation_missed_gets_the_bucket_on_first_write(make_sets):
    sets = await make_sets(2)
    ps = PooledStore([StorePool("A", "active", sets)])
    await ps.make_bucket("bk", {"versioning": b"Enabled"})
    await sets[1].delete_bucket("bk")          # as if the creation stopped after set 0
    key = key_in_set("bk", 1, 2)
    info = await put(ps, "bk", key, b"data")
    assert info.versioned                      # the bucket's settings came along
    assert await sets[1].versioning("bk") == "Enabled"
    assert await read(ps, "bk", key) == b"data"


# expansion ------------------------------------------------------------------------


async def test_second_pool_takes_new_keys_old_ones_stay_in_place(make_sets):
    a, b = await make_sets(2), await make_sets(2)
    one = PooledStore([StorePool("A", "active", a)])
    await one.make_bucket("bk", {"versioning": b"Enabled"})
    await one.make_bucket("plain")
    old = {f"old{i}": payload(f"old{i}", 50 + i * 7000) for i in range(8)}
    for key, body in old.items():
        await put(one, "bk", key, body)
        await put(one, "plain", key, body)
    # Expansion: pool B joins, with more free space.
    ps = PooledStore([StorePool("A", "active", a), StorePool("B", "active", b)], free_ttl=0)
    assert await ps.sync_buckets() == []     # the new pool's sets get the buckets
    for s in b:
        assert await s.versioning("bk") == "Enabled" and await s.bucket_info("plain")
    set_free(ps.pools[0], 10)
    set_free(ps.pools[1], 1000)
    for i in range(6):
        await put(ps, "bk", f"new{i}", b"n" * i)
        assert await pools_holding(ps, "bk", f"new{i}") == ["B"]
    # Old keys are found, and overwritten in their own pool.
    for key, body in old.items():
        assert await read(ps, "bk", key) == body
        assert await read(ps, "plain", key) == body
    v2 = await put(ps, "bk", "old1", b"second")
    await put(ps, "plain", "old2", b"replaced")
    assert await pools_holding(ps, "bk", "old1") == ["A"]
    assert await pools_holding(ps, "plain", "old2") == ["A"]
    assert await read(ps, "bk", "old1") == b"second"
    assert (await ps.head_object("bk", "old1")).version == v2.version
    assert len([v for v in await all_versions(ps, "bk") if v[0] == "old1"]) == 2
    # A delete marker lands in the pool the key lives in, and hides it.
    result = await ps.delete_object("bk", "old3")
    assert result.delete_marker
    assert await pools_holding(ps, "bk", "old3") == ["A"]
    for s in b:
        assert await s.resolve("bk", "old3") is None
    with pytest.raises(DeleteMarker):
        await ps.head_object("bk", "old3")
    assert "old3" not in await all_keys(ps, "bk")
    # Unversioned delete.
    await ps.delete_object("plain", "old4")
    with pytest.raises(NoSuchKey):
        await ps.head_object("plain", "old4")
    # When A is the emptier pool again, new keys go there.
    set_free(ps.pools[0], 5000)
    await put(ps, "bk", "newest", b"z")
    assert await pools_holding(ps, "bk", "newest") == ["A"]
    expected = sorted(set(old) - {"old3"} | {f"new{i}" for i in range(6)} | {"newest"})
    assert await all_keys(ps, "bk") == expected


async def test_draining_pool_never_receives_new_keys_or_versions(make_sets):
    a, b = await make_sets(2), await make_sets(2)
    first = PooledStore([StorePool("A", "active", a)])
    await first.make_bucket("bk", {"versioning": b"Enabled"})
    await first.make_bucket("plain")
    await put(first, "bk", "kept", b"v1")
    await put(first, "bk", "doomed", b"v1")
    await put(first, "plain", "p", b"old")
    await put(first, "plain", "q", b"old")
    ps = PooledStore([StorePool("A", "draining", a), StorePool("B", "active", b)], free_ttl=0)
    for s in b:
        await s.make_bucket("bk", {"versioning": b"Enabled"})
        await s.make_bucket("plain")
    set_free(ps.pools[0], 10**9)            # A looks far emptier: still never chosen
    set_free(ps.pools[1], 1)
    for i in range(5):
        await put(ps, "bk", f"n{i}", b"x")
        assert await pools_holding(ps, "bk", f"n{i}") == ["B"]
    upload = await ps.create_upload("bk", "mp")
    assert await pools_holding(ps, "bk", "mp") == []
    assert (await b[set_index("bk", "mp", 2)].get_upload("bk", "mp", upload.upload_id))
    # A new version of a key of A goes to B and is the one read.
    await put(ps, "bk", "kept", b"v2")
    assert await pools_holding(ps, "bk", "kept") == ["A", "B"]
    assert await read(ps, "bk", "kept") == b"v2"
    assert [v[2] for v in await all_versions(ps, "bk", prefix="kept")] == [True, False]
    # A newer marker in B hides the older object in A: reads, listing, versions.
    await ps.delete_object("bk", "doomed")
    assert await pools_holding(ps, "bk", "doomed") == ["A", "B"]
    with pytest.raises(DeleteMarker):
        await ps.head_object("bk", "doomed")
    assert "doomed" not in await all_keys(ps, "bk")
    assert [(v[2], v[3]) for v in await all_versions(ps, "bk", prefix="doomed")] == \
        [(True, True), (False, False)]
    # Unversioned: the overwrite in B wins; a delete removes the key from both pools.
    await put(ps, "plain", "p", b"new")
    assert await read(ps, "plain", "p") == b"new"
    assert await all_keys(ps, "plain") == ["p", "q"]
    await ps.delete_object("plain", "p")
    assert await pools_holding(ps, "plain", "p") == []
    with pytest.raises(NoSuchKey):
        await ps.head_object("plain", "p")
    # Conditional put sees the version in the draining pool.
    from storaged import Condition, PreconditionFailed
    with pytest.raises(PreconditionFailed):
        await ps.put_object("plain", "q", chunks(b"y"), size=1, condition=Condition(absent=True))
    # Nothing active left: writes are refused, reads go on.
    ps.pools[1].state = "draining"
    with pytest.raises(NoActivePool):
        await put(ps, "bk", "none", b"x")
    assert await read(ps, "bk", "kept") == b"v2"


# listing --------------------------------------------------------------------------


async def test_listing_pages_across_sets_and_pools_give_every_key_once(make_sets):
    a, b = await make_sets(2), await make_sets(3)
    ps = PooledStore([StorePool("A", "active", a), StorePool("B", "active", b)], free_ttl=0)
    await ps.make_bucket("bk", {"versioning": b"Enabled"})
    keys = [f"d{d}/f{f}" for d in range(3) for f in range(3)] + [f"top{i}" for i in range(7)]
    for i, key in enumerate(keys):
        # Alternate the emptiest pool so both pools hold keys.
        set_free(ps.pools[i % 2], 100)
        set_free(ps.pools[1 - i % 2], 10)
        await put(ps, "bk", key, key.encode())
        if i % 3 == 0:
            await put(ps, "bk", key, key.encode() + b"!")
    assert {p for k in keys for p in await pools_holding(ps, "bk", k)} == {"A", "B"}
    versions = sorted((k, v) for k, v, _, _ in await all_versions(ps, "bk"))
    for max_keys in (1, 2, 3, 1000):
        assert await all_keys(ps, "bk", max_keys) == sorted(keys)
        assert await all_keys(ps, "bk", max_keys, delimiter="/") == \
            ["d0/", "d1/", "d2/"] + [f"top{i}" for i in range(7)]
        assert await all_keys(ps, "bk", max_keys, prefix="d1/", delimiter="/") == \
            ["d1/f0", "d1/f1", "d1/f2"]
        listed = await all_versions(ps, "bk", max_keys)
        assert sorted((k, v) for k, v, _, _ in listed) == versions
        assert len(listed) == len(keys) + len(keys[::3])
        assert [k for k, _, _, _ in listed] == sorted(k for k, _, _, _ in listed)
        latest = [k for k, _, is_latest, _ in listed if is_latest]
        assert latest == sorted(keys)
        assert await all_versions(ps, "bk", max_keys, delimiter="/", prefix="") == \
            [("d0/", "", None, None), ("d1/", "", None, None), ("d2/", "", None, None)] + \
            [x for x in listed if x[0].startswith("top")]
    # A page boundary inside the versions of one key.
    page = await ps.list_versions("bk", max_keys=1)
    assert page.truncated and page.entries[0].info.key == "d0/f0"
    rest = await ps.list_versions("bk", key_marker=page.next_key_marker,
                                  version_marker=page.next_version_marker, max_keys=1)
    assert rest.entries[0].info.key == "d0/f0" and not rest.entries[0].is_latest
    assert (await ps.list_objects("bk", max_keys=0)).objects == []


# multipart and copy ----------------------------------------------------------------


async def test_multipart_and_copy_across_pools(make_sets):
    a, b = await make_sets(2), await make_sets(2)
    ps = PooledStore([StorePool("A", "active", a), StorePool("B", "active", b)], free_ttl=0)
    await ps.make_bucket("bk")
    set_free(ps.pools[0], 100)
    set_free(ps.pools[1], 10)
    uploads = {}
    for i in range(6):
        if i == 3:
            set_free(ps.pools[1], 1000)      # later uploads start in B
        key = f"mp{i}"
        uploads[key] = await ps.create_upload("bk", key, ObjectAttrs("text/x", user_meta={"i": str(i)}))
    started_in = {}
    for pool in ps.pools:
        for s in pool.sets:
            for u in (await s.list_uploads("bk")).uploads:
                started_in[u.key] = pool.name
    assert started_in == {f"mp{i}": "A" if i < 3 else "B" for i in range(6)}
    for max_uploads in (1, 2, 3, 100):
        seen, km, um = [], "", ""
        while True:
            page = await ps.list_uploads("bk", key_marker=km, upload_id_marker=um,
                                         max_uploads=max_uploads)
            seen += [u.key for u in page.uploads]
            assert len(page.uploads) <= max_uploads
            if not page.truncated:
                break
            km, um = page.next_key, page.next_upload_id
        assert seen == sorted(uploads)
    body = payload("mp", 3 * 5000 + 17)
    for key, upload in list(uploads.items())[:5]:
        etags = []
        for n in range(4):
            part = await ps.upload_part("bk", key, upload.upload_id, n + 1,
                                        chunks(body[n * 5000:(n + 1) * 5000]))
            etags.append((n + 1, part.etag))
        parts, truncated = await ps.list_parts("bk", key, upload.upload_id)
        assert [p.number for p in parts] == [1, 2, 3, 4] and not truncated
        info = await ps.complete_upload("bk", key, upload.upload_id, etags)
        assert info.etag.endswith("-4")
        assert await read(ps, "bk", key) == body
        assert (await ps.head_object("bk", key)).user_meta == {"i": key[2:]}
        assert await pools_holding(ps, "bk", key) == [started_in[key]]
    await ps.abort_upload("bk", "mp5", uploads["mp5"].upload_id)
    assert (await ps.list_uploads("bk")).uploads == []
    from storaged import NoSuchUpload
    with pytest.raises(NoSuchUpload):
        await ps.get_upload("bk", "mp5", uploads["mp5"].upload_id)
    # Copy from a key in A into a new key (B is the emptier pool) and onto a key of A.
    set_free(ps.pools[1], 10**6)
    copied = await ps.copy_object("bk", "mp0", "bk", "copy")
    assert await pools_holding(ps, "bk", "copy") == ["B"]
    assert await read(ps, "bk", "copy") == body and copied.size == len(body)
    await ps.copy_object("bk", "copy", "bk", "mp1")
    assert await pools_holding(ps, "bk", "mp1") == ["A"]
    assert await read(ps, "bk", "mp1") == body


# draining -------------------------------------------------------------------------


async def _fill_for_drain(store) -> dict[str, bytes]:
    """Versions, markers, tags, metadata, lock settings, multipart and null
    versions in three buckets; returns the latest body of every visible key."""
    await store.make_bucket("ver", {"versioning": b"Enabled"})
    await store.make_bucket("plain")
    await store.make_bucket("susp", {"versioning": b"Enabled"})
    latest: dict[str, bytes] = {}
    for i in range(10):
        key = f"k{i}"
        for v in range(1 + i % 3):
            body = payload(f"{key}.{v}", 10 + (i * 9000 if v == 0 else 300))
            await put(store, "ver", key, body, content_type=f"type/{i}",
                      user_meta={"v": str(v)}, tags={"t": key})
            latest[f"ver/{key}"] = body
    await store.update_object("ver", "k1", None, tags={"changed": "yes"})
    await store.delete_object("ver", "k2")
    del latest["ver/k2"]
    until = time.time_ns() + 3600 * 10**9
    big = payload("locked", 3 * BLOCK + 5)
    await store.put_object("ver", "locked", chunks(big), size=len(big), attrs=ObjectAttrs(
        lock_mode="GOVERNANCE", lock_until_ns=until, legal_hold=True))
    latest["ver/locked"] = big
    upload = await store.create_upload("ver", "multi", ObjectAttrs(user_meta={"m": "1"}))
    body = payload("multi", 2 * 5000 + 3)
    etags = []
    for n in range(3):
        part = await store.upload_part("ver", "multi", upload.upload_id, n + 1,
                                       chunks(body[n * 5000:(n + 1) * 5000]))
        etags.append((n + 1, part.etag))
    await store.complete_upload("ver", "multi", upload.upload_id, etags)
    latest["ver/multi"] = body
    for i in range(6):
        body = payload(f"p{i}", 100 + i * 20000)
        await put(store, "plain", f"p{i}", body)
        latest[f"plain/p{i}"] = body
    await put(store, "susp", "s", b"versioned one")
    await store.set_bucket_config("susp", "versioning", b"Suspended")
    await put(store, "susp", "s", b"the null one")
    latest["susp/s"] = b"the null one"
    return latest


async def _snapshot(store) -> dict:
    """Every version of every bucket as clients see it, with its bytes."""
    out = {}
    for bucket in ("ver", "plain", "susp"):
        km = vm = ""
        while True:
            page = await store.list_versions(bucket, key_marker=km, version_marker=vm, max_keys=7)
            for e in page.entries:
                i = e.info
                data = None if i.delete_marker else await read(store, bucket, i.key, info=i)
                out[(bucket, i.key, i.version)] = (
                    e.is_latest, i.delete_marker, i.mtime_ns, i.version_id, i.etag, i.size,
                    i.content_type, dict(i.user_meta), dict(i.tags), i.lock_mode, i.lock_until_ns,
                    i.legal_hold, i.versioned, [(p.number, p.size, p.etag) for p in i.parts],
                    dict(i.checksums), data)
            if not page.truncated:
                break
            km, vm = page.next_key_marker, page.next_version_marker
    return out


async def _check_readers(store, latest: dict[str, bytes]) -> None:
    """Every visible key reads its latest bytes and lists exactly once."""
    for name, body in latest.items():
        bucket, key = name.split("/", 1)
        assert await read(store, bucket, key) == body, name
    for bucket in ("ver", "plain", "susp"):
        want = sorted(n.split("/", 1)[1] for n in latest if n.startswith(bucket + "/"))
        assert await all_keys(store, bucket, max_keys=4) == want
    with pytest.raises(DeleteMarker):
        await store.head_object("ver", "k2")


def _data_files(sets) -> list[str]:
    return [f for s in sets for d in s.disks
            for _, _, files in os.walk(os.path.join(d.root, "data")) for f in files]


async def test_drain_moves_every_version_and_readers_see_everything(make_sets, monkeypatch):
    a, b, c = await make_sets(2), await make_sets(2), await make_sets(1)
    first = PooledStore([StorePool("A", "active", a)])
    latest = await _fill_for_drain(first)
    before = await _snapshot(first)
    assert len(before) > 25 and _data_files(a)
    drained: list[str] = []

    async def on_drained(name: str) -> None:
        drained.append(name)

    ps = PooledStore([StorePool("A", "draining", a), StorePool("B", "active", b),
                      StorePool("C", "active", c)],
                     on_drained=on_drained, free_ttl=0, purge_delay=0)
    set_free(ps.pools[1], 100)
    set_free(ps.pools[2], 50)
    # Check the readers at every step: a version copied (in both pools), then removed.
    copy, drop = pools_module.relocate.copy_version, pools_module.relocate.drop_version
    steps = []

    async def checked_copy(src, dst, info):
        outcome = await copy(src, dst, info)
        steps.append(("copy", info.key))
        await _check_readers(ps, latest)
        return outcome

    async def checked_drop(src, info, purge=None):
        await drop(src, info, purge)
        steps.append(("drop", info.key))
        await _check_readers(ps, latest)

    monkeypatch.setattr(pools_module.relocate, "copy_version", checked_copy)
    monkeypatch.setattr(pools_module.relocate, "drop_version", checked_drop)
    progress = []
    report = await ps.drain("A", progress=lambda r: progress.append(r.moved))
    assert report.done and report.failed == 0, report.errors
    assert report.moved == len(before) and len(steps) == 2 * len(before)
    assert report.bytes_moved == sum(v[5] for v in before.values() if not v[1])
    assert drained == ["A"] and ps.pools[0].state == "drained"
    assert progress[-1] == len(before)
    # Same versions, same identity, same bytes; the versions of a key stay together.
    after = await _snapshot(ps)
    assert after == before
    for bucket, key, _ in before:
        assert len(await pools_holding(ps, bucket, key)) == 1
        assert "A" not in await pools_holding(ps, bucket, key)
    # Reads by version id, and object lock still holds in the new pool.
    for (bucket, key, version), facts in before.items():
        if not facts[1]:
            info = await ps.head_object(bucket, key, version)
            assert (info.mtime_ns, info.version_id) == (facts[2], facts[3])
    locked = next(v for (bk, k, v) in before if k == "locked")
    with pytest.raises(ObjectLocked):
        await ps.delete_object("ver", "locked", locked)
    # Nothing left in A, its shard files purged.
    for s in a:
        for bucket in ("ver", "plain", "susp"):
            assert (await s.list_versions(bucket)).entries == []
    for _ in range(100):
        if not _data_files(a):
            break
        await asyncio.sleep(0.02)
    assert _data_files(a) == []
    await _check_readers(ps, latest)
    assert (await ps.drain("A")).done
    # The pools left know every bucket with its settings (B decides now).
    for s in b + c:
        assert await s.versioning("ver") == "Enabled" and await s.versioning("susp") == "Suspended"
        assert await s.bucket_info("plain") is not None
    assert (await put(ps, "ver", "after", b"x")).versioned
    await ps.close()


async def test_interrupted_drain_resumes_without_duplicates(make_sets, monkeypatch):
    a, b = await make_sets(2), await make_sets(2)
    first = PooledStore([StorePool("A", "active", a)])
    await first.make_bucket("bk", {"versioning": b"Enabled"})
    for i in range(6):
        await put(first, "bk", f"k{i}", payload(f"k{i}", 9000 * i))
        await put(first, "bk", f"k{i}", b"second")
    await first.update_object("bk", "k3", None, tags={"a": "1"})
    before = await all_versions(first, "bk")
    ps = PooledStore([StorePool("A", "draining", a), StorePool("B", "active", b)],
                     free_ttl=0, purge_delay=0)
    for s in b:
        await s.make_bucket("bk")
    drop = pools_module.relocate.drop_version
    failing = {"k3"}

    async def flaky_drop(src, info, purge=None):
        if info.key in failing:
            raise OSError("node went away")
        await drop(src, info, purge)

    monkeypatch.setattr(pools_module.relocate, "drop_version", flaky_drop)
    report = await ps.drain("A")
    assert not report.done and report.failed == 2 and ps.pools[0].state == "draining"
    assert all("k3" in e for e in report.errors)
    # k3's versions are in both pools now: listed once, read the same.
    assert await pools_holding(ps, "bk", "k3") == ["A", "B"]
    assert await all_versions(ps, "bk") == before
    for max_keys in (1, 2, 3):
        assert await all_versions(ps, "bk", max_keys) == before
    assert await read(ps, "bk", "k3") == b"second"
    # Tags changed meanwhile (in both copies) come along.
    await ps.update_object("bk", "k3", None, tags={"a": "2"})
    failing.clear()
    report = await ps.drain("A")
    assert report.done and report.present == 2 and report.moved == 0
    assert await all_versions(ps, "bk") == before
    assert await pools_holding(ps, "bk", "k3") == ["B"]
    assert dict((await ps.head_object("bk", "k3")).tags) == {"a": "2"}


async def test_deletes_racing_a_move_are_not_lost(make_sets, monkeypatch):
    a, b = await make_sets(2), await make_sets(2)
    first = PooledStore([StorePool("A", "active", a)])
    await first.make_bucket("bk", {"versioning": b"Enabled"})
    early = await put(first, "bk", "early", b"one")    # deleted as the move starts
    await put(first, "bk", "early", b"two")
    late = await put(first, "bk", "late", b"one")      # deleted while in both pools
    await put(first, "bk", "late", b"two")
    ps = PooledStore([StorePool("A", "draining", a), StorePool("B", "active", b)],
                     free_ttl=0, purge_delay=0)
    copy = pools_module.relocate.copy_version
    racers: list[asyncio.Task] = []

    async def racing_copy(src, dst, info):
        if info.version_id == early.version_id:
            # Found only in A, then waits for the move: must find it in B after.
            racers.append(asyncio.ensure_future(ps.delete_object("bk", "early", early.version)))
            await asyncio.sleep(0.05)
            assert not racers[-1].done()
        outcome = await copy(src, dst, info)
        if info.version_id == late.version_id:
            # Found in both pools; A's deletion waits for the move.
            racers.append(asyncio.ensure_future(ps.delete_object("bk", "late", late.version)))
            racers.append(asyncio.ensure_future(
                ps.update_object("bk", "late", None, tags={"during": "move"})))
            await asyncio.sleep(0.05)
            assert not racers[-2].done()
        return outcome

    monkeypatch.setattr(pools_module.relocate, "copy_version", racing_copy)
    report = await ps.drain("A")
    await asyncio.gather(*racers)
    assert report.done and len(racers) == 3
    for key, gone in (("early", early), ("late", late)):
        with pytest.raises(NoSuchVersion):
            await ps.head_object("bk", key, gone.version)
        assert [v[1] for v in await all_versions(ps, "bk", prefix=key)] != [gone.version]
        assert len(await all_versions(ps, "bk", prefix=key)) == 1
        assert await read(ps, "bk", key) == b"two"
    assert dict((await ps.head_object("bk", "late")).tags) == {"during": "move"}


async def test_an_older_null_version_in_a_draining_pool_is_hidden_then_dropped(make_sets):
    a, b = await make_sets(2), await make_sets(2)
    first = PooledStore([StorePool("A", "active", a)])
    await first.make_bucket("bk", {"versioning": b"Enabled"})
    kept = await put(first, "bk", "s", b"versioned")
    await first.set_bucket_config("bk", "versioning", b"Suspended")
    await put(first, "bk", "s", b"old null")
    ps = PooledStore([StorePool("A", "draining", a), StorePool("B", "active", b)],
                     free_ttl=0, purge_delay=0)
    await put(ps, "bk", "s", b"new null")               # into B: a key has one null version
    assert await pools_holding(ps, "bk", "s") == ["A", "B"]
    for max_keys in (1, 2, 1000):
        assert [(v[1], v[2]) for v in await all_versions(ps, "bk", max_keys)] == \
            [("null", True), (kept.version, False)]
    assert await read(ps, "bk", "s") == b"new null"
    report = await ps.drain("A")
    assert report.done and (report.moved, report.superseded) == (1, 1)
    assert [(v[1], v[2]) for v in await all_versions(ps, "bk")] == \
        [("null", True), (kept.version, False)]
    assert await read(ps, "bk", "s") == b"new null"


async def test_uploads_in_a_draining_pool_keep_it_draining(make_sets):
    a, b = await make_sets(1), await make_sets(1)
    first = PooledStore([StorePool("A", "active", a)])
    await first.make_bucket("bk")
    upload = await first.create_upload("bk", "big")
    part = await first.upload_part("bk", "big", upload.upload_id, 1, chunks(b"p" * 2000))
    ps = PooledStore([StorePool("A", "draining", a), StorePool("B", "active", b)], free_ttl=0)
    await b[0].make_bucket("bk")
    report = await ps.drain("A")
    assert not report.done and report.uploads_left == 1 and ps.pools[0].state == "draining"
    # The upload finishes in A; the next drain moves its object.
    await ps.complete_upload("bk", "big", upload.upload_id, [(1, part.etag)])
    report = await ps.drain("A")
    assert report.done and report.moved == 1
    assert await pools_holding(ps, "bk", "big") == ["B"]
    assert await read(ps, "bk", "big") == b"p" * 2000
    # abort_uploads ends what is left.
    await ps.create_upload("bk", "abandoned")                 # in B, active then
    c = await make_sets(1)
    ps2 = PooledStore([StorePool("B", "draining", b), StorePool("C", "active", c)], free_ttl=0)
    report = await ps2.drain("B", abort_uploads=True)
    assert report.done and report.uploads_aborted == 1
    assert await read(ps2, "bk", "big") == b"p" * 2000


# what the gateway and admin API read -----------------------------------------------


async def test_store_surface_for_gateway_and_admin(make_sets):
    a, b = await make_sets(2), await make_sets(1)
    ps = PooledStore([StorePool("A", "active", a), StorePool("B", "active", b)], free_ttl=0)
    assert (ps.k, ps.m, ps.n, ps.write_quorum) == (2, 1, 3, 2)
    assert ps.geometry == a[0].geometry
    assert len(ps.disks) == 9
    states = ps.disk_states()
    assert [(d["pool"], d["set"], d["position"]) for d in states] == \
        [(p, s, i) for p, s in (("A", 0), ("A", 1), ("B", 0)) for i in range(3)]
    events = []
    ps.on_event = lambda e, n: events.append(e)
    assert all(s.on_event is not None for s in a + b)
    ps.lifecycle_day_ns = 10**9
    assert a[1].lifecycle_day_ns == 10**9 and ps.lifecycle_day_ns == 10**9
    ps.read_only = "etcd away"
    from storaged import ReadOnly
    with pytest.raises(ReadOnly):
        await ps.make_bucket("x")
    ps.read_only = None
    await ps.make_bucket("x")
    stamps = [ps.stamp(), a[0].stamp(), b[0].stamp(), a[1].stamp()]
    assert stamps == sorted(set(stamps))        # one clock for every set
    a[1].stats["shards_corrupt"] += 2
    b[0].stats["shards_corrupt"] += 1
    assert ps.stats["shards_corrupt"] == 3
    await put(ps, "x", "k", b"data")
    report = await ps.heal()
    assert report.objects == 1 and report.failed == 0
    assert ps.sets_health()[2] == {"pool": "B", "set": 0, "state": "active", "ec": "2+1",
                                   "write_quorum": 2, "disks_online": 3, "available": True}
    assert await ps.run(sum, [1, 2]) == 3


async def test_health_is_unavailable_when_any_set_lacks_its_quorum(make_sets):
    from gateway.admin import health

    class Request:
        query: dict = {}

    sets = await make_sets(2)
    ps = PooledStore([StorePool("A", "active", sets)])
    resp = await health(Request(), ps)
    body = json.loads(resp.body)
    assert resp.status == 200 and body["status"] == "ok"
    assert [s["available"] for s in body["sets"]] == [True, True]
    sets[1].disks[0].close()
    sets[1].disks[0].reason = "test"
    resp = await health(Request(), ps)
    assert (resp.status, json.loads(resp.body)["status"]) == (200, "degraded")
    sets[1].disks[1].close()
    sets[1].disks[1].reason = "test"
    resp = await health(Request(), ps)
    body = json.loads(resp.body)
    # 4 of 6 disks online overall (more than one set's quorum), but set 1 has 1 of 3.
    assert body["disks_online"] == 4 and body["status"] == "unavailable" and resp.status == 503
    assert [s["available"] for s in body["sets"]] == [True, False]
    # One set: the output is the ObjectStore's, unchanged.
    single = (await make_sets(1))[0]
    resp = await health(Request(), single)
    assert set(json.loads(resp.body)) == {"status", "ec", "write_quorum", "disks_online", "disks"}


async def test_s3_gateway_over_a_pooled_store(make_sets, aiohttp_server):
    """boto3 through the real gateway: the pooled store is a drop-in."""
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    from gateway import Gateway
    from gateway.request import GatewayConfig
    a, b = await make_sets(2), await make_sets(2)
    first = PooledStore([StorePool("A", "active", a)])
    await first.make_bucket("bkt")
    await put(first, "bkt", "old", b"old bytes")
    ps = PooledStore([StorePool("A", "draining", a), StorePool("B", "active", b)], free_ttl=0)
    server = await aiohttp_server(Gateway(ps, GatewayConfig(credentials={"AK": "SK"})).app())
    s3 = boto3.client("s3", endpoint_url=str(server.make_url("")), aws_access_key_id="AK",
                      aws_secret_access_key="SK", region_name="us-east-1",
                      config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))

    def client_work() -> dict:
        s3.create_bucket(Bucket="vers")
        s3.put_bucket_versioning(Bucket="vers", VersioningConfiguration={"Status": "Enabled"})
        for i in range(5):
            s3.put_object(Bucket="bkt", Key=f"new{i}", Body=b"n" * (i * 10000))
        s3.put_object(Bucket="vers", Key="v", Body=b"1")
        s3.put_object(Bucket="vers", Key="v", Body=b"2")
        s3.copy_object(Bucket="bkt", Key="copy", CopySource={"Bucket": "bkt", "Key": "old"})
        mp = s3.create_multipart_upload(Bucket="bkt", Key="mp")
        etag = s3.upload_part(Bucket="bkt", Key="mp", UploadId=mp["UploadId"], PartNumber=1,
                              Body=b"m" * 3000)["ETag"]
        s3.complete_multipart_upload(Bucket="bkt", Key="mp", UploadId=mp["UploadId"],
                                     MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]})
        s3.put_object_tagging(Bucket="bkt", Key="old", Tagging={"TagSet": [{"Key": "t", "Value": "1"}]})
        return {
            "keys": [o["Key"] for o in s3.list_objects_v2(Bucket="bkt", MaxKeys=2)["Contents"]]
            + [o["Key"] for o in s3.list_objects_v2(
                Bucket="bkt", StartAfter="new0")["Contents"]],
            "old": s3.get_object(Bucket="bkt", Key="old")["Body"].read(),
            "copy": s3.get_object(Bucket="bkt", Key="copy")["Body"].read(),
            "mp": s3.get_object(Bucket="bkt", Key="mp")["Body"].read(),
            "tags": s3.get_object_tagging(Bucket="bkt", Key="old")["TagSet"],
            "versions": [v["IsLatest"] for v in s3.list_object_versions(Bucket="vers")["Versions"]],
        }

    got = await asyncio.to_thread(client_work)
    assert got["keys"] == ["copy", "mp", "new1", "new2", "new3", "new4", "old"]
    assert got["old"] == b"old bytes" and got["copy"] == b"old bytes" and got["mp"] == b"m" * 3000
    assert got["tags"] == [{"Key": "t", "Value": "1"}]
    assert got["versions"] == [True, False]
    for key in ("copy", "mp", "new1"):
        assert await pools_holding(ps, "bkt", key) == ["B"]
    for s in b:
        assert await s.bucket_info("vers") is not None
    for s in a:
        assert await s.bucket_info("vers") is not None


async def test_pools_of_other_shapes_inside_one_request(make_sets):
    """The gateway reads bucket records once per request (request_scope): every
    set must still answer from its own disks, whatever its shape."""
    from storaged import request_scope
    a, b = await make_sets(2), await make_sets(1, n=6, ec=(4, 2))
    ps = PooledStore([StorePool("A", "active", a), StorePool("B", "active", b)], free_ttl=0)
    with request_scope():
        await ps.make_bucket("bk", {"versioning": b"Enabled"})
    set_free(ps.pools[0], 1)
    set_free(ps.pools[1], 100)
    for i in range(4):
        with request_scope():
            await put(ps, "bk", f"k{i}", payload(f"k{i}", 70000))
        with request_scope():
            assert await read(ps, "bk", f"k{i}") == payload(f"k{i}", 70000)
            assert await ps.versioning("bk") == "Enabled"
    assert await pools_holding(ps, "bk", "k0") == ["B"]
    assert b[0].k == 4 and (await ps.head_object("bk", "k0")).k == 4
    await ps.make_bucket("other", {"versioning": b"Enabled"})
    await b[0].delete_bucket("other")                # as if B's creation had been cut short
    with request_scope():
        await put(ps, "other", "again", b"x")        # B gets the bucket back first
        assert [e.info.key for e in (await ps.list_versions("other")).entries] == ["again"]
    assert await b[0].versioning("other") == "Enabled"


async def test_cluster_hooks_reach_the_right_sets(make_sets):
    class Names:
        def __init__(self):
            self.claims, self.released = [], []

        async def claim(self, name, record):
            if name in self.claims:
                return False
            self.claims.append(name)
            return True

        async def release(self, name, record):
            self.released.append(name)
            self.claims.remove(name)

    a, b = await make_sets(2), await make_sets(1)
    ps = PooledStore([StorePool("A", "draining", a), StorePool("B", "active", b)], free_ttl=0,
                     purge_delay=0)
    names = Names()
    ps.bucket_names = names
    ps.leads = lambda job: job == "heal"
    assert all(not s.leads("lifecycle") and s.leads("heal") for s in a + b)
    await ps.make_bucket("bk")
    with pytest.raises(BucketExists):
        await ps.make_bucket("bk")
    assert names.claims == ["bk"]                    # claimed once, by the deciding set
    for s in a + b:
        assert await s.bucket_info("bk") is not None
    await ps.delete_bucket("bk")
    assert names.released == ["bk"] and names.claims == []
    await ps.make_bucket("bk2")
    assert (await ps.drain("A")).done
    assert b[0].bucket_names is names and a[0].bucket_names is None   # B decides now
    with pytest.raises(BucketExists):
        await ps.make_bucket("bk2")
    await ps.make_bucket("bk3")
    assert names.claims == ["bk2", "bk3"]


async def test_encrypted_objects_through_a_pooled_store(make_sets):
    """The pooled store passes a write's Seal and a read's stored flag to the set
    that holds the key (SSE objects in cluster mode)."""
    from gateway.sse_packages import Encryptor, PackageCipher, sealed_size
    from storaged.writer import Seal

    a = await make_sets(2)
    ps = PooledStore([StorePool("A", "active", a)], free_ttl=0)
    await ps.make_bucket("bk")
    key = os.urandom(32)
    body = payload("secret", 300_000)
    seal = Seal(Encryptor(PackageCipher(key)), sealed_size)
    info = await ps.put_object("bk", "enc", chunks(body, 50_000), size=len(body), seal=seal,
                               attrs=ObjectAttrs(encryption='{"mode": "AES256"}'))
    assert info.size == len(body) and info.stored_size == sealed_size(len(body))
    with pytest.raises(StorageError):  # never read as if it were plaintext
        await ps.get_object("bk", "enc")
    reader = await ps.get_object("bk", "enc", 0, sealed_size(len(body)), stored=True)
    stored = await reader.read()
    assert body[:64] not in stored
    assert PackageCipher(key).open_span(0, stored, len(body)) == body
