"""Prometheus metrics of the S3 endpoint, the engine, the disks and NBD.

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` (set by the
server before the workers start, and in the main process, which counts NBD
requests and background heals) makes every process's counters add up in one
scrape. Disk states, capacity, bucket, object and upload counts are read at
scrape time: counts are LMDB's own entry counts (O(1)); the bytes stored need a
scan of the object records, so that figure is cached in the metrics directory
and recomputed by at most one process at a time, at most every
``STORED_REFRESH`` seconds.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from storaged import ObjectStore
from storaged.disk import Disk

CONTENT_TYPE = CONTENT_TYPE_LATEST
STORED_REFRESH = 60.0  # seconds between two scans for the bytes stored

REQUESTS = Counter("basalt_s3_requests_total", "S3 requests by operation and HTTP status",
                   ["op", "status"])
LATENCY = Histogram("basalt_s3_request_duration_seconds", "S3 request latency by operation",
                    ["op"], buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5,
                                     10, 30, 60))
BYTES_IN = Counter("basalt_s3_received_bytes_total", "Object bytes received")
BYTES_OUT = Counter("basalt_s3_sent_bytes_total", "Object bytes sent")
ENGINE = Counter("basalt_storage_events_total",
                 "Storage engine events (corrupt or missing shards found, degraded reads)",
                 ["event"])


# (op, status) → its request counter and latency histogram: labels() takes a lock
# and builds its key on every call; the pairs are few (operations × statuses).
_SERIES: dict[tuple[str, int], tuple] = {}


def observe(op: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
    series = _SERIES.get((op, status))
    if series is None:
        series = _SERIES[(op, status)] = (REQUESTS.labels(op, str(status)), LATENCY.labels(op))
    series[0].inc()
    series[1].observe(seconds)
    if bytes_in:
        BYTES_IN.inc(bytes_in)
    if bytes_out:
        BYTES_OUT.inc(bytes_out)


def engine_event(event: str, n: int) -> None:
    ENGINE.labels(event).inc(n)


def disk_states(store: ObjectStore) -> list[dict]:
    """The disks as the owner sees them: this process's online/offline view,
    with "healing" taken from the marker the owner keeps on the disk (a worker's
    own flag only changes when it reopens the disk, so it can lag both ways)."""
    disks = store.disk_states()
    for d, disk in zip(disks, store.disks):
        if d["state"] != "offline":
            d["state"], reason = disk.status()
            if reason is not None:
                d["reason"] = reason
    return disks


def heal_progress() -> dict[str, int]:
    """The heal counters summed over every server process (objects checked and
    healed, shards and bytes rebuilt, failures since the server started)."""
    from storaged.metrics import heal_count  # noqa: F401 - registers the counters
    names = {"basalt_heal_objects_checked_total": "objects_checked",
             "basalt_heal_objects_healed_total": "objects_healed",
             "basalt_heal_shards_rebuilt_total": "shards_rebuilt",
             "basalt_heal_rebuilt_bytes_total": "bytes_rebuilt",
             "basalt_heal_failures_total": "failed"}
    progress = dict.fromkeys(names.values(), 0)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        families = registry.collect()
    else:
        from prometheus_client import REGISTRY
        families = REGISTRY.collect()
    for family in families:
        for sample in family.samples:
            if sample.name in names:
                progress[names[sample.name]] += int(sample.value)
    return progress


def _table_entries(disk: Disk, table: bytes) -> int | None:
    try:
        return disk.read_now("entries", table)
    except Exception:  # offline, or going away mid-scrape
        return None


def _fullest(store: ObjectStore, table: bytes):
    """(entries, disk) of the online disk whose LMDB table holds the most (O(1)
    each), or None when no disk answers."""
    counts = [(n, d) for d in store.disks
              if d.online and (n := _table_entries(d, table)) is not None]
    return max(counts, key=lambda c: c[0]) if counts else None


def _entries(store: ObjectStore, table: bytes) -> int | None:
    """Entries of an LMDB table, the most any online disk holds."""
    fullest = _fullest(store, table)
    return fullest[0] if fullest else None


def _scan_stored(store: ObjectStore) -> dict:
    """Count the objects and sum their sizes on the fullest online disk."""
    fullest = _fullest(store, b"objects")
    objects, size = fullest[1].read_now("stored") if fullest else (0, 0)
    return {"time": time.time(), "objects": objects, "bytes": size}


def stored(store: ObjectStore, cache_dir: str | None) -> dict | None:
    """``{"objects", "bytes", "time"}`` from the cache, recomputed when stale by
    the one process that gets the lock (the others keep the stale figure)."""
    if not cache_dir:
        return _scan_stored(store)
    path = os.path.join(cache_dir, "stored.json")
    cached = None
    try:
        with open(path) as f:
            cached = json.load(f)
    except (OSError, ValueError):
        pass
    if cached is not None and time.time() - cached.get("time", 0) < STORED_REFRESH:
        return cached
    with open(os.path.join(cache_dir, "stored.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return cached  # another process is counting
        fresh = _scan_stored(store)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(fresh, f)
        os.replace(tmp, path)
        return fresh


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def store_lines(store: ObjectStore, disks: list[dict], stored_now: dict | None,
                buckets: int | None) -> list[str]:
    """The figures read from the store and the disks at scrape time."""
    lines: list[str] = []
    _family(lines, "basalt_disk_state", "gauge", "Disk state (1 for the current state).")
    for disk in disks:
        for state in ("online", "healing", "offline"):
            lines.append(f'basalt_disk_state{{position="{disk["position"]}",'
                         f'path="{_label(disk["path"])}",state="{state}"}} '
                         f'{1 if disk["state"] == state else 0}')
    capacity = []
    for disk, source in zip(disks, store.disks):
        if disk["state"] == "offline":
            continue
        try:
            capacity.append((disk, *source.space()[:3]))
        except OSError:
            continue
    for i, (name, text) in enumerate((
            ("basalt_disk_total_bytes", "Size of the filesystem holding the disk."),
            ("basalt_disk_used_bytes", "Bytes used on the filesystem holding the disk."),
            ("basalt_disk_free_bytes", "Bytes free for Basalt on the disk's filesystem."))):
        _family(lines, name, "gauge", text)
        for disk, *values in capacity:
            lines.append(f'{name}{{position="{disk["position"]}",'
                         f'path="{_label(disk["path"])}"}} {values[i]}')
    _family(lines, "basalt_erasure_set", "gauge", "Erasure coding of the set.")
    lines.append(f'basalt_erasure_set{{k="{store.k}",m="{store.m}"}} 1')
    online = sum(1 for d in disks if d["state"] != "offline")
    _family(lines, "basalt_disks_online", "gauge", "Disks online (healing ones included).")
    lines.append(f"basalt_disks_online {online}")
    _family(lines, "basalt_write_quorum", "gauge", "Disks a write needs.")
    lines.append(f"basalt_write_quorum {store.write_quorum}")
    if buckets is not None:
        _family(lines, "basalt_buckets", "gauge", "Buckets.")
        lines.append(f"basalt_buckets {buckets}")
    objects = _entries(store, b"objects")
    if objects is not None:
        _family(lines, "basalt_objects", "gauge", "Objects stored (LMDB entry count).")
        lines.append(f"basalt_objects {objects}")
    uploads = _entries(store, b"uploads")
    if uploads is not None:
        _family(lines, "basalt_multipart_uploads", "gauge", "Multipart uploads in progress.")
        lines.append(f"basalt_multipart_uploads {uploads}")
    if stored_now is not None:
        _family(lines, "basalt_stored_bytes", "gauge",
                f"Object bytes stored (before erasure coding; recounted at most every "
                f"{STORED_REFRESH:.0f} s).")
        lines.append(f"basalt_stored_bytes {stored_now['bytes']}")
        _family(lines, "basalt_stored_age_seconds", "gauge", "Age of basalt_stored_bytes.")
        lines.append(f"basalt_stored_age_seconds {max(0.0, time.time() - stored_now['time']):.1f}")
    return lines


async def render(store: ObjectStore) -> bytes:
    cache_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if cache_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest()
    # Disk stats and LMDB reads may block on a sick disk: off the event loop.
    disks = await store.run(disk_states, store)
    stored_now = await store.run(stored, store, cache_dir)
    try:
        buckets: int | None = len([b for b in await store.list_buckets()
                                   if not b.name.startswith(".")])  # not the system bucket
    except Exception:
        buckets = None
    lines = await store.run(store_lines, store, disks, stored_now, buckets)
    return text + ("\n".join(lines) + "\n").encode()
