"""Healing of multipart uploads in progress: their records and their parts' shards.

An upload's parts are shard files like an object's, named by the part's data
id and recorded in every disk's ``parts`` table. A part written while a disk
was away (or before a disk was wiped) is missing there; left alone, the
object the upload becomes would rest on fewer shards than the set promises.
:func:`heal_uploads` brings every online disk back to holding each agreed
upload record, each agreed part record and a good shard of each part — the
same quorum rules as objects: a value counts once K disks hold it.

Write order per part: shard files first (temporary name, fsync, rename —
:class:`~storaged.disk.ShardWriter`), then the part record, so a record never
names files that are not there.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

import msgpack

from .healing import HealReport, bad_shards, rebuild_shard_files
from .layout import distribution
from .meta import ObjectInfo
from .metadb import EndUpload, PutPart, PutUpload
from .multipart import PartRecord, UploadInfo

if TYPE_CHECKING:
    from .store import ObjectStore


def _agreed(values: dict[int, bytes], k: int, newest: bool = False) -> bytes | None:
    """The value at least ``k`` disks hold (most holders, then newest part first)."""
    if not values:
        return None
    votes = Counter(values.values())
    if newest:
        value, count = max(votes.items(), key=lambda kv: (kv[1], msgpack.unpackb(kv[0])["mt"]))
    else:
        value, count = votes.most_common(1)[0]
    return value if count >= k else None


def _part_info(store: ObjectStore, upload: UploadInfo, part: PartRecord) -> ObjectInfo:
    """A one-part object view of a part: what the shard checks and rebuilds read."""
    return ObjectInfo(bucket=upload.bucket, key=upload.key, version_id=part.data_id,
                      size=part.size, etag=part.etag, mtime_ns=part.mtime_ns,
                      k=store.k, m=store.m, block_size=store.geometry.block_size,
                      dist=tuple(distribution(upload.bucket, upload.key, store.n)),
                      parts=(part.info(),))


async def heal_uploads(store: ObjectStore, bucket: str, report: HealReport, *,
                       deep: bool = False, settle_ns: int) -> None:
    """Heal every upload of ``bucket`` that any online disk knows."""
    positions = store.online_positions()
    head = bucket.encode() + b"/"
    seen: dict[bytes, dict[int, bytes]] = {}
    for pos in positions:
        for lkey, value in await store.disks[pos].read("range", b"uploads", head, head):
            seen.setdefault(lkey, {})[pos] = value
    everyone = len(positions) == store.n and not any(store.disks[p].healing for p in positions)
    for lkey, holders in sorted(seen.items()):
        upload_id = lkey.rsplit(b"\x00", 1)[1].decode()
        record = _agreed(holders, store.k)
        try:
            if record is None:
                await _forget_minority(store, bucket, upload_id, holders, everyone, settle_ns,
                                       report)
                continue
            upload = UploadInfo.unpack(bucket, upload_id, record)
            report.uploads += 1
            await _heal_upload(store, upload, record, holders, positions, deep, report)
        except Exception as exc:  # one bad upload must not stop a heal
            report.failed += 1
            report.errors.append(f"{bucket} upload {upload_id}: {exc}")


async def _forget_minority(store: ObjectStore, bucket: str, upload_id: str,
                           holders: dict[int, bytes], everyone: bool, settle_ns: int,
                           report: HealReport) -> None:
    """An upload record fewer than K disks hold: the remains of an upload that
    ended while those disks were away, or a creation still in flight. Only the
    first is removed — when every disk answered and the record has settled."""
    started_ns = int(upload_id[:16], 16) if len(upload_id) == 32 else 0
    if not everyone or time.time_ns() - started_ns < settle_ns:
        return
    for pos, value in holders.items():
        key = UploadInfo.unpack(bucket, upload_id, value).key
        unused = (await store.disks[pos].commit([EndUpload(bucket, key, upload_id)]))[0]
        for data_id, number in unused:
            await store.purge(pos, data_id, [number])
    report.removed += 1


async def _heal_upload(store: ObjectStore, upload: UploadInfo, record: bytes,
                       holders: dict[int, bytes], positions: list[int], deep: bool,
                       report: HealReport) -> None:
    bucket, key, upload_id = upload.bucket, upload.key, upload.upload_id
    changed = False
    for pos in positions:
        if holders.get(pos) != record:
            await store.disks[pos].commit([PutUpload(bucket, key, upload_id, record)])
            report.records_written += 1
            changed = True
    prefix = upload_id.encode()
    parts: dict[int, dict[int, bytes]] = {}
    for pos in positions:
        for pkey, value in await store.disks[pos].read("range", b"parts", prefix, prefix):
            parts.setdefault(int.from_bytes(pkey[len(prefix):], "big"), {})[pos] = value
    for number, values in sorted(parts.items()):
        raw = _agreed(values, store.k, newest=True)
        if raw is None:
            continue  # a part write that never reached quorum: the client was told so
        part = PartRecord.unpack(number, raw)
        info = _part_info(store, upload, part)
        bad = await bad_shards(store, info, positions, deep)
        if bad:
            await rebuild_shard_files(store, info, bad, report)
            changed = True
        for pos in positions:
            if pos not in bad and values.get(pos) == raw:
                continue
            op = PutPart(bucket, key, upload_id, number, part.data_id, raw)
            replaced = (await store.disks[pos].commit([op]))[0]
            report.records_written += 1
            changed = True
            if replaced.applied and replaced.record is not None:
                old = PartRecord.unpack(number, replaced.record)
                if old.data_id != part.data_id:
                    store.background(store.purge(pos, old.data_id, [number]))
    if changed:
        report.healed += 1

