"""Regression guard for the cost of small objects, counted, not timed: LMDB
transactions per disk for 4 KiB PUTs and GETs (each transaction is a lock and,
for writes, an fsync; see ARCHITECTURE.md, small objects). A GET reads only the
K disks holding its data shards when they agree."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from storaged import NoSuchKey, ObjectInfo, request_scope
from storaged.layout import distribution
from storaged.meta import PartInfo

from .helpers import chunks, payload

SMALL = 4096


class CountingEnv:
    """An LMDB environment that counts the transactions begun on it."""

    def __init__(self, env) -> None:
        self._env = env
        self.reads = self.writes = 0

    def begin(self, *args, **kwargs):
        if kwargs.get("write") and kwargs.get("parent") is None:
            self.writes += 1
        elif not kwargs.get("write"):
            self.reads += 1
        return self._env.begin(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._env, name)


def count_transactions(store) -> list[CountingEnv]:
    envs = []
    for disk in store.disks:
        env = CountingEnv(disk.meta.env)
        disk.meta.env = env
        envs.append(env)
    return envs


async def test_concurrent_small_puts_share_fsynced_commits(open_store):
    store = await open_store(4, sync=True)
    await store.make_bucket("b")
    envs = count_transactions(store)
    bodies = {f"k{i}": payload(f"k{i}", SMALL) for i in range(16)}

    async def put(key: str) -> None:
        with request_scope():
            await store.put_object("b", key, chunks(bodies[key]), size=SMALL)

    await asyncio.gather(*(put(key) for key in bodies))
    # Group commit: 16 concurrent PUTs take a round or two of one transaction
    # (one fsync) per disk, not 16 each.
    assert all(env.writes <= 3 for env in envs), [env.writes for env in envs]
    # One read of the bucket's record and settings per disk per PUT, whatever
    # the write path asks of them (existence, versioning, lock defaults).
    assert all(env.reads == len(bodies) for env in envs), [env.reads for env in envs]
    for key, body in bodies.items():
        reader = await store.get_object("b", key)
        assert await reader.read() == body


async def _small_get(store, key: str = "k") -> bytes:
    with request_scope():  # what the gateway does for a GetObject
        await store.prefetch("b", key, body=True)  # judging the request
        await store.bucket_config("b", "owner")
        await store.bucket_config("b", "policy")
        info = await store.head_object("b", key, body=True)
        reader = await store.get_object("b", key, info=info)
        return await reader.read()


async def test_a_small_get_reads_the_disks_of_its_data_shards_unless_they_disagree(open_store):
    """K disks that agree settle a GET (they meet every write quorum); they are
    the ones holding the data shards, so the body needs no other disk either.
    Anything less settled (disagreement, an absent key, a disk being healed)
    is asked of every disk, and decided as before."""
    store = await open_store(4)
    await store.make_bucket("b")
    body = payload("get", SMALL)
    await store.put_object("b", "k", chunks(body), size=SMALL)
    data_disks = distribution("b", "k", store.n)[:store.k]
    envs = count_transactions(store)
    assert await _small_get(store) == body
    assert [env.reads for env in envs] == [1 if pos in data_disks else 0 for pos in range(4)]
    assert [env.writes for env in envs] == [0] * 4

    stale = data_disks[0]
    store.disks[stale].online = False  # misses the overwrite
    body = payload("new", SMALL)
    await store.put_object("b", "k", chunks(body), size=SMALL)
    store.disks[stale].online = True
    envs = count_transactions(store)
    assert await _small_get(store) == body
    # the other two are asked (once each) and decide; the stale disk is then
    # asked for its shard of the new version, has none, and that is reported
    assert [env.reads for env in envs] == [2 if pos == stale else 1 for pos in range(4)]
    assert store.stats["shards_missing"] == 1

    envs = count_transactions(store)
    with request_scope():
        await store.prefetch("b", "nothing", body=True)
        with pytest.raises(NoSuchKey):
            await store.head_object("b", "nothing", body=True)
    assert [env.reads for env in envs] == [1] * 4

    await store.put_object("b", "k", chunks(body), size=SMALL)
    store.disks[data_disks[1]].healing = True
    envs = count_transactions(store)
    assert await _small_get(store) == body
    assert [env.reads for env in envs] == [1] * 4


def test_a_record_unpacks_every_field_without_the_frozen_init(monkeypatch):
    """ObjectInfo.unpack fills the instance at once (the frozen dataclass's
    __init__ set its fields one by one, 40% of an unpack on every read): still
    every field, equal to what was packed."""
    info = ObjectInfo(
        "b", "k", "ab" * 16, 10, "etag", 123456789, content_type="text/plain",
        headers={"cache-control": "no"}, user_meta={"a": "1"}, checksums={"CRC32": "x"},
        checksum_type="FULL_OBJECT", k=2, m=2, block_size=1 << 16, dist=(2, 3, 0, 1),
        parts=(PartInfo(1, 10, "etag", {"CRC32": "x"}, "cd" * 16, 12, b"salt"),),
        inline=True, delete_marker=False, versioned=True, tags={"t": "v"},
        lock_mode="GOVERNANCE", lock_until_ns=5, legal_hold=True, meta_ns=7, acl=b"acl",
        encryption="{}")
    assert all(getattr(info, f.name) != f.default for f in dataclasses.fields(ObjectInfo)
               if f.name not in ("delete_marker",))  # every field set apart from its default
    inits = []
    init = ObjectInfo.__init__
    monkeypatch.setattr(ObjectInfo, "__init__",
                        lambda self, *a, **kw: inits.append(1) or init(self, *a, **kw))
    unpacked = ObjectInfo.unpack("b", "k", info.pack())
    assert inits == []
    assert set(vars(unpacked)) == {f.name for f in dataclasses.fields(ObjectInfo)}
    assert unpacked == info
    with pytest.raises(dataclasses.FrozenInstanceError):
        unpacked.size = 1
