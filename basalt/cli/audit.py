"""`basalt audit tail|search`: who did what, from the server's audit log.

Both read ``GET /_basalt/v1/audit`` (the node's ``DATA_DIR/logs/audit.jsonl`` and
its rotated files), newest lines last. ``tail -n N`` shows the last N requests and
``--follow`` keeps printing new ones (JSON lines with --json) until interrupted;
``search`` filters by bucket, user, account, access key, operation, key prefix and
time (``--since``/``--until``: ISO 8601, or a time ago such as ``15m``, ``2h``, ``3d``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from ..progress import human_bytes
from .common import CLIError, Column, admin_client, emit, table

PATH = "/_basalt/v1/audit"
FOLLOW_INTERVAL = 1.0
# Lines reach the file up to a flush interval late, and workers' batches interleave:
# a follow asks again from a little before the newest line it has seen.
FOLLOW_OVERLAP = 5.0
FOLLOW_LIMIT = 10_000

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def when(text: str) -> str:
    """An ISO 8601 time for the server: ``15m`` (ago) becomes one; ISO 8601 passes
    unchanged once it parses."""
    ago = _AGO.match(text.strip())
    if ago:
        seconds = float(ago.group(1)) * _UNIT_SECONDS[ago.group(2)]
        then = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
        return then.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise CLIError("InvalidArgument", f"not an ISO 8601 time or a time ago (15m, 2h, 3d): "
                       f"{text!r}") from None
    return text.strip()


def _ms(entry: dict) -> str:
    duration = entry.get("duration")
    return "" if duration is None else f"{duration * 1000:.1f}"


def _size(name: str) -> Callable[[dict], str]:
    return lambda e: human_bytes(e.get(name) or 0)


def _key(entry: dict) -> str | None:
    return entry.get("key") if entry.get("operation") != "Admin" else entry.get("path")


COLUMNS: list[Column] = [
    ("TIME", lambda e: e.get("time"), False),
    ("ACCOUNT", lambda e: e.get("account_name") or e.get("account"), False),
    ("USER", lambda e: e.get("user"), False),
    ("SOURCE", lambda e: e.get("source_ip"), False),
    ("OPERATION", lambda e: e.get("operation"), False),
    ("BUCKET", lambda e: e.get("bucket"), False),
    ("KEY", _key, False),
    ("STATUS", lambda e: e.get("status"), True),
    ("ERROR", lambda e: e.get("error"), False),
    ("IN", _size("bytes_in"), True),
    ("OUT", _size("bytes_out"), True),
    ("MS", _ms, True),
]

FILTERS = ("bucket", "user", "account", "access_key", "operation", "key")


def _query(args: argparse.Namespace, limit: int) -> dict[str, str]:
    query = {name: getattr(args, name) for name in FILTERS if getattr(args, name, None)}
    for name in ("since", "until"):
        if getattr(args, name, None):
            query[name] = when(getattr(args, name))
    query["limit"] = str(limit)
    return query


def _fetch(args: argparse.Namespace, query: dict[str, str]) -> list[dict]:
    return admin_client(args).call("GET", PATH, query=query)


def cmd_search(args: argparse.Namespace) -> int:
    entries = _fetch(args, _query(args, args.limit))
    if len(entries) >= args.limit and not args.json:
        print(f"(the newest {args.limit} matching requests; --limit for more)", file=sys.stderr)
    return emit(args, entries, table(entries, COLUMNS))


def cmd_tail(args: argparse.Namespace) -> int:
    if args.lines < 1:
        raise CLIError("InvalidArgument", "-n must be at least 1")
    entries = _fetch(args, _query(args, args.lines))
    if not args.follow:
        return emit(args, entries, table(entries, COLUMNS))
    try:
        follow(args, entries)
    except KeyboardInterrupt:
        pass  # the way a follow ends
    return 0


def follow(args: argparse.Namespace, first: list[dict],
           sleep: Callable[[float], Any] = time.sleep) -> None:
    """Print ``first``, then every new line as it comes (until interrupted)."""
    seen: dict[str, str] = {}  # request id -> time, of the lines in the overlap window
    print_batch(args, first, header=True)
    newest = _remember(seen, first, None)
    while True:
        sleep(FOLLOW_INTERVAL)
        query = _query(args, FOLLOW_LIMIT)
        if newest is not None:
            query["since"] = _before(newest, FOLLOW_OVERLAP)
        fresh = [e for e in _fetch(args, query) if e.get("request_id") not in seen]
        print_batch(args, fresh, header=False)
        newest = _remember(seen, fresh, newest)


def _before(stamp: str, seconds: float) -> str:
    t = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (t - datetime.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def _remember(seen: dict[str, str], entries: list[dict], newest: str | None) -> str | None:
    for e in entries:
        seen[e.get("request_id")] = e.get("time", "")
        if newest is None or e.get("time", "") > newest:
            newest = e.get("time")
    if newest is not None:  # forget what the next ask cannot return again
        horizon = _before(newest, FOLLOW_OVERLAP * 2).replace("+00:00", "Z")
        for rid in [r for r, t in seen.items() if t < horizon]:
            del seen[rid]
    return newest


def print_batch(args: argparse.Namespace, entries: list[dict], header: bool) -> None:
    if args.json:
        for e in entries:
            print(json.dumps(e))
    elif entries or header:
        lines = table(entries, COLUMNS).split("\n")
        print("\n".join(lines if header else lines[1:]))
    sys.stdout.flush()


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bucket", help="requests on this bucket")
    p.add_argument("--user", help="requests by this user (root: an account's root)")
    p.add_argument("--account", help="requests by this account (id or name)")
    p.add_argument("--access-key", help="requests signed with this access key id")
    p.add_argument("--operation", help="this S3 operation (GetObject, DeleteObject, ...; "
                   "Admin for the admin API)")
    p.add_argument("--key", metavar="PREFIX", help="object keys starting with PREFIX")


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the commands to the CLI."""
    p = add(sub, "audit", help="the audit log: who did what, when, from where")
    asub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = add(asub, "tail", help="the last requests (--follow: and new ones as they come)")
    t.add_argument("-n", "--lines", type=int, default=20, metavar="N",
                   help="how many (default 20)")
    t.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new requests until interrupted (with --json: "
                        "one JSON object per line)")
    _filters(t)
    t.set_defaults(func=cmd_tail)
    s = add(asub, "search", help="the requests that match every filter given, oldest first")
    _filters(s)
    s.add_argument("--since", metavar="TIME",
                   help="at or after TIME (ISO 8601, e.g. 2025-01-31T12:00:00Z, or ago: 15m, 2h, 3d)")
    s.add_argument("--until", metavar="TIME", help="before TIME (same forms)")
    s.add_argument("--limit", type=int, default=1000, metavar="N",
                   help="the newest N matching requests (default 1000)")
    s.set_defaults(func=cmd_search)
