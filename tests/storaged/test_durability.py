"""Durability at 4+2 on 6 disks: wiped disks, flipped bytes, heal, then more loss.

Objects of sizes 0, 1, inline limit ±1, block size ±1 and 50 MiB must read back
byte-identical whenever no more than M=2 disks are lost or corrupt.
"""

import asyncio
import itertools
import os
import shutil

import pytest

from storaged import ObjectStore
from storaged.healing import HealReport
from storaged.layout import HASH_LEN
from storaged.metadb import PutObject, encode_key
from storaged.store import BLOCK_SIZE, INLINE_LIMIT

from .helpers import chunks, payload, read

SIZES = [0, 1, INLINE_LIMIT - 1, INLINE_LIMIT, INLINE_LIMIT + 1,
         BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1, 50 << 20]
PAIRS = list(itertools.combinations(range(6), 2))


async def _build_pristine(dirs):
    store = ObjectStore.open(dirs, ec=(4, 2), sync=True)
    await store.start(heal=False)
    await store.make_bucket("b")
    expected = {}
    for size in SIZES:
        data = payload(f"obj{size}", size)
        await store.put_object("b", f"obj{size}", chunks(data, 1 << 20))
        expected[f"obj{size}"] = data
    await store.close()
    return expected


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """The loaded disk set, built once per module (copied by each test)."""
    base = tmp_path_factory.mktemp("pristine")
    dirs = [str(base / f"disk{i}") for i in range(6)]
    expected = asyncio.run(_build_pristine(dirs))
    return dirs, expected


@pytest.fixture
def loaded(pristine, tmp_path):
    src, expected = pristine
    dirs = [str(tmp_path / f"disk{i}") for i in range(6)]
    for s, d in zip(src, dirs):
        shutil.copytree(s, d)
    return dirs, expected


async def check_all(store, expected):
    for key, data in expected.items():
        assert await read(store, "b", key) == data, key
        if len(data) > 10:
            mid = len(data) // 2
            assert await read(store, "b", key, mid - 3, 7) == data[mid - 3:mid + 4], key


def wipe(dirs, positions):
    for p in positions:
        shutil.rmtree(dirs[p])


@pytest.mark.parametrize("pair", PAIRS, ids=[f"wipe{a}{b}" for a, b in PAIRS])
async def test_any_two_wiped_disks_lose_nothing(loaded, open_store, pair, tmp_path):
    dirs, expected = loaded
    wipe(dirs, pair)
    store = await open_store(dirs=dirs)
    assert [d.position for d in store.disks if d.healing] == list(pair)
    await check_all(store, expected)
    assert store.stats["shards_missing"] > 0


def flip_bytes(path, offsets):
    with open(path, "r+b") as f:
        for off in offsets:
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0xFF]))


async def corrupt(store, key, positions):
    """Flip bytes in the shards of ``key`` on ``positions`` (files or inline)."""
    info = await store.head_object("b", key)
    for pos in positions:
        disk = store.disks[pos]
        if info.inline:
            blob = bytearray(disk.get_inline("b", key))
            blob[-1] ^= 0xFF
            disk.commit_now([PutObject("b", key, disk.get_object("b", key), bytes(blob),
                                       replace_equal=True)])
            continue
        path = disk.shard_path(info.version_id, 1)
        size = os.path.getsize(path)
        flip_bytes(path, sorted({HASH_LEN, size // 2, size - 1, 3}))


def drop_inline(disk, bucket, key):
    """Lose a disk's inline shard of ``key``, keeping its record."""
    with disk.meta.env.begin(write=True) as txn:
        assert txn.delete(encode_key(bucket, key), db=disk.meta.dbs[b"inline"])


async def test_flipped_bytes_on_two_disks_read_correctly_and_are_reported(loaded, open_store):
    dirs, expected = loaded
    store = await open_store(dirs=dirs)
    for i, key in enumerate(expected):
        if expected[key]:
            await corrupt(store, key, [(i) % 6, (i + 3) % 6])
    await check_all(store, expected)
    assert store.stats["shards_corrupt"] > 0
    damaged = {key for key, data in expected.items() if data}
    queued = set()
    while (item := store.heal_queue.pop()) is not None:
        queued.add(item[0][1])
        assert item[1] is True  # corruption asks for a deep heal
    assert queued == damaged


async def test_heal_then_lose_two_other_disks(loaded, open_store):
    dirs, expected = loaded
    store = await open_store(dirs=dirs)
    for key in expected:
        if expected[key]:
            await corrupt(store, key, [0, 1])
    report = await store.heal(deep=True)
    assert report.failed == 0 and report.healed == len([d for d in expected.values() if d])
    assert report.shards_rebuilt == 2 * report.healed
    again = await store.heal(deep=True)
    assert again.healed == 0  # the first heal left nothing to do
    await store.close()
    wipe(dirs, [2, 3])
    store = await open_store(dirs=dirs)
    await check_all(store, expected)


async def test_wiped_disks_are_healed_completely(loaded, open_store):
    dirs, expected = loaded
    wipe(dirs, [1, 4])
    store = await open_store(dirs=dirs)
    progress = []
    report = await store.heal(deep=False, progress=progress.append)
    assert report.objects == len(expected) and report.failed == 0
    assert progress and not any(d.healing for d in store.disks)
    assert not any(os.path.exists(os.path.join(d, ".healing")) for d in dirs)
    await store.close()
    wipe(dirs, [0, 5])  # the healed disks now carry the data
    store = await open_store(dirs=dirs)
    await check_all(store, expected)


async def test_disk_wiped_while_running_is_detected_and_healed(loaded, open_store):
    dirs, expected = loaded
    store = await open_store(dirs=dirs)
    wipe(dirs, [2, 5])
    await check_all(store, expected)  # reads rebuild from the others
    store.healer.watch_disks()
    assert all(store.disks[p].online and store.disks[p].healing for p in (2, 5))
    report = await store.heal(deep=False)
    assert report.failed == 0
    await store.close()
    wipe(dirs, [0, 1])
    store = await open_store(dirs=dirs)
    await check_all(store, expected)


async def test_three_lost_disks_fail_loudly_not_silently(loaded, open_store):
    from storaged import ReadQuorumError
    dirs, expected = loaded
    wipe(dirs, [0, 1, 2])
    store = await open_store(dirs=dirs)
    with pytest.raises(ReadQuorumError):
        await read(store, "b", f"obj{50 << 20}")


async def test_disk_back_after_being_away_is_healed_completely(open_store, tmp_path):
    """Writes made while a disk was away reach it through a full heal, so the set
    again survives losing any two other disks."""
    dirs = [str(tmp_path / f"disk{i}") for i in range(6)]
    # Real disks (not dirs inside a data dir): a missing one is not recreated.
    store = await open_store(dirs=dirs, ec=(4, 2), create=lambda root: False)
    await store.make_bucket("b")
    os.rename(dirs[1], dirs[1] + ".away")
    store.healer.watch_disks()
    assert not store.disks[1].online
    expected = {f"k{i}": os.urandom(size) for i, size in enumerate((10, 300_000, 3 << 20))}
    for key, data in expected.items():
        await store.put_object("b", key, chunks(data, 100_000), size=len(data))
    os.rename(dirs[1] + ".away", dirs[1])
    store.healer.watch_disks()
    assert store.disks[1].online and store.disks[1].healing
    assert os.path.exists(os.path.join(dirs[1], ".healing"))
    report = await store.heal(deep=False)
    assert report.failed == 0 and report.shards_rebuilt == len(expected)
    assert not store.disks[1].healing
    await store.close()
    wipe(dirs, [0, 2])  # with disk 1 healed, four disks still hold everything
    store = await open_store(dirs=dirs)
    await check_all(store, expected)


@pytest.mark.parametrize("size", [10, 300_000])  # inline in LMDB; shard files
async def test_a_read_short_of_shards_looks_at_offline_disks_again(open_store, size):
    """Disks this process holds offline that are in fact back (a node restarted
    and not yet reconnected here, a disk replaced by another process) are looked
    at again before a read gives up for want of shards: here two such disks and
    a corrupt shard leave 3 of the 4 shards needed."""
    store = await open_store(n=6, ec=(4, 2))
    await store.make_bucket("b")
    data = os.urandom(size)
    await store.put_object("b", "k", chunks(data, 100_000), size=len(data))
    await corrupt(store, "k", [3])
    for p in (0, 1):
        store.disks[p].close()  # offline in this process only
        store.disks[p].reason = "unavailable: node restarting"
    assert await read(store, "b", "k") == data
    assert store.disks[0].online and store.disks[1].online


async def test_an_inline_read_short_of_shards_names_each_disk_and_why(open_store, monkeypatch):
    """One shard corrupt, one absent, one disk offline, one not answering: the
    error says which disk lacked what (an operator's first question)."""
    from storaged import ReadQuorumError
    store = await open_store(n=6, ec=(3, 3))
    await store.make_bucket("b")
    await store.put_object("b", "k", chunks(b"small", 100), size=5)
    info = await store.head_object("b", "k")
    corrupt_at, absent_at, offline_at, silent_at = info.dist[:4]
    await corrupt(store, "k", [corrupt_at])
    drop_inline(store.disks[absent_at], "b", "k")
    store.disks[offline_at].close()
    monkeypatch.setattr(store.disks[offline_at], "reattach", lambda owner: "unavailable: gone")

    def no_answer(*args):
        raise OSError("node unreachable")
    monkeypatch.setattr(store.disks[silent_at], "read_now", no_answer)
    with pytest.raises(ReadQuorumError) as caught:
        await read(store, "b", "k")
    names = {p: store.disks[p].name for p in info.dist[:4]}
    assert str(caught.value) == (
        f"b/k: 2 of 3 shards readable ({names[corrupt_at]}: corrupt, "
        f"{names[absent_at]}: no shard, {names[offline_at]}: offline, "
        f"{names[silent_at]}: no answer)")


async def test_a_stale_healer_keeps_the_shard_another_healer_wrote(open_store, monkeypatch):
    """Two healers of one wiped disk (the server's background one and `basalt
    heal`, in different workers): the later one looked before the earlier one
    wrote, so it finds the record missing but the shard good. What it writes
    carries the shard; the disk is whole, and with two other disks lost the
    object still reads."""
    from storaged.healing import _heal_version
    from storaged.quorum import resolve
    store = await open_store(4, ec=(2, 2))
    await store.make_bucket("b")
    for key, data in (("empty", b""), ("small", b"seven b")):
        await store.put_object("b", key, chunks(data, 100), size=len(data))
        info = await store.head_object("b", key)
        held = {p: store.disks[p].get_object("b", key) for p in range(4)}
        stale = {**held, info.dist[0]: None}  # as the late healer saw it
        res = resolve("b", key, stale, 2, 3)
        written = []
        commit = store.disks[info.dist[0]].commit

        async def spy(ops, commit=commit, written=written):
            written.extend(ops)
            return await commit(ops)
        monkeypatch.setattr(store.disks[info.dist[0]], "commit", spy)
        assert await _heal_version(store, res, stale, True, HealReport()) == "healed"
        assert written and all(op.inline for op in written)  # never a record alone
        for pos in info.dist[1:3]:  # the disk healed is one of the two left
            drop_inline(store.disks[pos], "b", key)
        assert await read(store, "b", key) == data


async def test_a_record_reinstalled_without_its_shard_keeps_the_disks_shard(open_store):
    store = await open_store(4, ec=(2, 2))
    await store.make_bucket("b")
    await store.put_object("b", "k", chunks(b"small", 100), size=5)
    disk = store.disks[0]
    blob = disk.get_inline("b", "k")
    disk.commit_now([PutObject("b", "k", disk.get_object("b", "k"), None, replace_equal=True)])
    assert blob and disk.get_inline("b", "k") == blob
