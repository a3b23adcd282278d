"""gateway.quota's admission on a real engine: within one process concurrent
writes never overshoot a quota (even when writes commit while another admission
reads the usage), a refusal reserves nothing, a failed write frees its
reservation, and a write into a bucket without quota reads nothing more."""

from __future__ import annotations

import asyncio
import random
import types

import pytest

from gateway import quota
from gateway.identity import Directory
from storaged import ObjectStore, request_scope


async def body(data: bytes):
    yield data


@pytest.fixture
async def store(tmp_path):
    s = ObjectStore.open([str(tmp_path / f"d{i}") for i in range(4)], sync=False)
    await s.start(heal=False)
    await s.make_bucket("b")
    yield s
    await s.close()


def ctx(store, bucket="b"):
    directory = getattr(store, "test_directory", None)
    if directory is None:  # one per store, as one per worker
        directory = store.test_directory = Directory(store, "ROOT", "root-secret")
    return types.SimpleNamespace(store=store, bucket=bucket, request={"directory": directory},
                                 config=types.SimpleNamespace(owner_socket=None))


async def put(store, key: str, size: int, rng: random.Random) -> bool:
    try:
        with request_scope():
            async with quota.admit(ctx(store), size):
                await asyncio.sleep(rng.random() * 0.01)   # writes overlap and end in any order
                await store.put_object("b", key, body(b"x" * size), size=size)
        return True
    except quota.QuotaExceeded:
        return False


async def test_concurrent_writes_never_overshoot_within_a_process(store):
    size = 1000
    await store.set_bucket_config("b", quota.KIND, quota.Limits(10 * size, None).pack())
    rng = random.Random(5)
    outcomes = await asyncio.gather(*(put(store, f"k{i}", size, rng) for i in range(40)))
    assert sum(outcomes) == 10
    assert await store.bucket_usage("b") == (10 * size, 10)


async def test_object_limit_and_release_of_failed_writes(store):
    await store.set_bucket_config("b", quota.KIND, quota.Limits(None, 2).pack())
    rng = random.Random(1)
    assert await put(store, "a", 1, rng)
    with pytest.raises(RuntimeError):
        async with quota.admit(ctx(store), 1):
            raise RuntimeError("the write failed")        # its reservation goes with it
    assert await put(store, "b", 1, rng)
    assert not await put(store, "c", 1, rng)
    await store.delete_object("b", "a")
    assert await put(store, "c", 1, rng)


async def test_a_write_committed_during_a_usage_read_still_counts(store, monkeypatch):
    """An admission whose usage read began before another write committed must
    count that write, although its reservation is gone by the time it checks."""
    size = 100
    await store.set_bucket_config("b", quota.KIND, quota.Limits(2 * size, None).pack())
    rng = random.Random(2)
    assert await put(store, "a", size, rng)
    admitted, go = asyncio.Event(), asyncio.Event()

    async def other():
        with request_scope():
            async with quota.admit(ctx(store), size):
                admitted.set()
                await go.wait()
                await store.put_object("b", "other", body(b"y" * size), size=size)

    real = store.bucket_usage
    read, release = asyncio.Event(), asyncio.Event()

    async def slow_usage(bucket):
        seen = await real(bucket)   # before "other" commits
        read.set()
        await release.wait()
        return seen

    writer = asyncio.ensure_future(other())
    await admitted.wait()
    monkeypatch.setattr(store, "bucket_usage", slow_usage)
    late = asyncio.ensure_future(put(store, "late", size, rng))
    await read.wait()
    go.set()
    await writer                    # committed, its reservation released
    release.set()
    assert await late is False
    monkeypatch.setattr(store, "bucket_usage", real)
    assert await store.bucket_usage("b") == (2 * size, 2)


async def test_no_quota_no_extra_read(store, monkeypatch):
    await quota.account_limits(ctx(store).request["directory"], "000000000000")  # fresh
    asked = []
    real_ask = store.set.ask

    async def counting(query, *args, **kwargs):
        asked.append(query)
        return await real_ask(query, *args, **kwargs)

    with request_scope():
        await store.bucket_settings("b")                    # what a PUT reads anyway
        monkeypatch.setattr(store.set, "ask", counting)
        async with quota.admit(ctx(store), 10):
            pass
    assert asked == []


def test_limits_round_trip():
    assert quota.Limits().pack() is None and not quota.Limits()
    limits = quota.Limits(10, None)
    assert quota.Limits.unpack(limits.pack()) == limits
