"""The cluster's admin API (``/_basalt/v1/cluster/...``), served by every node.

The routes read and change the layout in etcd through the node's registry:
``GET status``, ``POST pools`` (plan a pool from the named nodes' disks and
create it in one etcd transaction), ``POST pools/P/drain``, ``DELETE
nodes/N``. The owner process serves them on its Unix socket (the S3 workers
authenticate and forward, as for volumes); before the node has a pool — when
there is no S3 service yet to forward from — :func:`waiting_app` serves them
on the S3 address itself, SigV4-authenticated, beside a health answer saying
what the node waits for.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping

from aiohttp import web

from cluster import EtcdUnavailable, LayoutError, RegistryError, plan_pool
from gateway import sigv4
from gateway.errors import S3Error

from .cluster_node import ClusterNode
from .config import ConfigError, parse_ec

log = logging.getLogger("basalt.cluster")

PREFIX = "/_basalt/v1/cluster"
STATUS = {"NoSuchPool": 404, "NoSuchNode": 404, "PoolExists": 409, "DiskInUse": 409,
          "NodeInUse": 409, "InvalidPoolState": 409, "Conflict": 409,
          "InvalidArgument": 400}


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def cluster_routes(node: ClusterNode) -> web.RouteTableDef:
    """The cluster admin routes over ``node``'s registry (no authentication:
    the caller's front door does it)."""
    routes = web.RouteTableDef()
    registry = node.registry

    def guarded(handler: Callable) -> Callable:
        async def run(request: web.Request) -> web.Response:
            try:
                return await handler(request)
            except RegistryError as exc:
                return _error(STATUS.get(exc.code, 400), exc.code, str(exc.message))
            except (LayoutError, ConfigError, ValueError) as exc:
                return _error(400, "InvalidArgument", str(exc))
            except EtcdUnavailable as exc:
                return _error(503, "ClusterUnavailable", f"etcd has no quorum: {exc}")
        return run

    @routes.get(PREFIX + "/status")
    @guarded
    async def status(request: web.Request) -> web.Response:
        nodes = [{**n.as_dict(), "alive": alive} for n, alive in await registry.nodes()]
        pools = [p.as_dict() for p in await registry.pools()]
        leader = await node.election.leader()  # the node running the background jobs
        return web.json_response({"nodes": nodes, "pools": pools, "leader": leader})

    @routes.post(PREFIX + "/pools")
    @guarded
    async def create_pool(request: web.Request) -> web.Response:
        body = await _json(request)
        k, m = parse_ec(str(body.get("ec", "")))
        names = body.get("nodes") or []
        if not isinstance(names, list) or not names:
            raise ValueError("name the nodes whose disks form the pool")
        existing = await registry.pools()
        name = body.get("name") or f"pool{len(existing) + 1}"
        known = [n for n, _ in await registry.nodes()]
        pool = plan_pool(name, k, m, known, use=names)
        if not await registry.create_pool(pool):
            raise RegistryError("PoolExists", f"pool {name} exists")
        log.info("pool created", extra={"fields": {"pool": name, "ec": f"{k}+{m}",
                                                   "sets": len(pool.sets)}})
        return web.json_response(pool.as_dict())

    @routes.post(PREFIX + "/pools/{pool}/drain")
    @guarded
    async def drain_pool(request: web.Request) -> web.Response:
        pool = await registry.set_pool_state(request.match_info["pool"], "draining")
        return web.json_response(pool.as_dict())

    @routes.delete(PREFIX + "/nodes/{node}")
    @guarded
    async def remove_node(request: web.Request) -> web.Response:
        name = request.match_info["node"]
        await registry.remove_node(name)
        return web.json_response({"removed": name})

    return routes


async def _json(request: web.Request) -> Mapping:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def waiting_app(node: ClusterNode, credentials: Mapping[str, str]) -> web.Application:
    """What a node serves on its S3 address until its pool exists: the cluster
    admin routes (SigV4-signed), a health answer, 503 for everything else."""

    @web.middleware
    async def front(request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.path == "/_basalt/health":
            return web.json_response({"status": "unavailable", "disks": [],
                                      "reason": "waiting for a pool with this node's disks"},
                                     status=503)
        if not request.path.startswith(PREFIX + "/"):
            return _error(503, "ServiceUnavailable",
                          "this node has no pool yet: basalt cluster pool create "
                          "--ec K+M NODE...")
        raw_path, _, raw_query = request.raw_path.partition("?")
        try:
            sigv4.verify_request(request.method, raw_path, raw_query, request.headers,
                                 credentials.get)
        except S3Error as exc:
            return _error(exc.status, exc.code, exc.message)
        return await handler(request)

    app = web.Application(middlewares=[front])
    app.add_routes(cluster_routes(node))
    return app


def refusing_routes(message: str) -> web.RouteTableDef:
    """Owner routes answering what a cluster node does not serve yet."""
    routes = web.RouteTableDef()

    @routes.route("*", "/_basalt/v1/{tail:(vms|networks).*}")
    async def refuse(request: web.Request) -> web.Response:
        return _error(501, "NotImplemented", message)

    return routes
