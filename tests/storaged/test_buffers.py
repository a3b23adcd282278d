"""Stripe buffers: a regression guard on allocations and memory, not on timing.

Large puts and gets run through the per-process BufferPool; what it allocated,
and the most it held at once, are counted. Buffers must be reused (allocations
do not grow with the bytes moved), the pool never holds more than its limit
however many requests run, and an idle pool gives its memory back.
"""

import asyncio
import hashlib
import os

import pytest

from storaged import IncompleteBody

from .helpers import chunks, direct_capable

MIB = 1 << 20


async def test_buffers_are_reused_not_allocated_per_mib(open_store):
    store = await open_store()
    await store.make_bucket("b")
    pool = store.buffers
    data = os.urandom(24 * MIB + 12345)
    for i in range(4):
        await store.put_object("b", f"k{i}", chunks(data, 256 * 1024), size=len(data))
        assert await (await store.get_object("b", f"k{i}")).read() == data
    # ~200 MiB moved in and out through one put's and one get's batches, allocated once.
    assert pool.allocations <= 3, pool.allocations
    assert pool.peak * pool.batch_bytes <= 3 * MIB


async def test_concurrent_requests_stay_within_the_pool(open_store):
    store = await open_store()
    await store.make_bucket("b")
    pool = store.buffers
    bodies = [os.urandom(8 * MIB + i) for i in range(12)]
    await asyncio.gather(*(store.put_object("b", f"k{i}", chunks(body, 64 * 1024))
                           for i, body in enumerate(bodies)))

    async def get(i: int) -> None:
        got = hashlib.md5()
        async for chunk in await store.get_object("b", f"k{i % 12}"):
            got.update(chunk)
        assert got.hexdigest() == hashlib.md5(bodies[i % 12]).hexdigest()

    await asyncio.gather(*(get(i) for i in range(32)))
    assert 0 < pool.peak <= pool.limit, (pool.peak, pool.limit)
    assert pool.allocations == pool.peak  # every batch made was reused from then on


async def test_an_idle_pool_unmaps_its_buffers(open_store):
    store = await open_store()
    store.buffers.idle_seconds = 0.05
    await store.make_bucket("b")
    await store.put_object("b", "k", chunks(os.urandom(5 * MIB)))
    up = await store.create_upload("b", "parts")
    await store.upload_part("b", "parts", up.upload_id, 1, chunks(os.urandom(5 * MIB)))
    assert store.buffers.mapped > 0
    staged = len(store.buffers.stage._free)  # direct part writes' staging buffers
    await asyncio.sleep(0.2)
    assert store.buffers.mapped == 0 and not store.buffers.stage._free
    assert staged > 0 or not direct_capable(store.disks[0].root)
    assert len(await (await store.get_object("b", "k")).read()) == 5 * MIB  # allocates again


async def test_a_body_longer_than_declared_is_refused_without_spending_the_lease(open_store):
    store = await open_store()
    await store.make_bucket("b")
    with pytest.raises(IncompleteBody):  # the lease holds one batch: the declared MiB
        await store.put_object("b", "k", chunks(os.urandom(2 * MIB)), size=MIB)
    with pytest.raises(IncompleteBody):
        await store.put_object("b", "k", chunks(os.urandom(MIB + 1)), size=MIB)
