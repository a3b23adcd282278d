"""This server as a node of a cluster (``basalt serve --cluster etcd://...``).

A node registers itself and its disks in etcd under a lease (alive while the
lease lives), serves its disks to the other nodes over the node RPC
(storaged/disk_server.py, on ``--advertise``), and waits until a pool that uses
its disks exists (``basalt cluster pool create``). Its erasure set is then the
pool's layout: its own disks as LocalDisks (formatted for that set on first
use), the other nodes' as RemoteDisks. A disk's id is derived from the node
name and the disk's path, so a wiped or replaced disk comes back into the same
slot of its set and is healed there.

The layout is followed as it changes (LiveLayout, follow_layout): one set is
an ObjectStore, several sets or pools a storaged.pools.PooledStore.

The node RPC may run over TLS (NodeTLS, ``basalt serve --node-tls-cert/-key
[--node-tls-ca]``): the node then serves HTTPS only on ``--advertise`` and
registers ``https://HOST:PORT`` as its address, so its peers reach it over TLS;
with a CA, peers' certificates are checked against it both ways (mutual TLS).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgpack
from aiohttp import web

import blockd.volmeta  # noqa: F401  (registers the volume ops the disk server decodes)
from cluster import Election, Etcd, Lease, Node, NodeDisk, Pool, Registry, RegistryError
from storaged.disk import Disk, LocalDisk
from storaged.disk_server import disk_app
from storaged.format import NOT_FORMATTED, DiskFormat, Slot, member_slot, needs_healing, read_format
from storaged.layout import aligned_block_size
from storaged.remote_disk import RemoteDisk
from storaged.store import BLOCK_SIZE, ObjectStore

log = logging.getLogger("basalt.cluster")

NODE_TTL = 5  # seconds: a node is dead this long after its last keepalive
_DISK_IDS = uuid.UUID("6f1d5c1e-3b0a-4d8e-9a51-0c2d6e9b7a41")


class ClusterError(Exception):
    """This node cannot take part in the cluster as configured."""


@dataclasses.dataclass(frozen=True)
class NodeTLS:
    """TLS for the node RPC: this node's certificate and key (served on the
    advertise address, presented to its peers) and the CA that signs the nodes'
    certificates (None: the system's CAs verify peers, no client certificate is
    required). Paths, so they cross to the S3 workers as plain data."""

    cert: str
    key: str
    ca: str | None = None

    def server_context(self) -> ssl.SSLContext:
        """HTTPS on the advertise address; with a CA, only clients it signed."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        if self.ca:
            ctx.load_verify_locations(cafile=self.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """Peers' certificates verified (against the CA, else the system's) for
        the host they advertise; this node's own certificate presented."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def as_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> NodeTLS | None:
        return None if not data else cls(data["cert"], data["key"], data.get("ca"))


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    url: str                      # etcd://H:P[,H:P...]
    node: str                     # this node's name
    advertise: tuple[str, int]    # where the other nodes reach its disks
    zone: str = ""
    tls: NodeTLS | None = None    # the node RPC over TLS


def disk_id(node: str, root: str) -> str:
    """The id of the disk at ``root`` on ``node``: the same after a wipe."""
    return uuid.uuid5(_DISK_IDS, f"{node}\0{os.path.realpath(root)}").hex


def cluster_layout(pools: Sequence[Pool], nodes: dict[str, Node], me: str,
                   roots: dict[str, str]) -> list[dict[str, Any]]:
    """Every pool as JSON-able plain data: name, state and its sets' members,
    oldest pool first (its first set decides bucket creation)."""
    return [{"pool": p.name, "state": p.state,
             "sets": [set_members(p, i, nodes, me, roots) for i in range(len(p.sets))]}
            for p in sorted(pools, key=lambda p: (p.created_ns, p.name))]


def set_members(pool: Pool, index: int, nodes: dict[str, Node], me: str,
                roots: dict[str, str]) -> list[dict[str, Any]]:
    """Set ``index`` of ``pool`` as JSON-able members in position order:
    ``{"root": path}`` for this node's disks, ``{"node", "url"}`` for others'."""
    layout = pool.sets[index]
    ids = [ref.disk_id for ref in layout.disks]
    fmt = DiskFormat(f"{pool.name}-{pool.created_ns}-{index}", ids[0], tuple(ids), pool.k,
                     pool.m, aligned_block_size(BLOCK_SIZE, pool.k))
    members = []
    for ref in layout.disks:
        member: dict[str, Any] = {"disk_id": ref.disk_id, "node": ref.node,
                                  "format": dataclasses.replace(fmt, disk_id=ref.disk_id
                                                                ).to_json()}
        if ref.node == me:
            member["root"] = roots[ref.disk_id]
        else:
            node = nodes.get(ref.node)
            if node is None:
                raise ClusterError(f"pool {pool.name} uses node {ref.node}, which is unknown")
            member["url"] = node_url(node.advertise)
        members.append(member)
    return members


def advertise_address(host: str, port: int, tls: bool) -> str:
    """The address a node registers: ``HOST:PORT``, ``https://HOST:PORT`` with TLS."""
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"https://{hostport}" if tls else hostport


def node_url(advertise: str) -> str:
    """The node RPC's base URL of a registered address (see advertise_address)."""
    if "://" in advertise:
        return advertise
    host, _, port = advertise.rpartition(":")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def tls_mismatch(node: str, url: str, client_ssl: ssl.SSLContext | None) -> str | None:
    """Why peer ``node`` at ``url`` cannot be reached with this node's TLS
    settings (None: it can): both sides run the node RPC over TLS, or neither."""
    https = url.startswith("https://")
    if https and client_ssl is None:
        return (f"node {node} serves its disks over TLS ({url}) but this node has no "
                "node-RPC TLS configured (--node-tls-cert, --node-tls-key, --node-tls-ca)")
    if not https and client_ssl is not None:
        return (f"node {node} serves its disks without TLS ({url}) but this node "
                "requires TLS for the node RPC (--node-tls-cert)")
    return None


class UnreachableDisk(RemoteDisk):
    """A peer's disk this node cannot talk to as configured (TLS on one side
    only): offline for good, with the reason; no request is ever sent."""

    def __init__(self, *args: Any, why: str, **kw: Any) -> None:
        super().__init__(*args, online=False, **kw)
        self.why = self.reason = why

    def check(self) -> bool:
        return False

    def status(self) -> tuple[str, str | None]:
        return "offline", self.why

    def reattach(self, owner: bool) -> str | None:
        self.reason = self.why
        return self.why


def open_members(members: Sequence[dict[str, Any]], me: str, secret: bytes, *,
                 sync: bool = True, owner: bool = True,
                 client_ssl: ssl.SSLContext | None = None) -> list[Disk]:
    """The set's disks: LocalDisks (formatted by the ``owner`` process when new
    or wiped) and RemoteDisks (over TLS with ``client_ssl``), in position order."""
    disks: list[Disk] = []
    for pos, member in enumerate(members):
        fmt = DiskFormat.from_json(member["format"])
        if "root" in member:
            slot = member_slot(member["root"], fmt) if owner else _worker_slot(member["root"], fmt)
            disk = LocalDisk(slot, sync=sync)
            if slot.offline is None:
                disk.open()
                if owner:
                    disk.clean_tmp()
            disks.append(disk)
        else:
            why = tls_mismatch(member["node"], member["url"], client_ssl)
            if why is not None:
                log.error("peer disk unreachable", extra={"fields": {
                    "node": member["node"], "disk": member["disk_id"], "reason": why}})
                disks.append(UnreachableDisk(member["url"], member["disk_id"], pos, fmt, secret,
                                             member["node"], caller=me, why=why))
                continue
            disks.append(RemoteDisk(member["url"], member["disk_id"], pos, fmt, secret,
                                    member["node"], caller=me, ssl=client_ssl))
    return disks


class LiveLayout:
    """The store over the cluster's layout, rebuilt as the layout changes (a
    pool created, set draining, drained): sets that stay keep their ObjectStore
    (a disk's LMDB is opened once per process), new ones are opened."""

    def __init__(self, me: str, secret: bytes, *, sync: bool = True, owner: bool = True,
                 on_drained: Callable[[str], Any] | None = None,
                 tls: NodeTLS | None = None) -> None:
        self.me, self.secret, self.sync, self.owner = me, secret, sync, owner
        # One client context per process, shared by every RemoteDisk.
        self.client_ssl = tls.client_context() if tls is not None else None
        self.on_drained = on_drained
        self.layout: list[dict[str, Any]] | None = None
        self.sets: dict[str, ObjectStore] = {}  # deployment id → store
        self.store: Any = None

    def build(self, layout: list[dict[str, Any]]) -> tuple[Any, list[ObjectStore],
                                                           list[ObjectStore]]:
        """(store, sets opened now, sets no longer in the layout) for ``layout``."""
        from storaged.pools import PooledStore, StorePool
        sets: dict[str, ObjectStore] = {}
        opened = []
        pools = []
        for p in layout:
            stores = []
            for members in p["sets"]:
                dep = DiskFormat.from_json(members[0]["format"]).deployment_id
                if dep not in self.sets:
                    self.sets[dep] = ObjectStore(open_members(
                        members, self.me, self.secret, sync=self.sync, owner=self.owner,
                        client_ssl=self.client_ssl))
                    opened.append(self.sets[dep])
                sets[dep] = self.sets[dep]
                stores.append(sets[dep])
            pools.append(StorePool(p["pool"], p["state"], stores))
        gone = [s for dep, s in self.sets.items() if dep not in sets]
        self.sets, self.layout = sets, layout
        if len(pools) == 1 and len(pools[0].sets) == 1:
            self.store = pools[0].sets[0]
        else:
            self.store = PooledStore(pools, on_drained=self.on_drained)
        return self.store, opened, gone


def store_sets(store: Any) -> list[ObjectStore]:
    """The erasure sets (ObjectStores) behind a store, in layout order."""
    return list(getattr(store, "sets", None) or [store])


def _worker_slot(root: str, fmt: DiskFormat) -> Slot:
    """A worker's slot of its own disk: the owner formats it (offline until then)."""
    current = read_format(root)
    if current is None or not current.same_set(fmt):
        return Slot(root, fmt, fresh=False, offline=NOT_FORMATTED)
    return Slot(root, current, fresh=needs_healing(root))


class ClusterBucketNames:
    """Bucket names claimed in etcd: of concurrent creators on any nodes, the
    one whose claim etcd takes wins (see ObjectStore.bucket_names)."""

    STALE_NS = 60 * 10**9

    def __init__(self, registry: Registry, store: Any) -> None:
        self.registry, self.store = registry, store

    async def claim(self, name: str, record: bytes) -> bool:
        if await self.registry.create_bucket(name, record):
            return True
        held = await self.registry.get_bucket(name)
        # A claim whose creator died before the disks had the bucket would hold
        # the name forever: once it is old and no disk has the bucket, take it over.
        if held is not None and _age_ns(held) > self.STALE_NS \
                and await self.store.bucket_info(name) is None \
                and await self.registry.delete_bucket(name, held):
            return await self.registry.create_bucket(name, record)
        return False

    async def release(self, name: str, record: bytes) -> None:
        await self.registry.delete_bucket(name, record)


def _age_ns(record: bytes) -> int:
    try:
        return time.time_ns() - int(msgpack.unpackb(record)["ct"])
    except Exception:
        return 0


class ClusterNode:
    """This node's membership: registration under a lease, the pool it serves in."""

    def __init__(self, opts: ClusterOptions, roots: Sequence[str], secret: bytes) -> None:
        self.opts = opts
        self.secret = secret
        self.roots = {disk_id(opts.node, r): os.path.abspath(r) for r in roots}
        self.etcd = Etcd(opts.url)
        self.registry = Registry(self.etcd)
        self.lease: Lease | None = None
        self._keeper: asyncio.Task | None = None
        self._runner: web.AppRunner | None = None
        # One leader runs the cluster's background jobs (full heals, upload
        # expiry, lifecycle), so no two nodes do the same work at once.
        self.election = Election(self.etcd, "background", opts.node, ttl=NODE_TTL)
        # Told why writes must stop (None: they may go on again); see _stay_registered.
        self.on_read_only: Callable[[str | None], None] = lambda reason: None

    def record(self) -> Node:
        host, port = self.opts.advertise
        disks = tuple(NodeDisk(self.opts.node, did, root, _size(root))
                      for did, root in sorted(self.roots.items()))
        return Node(self.opts.node, advertise_address(host, port, self.opts.tls is not None),
                    self.opts.zone, disks)

    async def join(self) -> None:
        """Register this node (and keep it registered while it runs)."""
        self.lease = Lease(self.etcd, NODE_TTL)
        await self.lease.start()
        await self._register(patience=2 * NODE_TTL + 1)
        self._keeper = asyncio.ensure_future(self._stay_registered())
        log.info("joined the cluster", extra={"fields": {
            "node": self.opts.node,
            "advertise": advertise_address(*self.opts.advertise, self.opts.tls is not None),
            "zone": self.opts.zone, "disks": len(self.roots)}})

    async def _register(self, patience: float) -> None:
        """Register under the current lease. A live record of this name under
        another lease is this node's previous life (killed, restarted) until its
        lease ends — or another node with this name: after ``patience``
        seconds, refused (the two would claim the same disk ids)."""
        assert self.lease is not None
        deadline = time.monotonic() + patience
        while True:
            try:
                await self.registry.register_node(self.record(), self.lease.id)
                return
            except RegistryError as exc:
                if exc.code != "NodeNameTaken" or time.monotonic() > deadline:
                    raise ClusterError(f"cannot join the cluster: {exc.message}") from None
                await asyncio.sleep(0.5)

    async def _stay_registered(self) -> None:
        """After an etcd outage long enough to lose the lease, take no writes
        (the cluster may have moved on without this node: a pool drained, the
        node removed) until registered anew; reads go on meanwhile."""
        while True:
            assert self.lease is not None
            await self.lease.lost.wait()
            log.warning("cluster lease lost: read-only until etcd answers again")
            self.on_read_only("this node has lost touch with the cluster's etcd "
                              "(no quorum or unreachable); reads go on")
            while True:
                try:
                    await self.lease.close(revoke=True)
                    self.lease = Lease(self.etcd, NODE_TTL)
                    await self.lease.start()
                    await self._register(patience=2 * NODE_TTL + 1)
                    break
                except ClusterError as exc:  # another node took this name meanwhile
                    log.error("%s; staying read-only", exc)
                    await asyncio.sleep(5)
                except Exception as exc:
                    log.debug("cannot register yet: %s", exc)
                    await asyncio.sleep(1)
            log.info("back in touch with etcd: writes resume")
            self.on_read_only(None)

    async def serve_disks(self, disks: Sequence[Disk]) -> None:
        """Answer the other nodes' requests for ``disks`` on the advertise address."""
        app = disk_app([d for d in disks if d.local], self.secret, self.opts.node)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        host, port = self.opts.advertise
        tls = self.opts.tls.server_context() if self.opts.tls is not None else None
        await web.TCPSite(self._runner, host, port, reuse_address=True,
                          ssl_context=tls).start()

    async def current_layout(self) -> list[dict[str, Any]]:
        """The layout of the pools that are not drained (see cluster_layout)."""
        pools = [p for p in await self.registry.pools() if p.state != "drained"]
        nodes = {n.name: n for n, _ in await self.registry.nodes()}
        return cluster_layout(pools, nodes, self.opts.node, self.roots)

    def serve_more_disks(self, disks: Sequence[Disk]) -> None:
        """Answer for these disks too (a pool created while this node runs)."""
        if self._runner is not None:
            from storaged.disk_server import SERVICE
            self._runner.app[SERVICE].add([d for d in disks if d.local])

    async def wait_for_pool(self, poll: float = 1.0) -> list[dict[str, Any]]:
        """The cluster's layout (see cluster_layout), once a pool has this node's disks."""
        told = False
        while True:
            try:
                pools = await self.registry.pools()
                mine = [p for p in pools if any(r.disk_id in self.roots for r in p.disk_refs())]
                if mine:
                    return await self.current_layout()
            except ClusterError:
                raise
            except Exception as exc:
                log.warning("cannot read the cluster layout: %s", exc)
            if not told:
                log.info("waiting for a pool with this node's disks (basalt cluster pool "
                         "create --ec K+M NODE...)")
                told = True
            await asyncio.sleep(poll)

    async def run_for_leader(self) -> None:
        """Stand in the election for the background jobs (once this node serves a
        store: a node still waiting for a pool must not hold the jobs up)."""
        await self.election.campaign()

    def leads(self, job: str) -> bool:
        """Whether this node runs background job ``job`` now (it leads)."""
        return self.election.is_leader

    async def close(self) -> None:
        await self.election.resign()
        if self._keeper is not None:
            self._keeper.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.lease is not None:
            await self.lease.close(revoke=True)
        await self.etcd.close()


def _size(root: str) -> int:
    os.makedirs(root, exist_ok=True)
    st = os.statvfs(root)
    return st.f_blocks * st.f_frsize


def write_layout(path: str, layout: list[dict[str, Any]]) -> None:
    """The layout for this node's S3 workers (atomic: temp file, rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(layout, f)
    os.replace(tmp, path)


async def follow_layout(read: Callable[[], Awaitable[list[dict[str, Any]] | None]],
                        live: LiveLayout,
                        apply: Callable[[Any, list[ObjectStore], list[ObjectStore]],
                                        Awaitable[None]],
                        tick: Callable[[Any], None] = lambda store: None,
                        interval: float = 2.0) -> None:
    """Rebuild the store whenever ``read()`` gives another layout and hand the new
    one to ``apply(store, opened sets, gone sets)``; ``tick(store)`` each round."""
    while True:
        await asyncio.sleep(interval)
        try:
            layout = await read()
            if layout and layout != live.layout:
                log.info("cluster layout changed", extra={"fields": {
                    "pools": ",".join(f"{p['pool']}:{p['state']}" for p in layout)}})
                await apply(*live.build(layout))
            tick(live.store)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cannot follow the cluster layout")


def read_layout_file(path: str) -> Callable[[], Awaitable[list[dict[str, Any]] | None]]:
    """A reader of the owner's layout file, for follow_layout in a worker."""
    async def read() -> list[dict[str, Any]] | None:
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None
    return read
