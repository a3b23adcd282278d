"""One disk's LMDB metadata index and its group committer.

Tables (LMDB sub-databases):

``buckets``   bucket name → packed bucket info
``objects``   ``bucket/key`` → packed :class:`~storaged.meta.ObjectInfo` record of the
              latest version (possibly a delete marker)
``inline``    ``bucket/key`` → version id + shard frames of a small object
``versions``  ``bucket/key\0`` + version suffix → record of a noncurrent version; the
              suffix (inverted mtime and data id) sorts newest first, as S3 lists
``vinline``   the same key → inline shard of a noncurrent small version
``nullver``   ``bucket/key`` → suffix of the noncurrent "null" version, if any
``bucketcfg`` bucket name ``\0`` kind → [stamp, value]: versioning, lock, lifecycle,
              tagging settings (the newest stamp wins)
``usage``     bucket name → (bytes, objects) of its versions on this disk, changed in
              the transaction that adds or removes a version (storaged/usage.py)
``longkeys``  truncated ``bucket/key`` → the full key (LMDB keys stop at 511 bytes)
``pending``   data id → (bucket, key, part numbers, upload) whose shard files may
              be unreferenced: written but not yet committed, or replaced.
              Resolved (purged or confirmed) after the write and at start-up.
``uploads``   ``bucket/key\0upload id`` → multipart upload
``parts``     upload id + part number → uploaded part
``volumes``, ``vmap``, ``vslots``: block volume records, chunk maps and chunk
              slot allocation, written by blockd through generic operations.

Writes go through :meth:`MetaDB.commit`, which batches the operations of
concurrent requests into one LMDB transaction — one pair of fsyncs for many
small objects — committed by the process's :class:`Committer`. Each request's operations run
in a nested transaction so a
failing request never takes its neighbours down. Reads are plain read-only
transactions on the memory map, cheap enough to run on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import errno
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import lmdb
import msgpack
import xxhash

from . import lmdb_maps, usage, wire
from .errors import DiskFull, StorageError
from .meta import HEADER, ObjectInfo, record_inline, record_meta_ns, record_null, record_version

TRUNCATE = 400          # key bytes kept verbatim in an LMDB key
_LONG = b"\xff"         # never occurs in UTF-8, so truncated keys sort after their prefix
TABLES = (b"buckets", b"objects", b"inline", b"longkeys", b"pending", b"uploads", b"parts",
          b"versions", b"vinline", b"nullver", b"bucketcfg", usage.TABLE,
          # block volumes (their schema belongs to blockd; the engine only stores them)
          b"volumes", b"vmap", b"vslots")


def encode_key(bucket: str, key: str) -> bytes:
    """LMDB key of an object: sorts like the S3 key within its bucket."""
    kb = key.encode()
    head = bucket.encode() + b"/"
    if len(kb) <= TRUNCATE:
        return head + kb
    return head + kb[:TRUNCATE] + _LONG + xxhash.xxh3_128_digest(kb)


_MASK64 = (1 << 64) - 1


def version_suffix(mtime_ns: int, vid: str) -> bytes:
    """Sort key of a version within its key: newest first (mtime, then data id,
    both descending — the order records are compared in)."""
    inverted = bytes(b ^ 0xFF for b in bytes.fromhex(vid))
    return (_MASK64 - mtime_ns).to_bytes(8, "big") + inverted


def record_suffix(record: bytes | memoryview) -> bytes:
    return version_suffix(*record_version(record))


def versions_prefix(bucket: str, key: str) -> bytes:
    return encode_key(bucket, key) + b"\x00"


def config_key(bucket: str, kind: str) -> bytes:
    return bucket.encode() + b"\x00" + kind.encode()


def _is_long(lkey: bytes, head_len: int) -> bool:
    return len(lkey) == head_len + TRUNCATE + 1 + 16 and lkey[head_len + TRUNCATE] == 0xFF


class Tx:
    """A write transaction with typed helpers over the tables."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[bytes, Any]) -> None:
        self.txn, self.dbs = txn, dbs

    def get(self, table: bytes, key: bytes) -> bytes | None:
        return self.txn.get(key, db=self.dbs[table])

    def put(self, table: bytes, key: bytes, value: bytes) -> None:
        self.txn.put(key, value, db=self.dbs[table])

    def delete(self, table: bytes, key: bytes) -> None:
        self.txn.delete(key, db=self.dbs[table])

    def has_prefix(self, table: bytes, prefix: bytes) -> bool:
        cur = self.txn.cursor(db=self.dbs[table])
        return cur.set_range(prefix) and cur.key().startswith(prefix)

    # objects ------------------------------------------------------------------

    def get_object(self, bucket: str, key: str) -> tuple[bytes | None, bytes | None]:
        lkey = encode_key(bucket, key)
        return self.get(b"objects", lkey), self.get(b"inline", lkey)

    def put_object(self, bucket: str, key: str, record: bytes, inline: bytes | None) -> None:
        lkey = encode_key(bucket, key)
        self.put(b"objects", lkey, record)
        if inline is None:
            self.delete(b"inline", lkey)
        else:
            self.put(b"inline", lkey, inline)
        if _is_long(lkey, len(bucket) + 1):
            self.put(b"longkeys", lkey, key.encode())

    def delete_object(self, bucket: str, key: str) -> None:
        lkey = encode_key(bucket, key)
        for table in (b"objects", b"inline", b"longkeys"):
            self.delete(table, lkey)

    # versions -----------------------------------------------------------------
    # Per key a disk holds a set of versions; the newest is in ``objects``, the
    # others in ``versions``. These helpers keep that invariant.

    def _stash(self, bucket: str, key: str, record: bytes, inline: bytes | None) -> None:
        """File a version as noncurrent."""
        lkey = encode_key(bucket, key)
        suffix = record_suffix(record)
        vkey = lkey + b"\x00" + suffix
        self.put(b"versions", vkey, record)
        if inline is None:
            self.delete(b"vinline", vkey)
        else:
            self.put(b"vinline", vkey, inline)
        if record_null(record):
            self.put(b"nullver", lkey, suffix)

    def _unstash(self, bucket: str, key: str, suffix: bytes) -> tuple[bytes, bytes | None] | None:
        lkey = encode_key(bucket, key)
        vkey = lkey + b"\x00" + suffix
        record = self.get(b"versions", vkey)
        if record is None:
            return None
        inline = self.get(b"vinline", vkey)
        self.delete(b"versions", vkey)
        self.delete(b"vinline", vkey)
        if self.get(b"nullver", lkey) == suffix:
            self.delete(b"nullver", lkey)
        return record, inline

    def find_version(self, bucket: str, key: str, mtime_ns: int,
                     vid: str) -> tuple[bytes, bytes | None] | None:
        """A version's (record, inline) by its exact mtime and data id."""
        latest, inline = self.get_object(bucket, key)
        if latest is not None and record_version(latest) == (mtime_ns, vid):
            return latest, inline
        vkey = versions_prefix(bucket, key) + version_suffix(mtime_ns, vid)
        record = self.get(b"versions", vkey)
        return None if record is None else (record, self.get(b"vinline", vkey))

    def null_version(self, bucket: str, key: str) -> tuple[bytes, bytes | None] | None:
        latest, inline = self.get_object(bucket, key)
        if latest is not None and record_null(latest):
            return latest, inline
        suffix = self.get(b"nullver", encode_key(bucket, key))
        if suffix is None:
            return None
        vkey = versions_prefix(bucket, key) + suffix
        record = self.get(b"versions", vkey)
        return None if record is None else (record, self.get(b"vinline", vkey))

    def key_versions(self, bucket: str, key: str) -> list[bytes]:
        """Every version record of a key, newest first."""
        latest, _ = self.get_object(bucket, key)
        if latest is None:
            return []
        out = [latest]
        prefix = versions_prefix(bucket, key)
        cur = self.txn.cursor(db=self.dbs[b"versions"])
        found = cur.set_range(prefix)
        while found and cur.key().startswith(prefix):
            out.append(cur.value())
            found = cur.next()
        return out

    def add_version(self, bucket: str, key: str, record: bytes, inline: bytes | None) -> None:
        """Add a version (or replace the record of the same version), counting
        it in the bucket's usage in this same transaction."""
        latest, latest_inline = self.get_object(bucket, key)
        order = record_version(record)
        if latest is None:
            self.put_object(bucket, key, record, inline)
            usage.adjust(self, bucket, record, None)
            return
        latest_order = record_version(latest)
        if order > latest_order:
            self._stash(bucket, key, latest, latest_inline)
            self.put_object(bucket, key, record, inline)
            usage.adjust(self, bucket, record, None)
        elif order == latest_order:
            self.put_object(bucket, key, record, inline)
            usage.adjust(self, bucket, record, latest)
        else:
            replaced = self.get(b"versions", versions_prefix(bucket, key) + record_suffix(record))
            self._stash(bucket, key, record, inline)
            usage.adjust(self, bucket, record, replaced)

    def remove_version(self, bucket: str, key: str, mtime_ns: int,
                       vid: str) -> tuple[bytes, bytes | None] | None:
        """Remove a version (and its count in the bucket's usage); the newest
        noncurrent one becomes latest if needed."""
        latest, inline = self.get_object(bucket, key)
        if latest is None or record_version(latest) != (mtime_ns, vid):
            removed = self._unstash(bucket, key, version_suffix(mtime_ns, vid))
            if removed is not None:
                usage.adjust(self, bucket, None, removed[0])
            return removed
        self.delete_object(bucket, key)
        usage.adjust(self, bucket, None, latest)
        prefix = versions_prefix(bucket, key)
        cur = self.txn.cursor(db=self.dbs[b"versions"])
        if cur.set_range(prefix) and cur.key().startswith(prefix):
            promoted = self._unstash(bucket, key, bytes(cur.key()[len(prefix):]))
            assert promoted is not None
            self.put_object(bucket, key, *promoted)
        return latest, inline

    def add_pending(self, data_id: str, bucket: str, key: str, parts: Sequence[int],
                    upload_id: str = "") -> None:
        self.put(b"pending", data_id.encode(),
                 msgpack.packb([bucket, key, list(parts), upload_id]))

    def add_pending_files(self, bucket: str, key: str, record: bytes | None,
                          own_only: bool = False) -> None:
        """Mark a version's shard files as possibly unreferenced.

        ``own_only`` skips multipart parts: those stay owned by their upload.
        """
        if record is None or record_inline(record):
            return
        info = ObjectInfo.unpack(bucket, key, record)
        for data_id, numbers in info.files().items():
            if not own_only or data_id == info.version_id:
                self.add_pending(data_id, bucket, key, numbers)

    def clear_pending(self, vid: str) -> None:
        self.delete(b"pending", vid.encode())


class Op(Protocol):
    """A metadata mutation; ``apply`` runs inside one write transaction."""

    def apply(self, tx: Tx) -> Any: ...


@dataclasses.dataclass(eq=False)
class MetaDB:
    """LMDB environment of one disk."""

    path: str
    sync: bool = True
    map_size: int = 1 << 40

    def __post_init__(self) -> None:
        self.env = lmdb.open(
            self.path, map_size=self.map_size, max_dbs=len(TABLES) + 2, max_readers=1024,
            # meminit: LMDB zeroes the fresh pages it mallocs; without it the unused
            # tail of a page carried whatever the heap held before (an encrypted
            # object's plaintext, a key) into the data file.
            sync=self.sync, metasync=self.sync, readahead=False, meminit=True,
        )
        self.dbs = {name: self.env.open_db(name) for name in TABLES}
        lmdb_maps.register(os.path.join(self.path, "data.mdb"))
        usage.ensure_counted(self.env, self.dbs)  # data dirs from before the counters
        self._group_lock = threading.Lock()  # commit_now's group commit
        self._group: list[_Waiting] = []
        self._group_busy = False

    def close(self) -> None:
        with lmdb_maps.MAPS_LOCK:  # never while a release reads the maps
            lmdb_maps.forget(os.path.join(self.path, "data.mdb"))
            self.env.close()

    # reads --------------------------------------------------------------------

    def read(self) -> lmdb.Transaction:
        return self.env.begin()

    def get(self, table: bytes, key: bytes) -> bytes | None:
        with self.env.begin() as txn:
            return txn.get(key, db=self.dbs[table])

    def get_object(self, bucket: str, key: str) -> bytes | None:
        return self.get(b"objects", encode_key(bucket, key))

    def get_inline(self, bucket: str, key: str) -> bytes | None:
        return self.get(b"inline", encode_key(bucket, key))

    def get_version(self, bucket: str, key: str, version: tuple[int, str] | None) -> bytes | None:
        """The record of a version given as (mtime, data id head), or the null one."""
        with self.env.begin() as txn:
            tx = Tx(txn, self.dbs)
            if version is None:
                found = tx.null_version(bucket, key)
                return None if found is None else found[0]
            mtime, head = version
            latest, _ = tx.get_object(bucket, key)
            if latest is not None:
                lm, lvid = record_version(latest)
                if lm == mtime and lvid.startswith(head):
                    return latest
            prefix = versions_prefix(bucket, key)
            seek = prefix + version_suffix(mtime, head + "0" * 16)[:16]
            cur = txn.cursor(db=self.dbs[b"versions"])
            if cur.set_range(seek) and cur.key().startswith(seek):
                return cur.value()
            return None

    def version_inline(self, bucket: str, key: str, mtime_ns: int, vid: str) -> bytes | None:
        """The inline shard of a version, latest or not."""
        with self.env.begin() as txn:
            found = Tx(txn, self.dbs).find_version(bucket, key, mtime_ns, vid)
            return None if found is None else found[1]

    def key_versions(self, bucket: str, key: str) -> list[bytes]:
        """Every version record of a key, newest first."""
        with self.env.begin() as txn:
            return Tx(txn, self.dbs).key_versions(bucket, key)

    def scan_versions(self, bucket: str, prefix: str = "", after: str = "",
                      after_suffix: bytes | None = None, skip_prefix: bool = False,
                      limit: int = 1000) -> list[tuple[str, bytes, bytes]]:
        """Up to ``limit`` (key, suffix, record) versions in S3 order (key ascending,
        newest first), after version ``after_suffix`` of key ``after`` (None: after
        every version of ``after``); ``skip_prefix`` as in :meth:`scan`."""
        out: list[tuple[str, bytes, bytes]] = []
        if after and after_suffix is not None:
            self._versions_of(bucket, after, after_suffix, out, limit)
        if len(out) >= limit:
            return out
        for key, record in self.scan(bucket, prefix, after, skip_prefix, limit - len(out)):
            out.append((key, record_suffix(record), record))
            self._versions_of(bucket, key, b"", out, limit)
            if len(out) >= limit:
                break
        return out

    def _versions_of(self, bucket: str, key: str, after_suffix: bytes,
                     out: list[tuple[str, bytes, bytes]], limit: int) -> None:
        prefix = versions_prefix(bucket, key)
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.dbs[b"versions"])
            found = cur.set_range(prefix + after_suffix)
            while found and len(out) < limit:
                vkey = cur.key()
                if not vkey.startswith(prefix):
                    break
                suffix = vkey[len(prefix):]
                if suffix > after_suffix:
                    out.append((key, suffix, cur.value()))
                found = cur.next()

    def bucket_config(self, bucket: str) -> dict[str, tuple[int, bytes | None]]:
        """A bucket's settings on this disk: kind → (stamp, value)."""
        with self.env.begin() as txn:
            return self._bucket_config(txn, bucket)

    def _bucket_config(self, txn: lmdb.Transaction,
                       bucket: str) -> dict[str, tuple[int, bytes | None]]:
        prefix = bucket.encode() + b"\x00"
        out = {}
        cur = txn.cursor(db=self.dbs[b"bucketcfg"])
        if cur.set_range(prefix):
            for ckey, raw in cur:
                if not ckey.startswith(prefix):
                    break
                stamp, value = msgpack.unpackb(raw)
                out[ckey[len(prefix):].decode()] = (stamp, value)
        return out

    def bucket_state(self, bucket: str) -> tuple[bytes | None, dict[str, tuple[int, bytes | None]]]:
        """A bucket's record and settings, in one read transaction."""
        with self.env.begin() as txn:
            return txn.get(bucket.encode(), db=self.dbs[b"buckets"]), \
                self._bucket_config(txn, bucket)

    def object_view(self, bucket: str, key: str, with_bucket: bool, with_inline: bool
                    ) -> tuple[Any, bytes | None, bytes | None]:
        """:meth:`storaged.disk.Disk.object_view` in one read transaction (a GET's
        one query per disk: four transactions cost more than the lookups)."""
        lkey = encode_key(bucket, key)
        with self.env.begin() as txn:
            state = None
            if with_bucket:
                state = (txn.get(bucket.encode(), db=self.dbs[b"buckets"]),
                         self._bucket_config(txn, bucket))
            return (state, txn.get(lkey, db=self.dbs[b"objects"]),
                    txn.get(lkey, db=self.dbs[b"inline"]) if with_inline else None)

    def usage_counters(self) -> dict[str, usage.Usage]:
        """Every bucket's usage counters on this disk (buckets with nothing left out)."""
        with self.env.begin() as txn:
            return usage.stored(txn, self.dbs)

    def recount_usage(self) -> dict[str, usage.Usage]:
        """Every bucket's usage counted from its records (what the counters must equal)."""
        with self.env.begin() as txn:
            return usage.recount(txn, self.dbs)

    def entries(self, table: bytes) -> int:
        """How many items a table holds (O(1))."""
        with self.env.begin() as txn:
            return txn.stat(self.dbs[table])["entries"]

    def stored(self) -> tuple[int, int]:
        """(objects, bytes) of the latest versions this disk indexes."""
        objects = size = 0
        with self.env.begin() as txn:
            for raw in txn.cursor(db=self.dbs[b"objects"]).iternext(keys=False):
                objects += 1
                size += msgpack.unpackb(memoryview(raw)[HEADER.size:])["size"]
        return objects, size

    def items(self, table: bytes) -> list[tuple[bytes, bytes]]:
        with self.env.begin() as txn:
            return list(txn.cursor(db=self.dbs[table]).iternext())

    def scan(self, bucket: str, prefix: str = "", after: str = "", skip_prefix: bool = False,
             limit: int = 1000) -> list[tuple[str, bytes]]:
        """Up to ``limit`` (key, record) pairs of ``bucket`` in key order.

        Keys start with ``prefix`` and sort after ``after``; with ``skip_prefix``
        every key starting with ``after`` is skipped too (a listed common prefix).
        """
        head = bucket.encode() + b"/"
        lo = head + prefix.encode()[:TRUNCATE]
        start = lo
        if after:
            ab = after.encode()
            seek = head + ab[:TRUNCATE]
            if skip_prefix and len(ab) <= TRUNCATE:
                seek += _LONG + _LONG  # past every key that starts with `after`
            start = max(start, seek)
        out: list[tuple[str, bytes]] = []
        group: list[tuple[str, bytes]] = []
        group_head = b""
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.dbs[b"objects"])
            if not cur.set_range(start):
                return out
            longkeys = self.dbs[b"longkeys"]
            for lkey, record in cur:
                if not lkey.startswith(lo):
                    break
                long = _is_long(lkey, len(head))
                if long:
                    full = txn.get(lkey, db=longkeys).decode()
                else:
                    full = lkey[len(head):].decode()
                if group and (not long or lkey[:len(head) + TRUNCATE] != group_head):
                    out.extend(sorted(group))  # hash order → key order within the group
                    group = []
                    if len(out) >= limit:
                        break
                if not full.startswith(prefix) or (after and (
                        full <= after or (skip_prefix and full.startswith(after)))):
                    continue
                if long:
                    group_head = lkey[:len(head) + TRUNCATE]
                    group.append((full, record))
                    continue
                out.append((full, record))
                if len(out) >= limit:
                    break
            out.extend(sorted(group))
        return out[:limit]

    # writes -------------------------------------------------------------------

    def commit(self, ops: Sequence[Op]) -> asyncio.Future:
        """Apply ``ops`` atomically, batched with concurrent callers; durable when done.

        Returns a future (not a coroutine): gathering the commits of several
        disks then costs no task per disk on the hot small-object path.
        """
        return Committer.current().submit(self, ops)

    def commit_now(self, ops: Sequence[Op]) -> list[Any]:
        """Synchronous :meth:`commit` (start-up, maintenance, and the node
        data channel's threads), batched with other threads' concurrent calls:
        the first to come commits everything queued meanwhile in one fsynced
        transaction, then hands the lead to a thread still waiting."""
        me = _Waiting(ops)
        with self._group_lock:
            self._group.append(me)
            if not self._group_busy:
                self._group_busy = me.lead = True
        if not me.lead:
            me.event.wait()  # for the outcome, or to take the lead
        if me.lead:
            self._lead_group(me)
        ok, value = me.outcome
        if not ok:
            raise value
        return value

    def _lead_group(self, me: _Waiting) -> None:
        with self._group_lock:
            batch, self._group = self._group, []
        outcomes = self._apply_batch([(w.ops, None) for w in batch])
        for waiting, outcome in zip(batch, outcomes):
            waiting.outcome = outcome
        with self._group_lock:
            following = self._group[0] if self._group else None
            if following is not None:
                following.lead = True
            else:
                self._group_busy = False
        for waiting in batch:
            if waiting is not me:
                waiting.event.set()
        if following is not None:
            following.event.set()

    def _apply_batch(self, batch: Sequence[tuple[Sequence[Op], Any]]) -> list[tuple[bool, Any]]:
        """One write transaction for a batch; (ok, result-or-error) per request."""
        if len(batch) == 1:  # no neighbour to protect: no nested transaction
            try:
                with self.env.begin(write=True) as txn:
                    tx = Tx(txn, self.dbs)
                    return [(True, [op.apply(tx) for op in batch[0][0]])]
            except Exception as exc:
                return [(False, _disk_error(exc))]
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self.env.begin(write=True) as txn:
                for ops, _ in batch:
                    child = self.env.begin(write=True, parent=txn)
                    try:
                        tx = Tx(child, self.dbs)
                        results = [op.apply(tx) for op in ops]
                    except Exception as exc:
                        child.abort()
                        outcomes.append((False, _disk_error(exc)))
                    else:
                        child.commit()
                        outcomes.append((True, results))
        except Exception as exc:
            return [(False, _disk_error(exc))] * len(batch)
        return outcomes


class _Waiting:
    """A thread's operations waiting in :meth:`MetaDB.commit_now`."""

    __slots__ = ("ops", "event", "outcome", "lead")

    def __init__(self, ops: Sequence[Op]) -> None:
        self.ops = ops
        self.event = threading.Event()
        self.outcome: tuple[bool, Any] = (False, RuntimeError("not committed"))
        self.lead = False


class Committer:
    """Commits the queued batches of every disk of a process, a round at a time.

    A round takes whatever each disk has queued and commits it in one hop to
    the commit threads (disks split across them), then wakes the requests.
    Few threads and one hop per round matter: on the small-object path thread
    handoffs (context switches) cost more CPU than the LMDB work itself.
    """

    THREADS = 2
    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Committer] = \
        weakref.WeakKeyDictionary()

    def __init__(self, threads: int = THREADS) -> None:
        self.threads = threads
        self._executor = concurrent.futures.ThreadPoolExecutor(threads,
                                                               thread_name_prefix="lmdb-commit")
        self._pending: dict[MetaDB, list[tuple[Sequence[Op], asyncio.Future]]] = {}
        self._draining = False

    @classmethod
    def current(cls) -> Committer:
        """The committer of the running event loop."""
        loop = asyncio.get_running_loop()
        committer = cls._by_loop.get(loop)
        if committer is None:
            committer = cls._by_loop[loop] = cls()
            weakref.finalize(loop, committer._executor.shutdown, False)
        return committer

    def submit(self, db: MetaDB, ops: Sequence[Op]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.setdefault(db, []).append((ops, fut))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                # One turn of the loop lets requests that are ready to commit
                # join this round: fewer, larger fsynced transactions.
                await asyncio.sleep(0)
                work, self._pending = self._pending, {}
                lanes: list[list[MetaDB]] = [[] for _ in range(self.threads)]
                for i, db in enumerate(sorted(work, key=lambda d: d.path)):
                    lanes[i % self.threads].append(db)
                jobs = [loop.run_in_executor(self._executor, self._commit_lane, lane, work)
                        for lane in lanes if lane]
                for outcome in await asyncio.gather(*jobs):
                    for db, results in outcome.items():
                        for (_, fut), (ok, value) in zip(work[db], results):
                            if fut.done():
                                continue
                            if ok:
                                fut.set_result(value)
                            else:
                                fut.set_exception(value)
        finally:
            self._draining = False

    @staticmethod
    def _commit_lane(lane: list[MetaDB], work: dict) -> dict:
        out = {}
        for db in lane:
            try:
                out[db] = db._apply_batch(work[db])
            except BaseException as exc:  # the whole transaction failed
                out[db] = [(False, _disk_error(exc))] * len(work[db])
        return out


def _disk_error(exc: BaseException) -> BaseException:
    if isinstance(exc, lmdb.MapFullError) or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
        return DiskFull(str(exc))
    if isinstance(exc, lmdb.Error):
        return StorageError(f"metadata store: {exc}")
    return exc


# --- operations ---------------------------------------------------------------


@wire.register
@dataclasses.dataclass
class PutBucket:
    name: str
    info: bytes

    def apply(self, tx: Tx) -> bool:
        if tx.get(b"buckets", self.name.encode()) is not None:
            return False
        tx.put(b"buckets", self.name.encode(), self.info)
        return True


@wire.register
@dataclasses.dataclass
class DeleteBucket:
    """Forget a bucket; with ``expect``, only the record a creator wrote itself
    (a failed creation must never remove a bucket someone else created)."""

    name: str
    force: bool = False
    expect: bytes | None = None

    def apply(self, tx: Tx) -> str:
        current = tx.get(b"buckets", self.name.encode())
        if current is None:
            return "missing"
        if self.expect is not None and bytes(current) != self.expect:
            return "other"
        if not self.force and tx.has_prefix(b"objects", self.name.encode() + b"/"):
            return "not-empty"
        tx.delete(b"buckets", self.name.encode())
        prefix = self.name.encode() + b"\x00"
        cur = tx.txn.cursor(db=tx.dbs[b"bucketcfg"])
        found = cur.set_range(prefix)
        while found and cur.key().startswith(prefix):
            found = cur.delete()
        return "deleted"


@wire.register
@dataclasses.dataclass
class AddPending:
    vid: str
    bucket: str
    key: str
    parts: Sequence[int]
    upload_id: str = ""

    def apply(self, tx: Tx) -> None:
        tx.add_pending(self.vid, self.bucket, self.key, self.parts, self.upload_id)


@wire.register
@dataclasses.dataclass
class ClearPending:
    vid: str

    def apply(self, tx: Tx) -> None:
        tx.clear_pending(self.vid)


@wire.register
@dataclasses.dataclass
class Replaced:
    """What a put or delete displaced on one disk (for rollback and purging)."""

    applied: bool
    record: bytes | None = None
    inline: bytes | None = None


@wire.register
@dataclasses.dataclass
class PutObject:
    """Install a version of an object.

    A null version (unversioned or suspended bucket) replaces the key's null
    version if it is newer (last writer wins); a versioned one joins the key's
    versions. ``replace_equal`` re-installs the same version (healing a damaged
    inline shard or stale record), keeping the disk's inline shard when given
    none: a version's data never changes, and a healer that looked before
    another one healed this disk must not erase what that one wrote. ``force``
    (healing) installs the record without displacing anything — stale
    versions are removed separately.
    """

    bucket: str
    key: str
    record: bytes
    inline: bytes | None = None
    replace_equal: bool = False
    force: bool = False

    def apply(self, tx: Tx) -> Replaced:
        bucket, key = self.bucket, self.key
        order = record_version(self.record)
        if tx.get(b"objects", encode_key(bucket, key)) is None:
            # A new key (no latest record means no versions at all): nothing to
            # find or displace. Most small PUTs; a third of the lookups.
            tx.put_object(bucket, key, self.record, self.inline)
            usage.adjust(tx, bucket, self.record, None)
            tx.clear_pending(order[1])
            return Replaced(True)
        found = tx.find_version(bucket, key, *order)
        if found is not None and not self.replace_equal:
            return Replaced(False, *found)
        inline = self.inline if self.inline is not None or found is None else found[1]
        displaced = None
        if found is None and not self.force and record_null(self.record):
            displaced = tx.null_version(bucket, key)
            if displaced is not None:
                if record_version(displaced[0]) > order:
                    return Replaced(False, *displaced)
                tx.remove_version(bucket, key, *record_version(displaced[0]))
        tx.add_version(bucket, key, self.record, inline)
        tx.clear_pending(order[1])
        if displaced is None:
            return Replaced(True)
        tx.add_pending_files(bucket, key, displaced[0])
        return Replaced(True, *displaced)


@wire.register
@dataclasses.dataclass
class UpdateVersion:
    """Replace a version's record by one with newer tags or lock settings
    (same version, same data); a no-op when this disk lacks the version."""

    bucket: str
    key: str
    record: bytes

    def apply(self, tx: Tx) -> bool:
        found = tx.find_version(self.bucket, self.key, *record_version(self.record))
        if found is None or record_meta_ns(found[0]) >= record_meta_ns(self.record):
            return False
        tx.add_version(self.bucket, self.key, self.record, found[1])
        return True


@wire.register
@dataclasses.dataclass
class RestoreObject:
    """Undo a put of version (mtime, vid): remove it and put back the null
    version it displaced (``previous``), if any."""

    bucket: str
    key: str
    mtime_ns: int
    vid: str
    previous: bytes | None
    previous_inline: bytes | None

    def apply(self, tx: Tx) -> bool:
        removed = tx.remove_version(self.bucket, self.key, self.mtime_ns, self.vid)
        if removed is None:
            return False
        # A key has one null version: another write's may have arrived meanwhile,
        # and then the displaced one stays displaced (its files stay pending).
        if self.previous is not None and tx.null_version(self.bucket, self.key) is None:
            tx.add_version(self.bucket, self.key, self.previous, self.previous_inline)
            prev = ObjectInfo.unpack(self.bucket, self.key, self.previous)
            for data_id in prev.files():
                tx.clear_pending(data_id)
        tx.add_pending_files(self.bucket, self.key, removed[0], own_only=True)
        return True


@wire.register
@dataclasses.dataclass
class DeleteVersion:
    """Remove one version (mtime, vid); its files become pending."""

    bucket: str
    key: str
    mtime_ns: int
    vid: str

    def apply(self, tx: Tx) -> Replaced:
        removed = tx.remove_version(self.bucket, self.key, self.mtime_ns, self.vid)
        if removed is None:
            return Replaced(False)
        tx.add_pending_files(self.bucket, self.key, removed[0])
        return Replaced(True, *removed)


def newest_settings(held: Iterable[dict[str, tuple[int, bytes | None]]]
                    ) -> dict[str, tuple[int, bytes | None]]:
    """Per kind, the (stamp, value) with the newest stamp among the disks' ``held``."""
    newest: dict[str, tuple[int, bytes | None]] = {}
    for configs in held:
        for kind, entry in configs.items():
            if kind not in newest or entry[0] > newest[kind][0]:
                newest[kind] = entry
    return newest


@wire.register
@dataclasses.dataclass
class PutBucketConfig:
    """Set (``value`` None: remove) one kind of a bucket's settings, if ``stamp``
    is newer than what the disk holds; False when the bucket is unknown here."""

    bucket: str
    kind: str
    stamp: int
    value: bytes | None

    def apply(self, tx: Tx) -> bool:
        if tx.get(b"buckets", self.bucket.encode()) is None:
            return False
        ckey = config_key(self.bucket, self.kind)
        old = tx.get(b"bucketcfg", ckey)
        if old is not None and msgpack.unpackb(old)[0] >= self.stamp:
            return True
        tx.put(b"bucketcfg", ckey, msgpack.packb([self.stamp, self.value]))
        return True


# --- multipart uploads --------------------------------------------------------


def upload_key(bucket: str, key: str, upload_id: str) -> bytes:
    """``uploads`` table key: sorts by object key, then upload id (= start time)."""
    return encode_key(bucket, key) + b"\x00" + upload_id.encode()


def part_key(upload_id: str, number: int) -> bytes:
    return upload_id.encode() + number.to_bytes(4, "big")


@wire.register
@dataclasses.dataclass
class PutUpload:
    bucket: str
    key: str
    upload_id: str
    record: bytes

    def apply(self, tx: Tx) -> None:
        tx.put(b"uploads", upload_key(self.bucket, self.key, self.upload_id), self.record)


@wire.register
@dataclasses.dataclass
class PutPart:
    """Record an uploaded part (replacing an earlier upload of the same number).

    Not applied when this disk does not know the upload (aborted meanwhile).
    """

    bucket: str
    key: str
    upload_id: str
    number: int
    data_id: str
    record: bytes

    def apply(self, tx: Tx) -> Replaced:
        if tx.get(b"uploads", upload_key(self.bucket, self.key, self.upload_id)) is None:
            return Replaced(False)
        pkey = part_key(self.upload_id, self.number)
        old = tx.get(b"parts", pkey)
        tx.put(b"parts", pkey, self.record)
        tx.clear_pending(self.data_id)
        if old is not None:
            old_id = msgpack.unpackb(old)["pid"]
            if old_id != self.data_id:
                tx.add_pending(old_id, self.bucket, self.key, [self.number], self.upload_id)
        return Replaced(True, old)


@wire.register
@dataclasses.dataclass
class EndUpload:
    """Forget an upload (completed or aborted) and its part records.

    Returns the (data id, part number) files no longer used by anything on
    this disk — every part the current object version does not reference —
    and marks them pending so a crash before they are purged loses nothing.
    """

    bucket: str
    key: str
    upload_id: str
    keep: tuple[int, str] | None = None  # (mtime, data id) of the version completing it

    def apply(self, tx: Tx) -> list[tuple[str, int]]:
        tx.delete(b"uploads", upload_key(self.bucket, self.key, self.upload_id))
        # The version that completed the upload need not be the latest (a newer
        # one may exist): with ``keep`` look at it, else at every version.
        found = tx.find_version(self.bucket, self.key, *self.keep) if self.keep else None
        records = [found[0]] if found is not None else tx.key_versions(self.bucket, self.key)
        used = {data_id for record in records
                for data_id in ObjectInfo.unpack(self.bucket, self.key, record).files()}
        prefix = self.upload_id.encode()
        cur = tx.txn.cursor(db=tx.dbs[b"parts"])
        unused: list[tuple[str, int]] = []
        found = cur.set_range(prefix)
        while found and cur.key().startswith(prefix):
            number = int.from_bytes(cur.key()[len(prefix):], "big")
            data_id = msgpack.unpackb(cur.value())["pid"]
            if data_id not in used:
                unused.append((data_id, number))
                tx.add_pending(data_id, self.bucket, self.key, [number])
            found = cur.delete()
        return unused
