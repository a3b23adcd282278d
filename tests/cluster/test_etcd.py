"""cluster.Etcd, Lease and Election against a real 3-member etcd cluster."""

from __future__ import annotations

import asyncio
import time

import pytest

from cluster import (
    Election,
    Etcd,
    EtcdError,
    EtcdUnavailable,
    Lease,
    WatchEvent,
    parse_endpoints,
    prefix_end,
)

from .conftest import REQUEST_TIMEOUT

pytestmark = pytest.mark.timeout(60)


async def eventually(check, timeout: float = 10.0, interval: float = 0.1, what: str = "condition"):
    """Poll the coroutine function ``check`` until it returns something truthy;
    etcd errors count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await check()
        except EtcdError:
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        await asyncio.sleep(interval)


async def next_event(events, timeout: float = 10.0) -> WatchEvent:
    return await asyncio.wait_for(events.__anext__(), timeout)


def test_parse_endpoints():
    assert parse_endpoints("etcd://h1:2379,h2:2380") == ["http://h1:2379", "http://h2:2380"]
    assert parse_endpoints("etcds://h1") == ["https://h1:2379"]
    assert parse_endpoints(["http://127.0.0.1:1", "10.0.0.2:3"]) == [
        "http://127.0.0.1:1", "http://10.0.0.2:3"]
    assert parse_endpoints("etcd://[::1]:2379") == ["http://[::1]:2379"]
    for bad in ("", "etcd://", "redis://h:1", "etcd://h:port"):
        with pytest.raises(ValueError):
            parse_endpoints(bad)
    assert prefix_end("/a/") == b"/a0"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff") == b"\0"


async def test_put_get_prefix_delete(etcd_client):
    etcd = etcd_client()
    assert await etcd.get("/t/missing") is None
    rev1 = await etcd.put("/t/a", "alpha")
    rev2 = await etcd.put(b"/t/b", b"\x00\xffbin")
    await etcd.put("/t/c/deep", "x")
    await etcd.put("/u/other", "y")
    assert rev2 > rev1
    assert await etcd.get("/t/a") == (b"alpha", rev1)
    assert await etcd.get("/t/b") == (b"\x00\xffbin", rev2)

    listed = await etcd.get_prefix("/t/")
    assert [(kv.key, kv.value) for kv in listed] == [
        (b"/t/a", b"alpha"), (b"/t/b", b"\x00\xffbin"), (b"/t/c/deep", b"x")]
    assert listed[0].mod_revision == rev1

    rev3 = await etcd.put("/t/a", "again")
    assert await etcd.get("/t/a") == (b"again", rev3)
    assert await etcd.delete("/t/a") is True
    assert await etcd.delete("/t/a") is False
    assert await etcd.get("/t/a") is None
    assert await etcd.delete_prefix("/t/") == 2
    assert await etcd.get_prefix("/t/") == []
    assert (await etcd.get("/u/other"))[0] == b"y"
    assert await etcd.revision() >= rev3


async def test_create_race_exactly_one_wins(etcd_client):
    a, b = etcd_client(), etcd_client()
    results = await asyncio.gather(*(
        (a if i % 2 else b).create("/basalt/buckets/photos", f"creator-{i}") for i in range(20)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert (await b.get("/basalt/buckets/photos"))[0] == f"creator-{winner}".encode()
    assert await a.create("/basalt/buckets/photos", "late") is False


async def test_compare_and_swap(etcd_client):
    etcd = etcd_client()
    assert await etcd.compare_and_swap("/t/cas", 0, "first") is True      # 0 = only if absent
    assert await etcd.compare_and_swap("/t/cas", 0, "again") is False
    value, rev = await etcd.get("/t/cas")
    assert value == b"first"
    assert await etcd.compare_and_swap("/t/cas", rev, "second") is True
    assert await etcd.compare_and_swap("/t/cas", rev, "stale") is False
    assert (await etcd.get("/t/cas"))[0] == b"second"


async def test_lease_expiry_removes_keys(etcd_client):
    etcd = etcd_client()
    lease_id = await etcd.grant(2)
    await etcd.put("/t/ephemeral", "x", lease=lease_id)
    assert await etcd.create("/t/ephemeral2", "y", lease=lease_id) is True
    assert await etcd.keepalive(lease_id) > 0
    # No more keepalives: etcd removes the keys once the TTL has run out.
    await eventually(lambda: _absent(etcd, "/t/ephemeral", "/t/ephemeral2"), what="lease expiry")
    assert await etcd.keepalive(lease_id) == 0
    await etcd.revoke(lease_id)                   # unknown lease: not an error
    with pytest.raises(EtcdError):
        await etcd.put("/t/x", "y", lease=lease_id)


async def _absent(etcd: Etcd, *keys: str) -> bool:
    return all([await etcd.get(key) is None for key in keys])


async def test_lease_kept_alive_then_revoked(etcd_client):
    etcd = etcd_client()
    async with Lease(etcd, ttl=2) as lease:
        await etcd.put("/t/held", "x", lease=lease.id)
        await asyncio.sleep(3)                    # longer than the TTL: keepalives hold it
        assert lease.alive and not lease.lost.is_set()
        assert await etcd.get("/t/held") is not None
    assert await etcd.get("/t/held") is None      # closing revoked it at once


async def test_lease_lost_when_expired_or_unreachable(etcd_cluster, etcd_client):
    etcd = etcd_client()
    lease = await Lease(etcd, ttl=2).start()
    await etcd.revoke(lease.id)                   # someone ended it behind our back
    await asyncio.wait_for(lease.lost.wait(), 5)
    assert not lease.alive
    await lease.close()

    # A holder that can reach only member 2, which dies: no keepalive gets through,
    # and the lease counts as lost no later than its TTL (etcd may keep it longer).
    only = etcd_cluster.members[2]
    cut_off = etcd_client(endpoints=f"etcd://127.0.0.1:{only.client_port}")
    async with Lease(cut_off, ttl=2) as lease:
        await asyncio.sleep(1)                    # a keepalive or two succeed
        assert lease.alive
        etcd_cluster.kill(2)
        killed = time.monotonic()
        await asyncio.wait_for(lease.lost.wait(), 5)
        assert time.monotonic() - killed <= 2 + 0.5
        assert not lease.alive


async def test_watch_sees_puts_and_deletes_and_survives_member_death(etcd_cluster, etcd_client):
    watcher, writer = etcd_client(), etcd_client()
    async with watcher.watch_prefix("/w/") as events:
        pending = asyncio.ensure_future(next_event(events))
        await asyncio.sleep(0.3)                  # let the watch be created
        rev = await writer.put("/w/a", "1")
        await writer.put("/other", "not watched")
        assert await pending == WatchEvent("PUT", b"/w/a", b"1", rev)
        rev = await writer.put("/w/a", "2")
        assert await next_event(events) == WatchEvent("PUT", b"/w/a", b"2", rev)
        await writer.delete("/w/a")
        deleted = await next_event(events)
        assert (deleted.type, deleted.key, deleted.value) == ("DELETE", b"/w/a", b"")

        # Kill the member the watch stream is on; writes made while it reconnects
        # are delivered all the same, once each and in order.
        victim = etcd_cluster.index_of(events.endpoint)
        etcd_cluster.kill(victim)
        revs = [await eventually(lambda i=i: writer.put(f"/w/k{i}", str(i)), what="write") for i in range(5)]
        got = [await next_event(events, timeout=15) for _ in range(5)]
        assert [(e.key, e.mod_revision) for e in got] == [
            (f"/w/k{i}".encode(), rev) for i, rev in enumerate(revs)]
        assert events.endpoint is not None and etcd_cluster.index_of(events.endpoint) != victim
        assert events.reconnects >= 1


async def test_watch_from_revision(etcd_client):
    etcd = etcd_client()
    first = await etcd.put("/h/a", "1")
    await etcd.put("/h/b", "2")
    async with etcd.watch_prefix("/h/", start_revision=first) as events:
        assert (await next_event(events)).key == b"/h/a"
        assert (await next_event(events)).key == b"/h/b"


async def test_failover_when_first_member_dies(etcd_cluster, etcd_client):
    etcd = etcd_client()
    await etcd.put("/t/f", "before")
    assert etcd.endpoint == etcd_cluster.members[0].client_url
    etcd_cluster.kill(0)
    # Until the survivors elect a new leader (if member 0 led) etcd may say
    # "unavailable"; after that the client works on the others.
    await eventually(lambda: etcd.put("/t/f", "after"), what="write after failover")
    assert (await etcd.get("/t/f"))[0] == b"after"
    assert etcd.endpoint != etcd_cluster.members[0].client_url
    assert await etcd.create("/t/f2", "x") is True


async def test_quorum_loss_is_unavailable_then_recovers(etcd_cluster, etcd_client):
    etcd = etcd_client()
    await etcd.put("/t/q", "v")
    async with etcd_client().watch_prefix("/t/") as events:
        pending = asyncio.ensure_future(next_event(events, timeout=40))
        await asyncio.sleep(0.3)
        etcd_cluster.kill(1)
        etcd_cluster.kill(2)
        bound = 3 * REQUEST_TIMEOUT + 1.0
        for op in (lambda: etcd.put("/t/q", "w"), lambda: etcd.get("/t/q"),
                   lambda: etcd.create("/t/q2", "x"), lambda: etcd.grant(5)):
            started = time.monotonic()
            with pytest.raises(EtcdUnavailable):
                await op()
            assert time.monotonic() - started < bound
        # The surviving member's local copy can still be read without a quorum.
        assert (await etcd.get("/t/q", serializable=True))[0] in (b"v", b"w")

        etcd_cluster.start(1)
        etcd_cluster.start(2)
        # The same client recovers by itself once a quorum is back...
        rev = await eventually(lambda: etcd.put("/t/q", "back"), timeout=20, what="recovery")
        assert (await etcd.get("/t/q"))[0] == b"back"
        # ... and so does the watch (the only write it can see is the one above,
        # unless a put that raised EtcdUnavailable was applied after all).
        event = await pending
        while event.value != b"back":
            event = await next_event(events)
        assert (event.key, event.mod_revision) == (b"/t/q", rev)


async def test_election_one_leader_and_takeover_on_revoke(etcd_client):
    a = Election(etcd_client(), "heal", "node-a", ttl=2)
    b = Election(etcd_client(), "heal", "node-b", ttl=2)
    async with a, b:
        await eventually(_one_leader(a, b), what="a leader")
        leader, follower = (a, b) if a.is_leader else (b, a)
        assert await follower.leader() == leader.node
        await asyncio.sleep(0.5)
        assert leader.is_leader and not follower.is_leader    # stable

        # The leader's lease ends (revoked under it): the other takes over.
        await follower.etcd.revoke(leader.lease.id)
        await asyncio.wait_for(follower.wait_elected(), 10)
        assert await follower.leader() == follower.node
        await asyncio.wait_for(leader.wait_not_leader(), 10)
        await asyncio.sleep(0.5)
        assert follower.is_leader and not leader.is_leader

        # Resigning hands over at once.
        await follower.resign()
        await asyncio.wait_for(leader.wait_elected(), 5)
        assert await leader.leader() == leader.node


async def test_election_takeover_when_leader_is_cut_off(etcd_client):
    a = Election(etcd_client(), "lifecycle", "node-a", ttl=2)
    async with a:
        await asyncio.wait_for(a.wait_elected(), 10)
        b = Election(etcd_client(), "lifecycle", "node-b", ttl=2)
        async with b:
            await asyncio.sleep(0.5)
            assert a.is_leader and not b.is_leader
            # The leader loses etcd (its client closes, no more keepalives):
            # it steps down within its TTL and b wins when etcd expires the lease.
            await a.etcd.close()
            await asyncio.wait_for(a.wait_not_leader(), 5)
            await asyncio.wait_for(b.wait_elected(), 10)
            assert await b.leader() == "node-b"
            assert not a.is_leader


def _one_leader(*elections: Election):
    async def check() -> bool:
        return sum(e.is_leader for e in elections) == 1
    return check
