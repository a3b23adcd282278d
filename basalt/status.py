"""``GET /_basalt/v1/status``: how the whole server is doing, in one answer.

Served by the owner process (it runs the volumes, the NBD server and the
layers): version, uptime, endpoints, layers on or off and why, erasure coding,
disks and capacity, healing, and counts of buckets, objects, volumes, VMs and
networks. ``basalt status`` shows it on one screen. It keeps the fields the
first version of this endpoint had (``ec``, ``nbd``, ``nbd_socket`` and
``capacity``: raw, free, as objects, as volumes), which ``basalt volume`` reads.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from aiohttp import web

STATUS = "/_basalt/v1/status"


@dataclasses.dataclass
class ServerInfo:
    """What the owner knows of itself; endpoints are filled in as they open."""

    store: Any
    version: str
    started: float = dataclasses.field(default_factory=time.time)
    endpoints: dict[str, str] = dataclasses.field(default_factory=dict)
    volumes: Any = None          # blockd.VolumeManager (single node)
    layers: Any = None           # basalt.layers.Layers (single node)
    cluster: str | None = None   # the node's name in a cluster
    nbd_address: str = ""        # HOST:PORT
    usage_clock: Any = None      # storaged.metering.MeteredClock
    nbd_socket: str | None = None


def _disks_and_capacity(store: Any) -> tuple[list[dict], dict[str, int]]:
    from gateway.admin import capacity
    from gateway.metrics import disk_states
    disks = disk_states(store)
    for disk, source in zip(disks, store.disks):
        if disk["state"] == "offline":
            continue
        try:
            _, used, free, _ = source.space()
        except OSError:
            continue
        disk.update(used_bytes=used, free_bytes=free)
    return disks, capacity(store)


def _objects(store: Any) -> dict[str, int] | None:
    from gateway.metrics import stored
    # The count /_basalt/metrics keeps (recounted at most once a minute, shared by
    # every process), not a scan of every record per status request.
    found = stored(store, os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    return None if found is None else {"objects": found["objects"], "bytes": found["bytes"]}


async def collect(info: ServerInfo) -> dict[str, Any]:
    """The status document."""
    from gateway.metrics import heal_progress
    store = info.store
    disks, capacity = await store.run(_disks_and_capacity, store)
    healing = [d["position"] for d in disks if d["state"] == "healing"]
    offline = [d["position"] for d in disks if d["state"] == "offline"]
    online = len(disks) - len(offline)
    health = ("unavailable" if online < store.write_quorum
              else "degraded" if healing or offline else "ok")
    try:
        buckets: int | None = len([b for b in await store.list_buckets()
                                   if not b.name.startswith(".")])
    except Exception:
        buckets = None
    stored_now = await store.run(_objects, store)
    counts: dict[str, int | None] = {"buckets": buckets,
                                     "objects": stored_now and stored_now["objects"],
                                     "object_bytes": stored_now and stored_now["bytes"]}
    layers: dict[str, str] = {"storage": "on", "s3": "on"}
    if info.volumes is not None:
        layers["block"] = "on"
        counts["volumes"] = len(await store.run(info.volumes.list))
    if info.layers is not None:
        lay = info.layers
        layers["network"] = "on" if lay.networks else f"off: {lay.network_off}"
        layers["compute"] = "on" if lay.compute else f"off: {lay.compute_off}"
        if lay.networks is not None:
            counts["networks"] = len(await store.run(lay.networks.list))
        if lay.compute is not None:
            counts["vms"] = len(await store.run(lay.compute.list))
    return {
        "status": health, "version": info.version, "cluster_node": info.cluster,
        "nbd": info.nbd_address, "nbd_socket": info.nbd_socket,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.started)),
        "uptime_seconds": round(time.time() - info.started, 1),
        "endpoints": info.endpoints, "layers": layers,
        "ec": f"{store.k}+{store.m}", "write_quorum": store.write_quorum,
        "disks": disks, "capacity": capacity,
        "heal": {"healing_disks": healing, "offline_disks": offline,
                 **await store.run(heal_progress)},
        "counts": counts,
        "usage_clock": None if info.usage_clock is None else {
            "epoch": info.usage_clock.epoch, "hour_seconds": 3600.0 / info.usage_clock.scale},
    }


def routes(info: ServerInfo) -> web.RouteTableDef:
    """The status route, for the owner's admin application."""
    r = web.RouteTableDef()

    @r.get(STATUS)
    async def status(request: web.Request) -> web.Response:
        return web.json_response(await collect(info))

    return r
