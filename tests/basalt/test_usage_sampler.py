"""The owner's usage sampler: what it asks the host for."""

import asyncio
from types import SimpleNamespace

from basalt.usage_sampler import UsageSampler


class _Store:
    async def run(self, fn, *args):
        return fn(*args)

    async def list_buckets(self):
        return []


class _Meter:
    def __init__(self):
        self.added = []

    def add(self, *args, **kwargs):
        self.added.append(args)


def test_nat_counters_are_read_only_when_networks_exist(monkeypatch):
    from network import firewall
    calls = []
    monkeypatch.setattr(firewall, "nat_bytes", lambda ns: calls.append(ns) or {"lan": 500})
    networks = SimpleNamespace(namespace="host", names=[])
    networks.list = lambda: networks.names
    meter = _Meter()
    clock = iter([0.0, 3600.0, 7200.0])
    sampler = UsageSampler(_Store(), meter, layers=SimpleNamespace(compute=None,
                                                                   networks=networks),
                           clock=lambda: next(clock))
    asyncio.run(sampler.sample())
    assert calls == [] and meter.added == []  # no network: `nft` is not run
    networks.names = ["lan"]
    asyncio.run(sampler.sample())
    assert calls == ["host"]
    assert meter.added == [("000000000000", "network", "lan", {"nat_bytes": 500})]
