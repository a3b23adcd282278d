"""One disk's LMDB metadata index and its group committer.

Tables (LMDB sub-databases):

``buckets``   bucket name → packed bucket info
``objects``   ``bucket/key`` → packed :class:`~storaged.meta.ObjectInfo` record
``inline``    ``bucket/key`` → version id + shard frames of a small object
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
import weakref
from collections.abc import Sequence
from typing import Any, Protocol

import lmdb
import msgpack
import xxhash

from .errors import DiskFull, StorageError
from .meta import ObjectInfo, record_inline, record_version

TRUNCATE = 400          # key bytes kept verbatim in an LMDB key
_LONG = b"\xff"         # never occurs in UTF-8, so truncated keys sort after their prefix
TABLES = (b"buckets", b"objects", b"inline", b"longkeys", b"pending", b"uploads", b"parts",
          # block volumes (their schema belongs to blockd; the engine only stores them)
          b"volumes", b"vmap", b"vslots")


def encode_key(bucket: str, key: str) -> bytes:
    """LMDB key of an object: sorts like the S3 key within its bucket."""
    kb = key.encode()
    head = bucket.encode() + b"/"
    if len(kb) <= TRUNCATE:
        return head + kb
    return head + kb[:TRUNCATE] + _LONG + xxhash.xxh3_128_digest(kb)


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
            sync=self.sync, metasync=self.sync, readahead=False, meminit=False,
        )
        self.dbs = {name: self.env.open_db(name) for name in TABLES}

    def close(self) -> None:
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
        """Synchronous :meth:`commit` for start-up and maintenance paths."""
        ok, value = self._apply_batch([(ops, None)])[0]
        if not ok:
            raise value
        return value

    def _apply_batch(self, batch: Sequence[tuple[Sequence[Op], Any]]) -> list[tuple[bool, Any]]:
        """One write transaction for a batch; (ok, result-or-error) per request."""
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


@dataclasses.dataclass
class PutBucket:
    name: str
    info: bytes

    def apply(self, tx: Tx) -> bool:
        if tx.get(b"buckets", self.name.encode()) is not None:
            return False
        tx.put(b"buckets", self.name.encode(), self.info)
        return True


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
        return "deleted"


@dataclasses.dataclass
class AddPending:
    vid: str
    bucket: str
    key: str
    parts: Sequence[int]
    upload_id: str = ""

    def apply(self, tx: Tx) -> None:
        tx.add_pending(self.vid, self.bucket, self.key, self.parts, self.upload_id)


@dataclasses.dataclass
class ClearPending:
    vid: str

    def apply(self, tx: Tx) -> None:
        tx.clear_pending(self.vid)


@dataclasses.dataclass
class Replaced:
    """What a put or delete displaced on one disk (for rollback and purging)."""

    applied: bool
    record: bytes | None = None
    inline: bytes | None = None


def _displace(tx: Tx, bucket: str, key: str, record: bytes | None, new_vid: str | None) -> None:
    # The displaced version's shard files may now be garbage: mark them pending.
    if record is not None and record_version(record)[1] != new_vid:
        tx.add_pending_files(bucket, key, record)


@dataclasses.dataclass
class PutObject:
    """Install a version if it is newer than the one present (last writer wins).

    ``replace_equal`` also re-installs the same version (healing a record whose
    inline shard was damaged); ``force`` replaces even a newer record (healing
    over a write that failed long ago).
    """

    bucket: str
    key: str
    record: bytes
    inline: bytes | None = None
    replace_equal: bool = False
    force: bool = False

    def apply(self, tx: Tx) -> Replaced:
        old, old_inline = tx.get_object(self.bucket, self.key)
        new_order = record_version(self.record)
        if old is not None and not self.force:
            old_order = record_version(old)
            if old_order > new_order or (old_order == new_order and not self.replace_equal):
                return Replaced(False, old, old_inline)
        tx.put_object(self.bucket, self.key, self.record, self.inline)
        tx.clear_pending(new_order[1])
        _displace(tx, self.bucket, self.key, old, new_order[1])
        return Replaced(True, old, old_inline)


@dataclasses.dataclass
class RestoreObject:
    """Undo a put of ``vid``: put back what it replaced, if ``vid`` is still current."""

    bucket: str
    key: str
    vid: str
    previous: bytes | None
    previous_inline: bytes | None

    def apply(self, tx: Tx) -> bool:
        current, _ = tx.get_object(self.bucket, self.key)
        if current is None or record_version(current)[1] != self.vid:
            return False
        if self.previous is None:
            tx.delete_object(self.bucket, self.key)
        else:
            tx.put_object(self.bucket, self.key, self.previous, self.previous_inline)
            prev = ObjectInfo.unpack(self.bucket, self.key, self.previous)
            for data_id in prev.files():
                tx.clear_pending(data_id)
        tx.add_pending_files(self.bucket, self.key, current, own_only=True)
        return True


@dataclasses.dataclass
class DeleteObject:
    """Remove the current version (only ``vid`` when given)."""

    bucket: str
    key: str
    vid: str | None = None

    def apply(self, tx: Tx) -> Replaced:
        old, old_inline = tx.get_object(self.bucket, self.key)
        if old is None:
            return Replaced(False)
        if self.vid is not None and record_version(old)[1] != self.vid:
            return Replaced(False, old, old_inline)
        tx.delete_object(self.bucket, self.key)
        _displace(tx, self.bucket, self.key, old, None)
        return Replaced(True, old, old_inline)


# --- multipart uploads --------------------------------------------------------


def upload_key(bucket: str, key: str, upload_id: str) -> bytes:
    """``uploads`` table key: sorts by object key, then upload id (= start time)."""
    return encode_key(bucket, key) + b"\x00" + upload_id.encode()


def part_key(upload_id: str, number: int) -> bytes:
    return upload_id.encode() + number.to_bytes(4, "big")


@dataclasses.dataclass
class PutUpload:
    bucket: str
    key: str
    upload_id: str
    record: bytes

    def apply(self, tx: Tx) -> None:
        tx.put(b"uploads", upload_key(self.bucket, self.key, self.upload_id), self.record)


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

    def apply(self, tx: Tx) -> list[tuple[str, int]]:
        tx.delete(b"uploads", upload_key(self.bucket, self.key, self.upload_id))
        current, _ = tx.get_object(self.bucket, self.key)
        used = set(ObjectInfo.unpack(self.bucket, self.key, current).files()) \
            if current is not None else set()
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
