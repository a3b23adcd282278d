"""A disk: shard files plus an LMDB metadata index, behind one small interface.

:class:`Disk` is everything the erasure set needs from a disk; a disk on
another host would be one more implementation of it. :class:`LocalDisk` keeps a
directory laid out as::

    format.json          identity (see format.py)
    meta/                LMDB environment (see metadb.py)
    data/<xx>/<vid>.<n>  shard file of part n of object version vid
    tmp/                 shard files being written

Shard-file methods block and are meant to run in worker threads. Metadata reads
go through :meth:`Disk.read` (or :meth:`ErasureSet.ask` for a whole set): on a
remote disk they are network calls, and a local disk's scans run in a thread;
only a local disk's point lookups (:data:`POINT_READS`), cheaper than a thread
hop, stay on the event loop.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import ctypes
import logging
import os
from collections.abc import Awaitable, Sequence
from typing import Any

import msgpack

from .block_file import DIRECT_ALIGN, BlockFile, LocalBlockFile
from .buffers import Scratch
from .format import (
    NOT_FORMATTED,
    DiskFormat,
    Slot,
    clear_healing,
    clear_unformatted,
    fsync_dir,
    mark_healing,
    needs_healing,
    read_format,
    write_format,
)
from .meta import new_id
from .metadb import MetaDB, Op
from .mounts import MountFacts, offline_reason

log = logging.getLogger("basalt.storaged.disk")

META_THREADS = 4  # LMDB reads are short: a few threads keep every disk's answers coming

Iov = Sequence[bytes | bytearray | memoryview]

# A shard write goes past the page cache only when its aligned middle is at
# least this long: below it, a staging copy and a device round trip cost more
# than the page-cache copy they save.
DIRECT_MIN = 64 * 1024


def iov_range(iov: Iov, start: int, stop: int) -> list[memoryview]:
    """Views of bytes ``start:stop`` of the concatenation of ``iov``."""
    out: list[memoryview] = []
    pos = 0
    for buf in iov:
        view = memoryview(buf).cast("B")
        end = pos + len(view)
        if end > start and pos < stop:
            out.append(view[max(start, pos) - pos:min(stop, end) - pos])
        if end >= stop:
            break
        pos = end
    return out


class ShardWriter(abc.ABC):
    """A shard file being written: frames at explicit offsets, then commit."""

    remote = False  # a write is a round trip to another node (worth a thread of its own)

    @abc.abstractmethod
    def write(self, iov: Iov, offset: int) -> None: ...

    @abc.abstractmethod
    def commit(self) -> None:
        """Make the file durable and visible under its final name."""

    @abc.abstractmethod
    def abort(self) -> None: ...


# The metadata queries a disk answers (see Disk.read): plain names and
# arguments, so that a query can travel to a disk on another machine.
READS = frozenset({
    "get_object", "get_inline", "version_inline", "get_version", "key_versions",
    "scan_versions", "bucket_config", "scan", "get", "range", "buckets", "get_bucket",
    "pending", "entries", "stored", "bucket_state", "object_view"})
# The queries that are one B-tree lookup in a memory-mapped LMDB: on a local
# disk they answer in microseconds, less than a thread hop costs (a hop took
# 4 KiB GETs from 1,299 to 903 ops/s in benchmarks/s3_bench.py), so they run on
# the caller's thread. Scans, and every query to a remote disk, go off the loop.
POINT_READS = frozenset({
    "get_object", "get_inline", "version_inline", "get_version", "get_bucket",
    "bucket_config", "bucket_state", "object_view", "get"})


class Disk(abc.ABC):
    """The per-disk interface of the storage engine."""

    local = False  # reads are cheap enough to batch into one thread hop per set
    position: int
    name: str  # for logs and health: a path, or node:path
    format: DiskFormat
    online: bool
    healing: bool
    reason: str | None = None  # why the disk is offline (health, logs)

    # shard files (blocking)
    @abc.abstractmethod
    def create_shard(self, vid: str, part: int, stage: Scratch | None = None) -> ShardWriter:
        """A writer of a new shard file. With ``stage`` (a pool of page-aligned
        buffers), a disk that can writes the file past the page cache."""

    @abc.abstractmethod
    def read_shard(self, vid: str, part: int, offset: int, iov: Iov) -> int:
        """Read into ``iov`` from ``offset``; returns bytes read (short at EOF)."""

    def read_shard_cached(self, vid: str, part: int, offset: int, iov: Iov) -> int | None:
        """:meth:`read_shard` from memory only, never waiting for the device (so the
        event loop may call it); None when it cannot. Short when only part of the
        range is in memory (or at EOF)."""
        return None

    @abc.abstractmethod
    def shard_size(self, vid: str, part: int) -> int | None:
        """Size of a shard file, None when it does not exist."""

    @abc.abstractmethod
    def purge(self, vid: str, parts: Sequence[int]) -> None:
        """Delete the shard files of a version (missing files are fine)."""

    # metadata
    @abc.abstractmethod
    async def read(self, query: str, *args: Any) -> Any:
        """Answer one metadata query (a name in :data:`READS`, e.g. ``"scan"``,
        with that method's arguments) without blocking the event loop."""

    def read_now(self, query: str, *args: Any) -> Any:
        """:meth:`read`, blocking the calling thread (a worker thread)."""
        if query not in READS:
            raise ValueError(f"unknown metadata query {query!r}")
        return getattr(self, query)(*args)

    @abc.abstractmethod
    def commit(self, ops: Sequence[Op]) -> Awaitable[list[Any]]:
        """Apply metadata operations atomically; durable once awaited."""

    @abc.abstractmethod
    def commit_now(self, ops: Sequence[Op]) -> list[Any]: ...

    @abc.abstractmethod
    def get_object(self, bucket: str, key: str) -> bytes | None: ...

    @abc.abstractmethod
    def get_inline(self, bucket: str, key: str) -> bytes | None:
        """The inline shard of the latest version."""

    @abc.abstractmethod
    def version_inline(self, bucket: str, key: str, mtime_ns: int, vid: str) -> bytes | None:
        """The inline shard of any version."""

    @abc.abstractmethod
    def get_version(self, bucket: str, key: str, version: tuple[int, str] | None) -> bytes | None:
        """A version's record by (mtime, data id head); None: the null version."""

    @abc.abstractmethod
    def key_versions(self, bucket: str, key: str) -> list[bytes]:
        """Every version record of a key, newest first."""

    @abc.abstractmethod
    def scan_versions(self, bucket: str, prefix: str = "", after: str = "",
                      after_suffix: bytes | None = None, skip_prefix: bool = False,
                      limit: int = 1000) -> list[tuple[str, bytes, bytes]]: ...

    @abc.abstractmethod
    def bucket_config(self, bucket: str) -> dict[str, tuple[int, bytes | None]]:
        """A bucket's settings: kind → (stamp, value)."""

    @abc.abstractmethod
    def scan(self, bucket: str, prefix: str = "", after: str = "", skip_prefix: bool = False,
             limit: int = 1000) -> list[tuple[str, bytes]]: ...

    @abc.abstractmethod
    def get(self, table: bytes, key: bytes) -> bytes | None:
        """One value of a metadata table (uploads, parts, ...)."""

    @abc.abstractmethod
    def range(self, table: bytes, start: bytes, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Items of a metadata table from ``start`` while keys begin with ``prefix``."""

    @abc.abstractmethod
    def buckets(self) -> dict[str, bytes]: ...

    @abc.abstractmethod
    def get_bucket(self, name: str) -> bytes | None: ...

    def bucket_state(self, name: str) -> tuple[bytes | None, dict[str, tuple[int, bytes | None]]]:
        """A bucket's record and settings in one query (a request needs both)."""
        return self.get_bucket(name), self.bucket_config(name)

    def object_view(self, bucket: str, key: str, with_bucket: bool, with_inline: bool
                    ) -> tuple[Any, bytes | None, bytes | None]:
        """What reading a key's latest version asks of a disk, in one query (one
        round trip to a remote disk instead of three): the bucket's state
        (:meth:`bucket_state`, when ``with_bucket``), the key's record and, when
        ``with_inline``, the inline shard stored beside it."""
        return (self.bucket_state(bucket) if with_bucket else None,
                self.get_object(bucket, key),
                self.get_inline(bucket, key) if with_inline else None)

    @abc.abstractmethod
    def pending(self) -> list[tuple[str, str, str, list[int], str]]:
        """(data id, bucket, key, part numbers, upload id) of possibly unreferenced
        shard files."""

    @abc.abstractmethod
    def entries(self, table: bytes) -> int:
        """How many items a metadata table holds."""

    @abc.abstractmethod
    def stored(self) -> tuple[int, int]:
        """(objects, bytes) of the latest versions this disk indexes."""

    @abc.abstractmethod
    def space(self) -> tuple[int, int, int, str]:
        """(size, used, free, filesystem id) of the filesystem holding the disk
        (blocking); disks sharing a filesystem share its id."""

    @abc.abstractmethod
    def status(self) -> tuple[str, str | None]:
        """("online" | "healing" | "offline", reason) as the disk itself shows it
        now (blocking): the owner's healing marker, a format that went away."""

    # block files: a disk's own files for another service (block volumes)
    @abc.abstractmethod
    def open_block_file(self, name: str, create: bool = True) -> BlockFile | None:
        """A file of this disk for another service (block volumes), opened for
        reading and writing by offset: created empty when missing if ``create``,
        else None. The caller closes it; reopen after ``generation`` changes
        (the disk was replaced)."""

    @abc.abstractmethod
    def has_file(self, name: str) -> bool:
        """Whether a block file (or marker) of that name exists."""

    @abc.abstractmethod
    def remove_file(self, name: str) -> None:
        """Delete a block file (a missing one is fine)."""

    @abc.abstractmethod
    def check(self) -> bool:
        """True while the disk is present and still the one that was opened."""

    @abc.abstractmethod
    def reattach(self, owner: bool) -> str | None:
        """Bring an offline disk back online if it can be: reopen it, or (``owner``
        only) reformat one that was wiped or replaced and mark it healing.
        Returns why it stays offline, None when it is back."""

    @abc.abstractmethod
    def mark_healed(self) -> None:
        """A full heal brought the disk up to date: it is no longer healing."""

    @abc.abstractmethod
    def close(self) -> None: ...


class LocalDisk(Disk):
    """A disk that is a local directory."""

    local = True

    def __init__(self, slot: Slot, *, sync: bool = True, map_size: int = 1 << 40) -> None:
        self.root = slot.root
        self.format = slot.format
        self.position = slot.format.position
        self.healing = slot.fresh
        self.sync = sync
        self.online = False
        self.reason: str | None = slot.offline  # why it is offline, for health and logs
        self.create = slot.create  # its root may be recreated when missing
        self._map_size = map_size
        self._meta: MetaDB | None = None
        self._ident: tuple[int, int] | None = None
        self.generation = 0  # bumped each time the disk is (re)opened

    def __repr__(self) -> str:
        return f"LocalDisk({self.root!r}, position={self.position})"

    def open(self) -> None:
        for sub in ("meta", "tmp", "data"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        self._meta = MetaDB(os.path.join(self.root, "meta"), sync=self.sync, map_size=self._map_size)
        st = os.stat(os.path.join(self.root, "format.json"))
        self._ident = (st.st_dev, st.st_ino)
        self.generation += 1
        self.online = True
        self.reason = None

    def close(self) -> None:
        self.online = False
        if self._meta is not None:
            self._meta.close()
            self._meta = None

    def clean_tmp(self) -> int:
        """Remove leftovers of writes interrupted by a crash (start-up only)."""
        tmp = os.path.join(self.root, "tmp")
        removed = 0
        for name in os.listdir(tmp):
            try:
                os.unlink(os.path.join(tmp, name))
                removed += 1
            except OSError as exc:
                log.warning("cannot remove %s: %s", name, exc)
        return removed

    @property
    def name(self) -> str:
        return self.root

    def reattach(self, owner: bool) -> str | None:
        # A failed mount (see mounts.py) is never formatted or written.
        root = self.root
        fmt = read_format(root)
        reason = offline_reason(root, self.format.mounts.get(root), formatted=fmt is not None,
                                create=self.create)
        if reason is None and fmt is None and not owner:
            reason = NOT_FORMATTED
        if reason is None and fmt is not None and fmt.disk_id != self.format.disk_id:
            reason = f"holds another disk ({fmt.disk_id})"
        if reason is not None:
            return reason
        if fmt is None:
            clear_unformatted(root)  # creates the root: offline_reason allowed it
            mark_healing(root)
            mounts = dict(self.format.mounts)
            mounts[root] = MountFacts.of(root)
            self.format = self.format.with_mounts(mounts)
            write_format(root, self.format)
            self.healing = True
            log.warning("disk %s was wiped or replaced: reformatted, healing", root)
        elif owner and self.reason is not None:
            # Back after being away while we served: it missed the writes made
            # meanwhile, so it is healed completely, like a new disk.
            mark_healing(root)
            self.healing = True
        self.open()
        self.healing = self.healing or needs_healing(root)
        return None

    def mark_healed(self) -> None:
        clear_healing(self.root)
        self.healing = False

    def check(self) -> bool:
        try:
            st = os.stat(os.path.join(self.root, "format.json"))
            fmt = read_format(self.root)
        except Exception:
            return False
        if self.healing and not needs_healing(self.root):
            # Healed by the owner process: this one (an S3 worker) learns it here,
            # else its votes would keep treating the disk as still being healed.
            self.healing = False
        return fmt is not None and fmt.disk_id == self.format.disk_id and (
            st.st_dev, st.st_ino) == self._ident

    # block files -----------------------------------------------------------------

    def open_block_file(self, name: str, create: bool = True) -> BlockFile | None:
        folder = os.path.join(self.root, "files")
        os.makedirs(folder, exist_ok=True)
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            return LocalBlockFile(os.open(os.path.join(folder, name), flags, 0o644))
        except FileNotFoundError:
            return None

    def has_file(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.root, "files", name))

    def remove_file(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.root, "files", name))
        except FileNotFoundError:
            pass

    # shard files -----------------------------------------------------------------

    def shard_path(self, vid: str, part: int) -> str:
        return os.path.join(self.root, "data", vid[:2], f"{vid}.{part}")

    def create_shard(self, vid: str, part: int, stage: Scratch | None = None) -> ShardWriter:
        return _LocalShardWriter(self, vid, part, stage)

    def read_shard(self, vid: str, part: int, offset: int, iov: Iov) -> int:
        fd = os.open(self.shard_path(vid, part), os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.preadv(fd, iov, offset)
        finally:
            os.close(fd)

    def read_shard_cached(self, vid: str, part: int, offset: int, iov: Iov) -> int | None:
        if type(self).read_shard is not LocalDisk.read_shard:
            return None  # a subclass reads its own way (tests inject faults there)
        try:
            fd = os.open(self.shard_path(vid, part), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None  # the blocking read reports it
        try:
            # RWF_NOWAIT: the page cache's bytes only (EAGAIN when none are there)
            return os.preadv(fd, iov, offset, os.RWF_NOWAIT)
        except OSError:  # EAGAIN, or a file system without RWF_NOWAIT
            return None
        finally:
            os.close(fd)

    def shard_size(self, vid: str, part: int) -> int | None:
        try:
            return os.stat(self.shard_path(vid, part)).st_size
        except FileNotFoundError:
            return None

    def purge(self, vid: str, parts: Sequence[int]) -> None:
        for part in parts:
            try:
                os.unlink(self.shard_path(vid, part))
            except FileNotFoundError:
                pass

    # metadata --------------------------------------------------------------------

    @property
    def meta(self) -> MetaDB:
        if self._meta is None:
            raise OSError(f"disk {self.root} is offline")
        return self._meta

    async def read(self, query: str, *args: Any) -> Any:
        if query in POINT_READS:
            return self.read_now(query, *args)
        return await asyncio.get_running_loop().run_in_executor(
            meta_readers(), self.read_now, query, *args)

    def commit(self, ops: Sequence[Op]) -> Awaitable[list[Any]]:
        return self.meta.commit(ops)

    def commit_now(self, ops: Sequence[Op]) -> list[Any]:
        return self.meta.commit_now(ops)

    def get_object(self, bucket: str, key: str) -> bytes | None:
        return self.meta.get_object(bucket, key)

    def get_inline(self, bucket: str, key: str) -> bytes | None:
        return self.meta.get_inline(bucket, key)

    def version_inline(self, bucket: str, key: str, mtime_ns: int, vid: str) -> bytes | None:
        return self.meta.version_inline(bucket, key, mtime_ns, vid)

    def get_version(self, bucket: str, key: str, version: tuple[int, str] | None) -> bytes | None:
        return self.meta.get_version(bucket, key, version)

    def key_versions(self, bucket: str, key: str) -> list[bytes]:
        return self.meta.key_versions(bucket, key)

    def scan_versions(self, bucket: str, prefix: str = "", after: str = "",
                      after_suffix: bytes | None = None, skip_prefix: bool = False,
                      limit: int = 1000) -> list[tuple[str, bytes, bytes]]:
        return self.meta.scan_versions(bucket, prefix, after, after_suffix, skip_prefix, limit)

    def bucket_config(self, bucket: str) -> dict[str, tuple[int, bytes | None]]:
        return self.meta.bucket_config(bucket)

    def scan(self, bucket: str, prefix: str = "", after: str = "", skip_prefix: bool = False,
             limit: int = 1000) -> list[tuple[str, bytes]]:
        return self.meta.scan(bucket, prefix, after, skip_prefix, limit)

    def buckets(self) -> dict[str, bytes]:
        return {k.decode(): v for k, v in self.meta.items(b"buckets")}

    def get(self, table: bytes, key: bytes) -> bytes | None:
        return self.meta.get(table, key)

    def range(self, table: bytes, start: bytes, prefix: bytes) -> list[tuple[bytes, bytes]]:
        out = []
        with self.meta.read() as txn:
            cur = txn.cursor(db=self.meta.dbs[table])
            if cur.set_range(start):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    out.append((k, v))
        return out

    def get_bucket(self, name: str) -> bytes | None:
        return self.meta.get(b"buckets", name.encode())

    def bucket_state(self, name: str) -> tuple[bytes | None, dict[str, tuple[int, bytes | None]]]:
        return self.meta.bucket_state(name)

    def object_view(self, bucket: str, key: str, with_bucket: bool, with_inline: bool
                    ) -> tuple[Any, bytes | None, bytes | None]:
        return self.meta.object_view(bucket, key, with_bucket, with_inline)

    def pending(self) -> list[tuple[str, str, str, list[int], str]]:
        return [(vid.decode(), *msgpack.unpackb(v)) for vid, v in self.meta.items(b"pending")]

    def entries(self, table: bytes) -> int:
        return self.meta.entries(table)

    def stored(self) -> tuple[int, int]:
        return self.meta.stored()

    def space(self) -> tuple[int, int, int, str]:
        st = os.statvfs(self.root)
        return (st.f_blocks * st.f_frsize, (st.f_blocks - st.f_bfree) * st.f_frsize,
                st.f_bavail * st.f_frsize, f"{os.uname().nodename}:{os.stat(self.root).st_dev}")

    def status(self) -> tuple[str, str | None]:
        if not self.online:
            return "offline", self.reason or "unavailable"
        # Each process notices a lost disk on its next watch (up to a second
        # later); looking at the format now keeps every process's answer alike.
        if not os.path.exists(os.path.join(self.root, "format.json")):
            return "offline", "format.json is gone"
        return ("healing" if needs_healing(self.root) else "online"), None


_readers: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None


def meta_readers() -> concurrent.futures.ThreadPoolExecutor:
    """The threads metadata reads run on (one pool per process: a pool made
    before a fork has no threads in the child)."""
    global _readers
    if _readers is None or _readers[0] != os.getpid():
        _readers = (os.getpid(), concurrent.futures.ThreadPoolExecutor(
            META_THREADS, thread_name_prefix="basalt-meta"))
    return _readers[1]


_SYNC_FILE_RANGE_WRITE = 2
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _sync_file_range = _libc.sync_file_range
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
except (OSError, AttributeError):  # not Linux: the fsync at commit does it all
    _sync_file_range = None


def _start_writeback(fd: int, offset: int, length: int) -> None:
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class _LocalShardWriter(ShardWriter):
    """Write to ``tmp/``; commit = fsync file, rename into ``data/``, fsync directory.

    With a ``stage`` pool, each write's 4 KiB-aligned middle goes out with
    O_DIRECT from a staging buffer (frames start at unaligned offsets, so the
    bytes must move to an aligned buffer anyway; a copy into a hot buffer costs
    a tenth of one into fresh page-cache pages), its edges through the cache.
    Writes to disjoint ranges may run in any order: an edge page is never part
    of any write's direct middle. The fsync at commit covers both.
    """

    def __init__(self, disk: LocalDisk, vid: str, part: int,
                 stage: Scratch | None = None) -> None:
        self.disk = disk
        self.final = disk.shard_path(vid, part)
        self.tmp = os.path.join(disk.root, "tmp", f"{vid}.{part}.{new_id(32)}")
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._direct: LocalBlockFile | None = None
        self._stage = stage
        if stage is not None and stage.size >= DIRECT_MIN:
            try:
                direct = LocalBlockFile(os.dup(self.fd))
            except OSError:  # out of descriptors: nothing is left behind
                self.abort()
                raise
            if direct.direct_capable():
                self._direct = direct
            else:  # tmpfs: no staging copies for nothing
                direct.close()

    def write(self, iov: Iov, offset: int) -> None:
        total = sum(len(b) for b in iov)
        start = min(total, -offset % DIRECT_ALIGN)
        stop = start + (total - start) // DIRECT_ALIGN * DIRECT_ALIGN
        if self._direct is None or self._stage is None or stop - start < DIRECT_MIN:
            self._write_cached(iov, offset, total)
            return
        if start:
            self._write_cached(iov_range(iov, 0, start), offset, start)
        with self._stage.use() as stage:
            step = len(stage) // DIRECT_ALIGN * DIRECT_ALIGN
            pos = start
            while pos < stop:
                n = min(step, stop - pos)
                at = 0
                for piece in iov_range(iov, pos, pos + n):
                    stage[at:at + len(piece)] = piece
                    at += len(piece)
                self._direct.pwrite_direct(stage[:n], offset + pos)
                pos += n
        if stop < total:
            self._write_cached(iov_range(iov, stop, total), offset + stop, total - stop)

    def _write_cached(self, iov: Iov, offset: int, total: int) -> None:
        done = os.pwritev(self.fd, iov, offset)
        if done < total:  # short write: finish piece by piece (ENOSPC surfaces here)
            rest = b"".join(bytes(b) for b in iov)[done:]
            while rest:
                n = os.pwrite(self.fd, rest, offset + done)
                done += n
                rest = rest[n:]
        if self.disk.sync:
            # Start writeback now, without waiting: the fsync at commit then finds
            # little left to flush instead of the whole file.
            _start_writeback(self.fd, offset, total)

    def commit(self) -> None:
        if self.disk.sync:
            os.fsync(self.fd)  # the direct writes too: it flushes the device's cache
        self._close()
        folder = os.path.dirname(self.final)
        try:
            os.rename(self.tmp, self.final)
        except FileNotFoundError:  # first shard in this fan-out folder
            os.makedirs(folder, exist_ok=True)
            if self.disk.sync:
                fsync_dir(os.path.dirname(folder))
            os.rename(self.tmp, self.final)
        if self.disk.sync:
            fsync_dir(folder)

    def abort(self) -> None:
        self._close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def _close(self) -> None:
        if self._direct is not None:
            self._direct.close()
            self._direct = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
