"""`basalt kms key create|list|info|rotate|enable|disable`: the server's KMS keys.

Through the admin API (root credentials). SSE-KMS objects name these keys
(by id, ARN, name or ``alias/NAME``); encrypted volumes may too.
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Callable
from typing import Any

from .common import admin_client, emit, emit_table

KEYS = "/_basalt/v1/kms/keys"

COLUMNS = [("NAME", lambda k: k["name"], False), ("ID", lambda k: k["id"], False),
           ("STATE", lambda k: k["state"], False), ("VERSIONS", lambda k: k["versions"], True),
           ("CREATED", lambda k: k.get("created"), False),
           ("ROTATED", lambda k: k.get("rotated") or "never", False)]


def _path(name: str, *rest: str) -> str:
    return "/".join([KEYS, urllib.parse.quote(name, safe=""), *rest])


def _describe(key: dict) -> str:
    return f"{key['name']} ({key['id']}): {key['state']}, {key['versions']} version(s)"


def cmd_create(args: argparse.Namespace) -> int:
    key = admin_client(args).call("POST", KEYS, body={"name": args.name,
                                                      "description": args.description})
    return emit(args, key, f"created KMS key {_describe(key)}\n  arn: {key['arn']}")


def cmd_list(args: argparse.Namespace) -> int:
    return emit_table(args, admin_client(args).call("GET", KEYS), COLUMNS)


def cmd_info(args: argparse.Namespace) -> int:
    key = admin_client(args).call("GET", _path(args.name))
    return emit(args, key, "\n".join(f"{k}: {v}" for k, v in key.items()))


def _change(action: str, done: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        key = admin_client(args).call("POST", _path(args.name, action))
        return emit(args, key, f"{done} KMS key {_describe(key)}")
    return run


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the ``kms`` command to the CLI."""
    from .buckets import _intermixed
    kms = add(sub, "kms", help="KMS keys for SSE-KMS objects and encrypted volumes")
    ksub = kms.add_subparsers(dest="kms_area", required=True, metavar="AREA")
    key = add(ksub, "key", help="create, list, rotate, enable and disable KMS keys")
    actions = key.add_subparsers(dest="kms_action", required=True, metavar="ACTION",
                                 parser_class=_intermixed(type(key)))
    x = add(actions, "create", help="a new key (its material never leaves the server)")
    x.add_argument("name", metavar="NAME")
    x.add_argument("--description", default="", help="what the key is for")
    x.set_defaults(func=cmd_create)
    add(actions, "list", help="every key").set_defaults(func=cmd_list)
    for name, func, text in (
            ("info", cmd_info, "one key"),
            ("rotate", _change("rotate", "rotated"),
             "new material for new data keys; existing data keys still open"),
            ("disable", _change("disable", "disabled"),
             "refuse to seal or open data keys with it (objects under it cannot be read)"),
            ("enable", _change("enable", "enabled"), "use it again")):
        x = add(actions, name, help=text)
        x.add_argument("name", metavar="NAME", help="name, alias/NAME, id or ARN")
        x.set_defaults(func=func)
