"""Prometheus metrics of the S3 endpoint and the engine.

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` (set by the
server before the workers start) makes every worker's counters add up in one
scrape. Disk states are read from the store at scrape time.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from storaged import ObjectStore

CONTENT_TYPE = CONTENT_TYPE_LATEST

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


def observe(op: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
    REQUESTS.labels(op, str(status)).inc()
    LATENCY.labels(op).observe(seconds)
    if bytes_in:
        BYTES_IN.inc(bytes_in)
    if bytes_out:
        BYTES_OUT.inc(bytes_out)


def engine_event(event: str, n: int) -> None:
    ENGINE.labels(event).inc(n)


def render(store: ObjectStore) -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest()
    lines = ["# HELP basalt_disk_state Disk state (1 for the current state).",
             "# TYPE basalt_disk_state gauge"]
    for disk in store.disk_states():
        for state in ("online", "healing", "offline"):
            lines.append(f'basalt_disk_state{{position="{disk["position"]}",'
                         f'path="{disk["path"]}",state="{state}"}} '
                         f'{1 if disk["state"] == state else 0}')
    lines.append("# HELP basalt_erasure_set Erasure coding of the set.")
    lines.append("# TYPE basalt_erasure_set gauge")
    lines.append(f'basalt_erasure_set{{k="{store.k}",m="{store.m}"}} 1')
    return text + ("\n".join(lines) + "\n").encode()
