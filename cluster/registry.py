"""The cluster's records in etcd: nodes, pools, buckets and volume owners.

Key schema (``P`` is the registry's prefix, ``/basalt`` by default; every name
is one key segment: non-empty, no ``/``)::

    P/nodes/live/NODE      Node JSON, on the node's lease: present while the node lives
    P/nodes/known/NODE     Node JSON, no lease: the node stays listed (dead) after its
                           lease ends, until `remove_node`
    P/pools/POOL           Pool JSON (name, k, m, state, created_ns, sets of disk refs)
    P/buckets/BUCKET       the bucket's record, opaque bytes (the gateway's format)
    P/volume-owners/VOL    the owning node's name, on the owner's lease
    /basalt/leader/JOB     (cluster.Election, always under /basalt: the node leading a job)

Each change that must not race is one etcd transaction:

- ``create_pool`` compares the pool's key absent, every node it uses still
  known, and the whole ``P/pools/`` range unchanged since it was read (a
  range compare: every pool key's mod revision at most the highest one read),
  so two pools created at once can never share a disk; on that last compare
  failing it reads again and decides again.
- ``remove_node`` deletes the node's records only if ``P/pools/`` is unchanged
  since it checked that no pool but a drained one uses the node, and
  ``create_pool`` requires the node's record: the two cannot interleave.
- ``set_pool_state`` is a compare-and-swap on the pool key's mod revision.
- ``create_bucket`` and ``claim_volume`` create their key only if absent:
  exactly one of any number of concurrent creators wins.

A transaction whose answer was lost (:class:`cluster.EtcdUnavailable` with
``maybe_applied``) is never simply repeated: the registry reads what etcd holds
and decides from that (its own record found → it was applied). For buckets this
assumes two creators never send byte-identical records (the gateway's record
carries its creation time).

Errors: :class:`RegistryError` with a ``code`` the admin API prints
(``NoSuchPool``, ``PoolExists``, ``DiskInUse``, ``NodeInUse``, ``NoSuchNode``,
``InvalidPoolState``, ``InvalidArgument``, ``Conflict``); etcd being out of
reach raises :class:`cluster.EtcdUnavailable` as is.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar

from .etcd import (
    Etcd,
    EtcdUnavailable,
    Watch,
    WatchEvent,
    compare,
    op_delete,
    op_get,
    op_put,
    prefix_end,
)
from .layout import POOL_STATES, DiskRef, Node, Pool

log = logging.getLogger("basalt.cluster.registry")

__all__ = [
    "NodeEvent",
    "PoolEvent",
    "Registry",
    "RegistryError",
    "RegistryWatch",
]

# How often a transaction is redone when what it compared changed meanwhile.
_ATTEMPTS = 20
# Pool state changes the registry allows. A drained pool stays drained: its
# nodes may be removed once it is, so it can never take objects again.
_TRANSITIONS = {("active", "draining"), ("draining", "active"), ("draining", "drained")}


class RegistryError(Exception):
    """A refused registry change: ``code`` for programs, ``message`` for people."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NodeEvent(NamedTuple):
    """``kind``: "alive" (registered; ``node`` is its record), "dead" (its lease
    ended, or it was removed), "removed" (no longer known)."""

    kind: str
    name: str
    node: Node | None
    revision: int


class PoolEvent(NamedTuple):
    """``kind``: "put" (created or changed; ``pool`` is the new record) or "deleted"."""

    kind: str
    name: str
    pool: Pool | None
    revision: int


E = TypeVar("E")


class RegistryWatch(Generic[E]):
    """An async iterator of typed events over an etcd watch (``async with`` or
    ``close()``); reconnects and resumes as :class:`cluster.Watch` does."""

    def __init__(self, watch: Watch, convert: Callable[[WatchEvent], E | None]):
        self._watch = watch
        self._convert = convert

    def __aiter__(self) -> RegistryWatch[E]:
        return self

    async def __anext__(self) -> E:
        while True:
            event = self._convert(await self._watch.__anext__())
            if event is not None:
                return event

    async def __aenter__(self) -> RegistryWatch[E]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._watch.close()


def _segment(what: str, name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\0" in name:
        raise RegistryError("InvalidArgument", f"bad {what} name {name!r}")
    return name


def _dump(data: dict) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _range_unchanged(prefix: bytes, max_mod_revision: int) -> dict:
    """A txn compare holding while no key under ``prefix`` was created or changed
    after ``max_mod_revision`` (the highest mod revision read under it; 0: none)."""
    check = compare(prefix, "MOD", "LESS", max_mod_revision + 1)
    check["range_end"] = base64.b64encode(prefix_end(prefix)).decode("ascii")
    return check


def _range_kv(responses: list[dict]) -> dict | None:
    """The first key of the first range response of a txn, raw (value in base64)."""
    if not responses:
        return None
    kvs = (responses[0].get("response_range") or {}).get("kvs") or []
    return kvs[0] if kvs else None


class Registry:
    """The cluster's records in etcd (see the module docstring for the key schema)."""

    def __init__(self, etcd: Etcd, prefix: str = "/basalt"):
        self.etcd = etcd
        self.prefix = prefix.rstrip("/")
        self._live = f"{self.prefix}/nodes/live/".encode()
        self._known = f"{self.prefix}/nodes/known/".encode()
        self._nodes = f"{self.prefix}/nodes/".encode()
        self._pools = f"{self.prefix}/pools/".encode()
        self._buckets = f"{self.prefix}/buckets/".encode()
        self._owners = f"{self.prefix}/volume-owners/".encode()

    async def revision(self) -> int:
        """etcd's current revision (a ``start_revision`` for the watches)."""
        return await self.etcd.revision()

    # Nodes.

    async def register_node(self, node: Node, lease_id: int) -> None:
        """Publish ``node`` as alive for as long as ``lease_id`` lives (and as
        known until removed). Call again to update its record.

        Refused with ``NodeNameTaken`` while a node of that name is alive under
        another lease: two nodes of one name would claim the same disk ids.
        """
        name = _segment("node", node.name)
        if not lease_id:
            raise RegistryError("InvalidArgument", "a node registers under a lease")
        live = self._live + name.encode()
        record = _dump(node.as_dict())
        ops = [op_put(live, record, lease_id), op_put(self._known + name.encode(), record)]
        for attempt in range(3):
            try:
                ok, responses = await self.etcd.txn([compare(live, "CREATE", "EQUAL", 0)], ops,
                                                    [op_get(live)])
                if ok:
                    return
                kvs = (responses[0].get("response_range") or {}).get("kvs") or [] \
                    if responses else []
                if kvs and int(kvs[0].get("lease", 0)) == int(lease_id):  # ours: update
                    ok, _ = await self.etcd.txn([compare(live, "LEASE", "EQUAL", lease_id)], ops)
                    if ok:
                        return
                    continue  # it expired just now: create it again
                if not kvs:
                    continue
                holder = self._parse(live, base64.b64decode(kvs[0].get("value") or ""), Node.from_dict)
                where = f" (advertising {holder.advertise})" if holder is not None else ""
                raise RegistryError("NodeNameTaken", f"a node named {node.name} is already "
                                    f"alive in the cluster{where}: node names must be unique")
            except EtcdUnavailable as exc:   # the same transaction again is harmless
                if not exc.maybe_applied or attempt == 2:
                    raise
        raise RegistryError("NodeNameTaken", f"node {node.name}: its record kept changing "
                            "while registering")

    async def nodes(self) -> list[tuple[Node, bool]]:
        """Every known node with whether it is alive, by name."""
        live: dict[str, Node] = {}
        known: dict[str, Node] = {}
        for kv in await self.etcd.get_prefix(self._nodes):
            for base, into in ((self._live, live), (self._known, known)):
                if kv.key.startswith(base):
                    node = self._parse(kv.key, kv.value, Node.from_dict)
                    if node is not None:
                        into[kv.key[len(base):].decode()] = node
        return [(live.get(name) or known[name], name in live) for name in sorted({*live, *known})]

    async def node(self, name: str) -> tuple[Node, bool] | None:
        """One node and whether it is alive, or None when unknown."""
        for node, alive in await self.nodes():
            if node.name == name:
                return node, alive
        return None

    async def remove_node(self, name: str) -> None:
        """Forget node ``name`` (its records go; a still running node is no longer
        listed). Refused with ``NodeInUse`` while a pool that is not drained has
        disks on it, ``NoSuchNode`` when unknown."""
        _segment("node", name)
        keys = (self._live + name.encode(), self._known + name.encode())
        for _ in range(_ATTEMPTS):
            if await self.node(name) is None:
                raise RegistryError("NoSuchNode", f"no node named {name}")
            pools, max_mod = await self._read_pools()
            users = [p for p in pools if p.state != "drained" and name in p.node_names()]
            if users:
                which = ", ".join(f"{p.name} ({p.state})" for p in users)
                raise RegistryError("NodeInUse", f"node {name} has disks in pool {which}; "
                                    "drain the pool before removing the node")
            try:
                ok, _ = await self.etcd.txn([_range_unchanged(self._pools, max_mod)],
                                            [op_delete(key) for key in keys])
            except EtcdUnavailable as exc:
                if not exc.maybe_applied:
                    raise
                if await self.node(name) is None:
                    return
                continue
            if ok:
                return
        raise RegistryError("Conflict", "the pools kept changing; try again")

    def watch_nodes(self, start_revision: int | None = None) -> RegistryWatch[NodeEvent]:
        """Node changes as :class:`NodeEvent` (from ``start_revision``, default now)."""

        def convert(event: WatchEvent) -> NodeEvent | None:
            if event.key.startswith(self._live):
                name = event.key[len(self._live):].decode()
                if event.type == "PUT":
                    node = self._parse(event.key, event.value, Node.from_dict)
                    return NodeEvent("alive", name, node, event.mod_revision)
                return NodeEvent("dead", name, None, event.mod_revision)
            if event.key.startswith(self._known) and event.type == "DELETE":
                name = event.key[len(self._known):].decode()
                return NodeEvent("removed", name, None, event.mod_revision)
            return None

        return RegistryWatch(self.etcd.watch_prefix(self._nodes, start_revision), convert)

    # Pools.

    async def _read_pools(self) -> tuple[list[Pool], int]:
        """The pools and the highest mod revision under P/pools/ (0: none)."""
        kvs = await self.etcd.get_prefix(self._pools)
        pools = [p for kv in kvs if (p := self._parse(kv.key, kv.value, Pool.from_dict))]
        return pools, max((kv.mod_revision for kv in kvs), default=0)

    async def pools(self) -> list[Pool]:
        """Every pool, by name."""
        return (await self._read_pools())[0]

    async def get_pool(self, name: str) -> Pool | None:
        found = await self.etcd.get(self._pools + _segment("pool", name).encode())
        return None if found is None else Pool.from_dict(json.loads(found[0]))

    async def create_pool(self, pool: Pool) -> bool:
        """Store a new pool (from :func:`cluster.plan_pool`). False when a pool of
        that name exists; raises ``DiskInUse`` when one of its disks is in another
        pool (whatever that pool's state), ``NoSuchNode`` when a node it uses is
        not known."""
        name = _segment("pool", pool.name)
        key = self._pools + name.encode()
        record = _dump(pool.as_dict())
        refs = pool.disk_refs()
        if len(set(refs)) != len(refs):
            raise RegistryError("InvalidArgument", f"pool {name} names a disk twice")
        if pool.state != "active":
            raise RegistryError("InvalidArgument", f"a new pool is active, not {pool.state}")
        uncertain = False
        for _ in range(_ATTEMPTS):
            pools, max_mod = await self._read_pools()
            for other in pools:
                if other.name == name:
                    # Our own record after a lost answer: the create went through.
                    return uncertain and _dump(other.as_dict()) == record
            mine = set(refs)
            taken = sorted((ref, other.name) for other in pools for ref in other.disk_refs()
                           if ref in mine)
            if taken:
                listed = ", ".join(f"{r.node}:{r.disk_id} (pool {p})" for r, p in taken[:8])
                more = f" and {len(taken) - 8} more" if len(taken) > 8 else ""
                raise RegistryError("DiskInUse", f"disks already in a pool: {listed}{more}")
            known = {node.name for node, _ in await self.nodes()}
            missing = sorted(pool.node_names() - known)
            if missing:
                raise RegistryError("NoSuchNode", f"unknown node{'s' * (len(missing) > 1)}: "
                                    f"{', '.join(missing)}")
            compares = [compare(key, "CREATE", "EQUAL", 0), _range_unchanged(self._pools, max_mod)]
            compares += [compare(self._known + n.encode(), "VERSION", "GREATER", 0)
                         for n in sorted(pool.node_names())]
            try:
                ok, _ = await self.etcd.txn(compares, [op_put(key, record)])
            except EtcdUnavailable as exc:
                if not exc.maybe_applied:
                    raise
                uncertain = True
                continue
            if ok:
                return True
        raise RegistryError("Conflict", "the pools kept changing; try again")

    async def set_pool_state(self, name: str, state: str) -> Pool:
        """Move pool ``name`` to ``state`` (active → draining → drained, or a drain
        cancelled: draining → active); the new record. Setting the state it has
        already is a no-op."""
        key = self._pools + _segment("pool", name).encode()
        if state not in POOL_STATES:
            raise RegistryError("InvalidArgument",
                                f"bad pool state {state!r}: one of {', '.join(POOL_STATES)}")
        for _ in range(_ATTEMPTS):
            found = await self.etcd.get(key)
            if found is None:
                raise RegistryError("NoSuchPool", f"no pool named {name}")
            pool = Pool.from_dict(json.loads(found[0]))
            if pool.state == state:
                return pool
            if (pool.state, state) not in _TRANSITIONS:
                raise RegistryError("InvalidPoolState",
                                    f"pool {name} is {pool.state}; it cannot become {state}")
            new = pool.with_state(state)
            try:
                if await self.etcd.compare_and_swap(key, found[1], _dump(new.as_dict())):
                    return new
            except EtcdUnavailable as exc:
                if not exc.maybe_applied:
                    raise
        raise RegistryError("Conflict", f"pool {name} kept changing; try again")

    def watch_pools(self, start_revision: int | None = None) -> RegistryWatch[PoolEvent]:
        """Pool changes as :class:`PoolEvent` (from ``start_revision``, default now)."""

        def convert(event: WatchEvent) -> PoolEvent | None:
            name = event.key[len(self._pools):].decode()
            if event.type == "PUT":
                pool = self._parse(event.key, event.value, Pool.from_dict)
                return None if pool is None else PoolEvent("put", name, pool, event.mod_revision)
            return PoolEvent("deleted", name, None, event.mod_revision)

        return RegistryWatch(self.etcd.watch_prefix(self._pools, start_revision), convert)

    async def disk_pools(self) -> dict[DiskRef, str]:
        """Which pool every pooled disk belongs to."""
        return {ref: pool.name for pool in await self.pools() for ref in pool.disk_refs()}

    # Buckets.

    async def create_bucket(self, name: str, record: bytes) -> bool:
        """Store a new bucket's record; True for exactly one of any number of
        concurrent creators of ``name``, False when it exists."""
        key = self._buckets + _segment("bucket", name).encode()
        for _ in range(_ATTEMPTS):
            try:
                return await self.etcd.create(key, record)
            except EtcdUnavailable as exc:
                if not exc.maybe_applied:
                    raise
            found = await self.etcd.get(key)
            if found is not None:
                return found[0] == bytes(record)
        raise RegistryError("Conflict", f"bucket {name}: etcd kept losing answers; try again")

    async def get_bucket(self, name: str) -> bytes | None:
        found = await self.etcd.get(self._buckets + _segment("bucket", name).encode())
        return None if found is None else found[0]

    async def delete_bucket(self, name: str, expected_record: bytes) -> bool:
        """Remove bucket ``name`` if its record is still ``expected_record``
        (nobody changed or recreated it meanwhile); True when removed."""
        key = self._buckets + _segment("bucket", name).encode()
        for _ in range(_ATTEMPTS):
            try:
                ok, _ = await self.etcd.txn([compare(key, "VALUE", "EQUAL", expected_record)],
                                            [op_delete(key)])
                return ok
            except EtcdUnavailable as exc:
                if not exc.maybe_applied:
                    raise
            found = await self.etcd.get(key)
            if found is None:
                return True
            if found[0] != bytes(expected_record):
                return False
        raise RegistryError("Conflict", f"bucket {name}: etcd kept losing answers; try again")

    async def buckets(self) -> list[tuple[str, bytes]]:
        """Every bucket as ``(name, record)``, by name."""
        return [(kv.key[len(self._buckets):].decode(), kv.value)
                for kv in await self.etcd.get_prefix(self._buckets)]

    # Volume ownership.

    async def claim_volume(self, name: str, node: str, lease_id: int) -> str:
        """Make ``node`` the owner of volume ``name`` under ``lease_id`` unless
        another node owns it; returns the owner (``node`` when the claim held).
        The ownership ends with the lease. A claim by the owner itself under
        another lease (it renewed its lease) moves the ownership to that lease."""
        key = self._owners + _segment("volume", name).encode()
        _segment("node", node)
        if not lease_id:
            raise RegistryError("InvalidArgument", "a volume is claimed under a lease")
        mine = node.encode()
        for _ in range(_ATTEMPTS):
            try:
                ok, responses = await self.etcd.txn(
                    [compare(key, "CREATE", "EQUAL", 0)], [op_put(key, mine, lease_id)], [op_get(key)])
            except EtcdUnavailable as exc:
                if not exc.maybe_applied:
                    raise
                continue            # the next round finds our key if it was applied
            if ok:
                return node
            kv = _range_kv(responses)
            if kv is None:
                continue            # released meanwhile: claim again
            owner = base64.b64decode(kv.get("value") or "")
            if owner != mine or int(kv.get("lease", 0)) == int(lease_id):
                return owner.decode()
            try:
                if await self.etcd.compare_and_swap(key, int(kv["mod_revision"]), mine, lease_id):
                    return node
            except EtcdUnavailable as exc:
                if not exc.maybe_applied:
                    raise
        raise RegistryError("Conflict", f"volume {name}: ownership kept changing; try again")

    async def release_volume(self, name: str, node: str) -> bool:
        """Give up ``node``'s ownership of volume ``name``; True when it was the owner."""
        key = self._owners + _segment("volume", name).encode()
        for _ in range(_ATTEMPTS):
            try:
                ok, _ = await self.etcd.txn([compare(key, "VALUE", "EQUAL", node)], [op_delete(key)])
                return ok
            except EtcdUnavailable as exc:
                if not exc.maybe_applied:
                    raise
            owner = await self.volume_owner(name)
            if owner != node:      # gone (our delete went through) or someone else's now
                return owner is None
        raise RegistryError("Conflict", f"volume {name}: etcd kept losing answers; try again")

    async def volume_owner(self, name: str) -> str | None:
        """The node owning volume ``name`` now, or None."""
        found = await self.etcd.get(self._owners + _segment("volume", name).encode())
        return None if found is None else found[0].decode()

    async def volume_owners(self) -> dict[str, str]:
        """Every owned volume and its owner."""
        return {kv.key[len(self._owners):].decode(): kv.value.decode()
                for kv in await self.etcd.get_prefix(self._owners)}

    # Helpers.

    @staticmethod
    def _parse(key: bytes, value: bytes, build: Callable[[dict], Any]) -> Any:
        """A record decoded, or None (logged) when it is not one: a broken record
        must not hide every other from listings."""
        try:
            return build(json.loads(value))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable record %s: %r", key.decode(errors="replace"), exc)
            return None
