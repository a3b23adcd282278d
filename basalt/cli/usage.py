"""`basalt usage`: what each account used (requests, bytes, byte-hours, GB-hours).

Through the admin API (root credentials), from the metered hourly records.
``--csv`` prints the rows for a spreadsheet, ``--json`` as one document.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Callable
from typing import Any

from ..progress import human_bytes
from .common import admin_client, emit_table

USAGE = "/_basalt/v1/usage"
BY = ("account", "bucket", "volume", "vm", "network", "day", "hour")
COUNTERS = ("requests_put", "requests_get", "requests_free", "bytes_in", "bytes_out",
            "byte_hours", "object_hours", "provisioned_gb_hours", "allocated_gb_hours",
            "snapshot_gb_hours", "vcpu_hours", "memory_gb_hours", "nat_bytes")


def _columns(by: str) -> list:
    head: list = [("ACCOUNT", lambda r: r.get("account_name") or r["account"], False)]
    if by in ("bucket", "volume", "vm", "network", "day", "hour"):
        key = "name" if by == "hour" else by
        head.append((by.upper(), lambda r, k=key: r.get(k) or "(service)", False))
    if by == "hour":
        head.insert(0, ("HOUR", lambda r: r["hour"], False))
    if by in ("volume",):
        return head + [("PROV GB-H", lambda r: f"{r['provisioned_gb_hours']:.3f}", True),
                       ("ALLOC GB-H", lambda r: f"{r['allocated_gb_hours']:.3f}", True),
                       ("SNAP GB-H", lambda r: f"{r['snapshot_gb_hours']:.3f}", True)]
    if by == "vm":
        return head + [("VCPU-H", lambda r: f"{r['vcpu_hours']:.3f}", True),
                       ("MEM GB-H", lambda r: f"{r['memory_gb_hours']:.3f}", True)]
    if by == "network":
        return head + [("NAT", lambda r: human_bytes(r["nat_bytes"]), True)]
    return head + [("PUT/LIST", lambda r: f"{r['requests_put']:,}", True),
                   ("GET/HEAD", lambda r: f"{r['requests_get']:,}", True),
                   ("IN", lambda r: human_bytes(r["bytes_in"]), True),
                   ("OUT", lambda r: human_bytes(r["bytes_out"]), True),
                   ("GB-HOURS", lambda r: f"{r['byte_hours'] / 1e9:.3f}", True)]


def cmd_usage(args: argparse.Namespace) -> int:
    query = {k: v for k, v in (("since", args.since), ("until", args.until),
                               ("account", args.account), ("by", args.by)) if v}
    rows = admin_client(args).call("GET", USAGE, query=query)
    if args.csv and not args.json:
        write_csv(rows, sys.stdout)
        return 0
    return emit_table(args, rows, _columns(args.by or "account"))


def write_csv(rows: list[dict[str, Any]], out: Any) -> None:
    """The rows as CSV: the grouping columns, then every counter."""
    keys = [k for k in ("hour", "account", "account_name", "kind", "name", "bucket", "volume",
                        "vm", "network", "day") if any(k in r for r in rows)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keys + list(COUNTERS))
    for row in rows:
        writer.writerow([row.get(k, "") for k in keys] + [row.get(c, 0) for c in COUNTERS])
    out.write(buffer.getvalue())


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the ``usage`` command to the CLI."""
    p = add(sub, "usage", help="metered usage per account, bucket, volume, VM or day")
    p.add_argument("--account", help="one account (name or id); default: every account")
    p.add_argument("--since", metavar="ISO8601", help="from (default: the 1st of this month)")
    p.add_argument("--until", metavar="ISO8601", help="to (default: now)")
    p.add_argument("--by", choices=BY, help="rows per account (default) or per thing, day, hour")
    p.add_argument("--csv", action="store_true", help="print CSV")
    p.set_defaults(func=cmd_usage)
