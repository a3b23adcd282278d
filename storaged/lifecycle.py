"""The lifecycle scanner: applies buckets' lifecycle rules in the background.

It runs in the process that owns the disks. Each pass walks every bucket that
has enabled rules in pages of ``list_versions`` and ``list_uploads`` (never a
whole bucket in memory, and yielding to the event loop between pages), decides
per key with storaged.lifecycle_rules.KeyWalk, and acts only through the public
store calls a client would use: ``delete_object`` (so object lock is enforced
exactly as for clients — a locked version is skipped and counted, never
bypassed) and ``abort_upload``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from .errors import (
    DeleteMarker,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NoSuchVersion,
    ObjectLocked,
    StorageError,
)
from .lifecycle_rules import DAY_NS, Action, KeyWalk, LifecycleConfig, abort_rule
from .metrics import lifecycle_count

log = logging.getLogger("storaged.lifecycle")

KIND = "lifecycle"
_FIELDS = {"expire_current": "expired_current", "expire_noncurrent": "expired_noncurrent",
           "remove_delete_marker": "delete_markers_removed", "abort_upload": "uploads_aborted",
           "skipped_locked": "skipped_locked"}
_GONE = (NoSuchKey, NoSuchVersion, DeleteMarker, NoSuchUpload)


@dataclasses.dataclass
class LifecycleReport:
    buckets: int = 0
    expired_current: int = 0
    expired_noncurrent: int = 0
    delete_markers_removed: int = 0
    uploads_aborted: int = 0
    skipped_locked: int = 0
    failed: int = 0

    def add(self, what: str) -> None:
        """Count one action (an Action kind, abort_upload or skipped_locked), here and
        in Prometheus."""
        field = _FIELDS[what]
        setattr(self, field, getattr(self, field) + 1)
        lifecycle_count(what)

    @property
    def acted(self) -> int:
        return (self.expired_current + self.expired_noncurrent + self.delete_markers_removed
                + self.uploads_aborted + self.skipped_locked + self.failed)

    def summary(self) -> dict[str, int]:
        return dataclasses.asdict(self)


async def run_lifecycle(store: Any, day_ns: int = DAY_NS, now_ns: int | None = None,
                        batch: int = 1000) -> LifecycleReport:
    """One pass over every bucket with a lifecycle configuration."""
    now = now_ns if now_ns is not None else time.time_ns()
    report = LifecycleReport()
    for bucket in await store.list_buckets():
        try:
            raw = await store.bucket_config(bucket.name, KIND)
            if not raw:
                continue
            config = LifecycleConfig.unpack(raw)
            if not config.enabled:
                continue
            report.buckets += 1
            await _scan_versions(store, bucket.name, config, now, day_ns, batch, report)
            await _scan_uploads(store, bucket.name, config, now, day_ns, batch, report)
        except NoSuchBucket:
            continue     # deleted while we walked it
    return report


async def _scan_versions(store: Any, bucket: str, config: LifecycleConfig, now: int, day_ns: int,
                         batch: int, report: LifecycleReport) -> None:
    if not any(r.expiration_days or r.expiration_date_ns or r.noncurrent_days
               or r.expired_object_delete_marker for r in config.enabled):
        return
    key_marker = version_marker = ""
    walk: KeyWalk | None = None
    key: str | None = None
    deferred: tuple[Action, KeyWalk] | None = None
    while True:
        page = await store.list_versions(bucket, key_marker=key_marker, version_marker=version_marker,
                                   max_keys=batch)
        if deferred is not None:
            await _apply(store, bucket, *deferred, report)
            deferred = None
        for i, entry in enumerate(page.entries):
            info = entry.info
            if info.key != key:     # a key's versions may continue on the next page
                if walk is not None:
                    await _finish(store, bucket, walk, report)
                key, walk = info.key, KeyWalk(config, now, day_ns)
            assert walk is not None
            action = walk.step(info)
            if action is None:
                continue
            if page.truncated and i == len(page.entries) - 1:
                # The next page resumes after this version: remove it only once that
                # page is read, so the listing never has to find a version that is gone.
                deferred = (action, walk)
            else:
                await _apply(store, bucket, action, walk, report)
        if not page.truncated:
            break
        key_marker, version_marker = page.next_key_marker, page.next_version_marker
        await asyncio.sleep(0)
    if walk is not None:
        await _finish(store, bucket, walk, report)


async def _finish(store: Any, bucket: str, walk: KeyWalk, report: LifecycleReport) -> None:
    action = walk.finish()
    if action is not None:
        await _apply(store, bucket, action, walk, report)


async def _apply(store: Any, bucket: str, action: Action, walk: KeyWalk,
                 report: LifecycleReport) -> None:
    info = action.info
    try:
        if action.kind == "expire_current":
            # Only while it is still the version judged: a new PUT restarts the clock.
            await store.delete_object(bucket, info.key, expect=(info.mtime_ns, info.version_id))
        else:
            await store.delete_object(bucket, info.key, info.version)
    except ObjectLocked:
        walk.kept()
        report.add("skipped_locked")
        return
    except _GONE:
        return          # removed or replaced meanwhile
    except StorageError as exc:
        walk.kept()
        report.failed += 1
        log.warning("lifecycle action failed", extra={"fields": {
            "bucket": bucket, "key": info.key, "version": info.version, "action": action.kind,
            "error": repr(exc)}})
        return
    report.add(action.kind)


async def _scan_uploads(store: Any, bucket: str, config: LifecycleConfig, now: int, day_ns: int,
                        batch: int, report: LifecycleReport) -> None:
    if not any(r.abort_days for r in config.enabled):
        return
    key_marker = upload_marker = ""
    while True:
        page = await store.list_uploads(bucket, key_marker=key_marker, upload_id_marker=upload_marker,
                                  max_uploads=batch)
        for upload in page.uploads:
            if abort_rule(config, upload.key, upload.initiated_ns, now, day_ns) is None:
                continue
            try:
                await store.abort_upload(bucket, upload.key, upload.upload_id)
            except NoSuchUpload:
                continue    # completed or aborted meanwhile
            except StorageError as exc:
                report.failed += 1
                log.warning("lifecycle abort failed", extra={"fields": {
                    "bucket": bucket, "key": upload.key, "upload": upload.upload_id,
                    "error": repr(exc)}})
                continue
            report.add("abort_upload")
        if not page.truncated:
            break
        key_marker, upload_marker = page.next_key, page.next_upload_id
        await asyncio.sleep(0)


class LifecycleScanner:
    """Runs :func:`run_lifecycle` now and then, in the disk-owning process.

    Every quarter day (at most hourly): rules count whole days rounded to
    midnight, so a pass an hour late removes nothing a client could have
    expected gone earlier than S3 itself would ("within a day or so").
    """

    def __init__(self, store: Any, day_ns: int | None = None) -> None:
        self.store = store
        self.day_ns = day_ns or getattr(store, "lifecycle_day_ns", DAY_NS)
        self.interval = min(self.day_ns / 1e9 / 4, 3600.0)
        self.last: LifecycleReport | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def run_once(self) -> LifecycleReport:
        self.last = report = await run_lifecycle(self.store, self.day_ns)
        if report.acted:
            log.info("lifecycle pass", extra={"fields": report.summary()})
        return report

    async def _run(self) -> None:
        leads = getattr(self.store, "leads", lambda job: True)
        while True:
            try:
                if leads("lifecycle"):  # one node of a cluster runs it
                    await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lifecycle pass failed")
            await asyncio.sleep(self.interval)
