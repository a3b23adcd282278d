"""`basalt cluster ...`: a cluster's nodes and pools, through the admin API of any node.

`status` lists the nodes (alive, advertised address, zone, disks) and the pools
(erasure coding, state, sets); `pool create` forms a pool from every disk of the
named nodes (the server refuses, with the reason, a layout in which one node's loss
would cost a set more than M shards); `pool drain` and `node remove` change them.
"""

from __future__ import annotations

import argparse
import urllib.parse

from ..config import parse_ec
from ..progress import human_bytes
from .buckets import _intermixed
from .common import admin_client, emit, table

PATH = "/_basalt/v1/cluster"


def _segment(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _disks(pool: dict) -> int:
    return sum(len(s.get("disks") or []) for s in pool.get("sets") or [])


def _ec(pool: dict) -> str:
    return f"{pool['k']}+{pool['m']}"


def pool_line(pool: dict) -> str:
    """``p1  4+2  2 sets × 6 disks  active``."""
    sets = pool.get("sets") or []
    per_set = len(sets[0].get("disks") or []) if sets else 0
    return (f"{pool['name']}  {_ec(pool)}  {len(sets)} set{'s' if len(sets) != 1 else ''} "
            f"× {per_set} disks  {pool.get('state', '')}").rstrip()


NODE_COLUMNS = [
    ("NAME", lambda n: n["name"], False),
    ("ALIVE", lambda n: "yes" if n.get("alive") else "no", False),
    ("ADVERTISE", lambda n: n.get("advertise"), False),
    ("ZONE", lambda n: n.get("zone"), False),
    ("DISKS", lambda n: len(n.get("disks") or []), True),
    ("CAPACITY", lambda n: human_bytes(sum(d.get("size") or 0 for d in n.get("disks") or [])),
     True),
]

POOL_COLUMNS = [
    ("NAME", lambda p: p["name"], False),
    ("EC", _ec, False),
    ("STATE", lambda p: p.get("state"), False),
    ("SETS", lambda p: len(p.get("sets") or []), True),
    ("DISKS", _disks, True),
]


def cmd_status(args: argparse.Namespace) -> int:
    status = admin_client(args).call("GET", f"{PATH}/status")
    text = (table(status.get("nodes") or [], NODE_COLUMNS) + "\n\n"
            + table(status.get("pools") or [], POOL_COLUMNS))
    return emit(args, status, text)


def cmd_pool_create(args: argparse.Namespace) -> int:
    k, m = parse_ec(args.ec)  # a malformed K+M fails here, before any request
    body = {"ec": f"{k}+{m}", "name": args.name, "nodes": args.nodes}
    pool = admin_client(args).call("POST", f"{PATH}/pools", body=body)
    return emit(args, pool, f"created pool {pool_line(pool)}")


def cmd_pool_drain(args: argparse.Namespace) -> int:
    pool = admin_client(args).call("POST", f"{PATH}/pools/{_segment(args.pool)}/drain")
    return emit(args, pool, f"draining pool {pool_line(pool)}")


def cmd_node_remove(args: argparse.Namespace) -> int:
    result = admin_client(args).call("DELETE", f"{PATH}/nodes/{_segment(args.node)}")
    return emit(args, result, f"removed node {result.get('removed', args.node)}")


def register(sub, add) -> None:
    p = add(sub, "cluster", help="a cluster's nodes and pools")
    csub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add(csub, "status", help="the nodes (alive, disks, capacity) and the pools "
        "(erasure coding, state, sets)").set_defaults(func=cmd_status)
    c = add(csub, "pool", help="create or drain a pool of disks")
    psub = c.add_subparsers(dest="pool_action", required=True, metavar="ACTION",
                            parser_class=_intermixed(type(c)))
    x = add(psub, "create", help="a pool from every disk of the named nodes")
    x.add_argument("--ec", required=True, metavar="K+M", help="erasure coding of each set, "
                   "e.g. 4+2 (no node may hold more than M shards of a set)")
    x.add_argument("--name", help="the pool's name (default: chosen by the server)")
    x.add_argument("nodes", nargs="+", metavar="NODE")
    x.set_defaults(func=cmd_pool_create)
    x = add(psub, "drain", help="drain a pool (state draining, then drained)")
    x.add_argument("pool", metavar="POOL")
    x.set_defaults(func=cmd_pool_drain)
    c = add(csub, "node", help="remove a node from the cluster")
    nsub = c.add_subparsers(dest="node_action", required=True, metavar="ACTION",
                            parser_class=_intermixed(type(c)))
    x = add(nsub, "remove", help="forget a node (refused while a pool not drained uses it)")
    x.add_argument("node", metavar="NAME")
    x.set_defaults(func=cmd_node_remove)
