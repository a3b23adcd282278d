"""Multipart uploads in the engine: parts, completion by metadata, abort, races."""

import asyncio
import hashlib
import os
import shutil

import pytest

from storaged import EntityTooSmall, InvalidPart, InvalidPartOrder, NoSuchUpload, ObjectAttrs, multipart_etag
from storaged.healing import heal_all

from .helpers import chunks, read

MIB = 1 << 20


def shard_files(store):
    return sorted(f for d in store.disks for _, _, fs in os.walk(os.path.join(d.root, "data"))
                  for f in fs)


async def settle(store):
    while store._tasks:
        await asyncio.gather(*list(store._tasks))


async def upload(store, key, sizes, attrs=None):
    up = await store.create_upload("b", key, attrs)
    datas, parts = [], []
    for n, size in enumerate(sizes, 1):
        data = os.urandom(size)
        part = await store.upload_part("b", key, up.upload_id, n, chunks(data, 300_000),
                                       size=size)
        assert part.etag == hashlib.md5(data).hexdigest()
        datas.append(data)
        parts.append((n, part.etag))
    return up, datas, parts


@pytest.fixture
async def store(open_store):
    s = await open_store(6, ec=(4, 2))
    await s.make_bucket("b")
    return s


async def test_complete_composes_parts_without_copying(store):
    up, datas, parts = await upload(store, "big", [5 * MIB, 5 * MIB + 3, 1234],
                                    ObjectAttrs("video/mp4", {}, {"x": "y"}))
    files_before = shard_files(store)
    info = await store.complete_upload("b", "big", up.upload_id, parts)
    await settle(store)
    assert shard_files(store) == files_before  # same files, now the object's
    body = b"".join(datas)
    assert info.size == len(body) and info.etag == multipart_etag([e for _, e in parts])
    assert info.etag.endswith("-3") and info.content_type == "video/mp4"
    assert await read(store, "b", "big") == body
    for off, length in [(5 * MIB - 10, 20), (0, 5 * MIB + 5), (10 * MIB, 1237), (3, 7)]:
        assert await read(store, "b", "big", off, length) == body[off:off + length]
    with pytest.raises(NoSuchUpload):
        await store.get_upload("b", "big", up.upload_id)


async def test_part_reupload_replaces_and_list_parts(store):
    up = await store.create_upload("b", "k")
    for n in (3, 1, 2):
        await store.upload_part("b", "k", up.upload_id, n, chunks(b"x" * 10), size=10)
    again = await store.upload_part("b", "k", up.upload_id, 2, chunks(b"y" * 20), size=20)
    parts, truncated = await store.list_parts("b", "k", up.upload_id)
    assert [p.number for p in parts] == [1, 2, 3] and not truncated
    assert parts[1].etag == again.etag and parts[1].size == 20
    page, truncated = await store.list_parts("b", "k", up.upload_id, after=1, max_parts=1)
    assert [p.number for p in page] == [2] and truncated
    await settle(store)
    assert len(shard_files(store)) == 3 * 6  # the replaced part's files are gone


async def test_completion_errors(store):
    up, _, parts = await upload(store, "e", [MIB, MIB])
    with pytest.raises(InvalidPartOrder):
        await store.complete_upload("b", "e", up.upload_id, list(reversed(parts)))
    with pytest.raises(InvalidPart):
        await store.complete_upload("b", "e", up.upload_id, [(1, "0" * 32), parts[1]])
    with pytest.raises(InvalidPart):
        await store.complete_upload("b", "e", up.upload_id, [parts[0], (7, parts[1][1])])
    with pytest.raises(EntityTooSmall):
        await store.complete_upload("b", "e", up.upload_id, parts)
    with pytest.raises(NoSuchUpload):
        await store.complete_upload("b", "e", "f" * 32, parts)
    with pytest.raises(NoSuchUpload):
        await store.upload_part("b", "e", "nonsense", 1, chunks(b"x"))
    # the upload is still usable after refused completions
    info = await store.complete_upload("b", "e", up.upload_id, parts[:1])
    assert info.size == MIB


async def test_abort_frees_space_at_once(store):
    up, _, _ = await upload(store, "gone", [2 * MIB, MIB])
    assert shard_files(store)
    await store.abort_upload("b", "gone", up.upload_id)
    await settle(store)
    assert shard_files(store) == []
    assert all(d.pending() == [] for d in store.disks)
    with pytest.raises(NoSuchUpload):
        await store.abort_upload("b", "gone", up.upload_id)


async def test_a_part_of_an_upload_aborted_after_its_check_is_refused_and_purged(store):
    # The gateway reads the upload, then hands it to upload_part, which does not
    # read it again: an abort in between is caught by the part's commit.
    up = await store.create_upload("b", "late")
    checked = await store.get_upload("b", "late", up.upload_id)
    await store.abort_upload("b", "late", up.upload_id)
    with pytest.raises(NoSuchUpload):
        await store.upload_part("b", "late", up.upload_id, 1, chunks(os.urandom(2 * MIB)),
                                upload=checked)
    await settle(store)
    assert shard_files(store) == []
    assert all(d.pending() == [] for d in store.disks)


async def test_unused_parts_are_purged_at_completion(store):
    up, datas, parts = await upload(store, "some", [5 * MIB, MIB, MIB])
    await store.complete_upload("b", "some", up.upload_id, [parts[0], parts[2]])
    await settle(store)
    assert len(shard_files(store)) == 2 * 6
    assert await read(store, "b", "some") == datas[0] + datas[2]


async def test_parallel_parts_and_racing_completions(store):
    data = [[os.urandom(5 * MIB) for _ in range(4)] for _ in range(2)]
    ups = [await store.create_upload("b", "race") for _ in range(2)]

    async def part(i, n):
        return await store.upload_part("b", "race", ups[i].upload_id, n, chunks(data[i][n - 1]))

    results = await asyncio.gather(*(part(i, n) for i in range(2) for n in range(1, 5)))
    lists = [[(n, results[i * 4 + n - 1].etag) for n in range(1, 5)] for i in range(2)]
    await asyncio.gather(*(store.complete_upload("b", "race", up.upload_id, lst)
                           for up, lst in zip(ups, lists)))
    # one whole upload wins: never parts of both
    assert await read(store, "b", "race") in (b"".join(data[0]), b"".join(data[1]))
    records = {d.get_object("b", "race") for d in store.disks}
    assert len(records) == 1


async def test_list_uploads(store):
    ids = {}
    for key in ["a/1", "a/2", "b", "a/1", "c/d/e"]:
        ids.setdefault(key, []).append((await store.create_upload("b", key)).upload_id)
    page = await store.list_uploads("b")
    assert [(u.key, u.upload_id) for u in page.uploads] == \
        [("a/1", ids["a/1"][0]), ("a/1", ids["a/1"][1]), ("a/2", ids["a/2"][0]),
         ("b", ids["b"][0]), ("c/d/e", ids["c/d/e"][0])]
    page = await store.list_uploads("b", delimiter="/")
    assert [u.key for u in page.uploads] == ["b"] and page.prefixes == ["a/", "c/"]
    page = await store.list_uploads("b", prefix="a/", max_uploads=2)
    assert page.truncated and (page.next_key, page.next_upload_id) == ("a/1", ids["a/1"][1])
    page = await store.list_uploads("b", prefix="a/", key_marker="a/1",
                              upload_id_marker=ids["a/1"][1])
    assert [u.key for u in page.uploads] == ["a/2"]


async def test_abandoned_uploads_expire(store):
    up = await store.create_upload("b", "old")
    await store.upload_part("b", "old", up.upload_id, 1, chunks(b"abc"))
    store.upload_expiry = 3600
    assert await store.expire_uploads() == 0
    store.upload_expiry = 0
    assert await store.expire_uploads() == 1
    await settle(store)
    assert shard_files(store) == []


async def test_multipart_objects_survive_disk_loss_and_heal(open_store, roots):
    dirs = roots(6)
    store = await open_store(dirs=dirs, ec=(4, 2))
    await store.make_bucket("b")
    up, datas, parts = await upload(store, "mp", [5 * MIB, 2 * MIB + 1])
    await store.complete_upload("b", "mp", up.upload_id, parts)
    await store.close()
    for i in (0, 3):
        shutil.rmtree(dirs[i])
    store = await open_store(dirs=dirs)
    assert await read(store, "b", "mp") == b"".join(datas)
    report = await store.heal(deep=True)
    assert report.failed == 0 and report.healed == 1
    await store.close()
    for i in (1, 2):
        shutil.rmtree(dirs[i])
    store = await open_store(dirs=dirs)
    assert await read(store, "b", "mp") == b"".join(datas)


async def test_upload_in_progress_is_healed_onto_wiped_disks(open_store, roots):
    """Parts written before two disks were wiped are rebuilt there by a heal, so
    the completed object survives losing the two disks that kept them."""
    dirs = roots(6)
    store = await open_store(dirs=dirs, ec=(4, 2))
    await store.make_bucket("b")
    up, datas, parts = await upload(store, "mp", [5 * MIB, 3 * MIB + 7])
    await store.close()
    for i in (0, 3):
        shutil.rmtree(dirs[i])
    store = await open_store(dirs=dirs)
    report = await store.heal(deep=True)
    assert report.failed == 0 and report.uploads == 1 and report.healed == 1
    assert report.shards_rebuilt == 4  # two parts on two disks
    assert (await store.heal(deep=True)).healed == 0  # nothing left to do
    await store.close()
    for i in (1, 2):  # the disks that kept the parts all along
        shutil.rmtree(dirs[i])
    store = await open_store(dirs=dirs)
    await store.complete_upload("b", "mp", up.upload_id, parts)
    assert await read(store, "b", "mp") == b"".join(datas)


async def test_part_written_while_a_disk_was_away_is_healed(open_store, roots):
    dirs = roots(4)
    store = await open_store(dirs=dirs, ec=(2, 2))
    await store.make_bucket("b")
    up = await store.create_upload("b", "k", None)
    away = store.disks[1]
    away.close()  # offline: the part reaches the write quorum without it
    data = os.urandom(MIB + 5)
    part = await store.upload_part("b", "k", up.upload_id, 1, chunks(data, 200_000),
                                   size=len(data))
    away.open()
    report = await store.heal(deep=False)
    assert report.failed == 0 and report.shards_rebuilt == 1 and report.records_written == 1
    await store.close()
    for i in (0, 2):  # two disks gone: disk 1's rebuilt shard is needed now
        shutil.rmtree(dirs[i])
    store = await open_store(dirs=dirs)
    await store.complete_upload("b", "k", up.upload_id, [(1, part.etag)])
    assert await read(store, "b", "k") == data


async def test_heal_forgets_an_upload_only_a_minority_kept(open_store, roots):
    """An upload aborted while a disk was away leaves its record there; once
    settled, a heal removes it and its part files instead of reviving it."""
    dirs = roots(4)
    store = await open_store(dirs=dirs, ec=(2, 2))
    await store.make_bucket("b")
    up, _, _ = await upload(store, "k", [MIB])
    away = store.disks[3]
    away.close()
    await store.abort_upload("b", "k", up.upload_id)
    away.open()
    await settle(store)
    young = await store.heal(deep=False)
    assert young.removed == 0 and store.disks[3].range(b"uploads", b"b/", b"b/")
    report = await heal_all(store, deep=False, settle_ns=0)
    assert report.removed == 1 and report.uploads == 0
    await settle(store)
    assert not store.disks[3].range(b"uploads", b"b/", b"b/")
    assert shard_files(store) == []


class _Identity:
    """A Seal's encryptor that stores the plaintext as it is (the engine's side)."""

    def update(self, plain):
        return bytes(plain)

    def finish(self):
        return b""


async def test_a_seals_salt_is_kept_with_its_part_and_the_object(store):
    """The engine keeps what the gateway needs to open an encrypted part (its
    salt) in the part's record and in the completed object's; older records
    without one read as an empty salt."""
    from storaged import Seal
    from storaged.meta import ObjectInfo, PartInfo
    from storaged.multipart import PartRecord
    up = await store.create_upload("b", "s")
    salts = [os.urandom(16), b""]
    for n, salt in enumerate(salts, 1):
        seal = Seal(_Identity(), lambda size: size, salt=salt)
        await store.upload_part("b", "s", up.upload_id, n, chunks(b"z" * (5 * MIB)),
                                size=5 * MIB, seal=seal)
    parts, _ = await store.list_parts("b", "s", up.upload_id)
    assert [p.salt for p in parts] == salts
    info = await store.complete_upload("b", "s", up.upload_id,
                                       [(p.number, p.etag) for p in parts])
    stored = await store.head_object("b", "s")
    assert [p.salt for p in info.parts] == [p.salt for p in stored.parts] == salts
    assert ObjectInfo.unpack("b", "s", info.pack()).parts == info.parts
    old = PartRecord(1, 10, "e", {}, "id", 5)  # a record from before salts
    assert PartRecord.unpack(1, old.pack()).salt == b""
    assert PartInfo(*[1, 10, "e", {}, "id", 12]).salt == b""
