"""Basalt's own endpoints under ``/_basalt/`` on the S3 port.

``/_basalt/health`` and ``/_basalt/metrics`` are open (load balancers and
Prometheus scrape them); everything under ``/_basalt/v1/`` is the admin API,
SigV4-signed with the admin credentials, answering JSON.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from storaged import HealReport, ObjectStore

from . import metrics
from .errors import S3Error

AdminHandler = Callable[[web.Request, ObjectStore], Awaitable[web.StreamResponse]]
ROUTES: dict[tuple[str, str], AdminHandler] = {}


def admin_route(method: str, path: str) -> Callable[[AdminHandler], AdminHandler]:
    """Register an admin API handler (other packages add theirs, e.g. volumes)."""
    def register(fn: AdminHandler) -> AdminHandler:
        ROUTES[(method, path)] = fn
        return fn
    return register


class AdminError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def json_error(status: int, code: str, message: str, request_id: str) -> web.Response:
    return web.json_response({"code": code, "message": message, "request_id": request_id},
                             status=status)


async def health(request: web.Request, store: ObjectStore) -> web.Response:
    """``ok``: every disk online, none healing; ``degraded``: a disk offline or
    healing but writes still reach the write quorum; ``unavailable``: they do
    not (503). ``?strict=1`` answers 503 for degraded too (load balancers that
    should route around a node that is rebuilding).

    A store of several erasure sets (storaged.pools.PooledStore) is unavailable
    when any set is below its own write quorum; its body lists the sets."""
    disks = await store.run(metrics.disk_states, store)
    online = sum(1 for d in disks if d["state"] != "offline")
    sets_health = getattr(store, "sets_health", None)
    sets = sets_health(disks) if sets_health is not None else []
    if len(sets) > 1:
        available = all(s["available"] for s in sets)
    else:
        available = online >= store.write_quorum
    if not available:
        status = "unavailable"
    elif all(d["state"] == "online" for d in disks):
        status = "ok"
    else:
        status = "degraded"
    strict = request.query.get("strict", "").lower() in ("1", "true", "yes")
    code = 503 if status == "unavailable" or (strict and status == "degraded") else 200
    body = {"status": status, "ec": f"{store.k}+{store.m}", "write_quorum": store.write_quorum,
            "disks_online": online, "disks": disks}
    if len(sets) > 1:
        body["sets"] = sets
    if any(d["state"] == "healing" for d in disks):
        # Counters since the server started, summed over its processes.
        body["heal"] = await store.run(metrics.heal_progress)
    return web.json_response(body, status=code)


# Served by the process that owns the disks (volumes, and the VMs and networks
# beside them; the volumes' backup and restore jobs).
OWNED = ("/_basalt/v1/volume", "/_basalt/v1/vms", "/_basalt/v1/networks", "/_basalt/v1/cluster",
         "/_basalt/v1/status", "/_basalt/v1/jobs")
RELAYED_HEADERS = ("Content-Type", "X-Basalt-Console-Offset")


class Owner:
    """Forwards admin requests to the disk-owning process over its Unix socket."""

    def __init__(self, socket_path: str | None) -> None:
        self.socket_path = socket_path
        self._session: aiohttp.ClientSession | None = None

    def _request(self, request: web.Request, body: bytes | None, path: str | None = None,
                 method: str | None = None):
        if not self.socket_path:
            raise AdminError(503, "ServiceUnavailable", "the disk-owning process is not running")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.socket_path),
                timeout=aiohttp.ClientTimeout(total=None))
        return self._session.request(method or request.method,
                                     "http://owner" + (path or request.path_qs), data=body,
                                     headers={"Content-Type": "application/json"})

    async def forward(self, request: web.Request, path: str | None = None,
                      method: str | None = None) -> web.Response:
        """The owner's whole answer to `request` (or to `method path`)."""
        body = await request.read() if request.can_read_body else None
        try:
            async with self._request(request, body, path, method) as r:
                return web.Response(status=r.status, body=await r.read(),
                                    content_type=r.content_type)
        except aiohttp.ClientError as exc:
            raise AdminError(503, "ServiceUnavailable", f"disk-owning process unreachable: {exc}") from exc

    async def relay(self, request: web.Request) -> web.StreamResponse:
        """Pass `request` to the owner and stream its answer back as it comes
        (a followed VM console lasts as long as the VM runs)."""
        body = await request.read() if request.can_read_body else None
        try:
            upstream = await self._request(request, body)
        except aiohttp.ClientError as exc:
            raise AdminError(503, "ServiceUnavailable", f"disk-owning process unreachable: {exc}") from exc
        try:
            response = web.StreamResponse(status=upstream.status, headers={
                h: upstream.headers[h] for h in RELAYED_HEADERS if h in upstream.headers})
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except aiohttp.ClientError:
                pass  # the owner went away mid-stream: end ours where it ended
            await response.write_eof()
            return response
        finally:
            upstream.release()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def handle(request: web.Request, store: ObjectStore,
                 authenticate: Callable[[web.Request], Awaitable[None]], request_id: str,
                 owner: Owner | None = None, nbd_address: str = "",
                 nbd_socket: str | None = None) -> web.StreamResponse:
    path = request.path
    if path == "/_basalt/health":
        return await health(request, store)
    if path == "/_basalt/metrics":
        return web.Response(body=await metrics.render(store),
                            headers={"Content-Type": metrics.CONTENT_TYPE})
    if path.startswith("/_basalt/console"):
        from . import console  # imported on first use: most workers never serve it
        return await console.handle(request, store, owner)
    if path.startswith(OWNED) and owner is not None:
        try:
            await authenticate(request)
        except S3Error as exc:
            return json_error(exc.status, exc.code, exc.message, request_id)
        try:
            from .quota import admit_volume  # here: gateway.quota registers admin routes
            await admit_volume(request, store, owner.socket_path)
            return await owner.relay(request)
        except AdminError as exc:
            return json_error(exc.status, exc.code, exc.message, request_id)
    handler = ROUTES.get((request.method, path))
    if handler is None:
        prefix = [h for (m, p), h in ROUTES.items() if path.startswith(p.rstrip("/") + "/")
                  and p.endswith("/") and m == request.method]
        if not prefix:
            return json_error(404, "NotFound", f"no admin endpoint {request.method} {path}",
                              request_id)
        handler = prefix[0]
    try:
        await authenticate(request)
    except S3Error as exc:
        return json_error(exc.status, exc.code, exc.message, request_id)
    try:
        request["owner"] = owner
        request["nbd_address"] = nbd_address
        request["nbd_socket"] = nbd_socket
        return await handler(request, store)
    except AdminError as exc:
        return json_error(exc.status, exc.code, exc.message, request_id)


@admin_route("GET", "/_basalt/v1/info")
async def info(request: web.Request, store: ObjectStore) -> web.Response:
    return web.json_response({"ec": f"{store.k}+{store.m}", "write_quorum": store.write_quorum,
                              "nbd": request.get("nbd_address", ""),
                              "block_size": store.geometry.block_size,
                              "disks": metrics.disk_states(store), "stats": dict(store.stats)})


@admin_route("POST", "/_basalt/v1/heal")
async def heal(request: web.Request, store: ObjectStore) -> web.StreamResponse:
    """Heal everything; streams one JSON progress line per half second, then the summary."""
    deep = request.query.get("deep", "true").lower() != "false"
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    latest: list[HealReport] = []

    def progress(report: HealReport) -> None:
        latest[:] = [report]

    task = asyncio.ensure_future(store.heal(deep=deep, progress=progress))
    while not task.done():
        await asyncio.wait([task], timeout=0.5)
        if latest and not task.done():
            await resp.write(json.dumps({"progress": latest[-1].as_dict()}).encode() + b"\n")
    report = task.result().as_dict()
    owner: Owner | None = request.get("owner")
    if owner is not None and owner.socket_path:
        try:
            volumes = await owner.forward(request, "/_basalt/v1/volume-heal", "POST")
            report["volumes"] = json.loads(volumes.body)
            if volumes.status != 200:
                report["failed"] += 1
                report["errors"].append(f"volumes: {report['volumes']}")
        except AdminError as exc:
            report["failed"] += 1
            report["errors"].append(f"volumes: {exc.message}")
    await resp.write(json.dumps({"done": True, **report}).encode() + b"\n")
    await resp.write_eof()
    return resp


def capacity(store: ObjectStore) -> dict:
    """Bytes of the online disks' filesystems (each counted once when disks share
    one): ``raw``, ``free``, and what that holds as objects (×K/(K+M)) and as
    volumes (replicated M+1 ways: ÷(M+1))."""
    filesystems: dict[str, tuple[int, int]] = {}
    for disk in store.disks:
        if not disk.online:
            continue
        try:
            _, used, free, fs = disk.space()
        except OSError:
            continue
        filesystems[fs] = (used + free, free)  # reserved blocks are not Basalt's
    raw = sum(total for total, _ in filesystems.values())
    free = sum(avail for _, avail in filesystems.values())
    replicas = min(store.n, store.m + 1)
    return {"raw": raw, "free": free, "objects": raw * store.k // store.n,
            "volumes": raw // replicas, "volume_replicas": replicas}


@admin_route("GET", "/_basalt/v1/status")
async def status(request: web.Request, store: ObjectStore) -> web.Response:
    """NBD addresses (TCP and the Unix socket) and capacity."""
    nbd_socket = request.get("nbd_socket")
    return web.json_response({"ec": f"{store.k}+{store.m}", "nbd": request.get("nbd_address", ""),
                              "nbd_socket": nbd_socket,
                              "capacity": await asyncio.to_thread(capacity, store)})
