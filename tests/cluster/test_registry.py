"""cluster.Registry against a real 3-member etcd cluster."""

from __future__ import annotations

import asyncio

import pytest

from cluster import (
    Lease,
    Node,
    NodeDisk,
    NodeEvent,
    PoolEvent,
    Registry,
    RegistryError,
    plan_pool,
)

pytestmark = pytest.mark.timeout(60)


def node(name: str, disks: int = 2, zone: str = "") -> Node:
    return Node(name, f"{name}.example:9100", zone,
                tuple(NodeDisk(name, f"{name}-d{i}", f"/srv/d{i}", 1 << 30) for i in range(disks)))


async def next_event(events, timeout: float = 10.0):
    return await asyncio.wait_for(events.__anext__(), timeout)


async def test_node_alive_then_dead_but_listed(etcd_client):
    etcd = etcd_client()
    reg = Registry(etcd)
    start = await reg.revision() + 1
    async with reg.watch_nodes(start_revision=start) as events:
        lease_a = await Lease(etcd, ttl=10).start()
        lease_b = await Lease(etcd, ttl=10).start()
        await reg.register_node(node("a"), lease_a.id)
        await reg.register_node(node("b", zone="z2"), lease_b.id)
        assert await reg.nodes() == [(node("a"), True), (node("b", zone="z2"), True)]

        await lease_a.close()            # revoked: its live record goes at once
        assert await reg.nodes() == [(node("a"), False), (node("b", zone="z2"), True)]
        assert await reg.node("a") == (node("a"), False)
        assert await reg.node("zz") is None

        # Seen by a watcher: alive, alive, dead.
        seen = [await next_event(events) for _ in range(3)]
        assert seen[:2] == [NodeEvent("alive", "a", node("a"), seen[0].revision),
                            NodeEvent("alive", "b", node("b", zone="z2"), seen[1].revision)]
        assert (seen[2].kind, seen[2].name) == ("dead", "a")

        # Coming back (new lease, one more disk) updates the record.
        lease_a2 = await Lease(etcd, ttl=10).start()
        await reg.register_node(node("a", disks=3), lease_a2.id)
        assert (await reg.node("a")) == (node("a", disks=3), True)
        assert (await next_event(events)).kind == "alive"

        await reg.remove_node("b")       # in no pool: allowed, even while alive
        assert [n.name for n, _ in await reg.nodes()] == ["a"]
        kinds = {(e.kind, e.name) for e in [await next_event(events), await next_event(events)]}
        assert kinds == {("dead", "b"), ("removed", "b")}
        with pytest.raises(RegistryError) as err:
            await reg.remove_node("b")
        assert err.value.code == "NoSuchNode"
        await lease_a2.close()
        await lease_b.close()


async def test_create_pool_transaction(etcd_client):
    etcd = etcd_client()
    reg = Registry(etcd)
    async with Lease(etcd, ttl=10) as lease:
        nodes = [node(n) for n in ("a", "b", "c", "d", "e", "f")]
        for n in nodes:
            await reg.register_node(n, lease.id)
        first = plan_pool("p1", 2, 1, nodes[:3])
        assert await reg.create_pool(first) is True
        assert await reg.pools() == [first]
        assert await reg.get_pool("p1") == first
        assert await reg.get_pool("nope") is None

        # The same name again: refused, even with other disks.
        assert await reg.create_pool(plan_pool("p1", 2, 1, nodes[3:])) is False
        assert await reg.pools() == [first]

        # A disk already in p1, under another name: refused, naming the disk.
        with pytest.raises(RegistryError) as err:
            await reg.create_pool(plan_pool("p2", 2, 1, nodes[2:5]))
        assert err.value.code == "DiskInUse" and "c:c-d0 (pool p1)" in err.value.message

        # A node nobody registered.
        with pytest.raises(RegistryError) as err:
            await reg.create_pool(plan_pool("p3", 2, 1, [nodes[3], nodes[4], node("ghost")]))
        assert err.value.code == "NoSuchNode" and "ghost" in err.value.message

        # Two pools sharing a disk created at once, from two clients: one wins.
        other = Registry(etcd_client())
        left = plan_pool("left", 2, 1, nodes[3:6])
        right = plan_pool("right", 2, 1, nodes[3:6])
        results = await asyncio.gather(reg.create_pool(left), other.create_pool(right),
                                       return_exceptions=True)
        wins = [r for r in results if r is True]
        losses = [r for r in results if isinstance(r, RegistryError)]
        assert len(wins) == 1 and len(losses) == 1 and losses[0].code == "DiskInUse", results
        assert len(await reg.pools()) == 2
        assert len(await reg.disk_pools()) == 12


async def test_concurrent_bucket_creation_exactly_one_wins(etcd_client):
    regs = [Registry(etcd_client()), Registry(etcd_client())]
    results = await asyncio.gather(*(
        regs[i % 2].create_bucket("photos", f"creator-{i}".encode()) for i in range(10)))
    assert results.count(True) == 1, results
    winner = f"creator-{results.index(True)}".encode()
    assert await regs[1].get_bucket("photos") == winner
    assert await regs[0].get_bucket("nope") is None
    assert await regs[0].create_bucket("docs", b"r") is True
    assert await regs[0].buckets() == [("docs", b"r"), ("photos", winner)]

    # Deleting needs the record still as read.
    assert await regs[0].delete_bucket("photos", b"something else") is False
    assert await regs[0].delete_bucket("photos", winner) is True
    assert await regs[0].delete_bucket("photos", winner) is False
    assert await regs[1].buckets() == [("docs", b"r")]
    with pytest.raises(RegistryError) as err:
        await regs[0].create_bucket("a/b", b"r")
    assert err.value.code == "InvalidArgument"


async def test_pool_state_and_node_removal(etcd_client):
    etcd = etcd_client()
    reg = Registry(etcd)
    async with Lease(etcd, ttl=10) as lease:
        nodes = [node(n) for n in ("a", "b", "c")]
        for n in nodes:
            await reg.register_node(n, lease.id)
        pool = plan_pool("p1", 2, 1, nodes)
        start = await reg.revision() + 1
        assert await reg.create_pool(pool)

        with pytest.raises(RegistryError) as err:
            await reg.remove_node("b")
        assert err.value.code == "NodeInUse" and "p1 (active)" in err.value.message

        with pytest.raises(RegistryError) as err:
            await reg.set_pool_state("p1", "drained")      # not without draining first
        assert err.value.code == "InvalidPoolState"
        with pytest.raises(RegistryError) as err:
            await reg.set_pool_state("nope", "draining")
        assert err.value.code == "NoSuchPool"
        with pytest.raises(RegistryError) as err:
            await reg.set_pool_state("p1", "gone")
        assert err.value.code == "InvalidArgument"

        # Two drains at once: both end with the pool draining, one write.
        other = Registry(etcd_client())
        both = await asyncio.gather(reg.set_pool_state("p1", "draining"),
                                    other.set_pool_state("p1", "draining"))
        assert [p.state for p in both] == ["draining", "draining"]
        assert (await reg.get_pool("p1")).state == "draining"

        with pytest.raises(RegistryError) as err:
            await reg.remove_node("b")                     # draining still holds objects
        assert err.value.code == "NodeInUse"

        drained = await reg.set_pool_state("p1", "drained")
        assert drained == pool.with_state("drained")
        with pytest.raises(RegistryError) as err:
            await reg.set_pool_state("p1", "active")        # drained is final
        assert err.value.code == "InvalidPoolState"

        await reg.remove_node("b")
        assert [n.name for n, _ in await reg.nodes()] == ["a", "c"]
        # The drained pool's disks stay taken by it.
        with pytest.raises(RegistryError) as err:
            await reg.create_pool(plan_pool("p2", 2, 0, nodes[:1]))
        assert err.value.code == "DiskInUse"

        async with reg.watch_pools(start_revision=start) as events:
            seen = [await next_event(events) for _ in range(3)]
        assert [(e.kind, e.name, e.pool.state) for e in seen] == [
            ("put", "p1", "active"), ("put", "p1", "draining"), ("put", "p1", "drained")]
        assert isinstance(seen[0], PoolEvent) and seen[0].pool == pool


async def test_volume_ownership(etcd_client):
    etcd = etcd_client()
    reg = Registry(etcd)
    lease_a = await Lease(etcd, ttl=10).start()
    lease_b = await Lease(etcd, ttl=10).start()
    try:
        assert await reg.volume_owner("vol1") is None
        assert await reg.claim_volume("vol1", "a", lease_a.id) == "a"
        assert await reg.claim_volume("vol1", "a", lease_a.id) == "a"      # again: still a
        assert await reg.claim_volume("vol1", "b", lease_b.id) == "a"
        assert await reg.volume_owner("vol1") == "a"
        assert await reg.release_volume("vol1", "b") is False              # not b's to release
        assert await reg.volume_owners() == {"vol1": "a"}

        await lease_a.close()                                              # a dies
        assert await reg.volume_owner("vol1") is None
        assert await reg.claim_volume("vol1", "b", lease_b.id) == "b"
        assert await reg.volume_owner("vol1") == "b"

        # The owner renewing its lease keeps the volume, now under the new lease.
        lease_b2 = await Lease(etcd, ttl=10).start()
        assert await reg.claim_volume("vol1", "b", lease_b2.id) == "b"
        await lease_b.close()
        assert await reg.volume_owner("vol1") == "b"

        assert await reg.release_volume("vol1", "b") is True
        assert await reg.volume_owner("vol1") is None
        await lease_b2.close()
    finally:
        await lease_a.close()
        await lease_b.close()


async def test_a_node_name_is_registered_by_one_live_node(etcd_client):
    etcd = etcd_client()
    reg = Registry(etcd)
    first = await Lease(etcd, ttl=10).start()
    second = await Lease(etcd, ttl=10).start()
    try:
        await reg.register_node(node("dup"), first.id)
        await reg.register_node(node("dup", disks=3), first.id)   # its own record: updated
        assert await reg.node("dup") == (node("dup", disks=3), True)
        with pytest.raises(RegistryError) as err:                 # another node, same name
            await reg.register_node(node("dup"), second.id)
        assert err.value.code == "NodeNameTaken" and "dup.example:9100" in err.value.message
        await first.close()                                       # the first one is gone
        await reg.register_node(node("dup"), second.id)
        assert await reg.node("dup") == (node("dup"), True)
    finally:
        await second.close()
