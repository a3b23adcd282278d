"""Per-bucket usage counters: exact after every kind of write, equal to a full
recount of the records on every disk (after random work, heals, SIGKILL, and on
data dirs indexed before the counters existed), and read by quorum."""

import random
import shutil

import lmdb

from storaged import ObjectStore
from storaged import usage as usage_mod
from storaged.healing import heal_all
from storaged.metadb import PutObject
from storaged.pools import PooledStore, StorePool
from storaged.usage import Usage

from .helpers import chunks, payload
from .test_crash import KEYS, run_until_killed
from .test_pools import make_sets  # noqa: F401 (fixture)

MIN_PART = 64 * 1024


def check_disks(store):
    """Every online disk's counters equal what its records add up to."""
    for disk in store.disks:
        if disk.online:
            assert disk.meta.usage_counters() == disk.meta.recount_usage(), disk.root


async def put(store, bucket, key, size, seed=""):
    data = payload(f"{key}{seed}", size)
    return await store.put_object(bucket, key, chunks(data), size=size)


async def test_each_kind_of_write_counts_exactly(open_store):
    store = await open_store(4, ec=(2, 2))
    await store.make_bucket("b")
    assert await store.bucket_usage("b") == (0, 0)
    await put(store, "b", "a", 1000)
    await put(store, "b", "big", 300_000)        # shard files, not inline
    assert await store.bucket_usage("b") == (301_000, 2)
    await put(store, "b", "a", 10, seed="2")     # overwrite of the null version
    assert await store.bucket_usage("b") == (300_010, 2)
    await store.delete_object("b", "big")
    assert await store.bucket_usage("b") == (10, 1)
    # Versioned: every version counts, a delete marker does not.
    await store.set_bucket_config("b", "versioning", b"Enabled")
    v1 = await put(store, "b", "a", 500, seed="3")
    assert await store.bucket_usage("b") == (510, 2)  # the null version stays, noncurrent
    marker = await store.delete_object("b", "a")
    assert marker.delete_marker
    assert await store.bucket_usage("b") == (510, 2)
    await store.delete_object("b", "a", marker.version_id)
    await store.delete_object("b", "a", "null")
    assert await store.bucket_usage("b") == (500, 1)
    await store.delete_object("b", "a", v1.version)
    assert await store.bucket_usage("b") == (0, 0)
    # Other buckets are counted apart.
    await store.make_bucket("c")
    await put(store, "c", "x", 7)
    assert await store.bucket_usage("b") == (0, 0)
    assert await store.bucket_usage("c") == (7, 1)
    assert await store.bucket_usage("nobucket") == (0, 0)
    check_disks(store)


async def test_multipart_completion_counts_the_whole_object_once(open_store):
    store = await open_store(4, ec=(2, 2), min_part_size=MIN_PART)
    await store.make_bucket("b")
    up = await store.create_upload("b", "mp")
    parts = []
    for n, size in ((1, MIN_PART), (2, MIN_PART), (3, 1000)):
        part = await store.upload_part("b", "mp", up.upload_id, n,
                                       chunks(payload(f"p{n}", size)), size=size)
        parts.append((n, part.etag))
    assert await store.bucket_usage("b") == (0, 0)  # parts are not versions yet
    await store.complete_upload("b", "mp", up.upload_id, parts)
    assert await store.bucket_usage("b") == (2 * MIN_PART + 1000, 1)
    check_disks(store)


async def test_random_work_keeps_counters_equal_to_a_recount(open_store):
    """Puts, overwrites, markers, versioned deletes and multipart completions in
    versioned, suspended and plain buckets: counters == recount == a model."""
    store = await open_store(4, ec=(2, 2), min_part_size=MIN_PART)
    rng = random.Random(14)
    states = {"plain": None, "ver": b"Enabled", "susp": b"Suspended"}
    for bucket, state in states.items():
        await store.make_bucket(bucket)
        if state:
            await store.set_bucket_config(bucket, "versioning", b"Enabled")
            await store.set_bucket_config(bucket, "versioning", state)
    for step in range(150):
        bucket = rng.choice(list(states))
        key = f"k{rng.randrange(6)}"
        action = rng.random()
        if action < 0.5:
            await put(store, bucket, key, rng.choice([0, 10, 5000, 200_000]), seed=step)
        elif action < 0.6:
            up = await store.create_upload(bucket, key)
            part = await store.upload_part(bucket, key, up.upload_id, 1,
                                           chunks(payload(str(step), 3000)), size=3000)
            await store.complete_upload(bucket, key, up.upload_id, [(1, part.etag)])
        elif action < 0.8:
            await store.delete_object(bucket, key)
        else:
            page = await store.list_versions(bucket, prefix=key)
            if page.entries:
                victim = rng.choice(page.entries).info
                await store.delete_object(bucket, victim.key, victim.version)
        if step % 25 == 24:
            check_disks(store)
    for bucket in states:
        expected = [0, 0]
        after = version = ""
        while True:
            page = await store.list_versions(bucket, key_marker=after, version_marker=version)
            for entry in page.entries:
                if not entry.info.delete_marker:
                    expected[0] += entry.info.size
                    expected[1] += 1
            if not page.truncated:
                break
            after, version = page.next_key_marker, page.next_version_marker
        assert await store.bucket_usage(bucket) == tuple(expected), bucket
    check_disks(store)


async def test_heal_counts_what_it_restores(open_store, roots):
    dirs = roots(4)
    store = await open_store(dirs=dirs, ec=(2, 2))
    await store.make_bucket("b")
    for i in range(5):
        await put(store, "b", f"k{i}", 1000 * (i + 1))
    await store.close()
    shutil.rmtree(dirs[1])
    store = await open_store(dirs=dirs, ec=(2, 2))
    assert store.disks[1].meta.usage_counters() == {}
    assert await store.bucket_usage("b") == (15_000, 5)  # the others still know
    report = await store.heal()
    assert report.failed == 0
    assert store.disks[1].meta.usage_counters() == {"b": Usage(15_000, 5)}
    check_disks(store)


async def test_a_disk_that_missed_writes_does_not_lower_the_usage(open_store):
    store = await open_store(4, ec=(2, 2))
    await store.make_bucket("b")
    await put(store, "b", "a", 100)
    store.disks[3].close()                  # away: misses the next writes
    await put(store, "b", "b", 200)
    await put(store, "b", "c", 300)
    store.disks[3].open()
    store.disks[3].healing = True
    assert store.disks[3].meta.usage_counters() == {"b": Usage(100, 1)}
    assert await store.bucket_usage("b") == (600, 3)
    # A disk keeping a record the others lost (a missed delete) counts until healed.
    rec = store.disks[0].meta.get_object("b", "a")
    await store.delete_object("b", "a")
    await store.disks[0].commit([PutObject("b", "a", rec)])
    assert await store.bucket_usage("b") == (600, 3)
    store.disks[3].healing = False
    report = await heal_all(store, settle_ns=0)  # the stray record is not in flight
    assert report.failed == 0
    assert await store.bucket_usage("b") == (500, 2)
    check_disks(store)


async def test_too_few_disks_is_a_quorum_error(open_store):
    import pytest

    from storaged import ReadQuorumError
    store = await open_store(4, ec=(2, 2))
    await store.make_bucket("b")
    for pos in (0, 1, 2):
        store.disks[pos].close()
    with pytest.raises(ReadQuorumError):
        await store.bucket_usage("b")


async def test_existing_data_dir_is_counted_once_on_open(open_store, roots):
    dirs = roots(4)
    store = await open_store(dirs=dirs, ec=(2, 2))
    for bucket in ("b", "c"):
        await store.make_bucket(bucket)
        await store.set_bucket_config(bucket, "versioning", b"Enabled")
    await put(store, "b", "x", 1000)
    await put(store, "b", "x", 2000, seed="2")
    await store.delete_object("b", "x")        # marker: not counted
    await put(store, "c", "y", 300_000)
    await store.close()
    # As a data dir from before the counters: no usage table at all.
    for root in dirs:
        env = lmdb.open(f"{root}/meta", max_dbs=32)
        table = env.open_db(usage_mod.TABLE)
        with env.begin(write=True) as txn:
            txn.drop(table, delete=True)
        env.close()
    store = await open_store(dirs=dirs, ec=(2, 2))
    for disk in store.disks:
        assert disk.meta.usage_counters() == {"b": Usage(3000, 2), "c": Usage(300_000, 1)}
    assert usage_mod.ensure_counted(store.disks[0].meta.env, store.disks[0].meta.dbs) is False
    await put(store, "b", "z", 5)
    assert await store.bucket_usage("b") == (3005, 3)
    check_disks(store)


async def test_counters_survive_sigkill_mid_writes(roots, tmp_path):
    """A writer killed mid-stream (versioned, with markers): on reopening, each
    disk's counters still equal a recount of its records."""
    dirs = roots(4)
    state = {k: 0 for k in KEYS}
    rng = random.Random(3)
    for round_ in range(3):
        run_until_killed(dirs, state, str(tmp_path / "state.json"), rng.randint(5, 20),
                         versioned=round_ % 2 == 1)
        store = ObjectStore.open(dirs, sync=True)
        try:
            check_disks(store)
            await store.start(heal=False)   # settles interrupted writes (rollbacks)
            check_disks(store)
        finally:
            await store.close()


async def test_pooled_store_sums_its_sets_and_keeps_counting_through_a_drain(make_sets):  # noqa: F811
    a, b = await make_sets(2), await make_sets(2)
    first = PooledStore([StorePool("A", "active", a)])
    await first.make_bucket("bk", {"versioning": b"Enabled"})
    for i in range(12):
        await first.put_object("bk", f"k{i}", chunks(b"x" * (i + 1)), size=i + 1)
    await first.delete_object("bk", "k0")
    assert await first.bucket_usage("bk") == (sum(range(1, 13)), 12)
    ps = PooledStore([StorePool("A", "draining", a), StorePool("B", "active", b)], free_ttl=0)
    for s in b:
        await s.make_bucket("bk", {"versioning": b"Enabled"})
    await ps.put_object("bk", "new", chunks(b"y" * 100), size=100)   # goes to B
    assert await ps.bucket_usage("bk") == (sum(range(1, 13)) + 100, 13)
    assert (await ps.drain("A")).done
    assert await ps.bucket_usage("bk") == (sum(range(1, 13)) + 100, 13)
    for s in a + b:
        check_disks(s)
    assert sum(s.disks[0].meta.usage_counters().get("bk", Usage(0, 0)).objects for s in b) == 13
    assert all(s.disks[0].meta.usage_counters() == {} for s in a)
