"""`basalt status`: the whole server on one screen (``--json``: the document)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..progress import human_bytes
from .common import admin_client, emit

STATUS = "/_basalt/v1/status"


def _uptime(seconds: float) -> str:
    minutes = int(seconds) // 60
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    return f"{days}d {hours}h {mins:02d}m" if days else f"{hours}h {mins:02d}m"


def render(doc: dict[str, Any]) -> str:
    """The one-screen text of a status document."""
    lines = [f"Basalt {doc['version']}: {doc['status']}, up {_uptime(doc['uptime_seconds'])} "
             f"(since {doc['started']})"
             + (f", cluster node {doc['cluster_node']}" if doc.get("cluster_node") else "")]
    for name, url in doc["endpoints"].items():
        lines.append(f"  {name + ':':<12}{url}")
    lines.append("layers:      " + ", ".join(f"{k} {v}" for k, v in doc["layers"].items()))
    lines.append(f"erasure:     {doc['ec']}, writes need {doc['write_quorum']} disks")
    lines.append("disks:")
    for d in doc["disks"]:
        space = (f"{human_bytes(d['free_bytes'])} free" if "free_bytes" in d
                 else d.get("reason", ""))
        lines.append(f"  {d['position']:>3}  {d['state']:<8} {d['path']}  {space}")
    cap = doc["capacity"]
    if cap["raw"]:
        lines.append(f"capacity:    {human_bytes(cap['free'])} free of {human_bytes(cap['raw'])} "
                     f"({round(100 - cap['free'] * 100 / cap['raw'])}% full); holds "
                     f"{human_bytes(cap['objects'])} as objects or {human_bytes(cap['volumes'])} "
                     f"as volumes")
    heal = doc["heal"]
    state = (f"disks {', '.join(map(str, heal['healing_disks']))} healing"
             if heal["healing_disks"] else "no disk healing")
    if heal["offline_disks"]:
        state += f"; disks {', '.join(map(str, heal['offline_disks']))} offline"
    lines.append(f"heal:        {state} ({heal['objects_checked']:,} objects checked, "
                 f"{heal['objects_healed']:,} healed, {heal['failed']:,} failed since start)")
    counts = doc["counts"]
    parts = []
    for key, label in (("buckets", "buckets"), ("objects", "objects"), ("volumes", "volumes"),
                       ("vms", "VMs"), ("networks", "networks")):
        if counts.get(key) is not None:
            text = f"{counts[key]:,} {label}"
            if key == "objects" and counts.get("object_bytes") is not None:
                text += f" ({human_bytes(counts['object_bytes'])})"
            parts.append(text)
    lines.append("holds:       " + ", ".join(parts))
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    doc = admin_client(args).call("GET", STATUS)
    emit(args, doc, render(doc))
    return 0 if doc["status"] != "unavailable" else 1


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the ``status`` command to the CLI."""
    add(sub, "status", help="version, uptime, endpoints, layers, disks, capacity, heal "
        "and what the server holds, on one screen").set_defaults(func=cmd_status)
