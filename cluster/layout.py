"""The cluster's layout: nodes, their disks, pools and the erasure sets of a pool.

Pure functions and plain data (no I/O): :mod:`cluster.registry` stores these
records in etcd, the admin API and the CLI print them.

A **pool** is a group of erasure sets formed once, from every disk of some
nodes, with one EC scheme K+M (N = K+M disks per set). Pools never change
shape: the cluster grows by adding a pool. New objects go to the active pool
with the most free space (:func:`pool_for_write`, MinIO's server-pool rule);
inside a pool an object's set is a hash of its name (:func:`set_for_key`).

How :func:`plan_pool` forms the sets
------------------------------------
Every disk of the chosen nodes is put in one list sorted by (zone, node name,
disk id), and disk number ``t`` of that list is dealt to set ``t mod S``
(S = disks / N), round-robin. Each node's disks, and each zone's, are a
contiguous run of that list, and a contiguous run of length L dealt round-robin
over S sets gives every set ``floor(L/S)`` or ``ceil(L/S)`` of them, which is
the least any layout can give the fullest set (pigeonhole); so in one pass:

- every set holds exactly N disks (the list's length is S·N);
- every node's disks are spread evenly over the sets, and no set holds more of
  one node's disks than it must: ``ceil(disks_of_node / S)``;
- the same for zones: ``ceil(disks_in_zone / S)`` per set at most.

The pool is refused (:class:`LayoutError`) when that least possible count
exceeds M for some node: that node's loss would cost a set more than M shards,
i.e. data. Zones are spread just as evenly, but a layout is not refused when the
zones are too few or too unequal to keep every zone at M shards or fewer (with
2 zones and 4+2, one zone always holds 3 of a set): zone loss is then simply not
survivable, and :func:`worst_case_loss` says so. Without any redundancy (M = 0)
every shard is needed anyway and no limit applies. Zones are compared by name;
nodes without a zone (``""``) count as one zone together. The shards' positions
inside a set interleave zones and nodes (positions 0, 1, 2... on different
nodes where possible); the engine rotates positions per object anyway.

Sizes are not weighed: a set's capacity is bounded by its smallest disk, so
nodes should bring disks of similar size to one pool.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

# The set hash is the engine's (storaged.pools), so the layout and the store agree.
from storaged.pools import SET_HASH_SEED, set_index  # noqa: F401 - SET_HASH_SEED re-exported

__all__ = [
    "MAX_SET_SIZE",
    "POOL_STATES",
    "DiskRef",
    "ErasureSetLayout",
    "LayoutError",
    "Node",
    "NodeDisk",
    "Pool",
    "plan_pool",
    "pool_for_write",
    "set_for_key",
    "worst_case_loss",
]

MAX_SET_SIZE = 16
POOL_STATES = ("active", "draining", "drained")


class LayoutError(ValueError):
    """A layout that cannot (or must not) be made; ``reason`` says why, for users."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _check_name(what: str, name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or not name.isprintable() \
            or name != name.strip():
        raise LayoutError(f"bad {what} name {name!r}: non-empty, printable, no '/' or outer spaces")
    return name


class DiskRef(NamedTuple):
    """One disk of the cluster, by node name and disk id (a set's member)."""

    node: str
    disk_id: str

    def as_dict(self) -> dict:
        return {"node": self.node, "disk_id": self.disk_id}

    @classmethod
    def from_dict(cls, data: Mapping | Sequence) -> DiskRef:
        if isinstance(data, Mapping):
            return cls(str(data["node"]), str(data["disk_id"]))
        node, disk_id = data
        return cls(str(node), str(disk_id))


@dataclass(frozen=True)
class NodeDisk:
    """A disk a node serves: its id (from its format.json), path on that node, size in bytes."""

    node: str
    disk_id: str
    path: str
    size: int

    @property
    def ref(self) -> DiskRef:
        return DiskRef(self.node, self.disk_id)

    def as_dict(self) -> dict:
        return {"node": self.node, "disk_id": self.disk_id, "path": self.path, "size": self.size}

    @classmethod
    def from_dict(cls, data: Mapping) -> NodeDisk:
        return cls(str(data["node"]), str(data["disk_id"]), str(data.get("path", "")),
                   int(data.get("size", 0)))


@dataclass(frozen=True)
class Node:
    """A Basalt server of the cluster: its name, node-RPC address, zone and disks."""

    name: str
    advertise: str
    zone: str = ""
    disks: tuple[NodeDisk, ...] = ()

    def as_dict(self) -> dict:
        return {"name": self.name, "advertise": self.advertise, "zone": self.zone,
                "disks": [disk.as_dict() for disk in self.disks]}

    @classmethod
    def from_dict(cls, data: Mapping) -> Node:
        return cls(str(data["name"]), str(data.get("advertise", "")), str(data.get("zone") or ""),
                   tuple(NodeDisk.from_dict(d) for d in data.get("disks") or ()))


@dataclass(frozen=True)
class ErasureSetLayout:
    """Set ``index`` of a pool: ``disks[i]`` holds shard position i."""

    index: int
    disks: tuple[DiskRef, ...]

    def as_dict(self) -> dict:
        return {"index": self.index, "disks": [d.as_dict() for d in self.disks]}

    @classmethod
    def from_dict(cls, data: Mapping) -> ErasureSetLayout:
        return cls(int(data["index"]), tuple(DiskRef.from_dict(d) for d in data["disks"]))


@dataclass(frozen=True)
class Pool:
    """A pool: erasure sets of K+M disks each, in state active, draining or drained."""

    name: str
    k: int
    m: int
    sets: tuple[ErasureSetLayout, ...]
    state: str = "active"
    created_ns: int = 0

    @property
    def n(self) -> int:
        return self.k + self.m

    def disk_refs(self) -> list[DiskRef]:
        """Every disk of the pool, set by set."""
        return [ref for s in self.sets for ref in s.disks]

    def node_names(self) -> set[str]:
        return {ref.node for ref in self.disk_refs()}

    def with_state(self, state: str) -> Pool:
        if state not in POOL_STATES:
            raise LayoutError(f"bad pool state {state!r}: one of {', '.join(POOL_STATES)}")
        return replace(self, state=state)

    def as_dict(self) -> dict:
        return {"name": self.name, "k": self.k, "m": self.m, "state": self.state,
                "created_ns": self.created_ns, "sets": [s.as_dict() for s in self.sets]}

    @classmethod
    def from_dict(cls, data: Mapping) -> Pool:
        return cls(str(data["name"]), int(data["k"]), int(data["m"]),
                   tuple(ErasureSetLayout.from_dict(s) for s in data["sets"]),
                   str(data.get("state", "active")), int(data.get("created_ns", 0)))


def _interleave(groups: Iterable[Sequence[Any]]) -> list[Any]:
    """One item of each group in turn: [[a1, a2], [b1]] → [a1, b1, a2]."""
    groups = [list(g) for g in groups if g]
    out: list[Any] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def _check_nodes(nodes: Sequence[Node]) -> None:
    seen: set[str] = set()
    for node in nodes:
        _check_name("node", node.name)
        if node.name in seen:
            raise LayoutError(f"node {node.name} is named twice")
        seen.add(node.name)
        if not node.disks:
            raise LayoutError(f"node {node.name} has no disks")
        ids: set[str] = set()
        for disk in node.disks:
            if disk.node != node.name:
                raise LayoutError(f"disk {disk.disk_id} is listed under node {node.name} "
                                  f"but says it belongs to {disk.node}")
            if not disk.disk_id:
                raise LayoutError(f"a disk of node {node.name} has no id")
            if disk.disk_id in ids:
                raise LayoutError(f"node {node.name} lists disk {disk.disk_id} twice")
            ids.add(disk.disk_id)


def plan_pool(name: str, k: int, m: int, nodes: Iterable[Node], *,
              use: Iterable[str] | None = None, created_ns: int | None = None) -> Pool:
    """A new active pool ``name`` with EC ``k+m`` over every disk of ``nodes``
    (only the nodes named in ``use`` when given: the known nodes and the ones the
    user picked). See the module docstring for the algorithm; raises
    :class:`LayoutError` with the reason when the layout is impossible or unsafe."""
    _check_name("pool", name)
    if not isinstance(k, int) or not isinstance(m, int):
        raise LayoutError(f"K and M must be integers, not {k!r}+{m!r}")
    if k < 1:
        raise LayoutError(f"EC {k}+{m}: K must be at least 1")
    if m < 0:
        raise LayoutError(f"EC {k}+{m}: M cannot be negative")
    n = k + m
    if n > MAX_SET_SIZE:
        raise LayoutError(f"EC {k}+{m}: a set has at most {MAX_SET_SIZE} disks (K+M = {n})")
    nodes = list(nodes)
    if use is not None:
        wanted = list(use)
        by_name = {node.name: node for node in nodes}
        unknown = sorted({w for w in wanted if w not in by_name})
        if unknown:
            raise LayoutError(f"unknown node{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        if len(set(wanted)) != len(wanted):
            twice = sorted({w for w in wanted if wanted.count(w) > 1})
            raise LayoutError(f"node {', '.join(twice)} named twice")
        nodes = [by_name[w] for w in wanted]
    if not nodes:
        raise LayoutError("a pool needs at least one node")
    _check_nodes(nodes)

    ordered = sorted(nodes, key=lambda nd: (nd.zone, nd.name))
    disks = [d for node in ordered for d in sorted(node.disks, key=lambda d: d.disk_id)]
    total = len(disks)
    if total < n:
        raise LayoutError(f"EC {k}+{m} needs at least {n} disks; the nodes have {total}")
    if total % n:
        fits = [size for size in range(2, MAX_SET_SIZE + 1) if total % size == 0]
        raise LayoutError(
            f"{total} disks do not divide into sets of {n} (EC {k}+{m}): {total % n} would be "
            f"left over; add or remove disks, or choose K+M among "
            f"{', '.join(map(str, fits)) or 'none'}")
    count = total // n

    if m > 0:
        too_many = [(node.name, math.ceil(len(node.disks) / count)) for node in ordered
                    if math.ceil(len(node.disks) / count) > m]
        if too_many:
            worst = ", ".join(f"{nm} would hold {c}" for nm, c in sorted(too_many))
            min_nodes = math.ceil(n / m)
            raise LayoutError(
                f"EC {k}+{m} with {len(ordered)} node{'s' if len(ordered) > 1 else ''}: {worst} "
                f"shards of a set, more than M={m}, so losing that node would lose data; "
                f"use at least {min_nodes} nodes with their disks spread evenly, a larger M, "
                f"or fewer disks per node")

    members: list[list[NodeDisk]] = [[] for _ in range(count)]
    for t, disk in enumerate(disks):
        members[t % count].append(disk)

    zone_of = {node.name: node.zone for node in ordered}
    sets = []
    for index, chosen in enumerate(members):
        by_zone: dict[str, dict[str, list[NodeDisk]]] = defaultdict(lambda: defaultdict(list))
        for disk in chosen:
            by_zone[zone_of[disk.node]][disk.node].append(disk)
        positions = _interleave(_interleave(per_node.values()) for per_node in by_zone.values())
        sets.append(ErasureSetLayout(index, tuple(d.ref for d in positions)))
    return Pool(name, k, m, tuple(sets), "active",
                time.time_ns() if created_ns is None else int(created_ns))


def worst_case_loss(pool: Pool, nodes: Iterable[Node]) -> dict[str, int]:
    """The most shards of one set that one node (``"node"``) or one zone
    (``"zone"``) holds; the pool survives losing that node / zone when it is ≤ M."""
    zone_of = {node.name: node.zone for node in nodes}
    worst = {"node": 0, "zone": 0}
    for s in pool.sets:
        per_node: dict[str, int] = defaultdict(int)
        per_zone: dict[str, int] = defaultdict(int)
        for ref in s.disks:
            per_node[ref.node] += 1
            per_zone[zone_of.get(ref.node, "")] += 1
        worst["node"] = max(worst["node"], *per_node.values())
        worst["zone"] = max(worst["zone"], *per_zone.values())
    return worst


def pool_for_write(pools: Iterable[Pool], free_bytes: Mapping[str, int]) -> str:
    """The pool new objects go to: the active one with the most free space
    (a pool missing from ``free_bytes`` counts as full; ties go to the older
    pool). Draining and drained pools never receive new objects."""
    active = [p for p in pools if p.state == "active"]
    if not active:
        raise LayoutError("no active pool to write to")
    best = min(active, key=lambda p: (-free_bytes.get(p.name, 0), p.created_ns, p.name))
    return best.name


def set_for_key(pool: Pool, bucket: str, key: str) -> int:
    """The index of the set of ``pool`` that holds object ``bucket/key``: a stable
    hash of the name (xxh3-64), so every node finds it without asking anyone."""
    if not pool.sets:
        raise LayoutError(f"pool {pool.name} has no sets")
    return set_index(bucket, key, len(pool.sets))
