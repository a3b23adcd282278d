"""The owner's side of usage metering: what is *held* over time.

Every ``every`` seconds the owner samples what each bucket stores, each volume
provisions and allocates, each running VM reserves and each NAT network has
routed, and adds it to its :class:`storaged.metering.Meter` as amount × hours
since the last sample (byte-hours, GB-hours, vCPU-hours). Amounts are taken as
constant between samples: with the default 10 s the error is at most 10 s of
a change per hour. Volumes, VMs and networks belong to the root account (as
their quotas do); buckets to their owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from storaged.metering import Meter

log = logging.getLogger("basalt.usage")

GB = 10**9
ROOT_ACCOUNT = "000000000000"


class UsageSampler:
    def __init__(self, store: Any, meter: Meter, volumes: Any = None, layers: Any = None,
                 every: float = 10.0, clock: Any = time.time) -> None:
        self.store, self.meter, self.volumes, self.layers = store, meter, volumes, layers
        self.every = every
        self._clock = clock
        self._last: float | None = None
        self._nat_seen: dict[str, int] = {}
        self._task: asyncio.Task | None = None

    async def sample(self) -> None:
        """Add what is held now × the hours since the last sample."""
        now = self._clock()
        hours = 0.0 if self._last is None else (now - self._last) / 3600
        self._last = now
        await self._buckets(hours, now)
        if self.volumes is not None:
            await self._volumes(hours, now)
        if self.layers is not None:
            await self._layers(hours, now)

    async def _buckets(self, hours: float, now: float) -> None:
        from gateway.identity import bucket_owner
        for bucket in await self.store.list_buckets():
            if bucket.name.startswith(".") or not hours:
                continue
            try:
                used = await self.store.bucket_usage(bucket.name)
                owner = await bucket_owner(self.store, bucket.name)
            except Exception:  # deleted meanwhile, or no quorum now: next time
                continue
            self.meter.add(owner, "bucket", bucket.name,
                           {"byte_hours": used.bytes * hours, "object_hours": used.objects * hours},
                           moment=now)

    async def _volumes(self, hours: float, now: float) -> None:
        if not hours:
            return
        for info in await self.store.run(self.volumes.list, True):
            if info.snapshot:
                name = info.name.split("@", 1)[0]
                self.meter.add(ROOT_ACCOUNT, "volume", name,
                               {"snapshot_gb_hours": info.allocated / GB * hours}, moment=now)
            else:
                self.meter.add(ROOT_ACCOUNT, "volume", info.name,
                               {"provisioned_gb_hours": info.size / GB * hours,
                                "allocated_gb_hours": info.allocated / GB * hours}, moment=now)

    async def _layers(self, hours: float, now: float) -> None:
        compute, networks = self.layers.compute, self.layers.networks
        if compute is not None and hours:
            for vm in await self.store.run(compute.list):
                if vm.get("state") == "running":
                    self.meter.add(ROOT_ACCOUNT, "vm", vm["name"],
                                   {"vcpu_hours": vm["cpus"] * hours,
                                    "memory_gb_hours": vm["memory_mib"] * 2**20 / GB * hours},
                                   moment=now)
        # No networks, no NAT counters: and no `nft` process every sample.
        if networks is not None and await self.store.run(networks.list):
            from network import firewall
            counted = await self.store.run(firewall.nat_bytes, networks.namespace)
            for name, total in counted.items():
                seen = self._nat_seen.get(name, 0)
                # A smaller count: the table was replaced and counts from zero again.
                delta = total - seen if total >= seen else total
                self._nat_seen[name] = total
                if delta:
                    self.meter.add(ROOT_ACCOUNT, "network", name, {"nat_bytes": delta},
                                   moment=now)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
                await self.meter.flush()
            except Exception as exc:  # no quorum now: what was counted waits in the meter
                log.warning("usage sample failed: %s", exc)
            await asyncio.sleep(self.every)

    async def close(self) -> None:
        """Stop sampling; the meter writes what it counted."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.meter.close()
