"""Healing: bring every disk back to holding its record and shard of each object.

* :func:`heal_object` resolves an object's current version by quorum, rebuilds
  the shards that are missing or corrupt (reading the healthy ones, re-encoding,
  writing only the bad positions) and installs the record where it is missing
  or stale. Records of versions that never reached quorum are removed once
  they are old enough not to be a write still in flight.
* :func:`heal_all` does that for every bucket and key any disk knows: it is
  what ``basalt heal`` runs, and what a wiped or replaced disk gets.
* :func:`resolve_pending` settles shard files left by interrupted writes.
* :class:`Healer` is the background task: it heals objects that reads found
  damaged, watches the disks, and heals a replaced disk completely.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .disk import Disk, ShardWriter
from .errors import ReadQuorumError, StorageError
from .format import NOT_FORMATTED
from .layout import HASH_LEN, checksum
from .listing import walk_keys
from .meta import ObjectInfo, record_version
from .metadb import (
    ClearPending,
    DeleteBucket,
    DeleteVersion,
    PutBucket,
    PutBucketConfig,
    PutObject,
    newest_settings,
    record_suffix,
)
from .metrics import heal_count
from .quorum import Resolved, resolve
from .reader import read_inline
from .stripes import encode_and_write, read_batch

if TYPE_CHECKING:
    from .store import ObjectStore

log = logging.getLogger("basalt.storaged.heal")

SETTLE_NS = 10 * 60 * 10**9  # a minority record younger than this may be a write in flight


@dataclasses.dataclass
class HealReport:
    buckets: int = 0
    objects: int = 0
    uploads: int = 0
    healed: int = 0
    shards_rebuilt: int = 0
    records_written: int = 0
    removed: int = 0
    bytes_rebuilt: int = 0
    failed: int = 0
    disks_offline: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def add(self, other: HealReport) -> None:
        """Count ``other``'s work in this report too."""
        for field in ("objects", "uploads", "healed", "shards_rebuilt", "bytes_rebuilt",
                      "records_written", "removed", "failed"):
            setattr(self, field, getattr(self, field) + getattr(other, field))

    def summary(self) -> dict:
        """The counters as structured log fields."""
        return {"objects": self.objects, "healed": self.healed,
                "shards_rebuilt": self.shards_rebuilt, "bytes_rebuilt": self.bytes_rebuilt,
                "records_written": self.records_written, "removed": self.removed,
                "failed": self.failed, "elapsed": f"{self.elapsed:.1f}s"}

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("started")
        d["elapsed"] = round(self.elapsed, 3)
        return d


Progress = Callable[[HealReport], None]


def _frames_ok(disk: Disk, info: ObjectInfo, data_id: str, part: int, size: int) -> bool:
    geo = info.geometry
    buf = bytearray(geo.frame_size)
    view = memoryview(buf)
    offset = 0
    for b in range(geo.block_count(size)):
        n = HASH_LEN + geo.shard_len(geo.block_len(size, b))
        if disk.read_shard(data_id, part, offset, [view[:n]]) != n:
            return False
        if checksum(view[HASH_LEN:n]) != view[:HASH_LEN]:
            return False
        offset += n
    return True


def _shard_ok(disk: Disk, info: ObjectInfo, deep: bool) -> bool:
    """Whether ``disk`` holds a good shard of every part of ``info``."""
    if info.inline:
        blob = disk.version_inline(info.bucket, info.key, info.mtime_ns, info.version_id)
        vid = info.version_id.encode()
        if blob is None or not blob.startswith(vid):
            return False
        body = blob[len(vid):]
        return checksum(body[HASH_LEN:]) == body[:HASH_LEN]
    geo = info.geometry
    for part in info.parts:
        data_id = info.part_data_id(part)
        if disk.shard_size(data_id, part.number) != geo.shard_file_size(part.stored):
            return False
        if deep and not _frames_ok(disk, info, data_id, part.number, part.stored):
            return False
    return True


async def _rebuild_files(store: ObjectStore, info: ObjectInfo, targets: list[int]) -> int:
    """Rewrite the shard files of ``info`` on ``targets`` from the other disks;
    returns the shard bytes written (checksums included), not the object's size."""
    geo = info.geometry
    exclude = frozenset(targets) | store.offline_positions()
    rebuilt = 0
    for part in info.parts:
        data_id = info.part_data_id(part)
        writers: dict[int, ShardWriter] = {}
        try:
            for pos in targets:
                writers[pos] = await store.run(store.disks[pos].create_shard, data_id,
                                               part.number)
            blocks = geo.block_count(part.stored)
            step = store.buffers.batch_blocks
            lease = await store.buffers.lease(1)
            try:
                batch = lease.acquire()
                for first in range(0, blocks, step):
                    nb = min(step, blocks - first)
                    await read_batch(store.run, store.disks, store.codec, geo, info.dist,
                                     data_id, part.number, part.stored, first, nb, batch,
                                     store.scratch, exclude)
                    nbytes = min(nb * geo.block_size, part.stored - first * geo.block_size)
                    failed = await store.run(encode_and_write, store.codec, geo, info.dist,
                                             batch, nbytes, first, writers, store.scratch)
                    if failed:
                        raise StorageError(f"rewriting shards failed: {failed}")
            finally:
                lease.close()
            for w in writers.values():
                await store.run(w.commit)
            writers.clear()
            rebuilt += len(targets) * geo.shard_file_size(part.stored)
        finally:
            for w in writers.values():
                await store.run(w.abort)
    return rebuilt


async def heal_object(store: ObjectStore, bucket: str, key: str, *, deep: bool = False,
                      report: HealReport | None = None, settle_ns: int = SETTLE_NS) -> str:
    """Heal every version of one object; returns "ok", "healed", "removed",
    "absent" or "unknown" (the strongest outcome of its versions)."""
    report = report or HealReport()
    heal_count("objects")
    positions = store.online_positions()
    held = {pos: {record_suffix(r): r for r in versions or ()}
            for pos, versions in (await store.set.vote("key_versions", bucket, key)).items()}
    suffixes = sorted(set().union(*held.values())) if held else []
    if not suffixes:
        return "absent"
    now = time.time_ns()
    outcomes = set()
    null_seen = False  # suffixes go newest first: only the newest null version stays
    for suffix in suffixes:
        records = {p: held.get(p, {}).get(suffix) for p in positions}
        answered = {p: held[p].get(suffix) for p in held}
        try:
            res = resolve(bucket, key, answered, store.k, store.write_quorum,
                          offline=store.n - len(held))
        except ReadQuorumError:
            outcomes.add("unknown")
            continue
        if res is not None and not res.info.versioned:
            if null_seen:  # displaced by a newer null version: a rolled-back race's leftover
                outcomes.add(await _remove_stale(store, bucket, key, records, store.n, now, 0,
                                                 report))
                continue
            null_seen = True
        if res is None:
            outcomes.add(await _remove_stale(store, bucket, key, records, len(held), now,
                                             settle_ns, report))
        else:
            outcomes.add(await _heal_version(store, res, records, deep, report))
    for outcome in ("healed", "removed", "unknown", "ok"):
        if outcome in outcomes:
            return outcome
    return "absent"


async def _remove_stale(store: ObjectStore, bucket: str, key: str,
                        records: dict[int, bytes | None], heard: int, now: int, settle_ns: int,
                        report: HealReport) -> str:
    """Remove a version that never reached quorum, once it cannot be a write in flight."""
    stale = {p: r for p, r in records.items()
             if r is not None and now - record_version(r)[0] >= settle_ns}
    if not stale or heard < store.n:  # an unheard disk may hold the rest
        return "absent"
    for pos, record in stale.items():
        replaced = (await store.disks[pos].commit(
            [DeleteVersion(bucket, key, *record_version(record))]))[0]
        store.purge_displaced(pos, bucket, key, replaced.record if replaced.applied else None)
    report.removed += 1
    return "removed"


async def bad_shards(store: ObjectStore, info: ObjectInfo, positions: Iterable[int],
                     deep: bool) -> list[int]:
    """The ``positions`` whose disk lacks a good shard of ``info``."""
    bad: list[int] = []
    for pos in positions:
        try:
            ok = await store.run(_shard_ok, store.disks[pos], info, deep)
        except OSError:
            ok = False
        if not ok:
            bad.append(pos)
    return bad


def count_rebuilt(report: HealReport, shards: int, written: int) -> None:
    """Add rebuilt shards and the bytes written for them to the report and metrics."""
    report.bytes_rebuilt += written
    report.shards_rebuilt += shards
    heal_count("shards", shards)
    heal_count("bytes", written)


async def rebuild_shard_files(store: ObjectStore, info: ObjectInfo, targets: list[int],
                              report: HealReport) -> None:
    """Rewrite the shard files of ``info`` on ``targets`` and count them."""
    count_rebuilt(report, len(targets), await _rebuild_files(store, info, targets))


async def _heal_version(store: ObjectStore, res: Resolved, records: dict[int, bytes | None],
                        deep: bool, report: HealReport) -> str:
    info = res.info
    bad = await bad_shards(store, info, records, deep)
    todo = [p for p in records if p in bad or records[p] != res.record]
    blobs: dict[int, bytes] = {}
    if todo and info.inline:
        # Every record written carries its shard: ``records`` may be older than
        # ``bad`` (another healer may have healed a disk in between).
        blobs = store.inline_blobs(info, await read_inline(store, info))
        count_rebuilt(report, len(bad), sum(len(blobs[p]) for p in bad if p in blobs))
    elif bad:
        await rebuild_shard_files(store, info, bad, report)
    for pos in todo:
        # Exactly this version, displacing nothing: other versions heal on their own.
        # A null version obeys the one-null rule, though: a write racing this heal
        # may have displaced it since it was read.
        op = PutObject(info.bucket, info.key, res.record, blobs.get(pos), replace_equal=True,
                       force=info.versioned)
        replaced = (await store.disks[pos].commit([op]))[0]
        if replaced.applied:
            report.records_written += 1
            store.purge_displaced(pos, info.bucket, info.key, replaced.record, info.version_id)
    if todo:
        report.healed += 1
        heal_count("healed")
        return "healed"
    return "ok"


async def heal_buckets(store: ObjectStore, report: HealReport) -> list[str]:
    """Make every disk agree on the bucket list; returns the buckets that exist."""
    positions = store.online_positions()
    seen: dict[str, dict[int, bytes]] = {}
    for disk, held in await store.set.ask("buckets", positions=positions):
        for name, info in held.items():
            seen.setdefault(name, {})[disk.position] = info
    alive = []
    for name, holders in sorted(seen.items()):
        report.buckets += 1
        if len(holders) >= store.k:
            info = next(iter(holders.values()))
            for pos in positions:
                if pos not in holders:
                    await store.disks[pos].commit([PutBucket(name, info)])
            await _heal_bucket_configs(store, name)
            alive.append(name)
        elif len(positions) == store.n and not any(store.disks[p].healing for p in positions):
            for pos in holders:
                await store.disks[pos].commit([DeleteBucket(name, force=True)])
    return alive


async def _heal_bucket_configs(store: ObjectStore, name: str) -> None:
    """Give every disk the newest of each of the bucket's settings."""
    held = {disk.position: configs
            for disk, configs in await store.set.ask("bucket_config", name)}
    newest = newest_settings(held.values())
    for pos, configs in held.items():
        ops = [PutBucketConfig(name, kind, stamp, value) for kind, (stamp, value) in newest.items()
               if configs.get(kind, (None,))[0] != stamp]
        if ops:
            await store.disks[pos].commit(ops)


async def heal_all(store: ObjectStore, *, deep: bool = True, progress: Progress | None = None,
                   settle_ns: int = SETTLE_NS) -> HealReport:
    """Heal every bucket and object; ``progress`` is called after each object."""
    report = HealReport(disks_offline=len(store.offline_positions()))
    healing = [d for d in store.disks if d.online and d.healing]
    for bucket in await heal_buckets(store, report):
        async for key in walk_keys(store, bucket):
            report.objects += 1
            try:
                await heal_object(store, bucket, key, deep=deep, report=report, settle_ns=settle_ns)
            except Exception as exc:  # keep going: one bad object must not stop a heal
                report.failed += 1
                heal_count("failed")
                report.errors.append(f"{bucket}/{key}: {exc}")
                log.warning("heal of %s/%s failed: %s", bucket, key, exc)
            if progress:
                progress(report)
        # Late import: upload healing builds on this module's shard checks.
        from .upload_healing import heal_uploads
        await heal_uploads(store, bucket, report, deep=deep, settle_ns=settle_ns)
    if not report.failed:
        for disk in healing:
            await store.run(disk.mark_healed)
            log.info("disk %s healed", disk.name)
    if progress:
        progress(report)
    return report


async def resolve_pending(store: ObjectStore) -> int:
    """Settle shard files of writes interrupted by a crash (before serving).

    Files stay when the current version of their object uses them, or when a
    multipart upload's part record on some disk does; otherwise they go.
    """
    settled = 0
    keys: dict[tuple[str, str], list[tuple[int, str, list[int], str]]] = {}
    for disk, pending in await store.set.ask("pending"):
        for data_id, bucket, key, parts, upload_id in pending:
            keys.setdefault((bucket, key), []).append((disk.position, data_id, parts, upload_id))
    for (bucket, key), entries in keys.items():
        try:
            await heal_object(store, bucket, key, settle_ns=0)
        except Exception as exc:
            log.warning("cannot settle %s/%s: %s", bucket, key, exc)
            continue
        for pos, data_id, parts, upload_id in entries:
            disk = store.disks[pos]
            used = any(data_id in ObjectInfo.unpack(bucket, key, r).files()
                       for r in await disk.read("key_versions", bucket, key))
            if not used and upload_id:
                used = await store.part_uses(upload_id, data_id)
            if not used:
                await store.run(disk.purge, data_id, parts)
            await disk.commit([ClearPending(data_id)])
            settled += 1
    return settled


class Healer:
    """Background healing: damaged objects, disk watch, replaced disks."""

    def __init__(self, store: ObjectStore, interval: float = 1.0) -> None:
        self.store, self.interval = store, interval
        # Only the process that owns the disks (the server's main process)
        # reformats a replaced disk and runs full heals; worker processes
        # reopen disks the owner brought back and heal what their reads found.
        self.owner = True
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()
        self._next_full = 0.0
        self._next_expiry = time.monotonic() + 60

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Watching runs apart from healing, so a long heal pass never delays
        # noticing (and replacing) a lost disk.
        self._tasks = [loop.create_task(self._watch()), loop.create_task(self._heal())]

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def _watch(self) -> None:
        while True:
            try:
                await self.store.run(self.watch_disks)
            except Exception:
                log.exception("disk watch failed")
            await asyncio.sleep(self.interval)

    async def _heal(self) -> None:
        store = self.store
        while True:
            # One report per pass (queued objects, then a full heal when a disk
            # needs one), logged as one line when it did or failed something.
            report = HealReport()
            try:
                while (item := store.heal_queue.pop()) is not None:
                    (bucket, key), deep = item
                    report.objects += 1
                    try:
                        await heal_object(store, bucket, key, deep=deep, report=report)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        report.failed += 1
                        heal_count("failed")
                        log.warning("heal failed", extra={"fields": {
                            "bucket": bucket, "key": key, "error": str(exc)}})
                if self.owner and store.leads("uploads") \
                        and time.monotonic() >= self._next_expiry:
                    self._next_expiry = time.monotonic() + min(3600.0, store.upload_expiry / 4)
                    expired = await store.expire_uploads()
                    if expired:
                        log.info("aborted %d abandoned multipart uploads", expired)
                if self.owner and store.leads("heal") \
                        and any(d.healing and d.online for d in store.disks) \
                        and time.monotonic() >= self._next_full:
                    full = await heal_all(store, deep=False)
                    if full.failed:  # retry later, not in a tight loop
                        self._next_full = time.monotonic() + 60
                    report.add(full)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background heal pass failed")
            if report.healed or report.failed or report.removed:
                log.info("heal pass", extra={"fields": report.summary()})
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()

    async def settle_disks(self, timeout: float = 15.0) -> None:
        """Watch the disks; outside the owner, wait for it to bring back lost ones
        (only those it can: not a disk left offline for its mount facts)."""
        await self.store.run(self.watch_disks)
        deadline = time.monotonic() + timeout
        while not self.owner and any(not d.online and d.reason == NOT_FORMATTED
                                     for d in self.store.disks) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            await self.store.run(self.watch_disks)

    def watch_disks(self) -> None:
        """Take lost disks offline; bring back returning and replaced ones
        (blocking: a check may be a request to another node)."""
        for disk in self.store.disks:
            if disk.online and not disk.check():
                log.error("disk %s went away or lost its format: taking it offline", disk.name)
                disk.close()
                disk.reason = "lost its format.json"
            if not disk.online:
                self._reattach(disk)

    def _offline(self, disk: Disk, reason: str) -> None:
        if disk.reason != reason:  # logged once per change, not every watch pass
            log.warning("disk offline", extra={"fields": {"path": disk.name, "reason": reason}})
            disk.reason = reason

    def _reattach(self, disk: Disk) -> None:
        """Bring back a disk that returned; the disk decides whether it can (see
        :meth:`Disk.reattach`), the heal brings it up to date."""
        try:
            reason = disk.reattach(self.owner)
        except Exception as exc:
            log.debug("disk %s still unavailable: %s", disk.name, exc)
            reason = f"unavailable: {exc}"
        if reason is not None:
            self._offline(disk, reason)
        else:
            log.info("disk %s is back online", disk.name)
