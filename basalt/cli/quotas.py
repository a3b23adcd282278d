"""`basalt quota set|show`: a bucket's or an account's quota, through the admin API.

``set`` changes only the limits it is given; ``--max-bytes 0`` (or ``none``)
removes the byte limit, ``--max-objects 0`` (or ``none``) the object limit.
``show`` prints the limits and the usage: bytes and objects (every version
holding data; delete markers are not counted), for an account summed over its
buckets (and, for the root account, its volumes' sizes).
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Callable
from typing import Any

from ..config import ConfigError, parse_size
from ..progress import human_bytes
from .common import admin_client, emit

PATH = "/_basalt/v1/quotas"
CLEAR = ("0", "none", "unlimited")


def _target(args: argparse.Namespace) -> tuple[str, str]:
    if args.bucket is not None:
        return f"{PATH}/buckets/{urllib.parse.quote(args.bucket, safe='')}", f"bucket {args.bucket}"
    return f"{PATH}/accounts/{urllib.parse.quote(args.account, safe='')}", \
        f"account {args.account}"


def _bytes_limit(text: str) -> int | None:
    return None if text.strip().lower() in CLEAR else parse_size(text)


def _objects_limit(text: str) -> int | None:
    if text.strip().lower() in CLEAR:
        return None
    if not text.strip().isdigit():
        raise ConfigError(f"not a number of objects: {text!r}")
    return int(text)


def describe(quota: dict, what: str) -> str:
    """``bucket b: 1.0 MiB of 10.0 GiB, 3 of 1000 objects``."""
    used = quota.get("usage") or {}
    size = human_bytes(used.get("bytes", 0))
    limit = quota.get("max_bytes")
    objects = used.get("objects", 0)
    text = f"{what}: {size}" + (f" of {human_bytes(limit)}" if limit is not None else
                                " (no byte limit)")
    count = quota.get("max_objects")
    text += f", {objects} of {count} objects" if count is not None else \
        f", {objects} objects (no object limit)"
    return text


def cmd_set(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.max_bytes is not None:
        body["max_bytes"] = _bytes_limit(args.max_bytes)  # bad input fails before connecting
    if args.max_objects is not None:
        body["max_objects"] = _objects_limit(args.max_objects)
    if not body:
        raise ConfigError("give --max-bytes and/or --max-objects")
    path, what = _target(args)
    quota = admin_client(args).call("PUT", path, body=body)
    return emit(args, quota, describe(quota, what))


def cmd_show(args: argparse.Namespace) -> int:
    path, what = _target(args)
    quota = admin_client(args).call("GET", path)
    return emit(args, quota, describe(quota, what))


def _which(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--bucket", metavar="B", help="a bucket's quota")
    g.add_argument("--account", metavar="A", help="an account's quota (name or id)")


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the commands to the CLI."""
    p = add(sub, "quota", help="bucket and account quotas (bytes, objects)")
    qsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    x = add(qsub, "set", help="set (or, with 0 or none, remove) a bucket's or an "
            "account's limits; limits not given are kept")
    _which(x)
    x.add_argument("--max-bytes", metavar="SIZE",
                   help="e.g. 10G (binary K/M/G/T; KB/MB/GB decimal); 0 or none: no limit")
    x.add_argument("--max-objects", metavar="N", help="versions holding data; 0 or none: no limit")
    x.set_defaults(func=cmd_set)
    x = add(qsub, "show", help="a bucket's or an account's limits and usage")
    _which(x)
    x.set_defaults(func=cmd_show)
