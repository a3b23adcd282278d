"""Listing: a merge of sorted LMDB range scans over every online disk.

Each disk's index is scanned in pages; the merged stream is grouped by key and
each key is resolved by quorum exactly like a read, so a version that some
disks missed or a stale record a disk kept never shows. With a delimiter, a
common prefix is emitted once and every cursor then seeks past it, so a
prefix hiding millions of keys costs one seek, not a walk.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from .disk import Disk
from .meta import ObjectInfo, parse_version
from .metadb import version_suffix
from .quorum import resolve

if TYPE_CHECKING:
    from .store import ObjectStore, VersionPage

PAGE = 256


@dataclasses.dataclass
class ListPage:
    objects: list[ObjectInfo]
    prefixes: list[str]
    truncated: bool
    next_marker: str  # last key or common prefix returned: where the next page starts


async def _refill(cursors: Sequence[Any]) -> None:
    """Read the next page of every cursor whose buffer ran out, from all their
    disks at once (an unreadable disk simply ends its stream)."""
    empty = [c for c in cursors if not c.buf and not c.done]
    if not empty:
        return
    pages = await asyncio.gather(*(c.disk.read(*c.query()) for c in empty),
                                 return_exceptions=True)
    for cursor, page in zip(empty, pages):
        cursor.buf = [] if isinstance(page, BaseException) else list(page)
        cursor.buf.reverse()
        cursor.done = len(cursor.buf) < PAGE


async def _heads(cursors: Sequence[Any]) -> list[tuple[Any, Any]]:
    """(cursor, its next entry) of the cursors that have one."""
    await _refill(cursors)
    return [(c, c.buf[-1]) for c in cursors if c.buf]


class _Cursor:
    def __init__(self, disk: Disk, bucket: str, prefix: str, after: str, skip: bool) -> None:
        self.disk, self.bucket, self.prefix = disk, bucket, prefix
        self.after, self.skip = after, skip
        self.buf: list[tuple[str, bytes]] = []
        self.done = False

    def query(self) -> tuple:
        return "scan", self.bucket, self.prefix, self.after, self.skip, PAGE

    def pop(self) -> None:
        key, _ = self.buf.pop()
        self.after, self.skip = key, False

    def skip_prefix(self, cp: str) -> None:
        while self.buf and self.buf[-1][0].startswith(cp):
            self.buf.pop()
        if self.after < cp or not self.after.startswith(cp) or not self.skip:
            self.after, self.skip = cp, True


class _Merge:
    """Quorum-resolved keys of a bucket in order, across disks."""

    def __init__(self, store: ObjectStore, bucket: str, prefix: str, after: str,
                 skip: bool) -> None:
        self.store, self.bucket = store, bucket
        self.cursors = [_Cursor(store.disks[p], bucket, prefix, after, skip)
                        for p in store.online_positions()]

    async def next(self) -> ObjectInfo | None:
        while True:
            live = await _heads(self.cursors)
            if not live:
                return None
            key = min(h[0] for _, h in live)
            records: dict[int, bytes | None] = {c.disk.position: None for c in self.cursors}
            for c, (k, record) in live:
                if k == key:
                    records[c.disk.position] = record
                    c.pop()
            try:
                res = resolve(self.bucket, key, records, self.store.k, self.store.write_quorum)
            except Exception:
                res = None
            if res is not None and not res.info.delete_marker:
                return res.info

    def skip_prefix(self, cp: str) -> None:
        for c in self.cursors:
            c.skip_prefix(cp)


async def list_objects(store: ObjectStore, bucket: str, prefix: str = "", delimiter: str = "",
                       after: str = "", max_keys: int = 1000) -> ListPage:
    """One page of keys (and common prefixes) of ``bucket`` after ``after``."""
    await store.require_bucket(bucket)
    if max_keys <= 0:
        return ListPage([], [], False, "")
    skip = bool(delimiter) and after.startswith(prefix) and after.endswith(delimiter) \
        and len(after) > len(prefix)
    merge = _Merge(store, bucket, prefix, after, skip)
    objects: list[ObjectInfo] = []
    prefixes: list[str] = []
    last = ""
    while True:
        info = await merge.next()
        if info is None:
            return ListPage(objects, prefixes, False, last)
        if len(objects) + len(prefixes) >= max_keys:
            return ListPage(objects, prefixes, True, last)
        rest = info.key[len(prefix):]
        cut = rest.find(delimiter) if delimiter else -1
        if cut >= 0:
            cp = prefix + rest[:cut + len(delimiter)]
            prefixes.append(cp)
            merge.skip_prefix(cp)
            last = cp
        else:
            objects.append(info)
            last = info.key


async def walk_keys(store: ObjectStore, bucket: str) -> AsyncIterator[str]:
    """Every key any online disk holds in ``bucket`` (for healing), in order."""
    cursors = [_Cursor(store.disks[p], bucket, "", "", False) for p in store.online_positions()]
    while True:
        live = await _heads(cursors)
        if not live:
            return
        key = min(h[0] for _, h in live)
        for c, h in live:
            if h[0] == key:
                c.pop()
        yield key


class _VersionCursor:
    """One disk's versions in S3 order, read a page at a time."""

    def __init__(self, disk: Disk, bucket: str, prefix: str, after: str,
                 after_suffix: bytes | None, skip: bool) -> None:
        self.disk, self.bucket, self.prefix = disk, bucket, prefix
        self.after, self.after_suffix, self.skip = after, after_suffix, skip
        self.buf: list[tuple[str, bytes, bytes]] = []
        self.done = False

    def query(self) -> tuple:
        return ("scan_versions", self.bucket, self.prefix, self.after, self.after_suffix,
                self.skip, PAGE)

    def pop(self) -> None:
        key, suffix, _ = self.buf.pop()
        self.after, self.after_suffix, self.skip = key, suffix, False

    def skip_prefix(self, cp: str) -> None:
        while self.buf and self.buf[-1][0].startswith(cp):
            self.buf.pop()
        self.after, self.after_suffix, self.skip = cp, None, True


async def _marker_suffix(store: ObjectStore, bucket: str, key: str,
                         version: str) -> bytes | None:
    """Where listing resumes inside ``key``: after version ``version``."""
    if not version:
        return None
    try:
        parsed = parse_version(version)
    except ValueError:
        return None
    if parsed is None:  # the null version: find its place
        res = await store.resolve_version(bucket, key, version)
        if res is None:
            return None
        return version_suffix(res.info.mtime_ns, res.info.version_id)
    mtime, head = parsed
    # Past every data id starting with the id's head.
    return version_suffix(mtime, head + "0" * 16)[:16] + b"\xff" * 8


async def list_versions(store: ObjectStore, bucket: str, prefix: str = "", delimiter: str = "",
                        key_marker: str = "", version_marker: str = "",
                        max_keys: int = 1000) -> VersionPage:
    """One page of versions (and common prefixes) after the markers, each
    version resolved by quorum like a read; the first of each key is latest."""
    from .store import VersionEntry, VersionPage
    await store.require_bucket(bucket)
    if max_keys <= 0:
        return VersionPage([], [], False, "", "")
    after_suffix = await _marker_suffix(store, bucket, key_marker, version_marker) \
        if key_marker else None
    skip = bool(delimiter) and key_marker.startswith(prefix) and key_marker.endswith(delimiter) \
        and len(key_marker) > len(prefix)
    cursors = [_VersionCursor(store.disks[p], bucket, prefix, key_marker, after_suffix, skip)
               for p in store.online_positions()]
    entries: list[VersionEntry] = []
    prefixes: list[str] = []
    # Inside the marker's key the latest version was on an earlier page.
    last_key = key_marker if after_suffix is not None else None
    last_version = ""
    truncated = False
    while True:
        live = await _heads(cursors)
        if not live:
            break
        key, suffix = min((h[0], h[1]) for _, h in live)
        records: dict[int, bytes | None] = {c.disk.position: None for c in cursors}
        for c, h in live:
            if (h[0], h[1]) == (key, suffix):
                records[c.disk.position] = h[2]
                c.pop()
        try:
            res = resolve(bucket, key, records, store.k, store.write_quorum)
        except Exception:
            res = None
        if res is None:
            continue
        if len(entries) + len(prefixes) >= max_keys:
            truncated = True
            break
        rest = key[len(prefix):]
        cut = rest.find(delimiter) if delimiter else -1
        if cut >= 0:
            cp = prefix + rest[:cut + len(delimiter)]
            prefixes.append(cp)
            for c in cursors:
                c.skip_prefix(cp)
            last_key, last_version = cp, ""
            continue
        entries.append(VersionEntry(res.info, key != last_key))
        last_key, last_version = key, res.info.version
    if not truncated:
        return VersionPage(entries, prefixes, False, "", "")
    return VersionPage(entries, prefixes, True, last_key or "", last_version)
