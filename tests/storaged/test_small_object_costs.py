"""Regression guard for the cost of small objects, counted, not timed: LMDB
transactions per disk for 4 KiB PUTs and GETs (each transaction is a lock and,
for writes, an fsync; see ARCHITECTURE.md, small objects)."""

from __future__ import annotations

import asyncio

from storaged import request_scope

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


async def test_a_small_get_reads_each_disk_once(open_store):
    store = await open_store(4)
    await store.make_bucket("b")
    body = payload("get", SMALL)
    await store.put_object("b", "k", chunks(body), size=SMALL)
    envs = count_transactions(store)
    with request_scope():  # what the gateway does for a GetObject
        await store.prefetch("b", "k", body=True)  # judging the request
        await store.bucket_config("b", "owner")
        await store.bucket_config("b", "policy")
        info = await store.head_object("b", "k", body=True)
        reader = await store.get_object("b", "k", info=info)
        assert await reader.read() == body
    assert [env.reads for env in envs] == [1] * 4
    assert [env.writes for env in envs] == [0] * 4
