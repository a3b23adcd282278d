"""Prometheus counters of the engine's healing and lifecycle, shared by every server process.

Created on first use, not at import: the server sets
``PROMETHEUS_MULTIPROC_DIR`` before counting, and a counter made earlier would
keep its counts in process memory, out of the scrape.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _heal() -> dict[str, Any]:
    from prometheus_client import Counter
    return {
        "objects": Counter("basalt_heal_objects_checked_total",
                           "Objects (and uploads) a heal checked"),
        "healed": Counter("basalt_heal_objects_healed_total",
                          "Objects a heal repaired (shards or records rewritten)"),
        "shards": Counter("basalt_heal_shards_rebuilt_total", "Shards a heal rewrote"),
        "bytes": Counter("basalt_heal_rebuilt_bytes_total", "Shard bytes a heal wrote"),
        "failed": Counter("basalt_heal_failures_total", "Objects a heal could not repair"),
    }


def heal_count(what: str, n: int = 1) -> None:
    """Count ``n`` heal events of kind ``what`` (objects, healed, shards, bytes, failed)."""
    if n:
        _heal()[what].inc(n)


@functools.cache
def _lifecycle() -> Any:
    from prometheus_client import Counter
    return Counter("basalt_lifecycle_actions_total",
                   "Versions and uploads the lifecycle scanner removed (or skipped: locked)",
                   ["action"])


def lifecycle_count(what: str, n: int = 1) -> None:
    """Count ``n`` lifecycle actions of kind ``what`` (expire_current, expire_noncurrent,
    remove_delete_marker, abort_upload, skipped_locked)."""
    if n:
        _lifecycle().labels(action=what).inc(n)


@functools.cache
def _usage() -> Any:
    from prometheus_client import Counter
    return Counter("basalt_usage_total",
                   "Metered usage (what `basalt usage` reports) per account, kind of thing, "
                   "thing and counter: requests by price class, bytes, byte-/GB-/vCPU-hours",
                   ["account", "kind", "name", "counter"])


def usage_count(account: str, kind: str, name: str, counter: str, value: float) -> None:
    """Add metered usage to the Prometheus counter of the same figures."""
    if value:
        _usage().labels(account, kind, name, counter).inc(value)
