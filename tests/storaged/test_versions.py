"""Versioned buckets in the engine: versions, delete markers, the null version,
listing in S3 order against a model, and healing of every version."""

import asyncio
import random
import shutil

import msgpack
import pytest

from storaged import DeleteMarker, NoSuchKey, NoSuchVersion
from storaged.metadb import PutObject
from storaged.store import BLOCK_SIZE

from .helpers import chunks, payload


async def read_version(store, bucket, key, version):
    info = await store.head_object(bucket, key, version)
    reader = await store.get_object(bucket, key, info=info)
    return await reader.read()


def lose(store, *positions):
    """Lose disks for good: closed and their directories gone."""
    for pos in positions:
        store.disks[pos].close()
        shutil.rmtree(store.disks[pos].root)


async def versioned(store, name="b", state=b"Enabled"):
    await store.make_bucket(name)
    await store.set_bucket_config(name, "versioning", state)


async def test_versions_of_one_key(open_store):
    store = await open_store(4, ec=(2, 2))
    await versioned(store)
    sizes = [10, 200_000, 2 * BLOCK_SIZE + 7, 0]
    infos = []
    for i, size in enumerate(sizes):
        infos.append(await store.put_object("b", "k", chunks(payload(f"v{i}", size))))
    assert len({i.version for i in infos}) == len(sizes)
    assert all(i.version != "null" and len(i.version) == 32 for i in infos)
    assert (await store.head_object("b", "k")).version == infos[-1].version
    for i, info in enumerate(infos):
        assert await read_version(store, "b", "k", info.version) == payload(f"v{i}", sizes[i])
    page = await store.list_versions("b")
    assert [e.info.version for e in page.entries] == [i.version for i in reversed(infos)]
    assert [e.is_latest for e in page.entries] == [True, False, False, False]


async def test_delete_marker_and_undelete(open_store):
    store = await open_store(4, ec=(2, 2))
    await versioned(store)
    v1 = await store.put_object("b", "k", chunks(b"one"))
    result = await store.delete_object("b", "k")
    assert result.delete_marker and result.version_id not in (None, "null")
    with pytest.raises(DeleteMarker) as err:
        await store.head_object("b", "k")
    assert err.value.version_id == result.version_id and not err.value.by_id
    with pytest.raises(DeleteMarker) as err:
        await store.head_object("b", "k", result.version_id)
    assert err.value.by_id
    assert (await store.list_objects("b")).objects == []
    assert await read_version(store, "b", "k", v1.version) == b"one"
    # Removing the marker brings the object back.
    removed = await store.delete_object("b", "k", result.version_id)
    assert removed.delete_marker
    assert (await store.head_object("b", "k")).version == v1.version
    assert [o.key for o in (await store.list_objects("b")).objects] == ["k"]


async def test_remove_latest_promotes_previous(open_store):
    store = await open_store(4, ec=(2, 2))
    await versioned(store)
    big = payload("big", BLOCK_SIZE + 3)
    v1 = await store.put_object("b", "k", chunks(big))
    v2 = await store.put_object("b", "k", chunks(b"two"))
    await store.delete_object("b", "k", v2.version)
    assert (await store.head_object("b", "k")).version == v1.version
    assert await read_version(store, "b", "k", v1.version) == big
    with pytest.raises(NoSuchVersion):
        await store.head_object("b", "k", v2.version)
    with pytest.raises(NoSuchVersion):
        await store.head_object("b", "k", "not-a-version")


async def test_null_version_unversioned_then_enabled_then_suspended(open_store):
    store = await open_store(4, ec=(2, 2))
    await store.make_bucket("b")
    old = await store.put_object("b", "k", chunks(b"before versioning"))
    assert old.version == "null"
    await store.set_bucket_config("b", "versioning", b"Enabled")
    assert await store.versioning("b") == "Enabled"
    v1 = await store.put_object("b", "k", chunks(b"v1"))
    assert await read_version(store, "b", "k", "null") == b"before versioning"
    await store.set_bucket_config("b", "versioning", b"Suspended")
    n1 = await store.put_object("b", "k", chunks(b"null again"))
    assert n1.version == "null"
    # The old null version was replaced; v1 stays.
    versions = [(e.info.version, e.is_latest) for e in (await store.list_versions("b")).entries]
    assert versions == [("null", True), (v1.version, False)]
    assert await read_version(store, "b", "k", "null") == b"null again"
    marker = await store.delete_object("b", "k")
    assert marker == type(marker)("null", True)
    versions = [(e.info.version, e.info.delete_marker) for e in (await store.list_versions("b")).entries]
    assert versions == [("null", True), (v1.version, False)]
    with pytest.raises(NoSuchKey):
        await store.head_object("b", "nothing")


async def test_listing_pages_match_a_model(open_store):
    store = await open_store(4, ec=(2, 2))
    await versioned(store)
    rng = random.Random(7)
    keys = ["a", "a/b", "a/c/d", "b", "c/x", "c/y", "d"]
    model: dict[str, list[tuple[str, bool]]] = {k: [] for k in keys}
    for _ in range(300):
        key = rng.choice(keys)
        if rng.random() < 0.2:
            marker = await store.delete_object("b", key)
            model[key].insert(0, (marker.version_id, True))
        else:
            info = await store.put_object("b", key, chunks(b"x" * rng.randrange(50)))
            model[key].insert(0, (info.version, False))
    expected = [(k, v, m, i == 0) for k in sorted(keys) for i, (v, m) in enumerate(model[k])]
    for max_keys in (1, 7, 100, 1000):
        got, key_marker, version_marker = [], "", ""
        while True:
            page = await store.list_versions("b", key_marker=key_marker,
                                       version_marker=version_marker, max_keys=max_keys)
            got += [(e.info.key, e.info.version, e.info.delete_marker, e.is_latest)
                    for e in page.entries]
            if not page.truncated:
                break
            key_marker, version_marker = page.next_key_marker, page.next_version_marker
        assert got == expected, max_keys
    page = await store.list_versions("b", prefix="a", delimiter="/", max_keys=1000)
    assert page.prefixes == ["a/"]
    assert {e.info.key for e in page.entries} == {"a"}
    page = await store.list_versions("b", delimiter="/", max_keys=1000)
    assert page.prefixes == ["a/", "c/"]


async def test_heal_restores_every_version(open_store):
    store = await open_store(6, ec=(4, 2))
    await versioned(store)
    written = {}
    for i in range(5):
        for key, size in (("small", 100 + i), ("large", BLOCK_SIZE * 2 + i)):
            data = payload(f"{key}{i}", size)
            written[(await store.put_object("b", key, chunks(data))).version] = (key, data)
    marker = await store.delete_object("b", "small")
    for disk in store.disks[:2]:
        disk.close()
        shutil.rmtree(disk.root)
    store.healer.owner = True
    store.healer.watch_disks()
    report = await store.heal()
    assert report.failed == 0 and report.healed >= 2
    lose(store, 2, 3)  # every version must now come from the healed ones
    for version, (key, data) in written.items():
        assert await read_version(store, "b", key, version) == data
    with pytest.raises(DeleteMarker):
        await store.head_object("b", "small")
    entries = (await store.list_versions("b")).entries
    assert len(entries) == 11
    small = [e for e in entries if e.info.key == "small"]
    assert small[0].info.version == marker.version_id and small[0].is_latest


async def test_bitrot_in_noncurrent_versions_is_found_and_healed(open_store):
    """Flipped bytes in old versions' shards on two disks: reads by version id are
    correct, and a deep heal rewrites them, so two more lost disks lose nothing."""
    store = await open_store(6, ec=(4, 2))
    await versioned(store)
    written = {}
    for i in range(3):
        for key, size in (("small", 1000 + i), ("large", BLOCK_SIZE + 11 * i)):
            data = payload(f"rot{key}{i}", size)
            written[(await store.put_object("b", key, chunks(data))).version] = (key, data)
    await store.put_object("b", "large", chunks(b"newest"))  # every large one is noncurrent
    for version, (key, _) in written.items():
        info = await store.head_object("b", key, version)
        for pos in info.dist[:2]:
            disk = store.disks[pos]
            if info.inline:
                parsed = (info.mtime_ns, info.version_id)
                blob = bytearray(disk.version_inline("b", key, *parsed))
                blob[-1] ^= 0xFF
                record = disk.get_version("b", key, (info.mtime_ns, info.version_id[:16]))
                disk.commit_now([PutObject("b", key, record, bytes(blob), replace_equal=True,
                                           force=True)])
            else:
                path = disk.shard_path(info.version_id, 1)
                with open(path, "r+b") as f:
                    f.seek(40)
                    byte = f.read(1)
                    f.seek(40)
                    f.write(bytes([byte[0] ^ 0xFF]))
    for version, (key, data) in written.items():
        assert await read_version(store, "b", key, version) == data
    assert store.stats["shards_corrupt"] >= 2 * len(written)
    report = await store.heal(deep=True)
    assert report.failed == 0 and report.shards_rebuilt >= 2 * len(written)
    assert (await store.heal(deep=True)).shards_rebuilt == 0
    lose(store, 2, 3)
    for version, (key, data) in written.items():
        assert await read_version(store, "b", key, version) == data


async def test_leftover_upload_record_never_purges_a_noncurrent_multipart_version(open_store):
    """A disk that missed an upload's completion still holds its record; healing it
    away must keep the part files the (now noncurrent) completed version uses."""
    from storaged.healing import heal_all
    from storaged.metadb import PutPart, PutUpload, upload_key

    store = await open_store(4, ec=(2, 2), min_part_size=1)
    await versioned(store)
    upload = await store.create_upload("b", "mp")
    record = store.disks[0].get(b"uploads", upload_key("b", "mp", upload.upload_id))
    parts = [payload("p1", BLOCK_SIZE + 5), payload("p2", 777)]
    etags = [(await store.upload_part("b", "mp", upload.upload_id, i + 1, chunks(p))).etag
             for i, p in enumerate(parts)]
    prefix = upload.upload_id.encode()
    part_records = store.disks[0].range(b"parts", prefix, prefix)
    done = await store.complete_upload("b", "mp", upload.upload_id,
                                       [(i + 1, e) for i, e in enumerate(etags)])
    await store.put_object("b", "mp", chunks(b"newer"))
    store.disks[0].commit_now([PutUpload("b", "mp", upload.upload_id, record)] + [
        PutPart("b", "mp", upload.upload_id, int.from_bytes(k[len(prefix):], "big"),
                msgpack.unpackb(v)["pid"], v) for k, v in part_records])
    report = await heal_all(store, settle_ns=0)
    assert report.failed == 0 and report.removed >= 1
    await asyncio.gather(*store._tasks)
    lose(store, 1, 2)
    assert await read_version(store, "b", "mp", done.version) == b"".join(parts)


async def test_bucket_settings_survive_wiped_disks_and_are_healed(open_store):
    store = await open_store(4, ec=(2, 2))
    await versioned(store)
    await store.set_bucket_config("b", "lifecycle", b"rules")
    await store.set_bucket_config("b", "lifecycle", None)  # removed: must stay removed
    lose(store, 0, 1)  # the disks read first
    store.healer.owner = True
    store.healer.watch_disks()
    assert [d.healing for d in store.disks[:2]] == [True, True]
    assert await store.versioning("b") == "Enabled"
    assert (await store.heal()).failed == 0
    for disk in store.disks:
        held = disk.bucket_config("b")
        assert held["versioning"][1] == b"Enabled" and held["lifecycle"][1] is None
    lose(store, 2, 3)
    store.healer.watch_disks()
    assert await store.versioning("b") == "Enabled"
    assert await store.bucket_configs("b") == {"versioning": b"Enabled"}


@pytest.mark.parametrize("state", [None, b"Enabled"])
async def test_expecting_delete_never_hits_a_newer_write(open_store, state):
    """What the lifecycle scanner relies on: a delete judged on one version does
    nothing once a newer write is current."""
    store = await open_store(4, ec=(2, 2))
    await store.make_bucket("b")
    if state:
        await store.set_bucket_config("b", "versioning", state)
    old = await store.put_object("b", "k", chunks(b"judged"))
    new = await store.put_object("b", "k", chunks(b"written since"))
    result = await store.delete_object("b", "k", expect=(old.mtime_ns, old.version_id))
    assert result == type(result)(None, False)
    assert await read_version(store, "b", "k", new.version) == b"written since"
    assert len((await store.list_versions("b")).entries) == (2 if state else 1)
    done = await store.delete_object("b", "k", expect=(new.mtime_ns, new.version_id))
    assert done.delete_marker == bool(state)
    with pytest.raises(DeleteMarker if state else NoSuchKey):
        await store.head_object("b", "k")
