"""Usage metering: what each account used, hour by hour.

Every server process keeps a :class:`Meter`: requests by price class and bytes
in and out per bucket (counted by the S3 workers), stored byte-hours and
object-hours per bucket, provisioned and allocated GB-hours per volume,
vCPU-hours and memory GB-hours per VM (sampled by the owner). Every
``flush_seconds`` it writes what it counted into the hour's record of its own,
an object ``HOUR/SOURCE`` of the system bucket ``.basalt-usage`` (small, so
stored inline in every disk's LMDB: replicated and healed like all metadata).
Each process writes only its own records, with running totals, so no two
writers ever race on one record and a rewrite after a crash never counts twice;
readers sum the records of every source.

Price classes are S3's: PUT, COPY, POST and LIST requests (and the other
writes of settings) are ``put``; deletes and aborts are ``free``; the rest
(GET, HEAD, reads of settings) are ``get``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from . import system_buckets
from .errors import NoSuchBucket, NoSuchKey

log = logging.getLogger("basalt.metering")

SYSTEM_BUCKET = ".basalt-usage"
COUNTERS = ("requests_put", "requests_get", "requests_free", "bytes_in", "bytes_out")
SAMPLED = ("byte_hours", "object_hours", "provisioned_gb_hours", "allocated_gb_hours",
           "snapshot_gb_hours", "vcpu_hours", "memory_gb_hours", "nat_bytes")
KINDS = ("bucket", "volume", "vm", "network")
# An hour's totals stay in memory this long after it ends, for late counts
# (a request that began in it); its record is final after that.
KEEP_SECONDS = 2 * 3600
_FREE = {"DeleteObject", "DeleteObjects", "DeleteBucket", "AbortMultipartUpload",
         "DeleteObjectTagging", "DeleteBucketPolicy", "DeleteBucketCors", "DeleteBucketLifecycle",
         "DeleteBucketTagging", "DeleteBucketEncryption", "DeletePublicAccessBlock",
         "DeleteBucketOwnershipControls", "PreflightCors"}
_PUT_PREFIXES = ("Put", "Copy", "Post", "List", "Create", "Upload", "Complete", "Restore")


def request_class(operation: str) -> str:
    """``put``, ``get`` or ``free``: the S3 price class of an operation."""
    if operation in _FREE:
        return "free"
    if operation.startswith(_PUT_PREFIXES):
        return "put"
    return "get"


class MeteredClock:
    """Metered time: the wall clock, or (tests and demos) one where an hour lasts
    ``hour_seconds`` real seconds from ``epoch`` on, so a day of usage can be
    metered in a minute. Every process of a server shares the epoch."""

    def __init__(self, epoch: float, hour_seconds: float = 3600.0) -> None:
        self.epoch, self.scale = epoch, 3600.0 / hour_seconds

    def __call__(self) -> float:
        return self.epoch + (time.time() - self.epoch) * self.scale


def hour_of(moment: float) -> str:
    """``YYYY-MM-DDTHH`` (UTC): the hour a moment falls in, as records name it."""
    return time.strftime("%Y-%m-%dT%H", time.gmtime(moment))


def parse_moment(text: str) -> float:
    """An ISO 8601 date or time (UTC unless it says otherwise) as a timestamp."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _row_key(account: str, kind: str, name: str) -> str:
    return f"{account}\x00{kind}\x00{name}"


class Meter:
    """One process's counters, written to its own hourly records."""

    def __init__(self, store: Any, role: str, flush_seconds: float = 10.0,
                 clock: Any = time.time) -> None:
        self.store = store
        self._clock = clock
        self.source = f"{role}-{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
        self.flush_seconds = flush_seconds
        self._hours: dict[str, dict[str, dict[str, float]]] = {}  # hour → row → counters
        self._dirty: set[str] = set()
        self._task: asyncio.Task | None = None
        self._unpublished: dict[tuple[str, str, str, str], float] = {}  # for Prometheus
        self._hour: tuple[float, str] = (-1.0, "")  # (start, name) of the last hour counted

    def _bump(self, account: str, kind: str, name: str, moment: float | None,
              values: dict[str, float]) -> None:
        row = self._row(account, kind, name, moment)
        for counter, value in values.items():
            if value:
                row[counter] = row.get(counter, 0) + value
                key = (account, kind, name, counter)
                self._unpublished[key] = self._unpublished.get(key, 0) + value

    def _row(self, account: str, kind: str, name: str, moment: float | None) -> dict[str, float]:
        now = self._clock()
        if moment is None or moment < now - KEEP_SECONDS:
            moment = now  # an hour whose record is final takes nothing more
        start = moment // 3600 * 3600
        if start != self._hour[0]:  # strftime once an hour, not once a request
            self._hour = (start, hour_of(moment))
        hour = self._hour[1]
        self._dirty.add(hour)
        rows = self._hours.setdefault(hour, {})
        return rows.setdefault(_row_key(account, kind, name), {})

    def count_request(self, account: str, bucket: str, operation: str, bytes_in: int,
                      bytes_out: int, moment: float | None = None) -> None:
        """One S3 request on ``bucket`` (empty: the service itself) by ``account``."""
        self._bump(account, "bucket", bucket, moment,
                   {f"requests_{request_class(operation)}": 1, "bytes_in": bytes_in,
                    "bytes_out": bytes_out})

    def add(self, account: str, kind: str, name: str, values: dict[str, float],
            moment: float | None = None) -> None:
        """Add sampled amounts (byte-hours, GB-hours, ...) to a thing's row."""
        self._bump(account, kind, name, moment, values)

    async def flush(self) -> None:
        """Write the records of every hour counted since the last flush."""
        self._publish()
        dirty, self._dirty = self._dirty, set()
        final = hour_of(self._clock() - KEEP_SECONDS)
        for hour in sorted(dirty):
            body = json.dumps({"source": self.source, "rows": self._hours[hour]},
                              separators=(",", ":")).encode()
            try:
                await _put(self.store, f"{hour}/{self.source}", body)
            except Exception:
                self._dirty.add(hour)  # written again at the next flush
                raise
        for hour in [h for h in self._hours if h < final and h not in self._dirty]:
            del self._hours[hour]  # long over: its record is final

    def _publish(self) -> None:
        # Once per flush, not per request: a Prometheus update in multiprocess
        # mode takes a lock and writes a memory-mapped file.
        from .metrics import usage_count
        unpublished, self._unpublished = self._unpublished, {}
        for (account, kind, name, counter), value in unpublished.items():
            usage_count(account, kind, name, counter, value)

    def start(self) -> None:
        """Flush every ``flush_seconds`` until :meth:`close`."""
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except Exception as exc:  # no quorum now: the counts wait for the next flush
                log.warning("usage not written, kept for the next flush: %s", exc)

    async def close(self) -> None:
        """Stop flushing, after one last flush."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        try:
            await self.flush()
        except Exception as exc:
            log.warning("usage of the last %s s not written: %s", self.flush_seconds, exc)


async def _put(store: Any, key: str, body: bytes) -> None:
    await system_buckets.put_object(store, SYSTEM_BUCKET, key, body)


async def read_usage(store: Any, since: float, until: float) -> list[dict[str, Any]]:
    """Every metered row of the hours from ``since`` to before ``until``: one per
    hour, account and thing, the sources summed."""
    first, last = hour_of(since), hour_of(until - 0.001)  # hours that overlap the span
    totals: dict[tuple[str, str], dict[str, float]] = {}
    after = first  # keys are HOUR/SOURCE: every key of `first` sorts after it
    while True:
        try:
            page = await store.list_objects(SYSTEM_BUCKET, after=after, max_keys=1000)
        except NoSuchBucket:
            return []
        for info in page.objects:
            hour = info.key.partition("/")[0]
            if hour > last:
                page.truncated = False
                break
            try:
                reader = await store.get_object(SYSTEM_BUCKET, info.key)
                record = json.loads(await reader.read())
            except NoSuchKey:
                continue
            for key, counters in record["rows"].items():
                row = totals.setdefault((hour, key), {})
                for name, value in counters.items():
                    row[name] = row.get(name, 0) + value
        if not page.truncated:
            break
        after = page.next_marker
    rows = []
    for (hour, key), counters in sorted(totals.items()):
        account, kind, name = key.split("\x00")
        rows.append({"hour": hour, "account": account, "kind": kind, "name": name,
                     **{c: counters.get(c, 0) for c in COUNTERS + SAMPLED}})
    return rows


def summarize(rows: Iterable[dict[str, Any]], by: str | None = None) -> list[dict[str, Any]]:
    """Rows added up per account (``by`` None), per thing of a kind (``bucket``,
    ``volume``, ``vm``, ``network``: other kinds left out) or per account and day."""
    groups: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        if by in KINDS:
            if row["kind"] != by:
                continue
            key: tuple = (row["account"], row["name"])
            head = {"account": row["account"], by: row["name"]}
        elif by == "day":
            key = (row["account"], row["hour"][:10])
            head = {"account": row["account"], "day": row["hour"][:10]}
        else:
            key = (row["account"],)
            head = {"account": row["account"]}
        group = groups.setdefault(key, {**head, **dict.fromkeys(COUNTERS + SAMPLED, 0)})
        for counter in COUNTERS + SAMPLED:
            group[counter] += row[counter]
    out = []
    for key in sorted(groups):
        group = groups[key]
        for counter in COUNTERS + SAMPLED:  # sums of samples: a few decimals say enough
            if isinstance(group[counter], float):
                group[counter] = round(group[counter], 6)
        out.append(group)
    return out
