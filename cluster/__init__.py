"""Basalt's cluster mode: coordination through etcd.

Public API::

    etcd = Etcd("etcd://h1:2379,h2:2379,h3:2379", timeout=2)
    await etcd.put("/basalt/x", b"v", lease=None)
    value, mod_revision = await etcd.get("/basalt/x")          # or None
    await etcd.create("/basalt/buckets/b", b"{...}")           # True for exactly one creator
    async with Lease(etcd, ttl=10) as lease: ...               # lease.id, lease.lost
    async with Election(etcd, "heal", "node1", ttl=10) as e:   # e.is_leader
        ...
    async with etcd.watch_prefix("/basalt/nodes/") as events:
        async for event in events: ...                         # WatchEvent(type, key, value, rev)
    await etcd.close()

    pool = plan_pool("p1", 4, 2, nodes)                        # Node/NodeDisk → Pool of sets
    pool_for_write(pools, free_bytes); set_for_key(pool, bucket, key)
    registry = Registry(etcd)                                  # nodes, pools, buckets, volume owners
    await registry.register_node(node, lease.id); await registry.create_pool(pool)

Errors: :class:`EtcdUnavailable` (no endpoint answers, or etcd has no quorum),
:class:`EtcdError` (everything else; the base class of both); :class:`LayoutError`
(a layout refused, with the reason), :class:`RegistryError` (a registry change
refused; ``code`` for the admin API).
"""

from .election import LEADER_PREFIX, Election
from .etcd import (
    Etcd,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    Watch,
    WatchEvent,
    compare,
    op_delete,
    op_get,
    op_put,
    parse_endpoints,
    prefix_end,
)
from .layout import (
    MAX_SET_SIZE,
    POOL_STATES,
    DiskRef,
    ErasureSetLayout,
    LayoutError,
    Node,
    NodeDisk,
    Pool,
    plan_pool,
    pool_for_write,
    set_for_key,
    worst_case_loss,
)
from .lease import Lease
from .registry import NodeEvent, PoolEvent, Registry, RegistryError, RegistryWatch

__all__ = [
    "LEADER_PREFIX",
    "MAX_SET_SIZE",
    "POOL_STATES",
    "DiskRef",
    "Election",
    "ErasureSetLayout",
    "Etcd",
    "EtcdCompacted",
    "EtcdError",
    "EtcdUnavailable",
    "KeyValue",
    "LayoutError",
    "Lease",
    "Node",
    "NodeDisk",
    "NodeEvent",
    "Pool",
    "PoolEvent",
    "Registry",
    "RegistryError",
    "RegistryWatch",
    "Watch",
    "WatchEvent",
    "compare",
    "op_delete",
    "op_get",
    "op_put",
    "parse_endpoints",
    "plan_pool",
    "pool_for_write",
    "prefix_end",
    "set_for_key",
    "worst_case_loss",
]
