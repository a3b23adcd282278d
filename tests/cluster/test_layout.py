"""cluster.layout: forming erasure sets from nodes' disks, choosing pools and sets (no etcd)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cluster import (
    DiskRef,
    LayoutError,
    Node,
    NodeDisk,
    Pool,
    plan_pool,
    pool_for_write,
    set_for_key,
    worst_case_loss,
)


def make_nodes(count: int, disks: int | list[int], zones: int = 0, size: int = 1 << 40) -> list[Node]:
    per_node = disks if isinstance(disks, list) else [disks] * count
    nodes = []
    for i in range(count):
        name = f"node{i + 1}"
        zone = f"zone{i % zones + 1}" if zones else ""
        nodes.append(Node(name, f"10.0.0.{i + 1}:9100", zone, tuple(
            NodeDisk(name, f"d{j}", f"/srv/disk{j}", size) for j in range(per_node[i]))))
    return nodes


def max_per(pool: Pool, nodes: list[Node], by: str) -> int:
    zone_of = {node.name: node.zone for node in nodes}
    worst = 0
    for s in pool.sets:
        keys = [ref.node if by == "node" else zone_of[ref.node] for ref in s.disks]
        worst = max(worst, *Counter(keys).values())
    return worst


def check_complete(pool: Pool, nodes: list[Node]) -> None:
    """Every disk used exactly once, every set N disks, each node spread evenly."""
    all_refs = sorted(d.ref for node in nodes for d in node.disks)
    assert sorted(pool.disk_refs()) == all_refs
    assert all(len(s.disks) == pool.n for s in pool.sets)
    assert [s.index for s in pool.sets] == list(range(len(pool.sets)))
    for node in nodes:
        counts = [sum(ref.node == node.name for ref in s.disks) for s in pool.sets]
        assert max(counts) - min(counts) <= 1, (node.name, counts)


def test_three_nodes_two_disks_2_plus_1():
    nodes = make_nodes(3, 2)
    pool = plan_pool("p1", 2, 1, nodes, created_ns=1)
    assert len(pool.sets) == 2
    check_complete(pool, nodes)
    for s in pool.sets:
        assert len({ref.node for ref in s.disks}) == 3      # one shard per node
    assert max_per(pool, nodes, "node") == 1
    assert pool.state == "active" and pool.created_ns == 1 and (pool.k, pool.m, pool.n) == (2, 1, 3)


def test_four_nodes_4_plus_2():
    # 4 nodes × 3 disks = 12 disks: two 4+2 sets, each node 1 or 2 shards of a set (≤ M).
    nodes = make_nodes(4, 3)
    pool = plan_pool("p0", 4, 2, nodes)
    assert len(pool.sets) == 2
    check_complete(pool, nodes)
    assert max_per(pool, nodes, "node") == 2
    for s in pool.sets:
        assert len({ref.node for ref in s.disks}) == 4
    # 4 nodes × 4 disks = 16 disks: not a multiple of 6, refused with the sizes that fit.
    nodes = make_nodes(4, 4)
    with pytest.raises(LayoutError) as err:
        plan_pool("p1", 4, 2, nodes)
    assert "16 disks" in err.value.reason and "4 would be left over" in err.value.reason
    assert "8" in err.value.reason and "16" in err.value.reason   # the sizes that would fit
    # 16 disks as two sets of 6+2: each node holds 2 shards of each set (= M).
    pool = plan_pool("p1", 6, 2, nodes)
    assert len(pool.sets) == 2
    check_complete(pool, nodes)
    assert max_per(pool, nodes, "node") == 2
    assert worst_case_loss(pool, nodes)["node"] == 2
    # 6 nodes × 4 disks = 24 disks: four 4+2 sets with one shard per node.
    six = make_nodes(6, 4)
    pool = plan_pool("p2", 4, 2, six)
    assert len(pool.sets) == 4
    check_complete(pool, six)
    for s in pool.sets:
        assert len({ref.node for ref in s.disks}) == 6
    assert max_per(pool, six, "node") == 1


def test_two_nodes_cannot_hold_4_plus_2():
    with pytest.raises(LayoutError) as err:
        plan_pool("p1", 4, 2, make_nodes(2, 3))
    reason = err.value.reason
    assert "node1 would hold 3" in reason and "node2 would hold 3" in reason
    assert "M=2" in reason and "at least 3 nodes" in reason
    # Unequal nodes: the big one is named alone.
    with pytest.raises(LayoutError) as err:
        plan_pool("p1", 2, 1, make_nodes(3, [4, 1, 1]))
    assert "node1 would hold 2" in err.value.reason and "node2" not in err.value.reason


def test_bad_parameters_refused():
    nodes = make_nodes(3, 2)
    for k, m, words in ((0, 1, "K must be at least 1"), (2, -1, "M cannot be negative"),
                        (14, 3, "at most 16")):
        with pytest.raises(LayoutError, match=words):
            plan_pool("p", k, m, nodes)
    with pytest.raises(LayoutError, match="named twice"):
        plan_pool("p", 2, 1, nodes + [nodes[0]])
    with pytest.raises(LayoutError, match="has no disks"):
        plan_pool("p", 2, 1, nodes + [Node("empty", "h:1")])
    with pytest.raises(LayoutError, match="unknown nodes: ghost, nope"):
        plan_pool("p", 2, 1, nodes, use=["node1", "ghost", "nope"])
    with pytest.raises(LayoutError, match="node node1 named twice"):
        plan_pool("p", 2, 1, nodes, use=["node1", "node1", "node2"])
    with pytest.raises(LayoutError, match="at least 3 disks"):
        plan_pool("p", 2, 1, make_nodes(1, 2))
    with pytest.raises(LayoutError, match="bad pool name"):
        plan_pool("a/b", 2, 1, nodes)
    with pytest.raises(LayoutError, match="at least one node"):
        plan_pool("p", 2, 1, [])
    wrong = Node("x", "h:1", "", (NodeDisk("y", "d0", "/d", 1),))
    with pytest.raises(LayoutError, match="belongs to y"):
        plan_pool("p", 1, 0, [wrong])


def test_use_selects_nodes():
    nodes = make_nodes(5, 2)
    pool = plan_pool("p", 2, 1, nodes, use=["node5", "node2", "node3"])
    assert pool.node_names() == {"node2", "node3", "node5"}
    check_complete(pool, [n for n in nodes if n.name in {"node2", "node3", "node5"}])


def test_leftover_disks_refused():
    with pytest.raises(LayoutError) as err:
        plan_pool("p", 2, 1, make_nodes(4, 2))   # 8 disks, sets of 3
    assert "8 disks do not divide into sets of 3" in err.value.reason
    assert "2 would be left over" in err.value.reason


def test_zones_spread_4_plus_2():
    nodes = make_nodes(6, 2, zones=3)      # 12 disks, 3 zones of 2 nodes
    pool = plan_pool("p", 4, 2, nodes)
    assert len(pool.sets) == 2
    check_complete(pool, nodes)
    assert max_per(pool, nodes, "zone") <= 2
    assert max_per(pool, nodes, "node") <= 1
    assert worst_case_loss(pool, nodes) == {"node": 1, "zone": 2}
    # Positions interleave zones: the first three shards are in three zones.
    zone_of = {n.name: n.zone for n in nodes}
    for s in pool.sets:
        assert len({zone_of[ref.node] for ref in s.disks[:3]}) == 3


def test_zones_spread_with_unequal_nodes():
    # 3 zones; zone1 has one big node, the others two small ones each.
    nodes = [
        Node("a", "h:1", "z1", tuple(NodeDisk("a", f"d{i}", "/", 1) for i in range(4))),
        Node("b", "h:2", "z2", tuple(NodeDisk("b", f"d{i}", "/", 1) for i in range(2))),
        Node("c", "h:3", "z2", tuple(NodeDisk("c", f"d{i}", "/", 1) for i in range(2))),
        Node("d", "h:4", "z3", tuple(NodeDisk("d", f"d{i}", "/", 1) for i in range(2))),
        Node("e", "h:5", "z3", tuple(NodeDisk("e", f"d{i}", "/", 1) for i in range(2))),
    ]
    pool = plan_pool("p", 4, 2, nodes)    # 12 disks, 2 sets
    check_complete(pool, nodes)
    assert max_per(pool, nodes, "zone") == 2 and max_per(pool, nodes, "node") == 2


def test_too_few_zones_still_allowed_but_reported():
    nodes = make_nodes(6, 1, zones=2)     # 2 zones of 3 nodes: a zone holds 3 of 6 shards
    pool = plan_pool("p", 4, 2, nodes)
    check_complete(pool, nodes)
    assert worst_case_loss(pool, nodes) == {"node": 1, "zone": 3}


def test_no_redundancy_has_no_node_limit():
    pool = plan_pool("p", 4, 0, make_nodes(1, 4))
    assert len(pool.sets) == 1 and len(pool.sets[0].disks) == 4


def test_deterministic_and_json_roundtrip():
    nodes = make_nodes(6, 3, zones=3)
    first = plan_pool("p", 4, 2, nodes, created_ns=7)
    shuffled = [Node(n.name, n.advertise, n.zone, tuple(reversed(n.disks))) for n in reversed(nodes)]
    assert plan_pool("p", 4, 2, shuffled, created_ns=7) == first
    again = Pool.from_dict(json.loads(json.dumps(first.as_dict())))
    assert again == first
    assert again.sets[0].disks[0] == DiskRef(*again.sets[0].disks[0])
    node = Node.from_dict(json.loads(json.dumps(nodes[0].as_dict())))
    assert node == nodes[0]
    assert first.with_state("draining").state == "draining"
    with pytest.raises(LayoutError):
        first.with_state("gone")


def test_pool_for_write_skips_draining_pools():
    nodes = make_nodes(3, 2)
    a = plan_pool("a", 2, 1, nodes, created_ns=1)
    b = plan_pool("b", 2, 1, nodes, created_ns=2)
    c = plan_pool("c", 2, 1, nodes, created_ns=3)
    assert pool_for_write([a, b, c], {"a": 10, "b": 30, "c": 20}) == "b"
    assert pool_for_write([a, b.with_state("draining"), c], {"a": 10, "b": 30, "c": 20}) == "c"
    assert pool_for_write([a, b.with_state("drained"), c.with_state("draining")],
                          {"a": 10, "b": 30, "c": 20}) == "a"
    assert pool_for_write([c, b, a], {"a": 5, "b": 5, "c": 5}) == "a"      # tie: the oldest
    assert pool_for_write([a, b], {"b": 1}) == "b"                       # unknown counts as full
    with pytest.raises(LayoutError, match="no active pool"):
        pool_for_write([a.with_state("draining")], {"a": 10})


def test_set_for_key_stable_and_spread():
    nodes = make_nodes(6, 4)
    pool = plan_pool("p", 4, 2, nodes)
    assert len(pool.sets) == 4
    chosen = [set_for_key(pool, "bucket", f"key-{i}") for i in range(1000)]
    assert chosen == [set_for_key(pool, "bucket", f"key-{i}") for i in range(1000)]
    counts = Counter(chosen)
    assert set(counts) == {0, 1, 2, 3}
    assert all(count > 150 for count in counts.values())
    # The same name in another bucket is another object.
    assert len({set_for_key(pool, f"b{i}", "same") for i in range(50)}) == 4
    # Fixed forever (objects are found by it): a known value.
    assert set_for_key(pool, "bucket", "key-0") == 3


def test_random_layouts_keep_the_guarantees():
    """Many random clusters: whenever a pool is formed, no node holds more than M
    shards of a set, zones hold no more than they must (≤ M whenever any layout
    could do it), every node is spread evenly; refusals only when some node must
    hold more than M."""
    import math
    import random

    rng = random.Random(13)
    formed = 0
    for _ in range(400):
        count = rng.randint(1, 8)
        zones = rng.randint(0, 4)
        nodes = make_nodes(count, [rng.randint(1, 6) for _ in range(count)], zones=zones)
        k, m = rng.randint(1, 8), rng.randint(0, 4)
        total = sum(len(n.disks) for n in nodes)
        try:
            pool = plan_pool("p", k, m, nodes)
        except LayoutError as err:
            sets = total // (k + m)
            assert (total % (k + m) or not sets or
                    (m and any(math.ceil(len(n.disks) / sets) > m for n in nodes))), err.reason
            continue
        formed += 1
        check_complete(pool, nodes)
        sets = len(pool.sets)
        if m:
            assert max_per(pool, nodes, "node") <= m
        per_zone = Counter()
        for node in nodes:
            per_zone[node.zone] += len(node.disks)
        assert max_per(pool, nodes, "zone") == max(math.ceil(c / sets) for c in per_zone.values())
    assert formed > 20
