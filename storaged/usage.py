"""Per-bucket usage counters (bytes, objects) kept in each disk's LMDB index.

What is counted
    Every version that holds data, current or noncurrent: ``objects`` is how
    many, ``bytes`` the sum of their sizes (the object size a client sees, not
    the shard bytes on disk). Delete markers count for neither: they hold no
    data, a delete is never refused for a quota, and so a delete can never push
    a tenant over one. Parts of uploads in progress are not versions and are not
    counted until the upload completes.

Where the counters are written
    In the ``usage`` table (bucket name → two signed 64-bit integers), changed by
    :meth:`storaged.metadb.Tx.add_version` and :meth:`~storaged.metadb.Tx.remove_version`
    through :func:`adjust`, inside the same LMDB write transaction that adds,
    replaces or removes the version's record. Every path that changes a disk's
    set of versions goes through those two helpers (puts and null-version
    overwrites, delete markers, versioned deletes, rollbacks, multipart
    completion, lifecycle expiry, heals, relocation between pools), so a
    disk's counters always equal what a full recount of its records gives,
    across crashes too: the record and its counter commit or vanish together.
    A bucket deleted while a disk still holds stray records keeps their count
    on that disk; the invariant is about records, not bucket records.

Existing data dirs
    A disk indexed before the counters existed has no ``usage`` rows: the first
    open (:func:`ensure_counted`, from :class:`~storaged.metadb.MetaDB`) counts
    every bucket in one scan and writes the rows and the ``COUNTED`` mark in one
    transaction. A missing row afterwards means zero.

A bucket's usage as the store sees it (:func:`reduce`)
    The largest value among the disks that answer, needing a read quorum (K) of
    disks that are not being healed. A committed write is on a write quorum, so
    K disks always include one that has it (K + W > N); a disk that missed
    writes (it was away, or is being healed) only holds less, and the largest
    answer is never below what was committed. It can be above it while a
    disk keeps a write that was rolled back elsewhere or missed a delete,
    until healing settles that disk: for a quota, counting a little too much
    for a while is the safe side.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, NamedTuple

import lmdb
import msgpack

from .errors import ReadQuorumError
from .meta import HEADER, MARKER

TABLE = b"usage"
COUNTED = b"\x00counted"   # a bucket name never starts with NUL
_ROW = struct.Struct(">qq")  # bytes, objects


class Usage(NamedTuple):
    bytes: int
    objects: int


def weight(record: bytes | memoryview | None) -> tuple[int, int]:
    """(bytes, objects) a version record adds to its bucket's usage."""
    global _last
    if record is None or HEADER.unpack_from(record)[2] & MARKER:
        return 0, 0
    last = _last  # one tuple: the commit threads may both be here
    if record is last[0]:
        return last[1]
    found = msgpack.unpackb(memoryview(record)[HEADER.size:])["size"], 1
    if type(record) is bytes:  # immutable: the same object is the same record
        _last = (record, found)
    return found


# The last record weighed: a write hands the same record to every disk's commit,
# and unpacking it is most of the cost of counting it.
_last: tuple[object, tuple[int, int]] = (None, (0, 0))


def unpack(raw: bytes | memoryview | None) -> Usage:
    return Usage(0, 0) if raw is None else Usage(*_ROW.unpack(raw))


def adjust(tx: Any, bucket: str, added: bytes | None, removed: bytes | None) -> None:
    """Count a version ``added`` and/or ``removed`` in ``tx`` (a metadb.Tx)."""
    add_bytes, add_objects = weight(added)
    sub_bytes, sub_objects = weight(removed)
    d_bytes, d_objects = add_bytes - sub_bytes, add_objects - sub_objects
    if not d_bytes and not d_objects:
        return
    name = bucket.encode()
    current = unpack(tx.get(TABLE, name))
    total = Usage(current.bytes + d_bytes, current.objects + d_objects)
    if total == (0, 0):
        tx.delete(TABLE, name)
    else:
        tx.put(TABLE, name, _ROW.pack(*total))


def recount(txn: lmdb.Transaction, dbs: dict[bytes, Any]) -> dict[str, Usage]:
    """Every bucket's usage from its records (objects and versions tables)."""
    totals: dict[str, list[int]] = {}
    for table in (b"objects", b"versions"):
        for lkey, record in txn.cursor(db=dbs[table]):
            size, count = weight(record)
            if count:
                entry = totals.setdefault(bytes(lkey).split(b"/", 1)[0].decode(), [0, 0])
                entry[0] += size
                entry[1] += count
    return {bucket: Usage(*entry) for bucket, entry in totals.items()}


def stored(txn: lmdb.Transaction, dbs: dict[bytes, Any]) -> dict[str, Usage]:
    """The counters as a disk holds them (buckets with nothing are left out)."""
    return {bytes(k).decode(): unpack(v) for k, v in txn.cursor(db=dbs[TABLE])
            if bytes(k) != COUNTED}


def ensure_counted(env: lmdb.Environment, dbs: dict[bytes, Any]) -> bool:
    """Count a disk indexed before the counters existed, once; True if it did."""
    with env.begin() as txn:
        if txn.get(COUNTED, db=dbs[TABLE]) is not None:
            return False
    with env.begin(write=True) as txn:
        # Another process opening the disk may have counted it meanwhile.
        if txn.get(COUNTED, db=dbs[TABLE]) is not None:
            return False
        txn.drop(dbs[TABLE], delete=False)
        for bucket, usage in recount(txn, dbs).items():
            txn.put(bucket.encode(), _ROW.pack(*usage), db=dbs[TABLE])
        txn.put(COUNTED, b"1", db=dbs[TABLE])
    return True


def reduce(answers: Iterable[tuple[bool, bytes | None]], k: int, what: str) -> Usage:
    """A bucket's usage from the disks' rows, given as (healing, row) per disk:
    the largest value, with at least ``k`` disks not being healed answering."""
    rows = list(answers)
    if sum(1 for healing, _ in rows if not healing) < k:
        raise ReadQuorumError(f"usage of {what}: too few disks answered")
    values = [unpack(raw) for _, raw in rows]
    return Usage(max(v.bytes for v in values), max(v.objects for v in values))
