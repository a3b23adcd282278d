"""An S3 worker process: one per core, all accepting on the server's socket.

Started by `basalt serve` (never by hand) as ``python -m basalt.worker`` with
its settings in ``BASALT_WORKER`` (JSON), the listening socket's file
descriptor inherited, and a pipe to report readiness on. It opens the disks
itself (LMDB is multi-process safe; handles must not cross a fork).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway import Gateway, GatewayConfig
from gateway.app import PARSER_LIMITS
from storaged import ObjectStore, lmdb_maps
from storaged.lifecycle_rules import DAY_NS
from storaged.locks import KeyLocks

from . import heap, logs

log = logging.getLogger("basalt.worker")


def ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def run(cfg: dict) -> None:
    if cfg.get("cluster"):
        from cluster import Etcd, Registry
        from storaged import node_auth

        from .cluster_node import ClusterBucketNames, LiveLayout, NodeTLS
        live = LiveLayout(cfg["cluster"]["node"], node_auth.cluster_secret(), sync=cfg["sync"],
                          owner=False, tls=NodeTLS.from_dict(cfg["cluster"].get("tls")))
        store = live.build(cfg["cluster"]["members"])[0]
        etcd = Etcd(cfg["cluster"]["etcd"])
        registry = Registry(etcd)
        store.bucket_names = ClusterBucketNames(registry, store)
    else:
        etcd = live = None
        store = ObjectStore.open(cfg["disks"], sync=cfg["sync"], clean=False)
    store.lifecycle_day_ns = cfg.get("lifecycle_day_ns", DAY_NS)   # for x-amz-expiration
    store.key_locks = KeyLocks(cfg["key_locks"])
    await store.start(settle=False, owner=False)
    config = GatewayConfig(credentials={cfg["access_key"]: cfg["secret_key"]},
                           region=cfg["region"], domain=cfg.get("domain"),
                           owner_socket=cfg.get("owner_socket"),
                           nbd_address=cfg.get("nbd_address", ""),
                           nbd_socket=cfg.get("nbd_socket"), data_dir=cfg.get("data_dir"),
                           master_key_file=cfg.get("master_key_file"),
                           allow_sse_c_over_http=cfg.get("allow_sse_c_over_http", False),
                           usage_flush_seconds=cfg.get("usage_flush_seconds", 10.0),
                           usage_clock=tuple(cfg.get("usage_clock") or ()))
    gateway = Gateway(store, config)
    tasks = [asyncio.ensure_future(lmdb_maps.keep_released()),  # see storaged.lmdb_maps
             asyncio.ensure_future(heap.keep_trimmed())]           # see basalt.heap
    if cfg.get("read_only_path"):
        tasks.append(asyncio.ensure_future(follow_read_only(lambda: gateway.store,
                                                            cfg["read_only_path"])))
    if live is not None:
        tasks.append(asyncio.ensure_future(follow_worker_layout(
            gateway, live, registry, cfg["cluster"]["layout_path"], cfg)))
    runner = web.AppRunner(gateway.app(), access_log=None,
                           shutdown_timeout=cfg.get("shutdown_grace", 1.5), **PARSER_LIMITS)
    await runner.setup()
    if cfg.get("tls_cert"):
        small_tls_buffers(runner.server)
    sock = socket.socket(fileno=cfg["fd"])
    site = web.SockSite(runner, sock, ssl_context=ssl_context(cfg.get("tls_cert"),
                                                              cfg.get("tls_key")))
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    freeze_startup_objects()
    os.write(cfg["ready_fd"], b"R")
    os.close(cfg["ready_fd"])
    await stop.wait()
    # Stop accepting, let requests in flight finish (or cancel them: an
    # interrupted write rolls back, nothing acknowledged is touched), then
    # close the disks so every commit thread is done before the exit.
    started = loop.time()
    await runner.cleanup()
    for task in tasks:
        task.cancel()
    for s in (live.sets.values() if live is not None else [store]):
        await s.close()
    if etcd is not None:
        await etcd.close()
    log.debug("worker stopped", extra={"fields": {"seconds": round(loop.time() - started, 3)}})


# What a TLS connection may queue before the flow stops, in both directions
# (uvloop's defaults: 256 KiB in, 512 KiB out). Each connection's OpenSSL memory
# BIOs grow to the most they ever held and keep it until the connection closes
# (measured: 100 BIOs that held 256 KiB once stay at 26 MiB); an upload's
# incoming BIO held up to this limit plus one 256 KiB socket read. With these,
# gateway.get's 64 KiB pieces and basalt.heap, a 5 GiB `aws s3 cp` (10 kept-alive
# connections) peaks at 192-193 MiB over HTTPS (was 203-204; HTTP 186-190 -> 186).
TLS_READ_HIGH = 64 * 1024
TLS_WRITE_HIGH = 64 * 1024


def small_tls_buffers(server: web.Server) -> None:
    """Give every TLS connection ``server`` accepts the limits above (set when the
    connection is made, before its first byte is read)."""
    made = server.connection_made

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        made(handler, transport)
        transport.set_write_buffer_limits(high=TLS_WRITE_HIGH)
        set_read_limits = getattr(transport, "set_read_buffer_limits", None)
        if set_read_limits is not None:  # TLS transports (uvloop's and asyncio's)
            set_read_limits(high=TLS_READ_HIGH)

    server.connection_made = connection_made  # type: ignore[method-assign]


def freeze_startup_objects() -> None:
    """Move what start-up made (modules, classes, the gateway, the disks' handles:
    ~48,000 objects) out of the collector's sight, once, after a collection.

    They live as long as the process; a full collection walked them all each time
    (~14 ms in which no request is served, every ~2 s under 4 KiB PUTs); frozen,
    ~0.5 ms. Frozen objects are still freed when their count drops to zero; only a
    cycle among them would outlive its use (retired stores: unfrozen once closed).
    """
    gc.collect()
    gc.freeze()


async def follow_read_only(store: Callable[[], Any], path: str,
                           interval: float = 0.25) -> None:
    """Follow the owner's read-only flag (a cluster node out of touch with etcd)."""
    while True:
        try:
            with open(path) as f:
                store().read_only = f.read() or "read-only"
        except FileNotFoundError:
            store().read_only = None
        except OSError:
            pass
        await asyncio.sleep(interval)


async def follow_worker_layout(gateway: Gateway, live: Any, registry: Any, path: str,
                               cfg: dict) -> None:
    """Serve the layout the owner writes as it changes (pools created, drained)."""
    from .cluster_node import ClusterBucketNames, follow_layout, read_layout_file

    async def apply(store: Any, opened: list, gone: list) -> None:
        old = gateway.store
        store.lifecycle_day_ns = cfg.get("lifecycle_day_ns", DAY_NS)
        store.key_locks = KeyLocks(cfg["key_locks"])
        store.bucket_names = ClusterBucketNames(registry, store)
        store.read_only = old.read_only
        store.on_event = old.on_event
        for s in opened:
            await s.start(settle=False, owner=False)
        gateway.store = store
        if gone:  # after the requests still using them
            asyncio.get_running_loop().call_later(
                30, lambda: asyncio.ensure_future(retire(gone)))

    async def retire(gone: list) -> None:
        await asyncio.gather(*(s.close() for s in gone))
        # Start-up froze them: let a collection see them again (their cycles).
        gc.unfreeze()
        freeze_startup_objects()

    await follow_layout(read_layout_file(path), live, apply, interval=1.0)


def main() -> None:
    # The engine's commit and coding threads wake from I/O needing the GIL for a
    # moment; a short switch interval keeps them from waiting 5 ms behind the
    # event loop (measured: +30% small-object PUTs).
    sys.setswitchinterval(0.0005)
    cfg = json.loads(os.environ.pop("BASALT_WORKER"))
    cfg["access_key"] = os.environ["BASALT_ACCESS_KEY"]
    cfg["secret_key"] = os.environ["BASALT_SECRET_KEY"]
    logs.setup(cfg.get("log_level", "info"))
    try:
        import uvloop
        uvloop.run(run(cfg))
    except ImportError:
        asyncio.run(run(cfg))


if __name__ == "__main__":
    sys.exit(main())
