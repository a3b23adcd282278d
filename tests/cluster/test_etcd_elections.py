"""cluster.Etcd reads wait out an election, and only an election, against a
stand-in for etcd's JSON gateway that answers as a member does meanwhile.
A member answers "leader changed" while it loses its leader and "no leader"
until a new one is chosen (or for as long as the quorum is lost)."""

from __future__ import annotations

import time

import pytest
from aiohttp import web

from cluster import Etcd, EtcdUnavailable
from cluster import etcd as etcd_module


async def gateway(aiohttp_server, failures: int, message: str):
    """A one-member gateway whose first ``failures`` range requests fail with
    ``message`` (as etcd's gateway puts it: 503, gRPC code 14); the list it
    returns records each request's time."""
    seen: list[float] = []

    async def range_(request: web.Request) -> web.Response:
        seen.append(time.monotonic())
        if len(seen) <= failures:
            return web.json_response({"error": message, "code": 14, "message": message},
                                     status=503)
        return web.json_response({"header": {"revision": "7"}, "count": "1", "kvs": [
            {"key": "L3Q=", "value": "dg==", "mod_revision": "7"}]})

    app = web.Application()
    app.router.add_post("/v3/kv/range", range_)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}", seen


@pytest.mark.parametrize("message", ["etcdserver: leader changed", "etcdserver: no leader"])
async def test_a_read_waits_out_an_election(aiohttp_server, message):
    url, seen = await gateway(aiohttp_server, 3, message)
    async with Etcd(url) as etcd:
        assert await etcd.get("/t") == (b"v", 7)
    assert len(seen) == 4 and seen[-1] - seen[0] < etcd_module.ELECTION_PATIENCE


@pytest.mark.parametrize("message", ["etcdserver: leader changed", "etcdserver: no leader"])
async def test_a_read_gives_up_after_the_patience(aiohttp_server, monkeypatch, message):
    monkeypatch.setattr(etcd_module, "ELECTION_PATIENCE", 0.5)
    url, seen = await gateway(aiohttp_server, 1000, message)
    async with Etcd(url) as etcd:
        with pytest.raises(EtcdUnavailable, match=message.split(": ")[1]):
            await etcd.get_prefix("/t")
    assert 2 <= len(seen) <= 5


async def test_other_unavailable_answers_fail_at_once(aiohttp_server):
    url, seen = await gateway(aiohttp_server, 1000, "etcdserver: too many requests")
    async with Etcd(url) as etcd:
        with pytest.raises(EtcdUnavailable, match="too many requests"):
            await etcd.revision()
    assert len(seen) == 1
