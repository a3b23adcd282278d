"""Moving an object version from one erasure set to another, identity kept.

What a pool drain needs and the put path cannot do: the put path stamps a new
mtime and draws a new version id, while a moved version must stay the same
version for clients — same version id, mtime, ETag, metadata, tags, checksums,
lock settings, delete-marker flag, part layout (numbers, sizes, ETags). Only
what belongs to the set that holds it changes: the erasure coding (K, M, block
size), the disk rotation, and where the shard files live (every part is
rewritten as a file of the version itself, ``<version id>.<part number>``).

* :func:`copy_version` writes a version that ``src`` resolved into ``dst``: the
  bytes are read through ``src``'s reader (bitrot-checked, rebuilt from parity if
  need be) and verified against each part's MD5 on the way, then committed
  with the ordinary ``PutObject`` operation, so a version already there (an
  earlier, interrupted move) is not written twice and a null version never
  displaces a newer null version of the key.
* :func:`drop_version` removes the version from ``src`` once ``dst`` holds it.
  It is not :meth:`ObjectStore.delete_object`: the version is not deleted but
  moved, so object lock (which forbids deleting it) does not apply, and the
  caller already holds the key's lock.

Neither changes what existing code does; they reuse the engine's streaming
writer, its commit operations and its quorum rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import DigestMismatch
from .layout import distribution
from .meta import ObjectInfo, record_inline, record_version
from .metadb import AddPending, ClearPending, DeleteVersion, PutObject, RestoreObject, UpdateVersion
from .quorum import Resolved
from .reader import ObjectReader
from .writer import BodyReader, ShardStream, Stored

if TYPE_CHECKING:
    from .store import ObjectStore

COPIED, PRESENT, SUPERSEDED = "copied", "present", "superseded"

Purge = Callable[[int, str, list[int]], None]


def exact_version_id(info: ObjectInfo) -> str:
    """A client-style version id naming exactly this version, null ones included
    (what :meth:`ObjectStore.resolve_version` looks up by mtime and data id)."""
    return f"{info.mtime_ns:016x}{info.version_id[:16]}"


async def find_exact(store: ObjectStore, info: ObjectInfo) -> Resolved | None:
    """``info``'s version (same mtime and data id) in ``store``, by quorum."""
    res = await store.resolve_version(info.bucket, info.key, exact_version_id(info))
    if res is None or res.info.order != info.order:
        return None
    return res


def reshaped(dst: ObjectStore, info: ObjectInfo) -> ObjectInfo:
    """``info`` as ``dst`` stores it: its coding and disk rotation, every part a
    file of the version itself. Everything clients see is unchanged."""
    return dataclasses.replace(
        info, k=dst.k, m=dst.m, block_size=dst.geometry.block_size,
        dist=tuple(distribution(info.bucket, info.key, dst.n)),
        parts=tuple(dataclasses.replace(p, data_id="") for p in info.parts), inline=False)


def _md5(etag: str) -> bytes | None:
    """A part's ETag as the MD5 to check its bytes against (every part's ETag is
    the MD5 of its bytes; anything else is not checked)."""
    if len(etag) == 32:
        try:
            return bytes.fromhex(etag)
        except ValueError:
            return None
    return None


async def _write_parts(src: ObjectStore, dst: ObjectStore, info: ObjectInfo) -> list[int]:
    """Stream every part of ``info`` from ``src`` into shard files of ``dst``;
    the positions that hold all of them (durable, not yet visible)."""
    positions: list[int] | None = None
    offset = 0
    numbers: list[int] = []
    for part in info.parts:
        reader = ObjectReader(src, info, offset, part.stored)
        stream = ShardStream(dst, info.bucket, info.key, info.version_id, part.number)
        numbers.append(part.number)
        held = list(numbers)

        async def commit(stored: Stored, held: list[int] = held) -> list[int]:
            # One pending record names every part written so far: a crash
            # before the record is committed leaves no file nobody knows about.
            done = await dst.set.commit_all(
                [AddPending(info.version_id, info.bucket, info.key, held)], stored.positions)
            return list(done.results)

        try:
            # An encrypted part's ETag is not the MD5 of its stored (sealed) bytes.
            got = await stream.run(BodyReader(reader, part.stored), memoryview(b""),
                                   None if part.stored_size else _md5(part.etag), (), None,
                                   commit)
        finally:
            await reader.aclose()
        positions = got if positions is None else [p for p in positions if p in got]
        offset += part.stored
    return positions if positions is not None else dst.online_positions()


async def copy_version(src: ObjectStore, dst: ObjectStore, info: ObjectInfo) -> str:
    """Write version ``info`` (as ``src`` resolved it) into ``dst``, keeping its
    identity. Returns ``"copied"``, ``"present"`` (``dst`` already held it: only
    newer tags or lock settings are brought over) or ``"superseded"`` (a null
    version ``dst`` holds for the key is newer, so this one is obsolete).

    Raises like a put (WriteQuorumError, DiskFull, ReadOnly...) with nothing of
    the version left visible in ``dst``.
    """
    dst.check_writable()
    bucket, key = info.bucket, info.key
    have = await find_exact(dst, info)
    if have is not None:
        if info.meta_ns > have.info.meta_ns:
            fresh = dataclasses.replace(have.info, tags=dict(info.tags), lock_mode=info.lock_mode,
                                        lock_until_ns=info.lock_until_ns,
                                        legal_hold=info.legal_hold, meta_ns=info.meta_ns,
                                        acl=info.acl)
            done = await dst.set.commit_all([UpdateVersion(bucket, key, fresh.pack())])
            done.require(dst.write_quorum, f"metadata of moved {bucket}/{key}")
        return PRESENT
    if not info.versioned:
        null = await dst.resolve_version(bucket, key, "null")
        if null is not None and null.info.order > info.order:
            return SUPERSEDED
    new = reshaped(dst, info)
    blobs: dict[int, bytes] | None = None
    if info.delete_marker:
        positions = dst.online_positions()
    elif len(info.parts) <= 1 and info.stored_size <= dst.inline_limit:
        reader = ObjectReader(src, info, 0, info.stored_size)
        data = await reader.read()
        if info.parts and not info.encryption:
            want = _md5(info.parts[0].etag)
            if want is not None and hashlib.md5(data).digest() != want:
                raise DigestMismatch("MD5", want.hex(), hashlib.md5(data).hexdigest())
        new = dataclasses.replace(new, inline=True)
        blobs = dst.inline_blobs(new, data)
        positions = dst.online_positions()
    else:
        positions = await _write_parts(src, dst, info)
    record = new.pack()
    async with dst.key_lock(bucket, key):
        done = await dst.set.commit_all(
            lambda p: [PutObject(bucket, key, record, blobs[p] if blobs else None)], positions)
    applied = done.applied()
    firsts = done.firsts()
    # Disks that already had this very version (an interrupted earlier move):
    # their files are the same files, written again; they must stay.
    present = {p for p, r in firsts.items() if p not in applied and r.record is not None
               and record_version(r.record) == info.order}
    if len(done.results) < dst.write_quorum:
        await dst.set.commit_all(
            lambda p: [RestoreObject(bucket, key, new.mtime_ns, new.version_id,
                                     applied[p].record, applied[p].inline)], applied)
        for data_id, numbers in new.own_files().items():
            for pos in positions:
                if pos not in present:
                    dst.background(dst.purge(pos, data_id, numbers))
        done.require(dst.write_quorum, f"move of {bucket}/{key}")
    for pos in positions:
        if pos in applied:
            continue
        if pos in present:
            dst.background(dst.set.commit_all([ClearPending(new.version_id)], [pos]))
        else:  # a newer null version won there, or the disk failed: ours is garbage
            for data_id, numbers in new.own_files().items():
                dst.background(dst.purge(pos, data_id, numbers))
    for pos, replaced in applied.items():
        dst.purge_displaced(pos, bucket, key, replaced.record, new.version_id)
    if len(applied) + len(present) < dst.n:
        dst.heal_queue.add(bucket, key)
    if applied:
        return COPIED
    return PRESENT if present else SUPERSEDED


async def drop_version(src: ObjectStore, info: ObjectInfo, purge: Purge | None = None) -> None:
    """Remove version ``info`` from ``src`` after it was copied elsewhere.

    ``purge(position, data id, part numbers)`` disposes of the shard files the
    version leaves behind (default: at once); they are pending records until
    then, so a crash in between loses nothing and leaks nothing.
    """
    bucket, key = info.bucket, info.key
    done = await src.set.commit_all([DeleteVersion(bucket, key, info.mtime_ns, info.version_id)])
    for pos, replaced in done.applied().items():
        if replaced.record is None or record_inline(replaced.record):
            continue
        for data_id, numbers in ObjectInfo.unpack(bucket, key, replaced.record).files().items():
            if purge is None:
                src.background(src.purge(pos, data_id, numbers))
            else:
                purge(pos, data_id, list(numbers))
    done.require(src.write_quorum, f"removal of moved {bucket}/{key}")
    if len(done.results) < src.n:
        src.heal_queue.add(bucket, key)

