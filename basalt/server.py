"""The all-in-one process behind `basalt serve`: it wires the daemons together.

The main process owns the disks: it opens and checks them (formatting new
ones), settles writes a crash interrupted, runs background healing, serves
block volumes over NBD (and their admin API on a Unix socket the workers
forward to), and supervises one S3 worker process per core, each with its own SO_REUSEPORT
listening socket on the S3 address. SIGINT/SIGTERM stop everything cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from blockd import NBDServer, VolumeManager, owner_app
from storaged import ObjectStore, lmdb_maps, lock_server, master_key
from storaged.lifecycle import LifecycleScanner
from storaged.lifecycle_rules import DAY_NS
from storaged.locks import KeyLocks
from storaged.metering import Meter, MeteredClock

from . import credentials
from .config import disk_paths, inside, save_settings
from .layers import Layers
from .status import ServerInfo
from .status import routes as status_routes
from .usage_sampler import UsageSampler
from .volume_jobs import VolumeJobs

log = logging.getLogger("basalt.server")

# S3 requests in flight get this long to finish after SIGTERM before they are
# cancelled (aiohttp waits once for handlers, then once more for the cancelled
# ones to unwind); a worker still running after WORKER_KILL_AFTER is killed, so
# the whole process tree is gone within 5 s of the signal.
WORKER_SHUTDOWN_GRACE = 1.5
WORKER_KILL_AFTER = 2 * WORKER_SHUTDOWN_GRACE + 0.5
# NBD requests in flight get this long to finish at shutdown (they run beside
# the workers' grace); the volumes' final flush then makes every acknowledged
# write durable.
NBD_SHUTDOWN_GRACE = 2.0


@dataclasses.dataclass
class ServeOptions:
    data_dir: str
    disks: list[str] | None = None
    ec: tuple[int, int] | None = None
    s3_address: tuple[str, int] = ("127.0.0.1", 9000)
    nbd_address: tuple[str, int] = ("127.0.0.1", 10809)
    tls_cert: str | None = None
    tls_key: str | None = None
    domain: str | None = None
    region: str = "us-east-1"
    nbd_socket: str | None = None
    netns: str | None = None          # network namespace for networks and guests
    libvirt_uri: str | None = None    # None: qemu:///system; "private": Basalt's own libvirtd
    workers: int = 0          # 0: one per core
    sync: bool = True
    log_level: str = "info"
    lifecycle_day_ns: int = DAY_NS    # a lifecycle rule's day (shorter in tests)
    cluster: Any = None               # basalt.cluster_node.ClusterOptions: a cluster node
    master_key_file: str | None = None  # None: DATA_DIR/master.key, made on first start
    allow_sse_c_over_http: bool = False  # tests only: AWS refuses SSE-C keys sent in clear
    usage_flush_seconds: float = 10.0  # metered usage reaches its records this often
    usage_hour_seconds: float = 3600.0  # a metered hour (shorter in tests: a day in a minute)


def package_version() -> str:
    from .cli import version
    return version()


def master_key_path(opts: ServeOptions, data_dir: str) -> str:
    """The master key file: --master-key-file (it must exist: a typo must not
    silently start with a new key that opens nothing), else one in the data dir
    made on first start — random on a single server, derived from the cluster
    secret on a cluster node (every node must hold the same key)."""
    if opts.master_key_file:
        master_key.load(opts.master_key_file)
        return os.path.abspath(opts.master_key_file)
    path = master_key.default_path(data_dir)
    if opts.cluster is not None:
        from storaged import node_auth
        master_key.load_or_create(path, master_key.from_cluster_secret(
            node_auth.cluster_secret()))
    else:
        master_key.load_or_create(path)
    return path


async def check_master_key(store: Any, path: str) -> None:
    """Stop at once when the master key is not the one the store's keys were made
    under; a store that cannot be read now is checked by the next start."""
    from storaged.kms import KeyService
    from storaged.master_key import MasterKeyError
    try:
        await KeyService(store, master_key.load(path)).check_master()
    except MasterKeyError:
        raise
    except Exception as exc:
        log.warning("master key not checked against the store: %s", exc)


async def reseal_access_keys(store: Any, creds: Any, path: str) -> None:
    """Move access key secrets sealed under the root secret (before the master
    key sealed them) under the master key; a store that cannot be read now is
    handled by the next start."""
    from gateway.identity import Directory
    try:
        count = await Directory(store, creds.access_key, creds.secret_key,
                                master_key.load(path)).reseal_legacy()
    except Exception as exc:
        log.warning("access key secrets not re-sealed under the master key: %s", exc)
        return
    if count:
        log.info("access key secrets re-sealed under the master key", extra={
            "fields": {"keys": count}})


def listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


def unix_path(data_dir: str, name: str) -> str:
    """``DATA_DIR/run/NAME``, or a short path in the temp dir when that is too
    long for AF_UNIX (108 bytes); an old socket file there is removed."""
    path = os.path.join(data_dir, "run", name)
    if len(path) > 100:
        digest = hashlib.sha1(data_dir.encode()).hexdigest()[:12]
        path = os.path.join(tempfile.gettempdir(), f"basalt-{digest}-{name}")
    if os.path.exists(path):
        os.unlink(path)
    return path


def claim_port(host: str, port: int) -> int:
    """Check that nobody listens on the address (SO_REUSEPORT would silently share
    it with another server of the same user); returns the port (chosen if 0)."""
    probe = listen(host, port)
    chosen = probe.getsockname()[1]
    probe.close()
    return chosen


class Workers:
    """Start, watch and stop the S3 worker processes.

    Each worker gets its own SO_REUSEPORT listening socket on the S3 address,
    so the kernel spreads connections across workers (one shared socket lets
    whichever worker wakes first take every keep-alive connection).
    """

    def __init__(self, count: int, address: tuple[str, int], settings: dict, env: dict) -> None:
        self.count, self.address, self.settings, self.env = count, address, settings, env
        self.procs: list[subprocess.Popen] = []
        self._stopping = False

    def _spawn(self) -> tuple[subprocess.Popen, int]:
        sock = listen(*self.address, reuse_port=True)
        rfd, wfd = os.pipe()
        settings = dict(self.settings, fd=sock.fileno(), ready_fd=wfd)
        env = dict(self.env, BASALT_WORKER=json.dumps(settings))
        try:
            proc = subprocess.Popen([sys.executable, "-m", "basalt.worker"], env=env,
                                    pass_fds=(sock.fileno(), wfd))
        finally:
            os.close(wfd)
            sock.close()  # the worker holds it now
        return proc, rfd

    async def start(self, timeout: float = 60.0) -> None:
        pending = [self._spawn() for _ in range(self.count)]
        self.procs = [p for p, _ in pending]
        loop = asyncio.get_running_loop()
        for proc, rfd in pending:
            ready = await asyncio.wait_for(loop.run_in_executor(None, os.read, rfd, 1), timeout)
            os.close(rfd)
            if ready != b"R":
                raise RuntimeError(f"S3 worker {proc.pid} failed to start "
                                   f"(exit code {proc.poll()})")

    async def supervise(self) -> None:
        """Restart workers that die (with a pause, so a crash loop stays slow)."""
        while not self._stopping:
            await asyncio.sleep(1)
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None and not self._stopping:
                    log.error("S3 worker exited; restarting",
                              extra={"fields": {"pid": proc.pid, "code": proc.returncode}})
                    new, rfd = self._spawn()
                    os.close(rfd)
                    self.procs[i] = new
                    await asyncio.sleep(1)

    async def stop(self, timeout: float = WORKER_KILL_AFTER) -> None:
        """SIGTERM every worker (each lets its requests finish for a short grace,
        then cancels them); kill those still running after ``timeout`` seconds."""
        self._stopping = True
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in self.procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for proc in self.procs:
            if proc.poll() is None:
                log.warning("S3 worker did not stop in time: killing it",
                            extra={"fields": {"pid": proc.pid, "timeout": timeout}})
                proc.kill()
                proc.wait()


def use_metrics_dir(path: str) -> None:
    """Make this process's Prometheus figures (NBD, heal passes) files in
    ``path``, where the workers' scrape sums every process's."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    from prometheus_client import values
    # The value class is chosen when prometheus_client is first imported; made
    # again here in case that happened before the directory was known.
    values.ValueClass = values.get_value_class()


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set `stop` on SIGINT/SIGTERM sent to this process.

    Not `loop.add_signal_handler`: its wakeup pipe is inherited by fork()ed
    children (pyroute2 forks a helper per namespace operation and SIGTERMs
    it), and a signal to such a child would reach this loop as our own.
    """
    loop = asyncio.get_running_loop()
    main = os.getpid()

    def handler(signum: int, _frame) -> None:
        if os.getpid() != main:  # a forked child: die as if no handler were set
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


async def serve(opts: ServeOptions) -> None:
    """Run until SIGINT/SIGTERM."""
    data_dir = os.path.abspath(opts.data_dir)
    disks = disk_paths(data_dir, opts.disks)
    # First of all, before any disk, credentials, settings or socket is touched:
    # a second server on this data dir or on any of its disks stops here. The
    # locks last as long as this process (the kernel drops them at exit).
    locks = lock_server(data_dir, disks)
    creds, generated = credentials.for_server(data_dir)
    master_path = master_key_path(opts, data_dir)
    usage_clock = MeteredClock(time.time(), opts.usage_hour_seconds)
    stop = asyncio.Event()
    stop_on_signals(stop)
    node = members = None
    if opts.cluster is not None:
        # Only here: a single-node server never loads the cluster code (nor needs etcd).
        from .cluster_node import LiveLayout, store_sets, write_layout
        node, members = await join_cluster(opts, disks, creds, stop)
        if members is None:  # stopped while waiting for a pool
            await node.close()
            return
        live = LiveLayout(opts.cluster.node, node.secret, sync=opts.sync,
                          on_drained=lambda pool: node.registry.set_pool_state(pool, "drained"),
                          tls=opts.cluster.tls)
        store = live.build(members)[0]
    else:
        store = ObjectStore.open(disks, ec=opts.ec, sync=opts.sync,
                                 create=lambda root: inside(root, data_dir))
    store.lifecycle_day_ns = opts.lifecycle_day_ns
    key_locks = os.path.join(data_dir, "run", "keylocks")
    store.key_locks = KeyLocks(key_locks)  # shared with the S3 workers
    locks.lock_disks(disks)  # the disks a first format just created
    save_settings(data_dir, {"disks": disks})
    metrics_dir = os.path.join(data_dir, "run", "metrics")
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir)
    use_metrics_dir(metrics_dir)
    workers: Workers | None = None
    volumes: VolumeManager | None = None
    nbd: NBDServer | None = None
    owner: web.AppRunner | None = None
    layers: Layers | None = None
    cluster_volumes: Any = None  # basalt.cluster_volumes.ClusterVolumes on a cluster node
    scanner: LifecycleScanner | None = None
    usage: UsageSampler | None = None
    following: asyncio.Future | None = None
    layout_path = ""
    try:
        if node is not None:
            node.on_read_only = read_only_switch(lambda: live.store, data_dir)
            configure_cluster_store(store, node)
            await node.serve_disks([d for s in store_sets(store) for d in s.disks])
        await store.start()
        await check_master_key(store, master_path)
        await reseal_access_keys(store, creds, master_path)
        scanner = LifecycleScanner(store)
        scanner.start()
        if node is not None:
            await node.run_for_leader()
            layout_path = os.path.join(data_dir, "run", "layout.json")
            write_layout(layout_path, members)
            following = asyncio.ensure_future(follow_cluster_layout(
                node, live, scanner, layout_path, key_locks, opts.lifecycle_day_ns))
        log.info("storage ready", extra={"fields": {
            "data_dir": data_dir, "ec": f"{store.k}+{store.m}", "disks": len(disks),
            "block_size": store.geometry.block_size, "write_quorum": store.write_quorum}})
        for state in store.disk_states():
            log.info("disk", extra={"fields": state})
        owner_socket = unix_path(data_dir, "owner.sock")
        nbd_socket = opts.nbd_socket or unix_path(data_dir, "nbd.sock")
        server_info = ServerInfo(store, package_version(),
                                 cluster=opts.cluster.node if opts.cluster else None,
                                 usage_clock=usage_clock)
        if node is None:
            from storaged.kms import KeyService  # encrypted volumes' data keys
            volumes = VolumeManager(store, KeyService(store, master_key.load(master_path)))
            await volumes.start()
            volumes.watch()
            nbd = NBDServer(volumes)
            await nbd.start(*opts.nbd_address)
            # Guests reach their disks on this Unix socket: QEMU runs as another
            # user under a system libvirtd, so it is world-connectable (0666), which
            # grants what the loopback NBD port already grants any local user.
            await nbd.start_unix(nbd_socket)
            os.chmod(nbd_socket, 0o666)
            layers = Layers(data_dir, opts.netns, opts.libvirt_uri, nbd_socket)
            await layers.start()
            app = owner_app(volumes)
            app.add_routes(layers.routes())
            # backups and restores as admin API jobs (children running the CLI)
            VolumeJobs(volumes, store, creds, server_info.endpoints, opts.tls_cert).attach(app)
            server_info.volumes, server_info.layers = volumes, layers
        else:
            from .cluster_volumes import ClusterVolumes
            host, port = opts.s3_address
            scheme = "https" if opts.tls_cert else "http"
            # Volumes live on the first set (ChunkPool addresses one set's disks).
            from storaged.kms import KeyService  # every node holds the same master key
            cluster_volumes = ClusterVolumes(node, store_sets(store)[0], opts.nbd_address,
                                             f"{scheme}://{host}:{port}", creds,
                                             unix_path(data_dir, "volumes.sock"),
                                             KeyService(store, master_key.load(master_path)))
            app = cluster_owner_app(node, cluster_volumes.routes())
        app.add_routes(status_routes(server_info))
        # At shutdown the workers are gone before this closes; whatever still
        # runs here (a followed console, a request a killed worker forwarded)
        # gets half a second, not aiohttp's default minute.
        owner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await owner.setup()
        await web.UnixSite(owner, owner_socket).start()
        nbd_host, nbd_port = opts.nbd_address
        nbd_port = nbd.port if nbd is not None else nbd_port
        if nbd is not None:
            log.info("NBD ready", extra={"fields": {"address": f"{nbd_host}:{nbd_port}",
                                                    "socket": nbd_socket}})
        host, port = opts.s3_address
        port = claim_port(host, port)
        settings = {"disks": disks, "sync": opts.sync, "region": opts.region,
                    "data_dir": data_dir,
                    "domain": opts.domain, "tls_cert": opts.tls_cert, "tls_key": opts.tls_key,
                    "log_level": opts.log_level, "owner_socket": owner_socket,
                    "nbd_socket": nbd_socket if nbd is not None else None,
                    "nbd_address": f"{nbd_host}:{nbd_port}",
                    "cluster": None if node is None else {"node": node.opts.node,
                                                          "members": members,
                                                          "layout_path": layout_path,
                                                          "etcd": node.opts.url,
                                                          "tls": node_tls_settings(node)},
                    "read_only_path": None if node is None else read_only_path(data_dir),
                    "lifecycle_day_ns": opts.lifecycle_day_ns, "key_locks": key_locks,
                    "master_key_file": master_path,
                    "allow_sse_c_over_http": opts.allow_sse_c_over_http,
                    "usage_flush_seconds": opts.usage_flush_seconds,
                    "usage_clock": [usage_clock.epoch, opts.usage_hour_seconds],
                    "shutdown_grace": WORKER_SHUTDOWN_GRACE}
        # One malloc arena: the I/O threads allocate little (their buffers are the
        # stripe pool's), and each extra arena pinned a few MiB freed-but-resident.
        env = dict(os.environ, BASALT_ACCESS_KEY=creds.access_key,
                   BASALT_SECRET_KEY=creds.secret_key, PROMETHEUS_MULTIPROC_DIR=metrics_dir,
                   MALLOC_ARENA_MAX=os.environ.get("MALLOC_ARENA_MAX", "1"))
        workers = Workers(opts.workers or os.cpu_count() or 1, (host, port), settings, env)
        await workers.start()
        if cluster_volumes is not None:
            await cluster_volumes.start()
        scheme = "https" if opts.tls_cert else "http"
        url = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"
        log.info("S3 ready", extra={"fields": {"url": url, "workers": workers.count}})
        server_info.endpoints.update(s3=url, nbd=f"nbd://{nbd_host}:{nbd_port}/VOLUME")
        server_info.nbd_address = f"{nbd_host}:{nbd_port}"
        if nbd is not None:
            server_info.endpoints["nbd_socket"] = server_info.nbd_socket = nbd_socket
        print(f"Basalt is serving {len(store.disks)} disks ({store.k}+{store.m}) from {data_dir}\n"
              f"S3 endpoint: {url}", flush=True)
        print(f"NBD: nbd://{nbd_host}:{nbd_port}/VOLUME", flush=True)
        if generated:
            print(f"Generated root credentials (stored in {data_dir}/credentials.json):\n"
                  f"  BASALT_ACCESS_KEY={creds.access_key}\n"
                  f"  BASALT_SECRET_KEY={creds.secret_key}", flush=True)
        if opts.usage_flush_seconds > 0:  # 0: metering off
            usage = UsageSampler(store, Meter(store, "owner", opts.usage_flush_seconds,
                                              clock=usage_clock),
                                 volumes, layers, every=opts.usage_flush_seconds,
                                 clock=usage_clock)
            usage.start()
        supervisor = asyncio.ensure_future(workers.supervise())
        released = asyncio.ensure_future(lmdb_maps.keep_released())  # heals, usage, lifecycle read LMDB
        await stop.wait()
        log.info("shutting down")
        supervisor.cancel()
        released.cancel()
    finally:
        # Order: the S3 workers and NBD clients drain side by side (both may
        # still need the owner socket and the volumes), then the owner socket,
        # the layers, the volumes (a last flush) and the disks close.
        started = time.monotonic()
        draining = []
        if workers is not None:
            draining.append(workers.stop())
        if nbd is not None:
            draining.append(nbd.close(timeout=NBD_SHUTDOWN_GRACE))
        for result in await asyncio.gather(*draining, return_exceptions=True):
            if isinstance(result, BaseException):
                log.warning("shutdown step failed", extra={"fields": {"error": repr(result)}})
        if usage is not None:
            await usage.close()
        if owner is not None:
            await owner.cleanup()
            try:  # aiohttp leaves the socket file behind
                os.unlink(owner_socket)
            except OSError:
                pass
        if layers is not None:
            await layers.close()
        if volumes is not None:
            await volumes.close()
        if cluster_volumes is not None:
            await cluster_volumes.close()
        if scanner is not None:
            await scanner.stop()
        if following is not None:
            following.cancel()
        if node is not None:
            for s in live.sets.values():
                await s.close()
        await store.close()
        if node is not None:
            await node.close()
        log.info("stopped", extra={"fields": {"seconds": round(time.monotonic() - started, 3)}})


async def join_cluster(opts: ServeOptions, disks: list[str], creds: Any, stop: asyncio.Event
                       ) -> tuple[Any, list | None]:
    """Register this node; until a pool uses its disks, serve the cluster admin
    API on the S3 address (there is no S3 service to forward from yet).
    Returns the node and its set's members (None: stopped while waiting)."""
    from storaged import node_auth

    from .cluster_api import waiting_app
    from .cluster_node import ClusterNode
    node = ClusterNode(opts.cluster, disks, node_auth.cluster_secret())
    await node.join()
    host, port = opts.s3_address
    runner = web.AppRunner(waiting_app(node, {creds.access_key: creds.secret_key}),
                           access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    waiting = asyncio.ensure_future(node.wait_for_pool())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([waiting, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        await runner.cleanup()
    if not waiting.done():
        waiting.cancel()
        return node, None
    return node, waiting.result()


def node_tls_settings(node: Any) -> dict | None:
    """The node RPC's TLS files for the S3 workers (paths: each worker makes its
    own client context from them, see basalt.cluster_node.NodeTLS)."""
    tls = node.opts.tls
    return None if tls is None else tls.as_dict()


def configure_cluster_store(store: Any, node: Any) -> None:
    """What a cluster node's store needs beyond the disks: the leader's jobs,
    bucket names in etcd, read-only while out of touch with etcd."""
    from .cluster_node import ClusterBucketNames
    store.leads = node.leads
    store.bucket_names = ClusterBucketNames(node.registry, store)


async def follow_cluster_layout(node: Any, live: Any, scanner: LifecycleScanner,
                                layout_path: str, key_locks: str, day_ns: int) -> None:
    """Serve the layout as it changes: new pools' sets opened, started and their
    disks served to the other nodes, the workers told (the layout file), left
    sets closed after a grace; the leader drains draining pools."""
    from .cluster_node import follow_layout, write_layout
    draining: dict[str, asyncio.Future] = {}
    serving = [live.store]

    async def apply(store: Any, opened: list, gone: list) -> None:
        store.lifecycle_day_ns = day_ns
        store.key_locks = KeyLocks(key_locks)
        store.read_only = serving[0].read_only
        serving[0] = store
        configure_cluster_store(store, node)
        for s in opened:
            await s.start()
            node.serve_more_disks(s.disks)
        scanner.store = store
        write_layout(layout_path, live.layout)
        if gone:
            asyncio.get_running_loop().call_later(
                30, lambda: [asyncio.ensure_future(s.close()) for s in gone])

    def tick(store: Any) -> None:
        for p in live.layout or ():
            name = p["pool"]
            if p["state"] == "draining" and node.leads("drain") and hasattr(store, "drain") \
                    and (name not in draining or draining[name].done()):
                log.info("draining pool", extra={"fields": {"pool": name}})
                draining[name] = asyncio.ensure_future(store.drain(name))

    await follow_layout(node.current_layout, live, apply, tick)


def read_only_path(data_dir: str) -> str:
    return os.path.join(data_dir, "run", "read-only")


def read_only_switch(store: Callable[[], Any], data_dir: str) -> Callable[[str | None], None]:
    """Set (reason) or clear (None) read-only mode in this process (on the store
    ``store()`` gives) and, through a file the S3 workers watch, in theirs."""
    path = read_only_path(data_dir)

    def switch(reason: str | None) -> None:
        store().read_only = reason
        if reason is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(reason)
        os.replace(tmp, path)
    switch(None)  # a flag left by an earlier run is stale
    return switch


def cluster_owner_app(node: Any, volume_routes: web.RouteTableDef) -> web.Application:
    """The owner socket of a cluster node: the cluster admin routes, the volume
    routes (served by the volume owner); VMs and networks answer that a cluster
    does not serve them yet."""
    from .cluster_api import cluster_routes, refusing_routes
    app = web.Application()
    app.add_routes(cluster_routes(node))
    app.add_routes(volume_routes)
    app.add_routes(refusing_routes("VMs and networks are not served in cluster mode yet"))
    return app
