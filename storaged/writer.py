"""The put path: stream a body into shards on every disk and commit it.

Durability points, in order (each disk independently, in parallel):

1. *Pending*: an LMDB record naming the new version id is committed (synced)
   before any shard file exists, so a crash leaves no file nobody knows about.
2. *Shards*: frames are written to ``tmp/`` with ``pwritev`` while the body
   streams in; at the end each file is fsynced, renamed into ``data/`` and its
   directory fsynced.
3. *Metadata*: the object record is committed in LMDB (synced, batched with
   concurrent requests), clearing the pending record in the same transaction.
   Small objects skip 1-2: their shards go into LMDB with the record.

The write is acknowledged once ``write_quorum`` disks committed step 3.
Otherwise every disk that did commit is rolled back to its previous record and
the client gets an error. A crash anywhere leaves either the previous version
or the new one readable: records pending at start-up are resolved by healing.

MD5 (the ETag) runs in a worker thread beside the coding thread, so a single
upload keeps two cores busy; both read the same batch buffer, which is only
reused once both are done with it. An encrypted body (:class:`Seal`) is hashed
and sealed a piece at a time in a worker thread before it reaches the batches
(:class:`SealedBody`): the shards, their checksums and healing see ciphertext only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .buffers import Batch, Lease
from .disk import ShardWriter
from .errors import DigestMismatch, DiskFull, IncompleteBody, PreconditionFailed, WriteQuorumError
from .layout import distribution
from .meta import ObjectInfo, PartInfo, new_id, record_version
from .metadb import AddPending, PutObject, Replaced, RestoreObject
from .quorum import Resolved
from .stripes import encode_and_write

if TYPE_CHECKING:
    from .store import ObjectStore

T = TypeVar("T")
RACE_RETRIES = 3  # commits retried after losing to a newer write of another process
Body = AsyncIterable[bytes | bytearray | memoryview]
Finalize = Callable[[str], Mapping[str, str] | None]


@dataclasses.dataclass
class ObjectAttrs:
    """What the client says about an object besides its bytes."""

    content_type: str = "binary/octet-stream"
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    user_meta: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    lock_mode: str = ""       # retention asked for; the bucket's default applies otherwise
    lock_until_ns: int = 0
    legal_hold: bool = False
    acl: bytes = b""          # the new version's ACL (gateway.acl's packing); b"": the default
    encryption: str = ""      # how the body is encrypted (kept in the record; no key in clear)


@dataclasses.dataclass
class Seal:
    """How to encrypt a body; the gateway makes it (the engine knows no cipher).

    ``encryptor`` turns plaintext into what is stored (``update(plain)`` →
    sealed bytes so far, ``finish()`` → the rest); ``stored_size(size)`` is the
    stored size of a plaintext of ``size`` bytes; ``etag(md5_hex)`` the ETag
    clients see (None: the plaintext's MD5); ``salt`` is kept with a multipart
    part (``PartInfo.salt``) for the gateway to open it again.
    """

    encryptor: Any
    stored_size: Callable[[int], int]
    etag: Callable[[str], str] | None = None
    salt: bytes = b""

    def etag_of(self, md5_hex: str) -> str:
        return self.etag(md5_hex) if self.etag else md5_hex


@dataclasses.dataclass
class Condition:
    """A conditional write: the object must be absent, or have this ETag."""

    absent: bool = False
    etag: str | None = None


class BodyReader:
    """Copies an async byte stream into batch buffers."""

    def __init__(self, body: Body, size: int | None) -> None:
        self._it = body.__aiter__()
        self._rest: memoryview | None = None
        self.size = size
        self.total = 0
        self.eof = False

    async def fill(self, buf: memoryview, limit: int) -> int:
        """Copy up to ``limit`` bytes into ``buf``; fewer only at end of body."""
        n = 0
        while n < limit:
            if self._rest is None:
                try:
                    chunk = await self._it.__anext__()
                except StopAsyncIteration:
                    self.eof = True
                    break
                self._rest = memoryview(chunk).cast("B")
            take = min(limit - n, len(self._rest))
            buf[n:n + take] = self._rest[:take]
            self._rest = self._rest[take:] if take < len(self._rest) else None
            n += take
        self.total += n
        if self.size is not None:
            if self.total > self.size:
                raise IncompleteBody(f"body is longer than the declared {self.size} bytes")
            if self.eof and self.total < self.size:
                raise IncompleteBody(f"body ended after {self.total} of {self.size} bytes")
        return n

    async def at_end(self) -> bool:
        if self.eof:
            return True
        if self._rest is None:
            try:
                self._rest = memoryview(await self._it.__anext__()).cast("B")
            except StopAsyncIteration:
                self.eof = True
                if self.size is not None and self.total < self.size:
                    raise IncompleteBody(
                        f"body ended after {self.total} of {self.size} bytes") from None
                return True
        if self.size is not None and self.total + len(self._rest) > self.size:
            # now, not at the next fill: a lease sized for the declared body is spent
            raise IncompleteBody(f"body is longer than the declared {self.size} bytes")
        return False


def _md5_update(md5: Any, hashers: Sequence[Any], view: memoryview) -> None:
    md5.update(view)
    for h in hashers:
        h.update(view)


class SealedBody:
    """The stored form of a plaintext body: MD5 (:attr:`md5`) and ``hashers``
    see the plaintext, the iterator yields what ``seal.encryptor`` makes of it.

    Pieces of about a batch are hashed and sealed in a worker thread, one at a
    time (MD5 is sequential) while the next piece is read from the client.
    """

    PIECE = 1 << 20
    SMALL = 64 * 1024  # pieces up to this are done on the event loop (no thread hop)

    def __init__(self, store: ObjectStore, body: Body, seal: Seal,
                 hashers: Sequence[Any]) -> None:
        self.store, self.body, self.seal, self.hashers = store, body, seal, hashers
        self.md5 = hashlib.md5()
        self.size = 0  # plaintext bytes so far

    def _work(self, piece: bytearray, last: bool) -> bytes:
        view = memoryview(piece)
        _md5_update(self.md5, self.hashers, view)
        sealed = self.seal.encryptor.update(view)
        return sealed + self.seal.encryptor.finish() if last else sealed

    def _start(self, piece: bytearray, last: bool) -> Awaitable[bytes]:
        self.size += len(piece)
        if len(piece) <= self.SMALL:
            done = asyncio.get_running_loop().create_future()
            done.set_result(self._work(piece, last))
            return done
        return self.store.run(self._work, piece, last)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pending: Awaitable[bytes] | None = None
        piece = bytearray()
        try:
            async for chunk in self.body:
                piece += chunk
                if len(piece) >= self.PIECE:
                    if pending is not None:
                        yield await pending
                    pending, piece = self._start(piece, False), bytearray()
            if pending is not None:
                yield await pending
            pending = self._start(piece, True)
            yield await pending
            pending = None
        finally:
            if pending is not None:  # abandoned: let the thread's work end first
                await asyncio.gather(pending, return_exceptions=True)


def sealed_reader(store: ObjectStore, body: Body, size: int | None, hashers: Sequence[Any],
            seal: Seal | None) -> tuple[BodyReader, Sequence[Any], SealedBody | None]:
    """The reader of what is stored for ``body``, the hashers left to the stream,
    and the SealedBody when ``seal`` encrypts it."""
    if seal is None:
        return BodyReader(body, size), hashers, None
    sealed = SealedBody(store, body, seal, hashers)
    return (BodyReader(sealed, None if size is None else seal.stored_size(size)), (), sealed)


async def put_object(store: ObjectStore, bucket: str, key: str, body: Body, *,
                     size: int | None = None, attrs: ObjectAttrs | None = None,
                     content_md5: bytes | None = None, hashers: Sequence[Any] = (),
                     finalize: Finalize | None = None,
                     condition: Condition | None = None, seal: Seal | None = None) -> ObjectInfo:
    """Store ``body`` as ``bucket/key``; see :meth:`ObjectStore.put_object`."""
    await store.require_bucket(bucket)
    attrs = attrs or ObjectAttrs()
    chunks, hashers, sealed = sealed_reader(store, body, size, hashers, seal)
    # Small objects never touch the stripe pool: read up to the inline limit
    # into a buffer of their own first.
    head = bytearray(store.inline_limit + 1)
    first = await chunks.fill(memoryview(head), len(head))
    if chunks.eof and first <= store.inline_limit:
        return await _put_inline(store, bucket, key, bytes(head[:first]), attrs, content_md5,
                                 hashers, finalize, condition, seal, sealed)
    stream = ShardStream(store, bucket, key, new_id())

    async def commit(stored: Stored) -> ObjectInfo:
        info = _record(store, bucket, key, stored.data_id, sealed.size if sealed else stored.size,
                       stored.md5_hex, attrs, stored.checksums, inline=False, seal=seal,
                       stored_size=stored.size)
        return await commit_version(store, info, None, condition, stored.positions)

    return await stream.run(chunks, memoryview(head)[:first], content_md5, hashers, finalize,
                            commit, md5=sealed.md5 if sealed else None)


def _check_digest(md5_hex: str, content_md5: bytes | None) -> None:
    if content_md5 is not None and bytes.fromhex(md5_hex) != content_md5:
        raise DigestMismatch("Content-MD5", content_md5.hex(), md5_hex)


def _record(store: ObjectStore, bucket: str, key: str, vid: str, size: int, md5_hex: str,
            attrs: ObjectAttrs, checksums: Mapping[str, str] | None, inline: bool,
            seal: Seal | None = None, stored_size: int = 0) -> ObjectInfo:
    etag = seal.etag_of(md5_hex) if seal else md5_hex
    return ObjectInfo(
        bucket=bucket, key=key, version_id=vid, size=size, etag=etag,
        mtime_ns=time.time_ns(), content_type=attrs.content_type, headers=dict(attrs.headers),
        user_meta=dict(attrs.user_meta), checksums=dict(checksums or {}), k=store.k, m=store.m,
        block_size=store.geometry.block_size, dist=tuple(distribution(bucket, key, store.n)),
        parts=(PartInfo(1, size, etag, stored_size=stored_size if seal else 0),),
        inline=inline, tags=dict(attrs.tags), lock_mode=attrs.lock_mode,
        lock_until_ns=attrs.lock_until_ns, legal_hold=attrs.legal_hold, acl=attrs.acl,
        encryption=attrs.encryption,
    )


async def _put_inline(store: ObjectStore, bucket: str, key: str, data: bytes,
                      attrs: ObjectAttrs, content_md5: bytes | None, hashers: Sequence[Any],
                      finalize: Finalize | None, condition: Condition | None,
                      seal: Seal | None = None, sealed: SealedBody | None = None) -> ObjectInfo:
    if sealed is not None:  # hashed on the way in; ``data`` is sealed
        md5, size = sealed.md5, sealed.size
    else:
        md5, size = hashlib.md5(), len(data)
        if len(data) > 65536:
            await store.run(_md5_update, md5, hashers, memoryview(data))
        else:
            _md5_update(md5, hashers, memoryview(data))
    md5_hex = md5.hexdigest()
    _check_digest(md5_hex, content_md5)
    checksums = finalize(md5_hex) if finalize else None
    vid = new_id()
    info = _record(store, bucket, key, vid, size, md5_hex, attrs, checksums, inline=True,
                   seal=seal, stored_size=len(data))
    blobs = store.inline_blobs(info, data)
    return await commit_version(store, info, blobs, condition, positions=store.online_positions())


@dataclasses.dataclass
class Stored:
    """A body written as shard files: durable on ``positions``, not yet visible."""

    data_id: str
    number: int
    size: int
    md5_hex: str
    checksums: Mapping[str, str] | None
    positions: list[int]


class ShardStream:
    """Stream one body into shard files ``<data_id>.<number>``, hashing as it goes.

    Batches are pipelined through the hashing and coding threads. When the body
    is complete and verified, the files are made durable and ``commit`` (the
    caller's metadata commit) runs — both shielded from client cancellation.
    On any failure before that, every file is removed.
    """

    INFLIGHT = 2  # batches being hashed/written while the next one is read

    def __init__(self, store: ObjectStore, bucket: str, key: str, data_id: str,
                 number: int = 1, upload_id: str = "", direct: bool = False) -> None:
        self.store, self.bucket, self.key = store, bucket, key
        self.data_id, self.number, self.upload_id = data_id, number, upload_id
        self.stage = store.buffers.stage if direct else None
        self.dist = distribution(bucket, key, store.n)
        self.writers: dict[int, ShardWriter] = {}
        self.failed: dict[int, BaseException] = {}

    async def run(self, chunks: BodyReader, head: memoryview, content_md5: bytes | None,
                  hashers: Sequence[Any], finalize: Finalize | None,
                  commit: Callable[[Stored], Awaitable[T]], md5: Any = None) -> T:
        """Stream ``head`` (bytes already read) and the rest of ``chunks``.

        ``md5``: the body's MD5 as its source keeps it (a SealedBody's, of the
        plaintext); the stored bytes are then not hashed here."""
        store = self.store
        inflight: deque[tuple[Batch, asyncio.Future | None, asyncio.Future]] = deque()
        own_md5 = md5 is None
        md5 = md5 or hashlib.md5()
        batches = self.INFLIGHT + 1
        if chunks.size is not None:  # a short body never holds more than it fills
            batches = min(batches, -(-chunks.size // store.buffers.batch_bytes))
        lease = await store.buffers.lease(max(1, batches))
        batch: Batch | None = None
        try:
            await self._open()
            batch = lease.acquire()
            batch.data[:len(head)] = head
            filled = len(head) + await chunks.fill(batch.data[len(head):],
                                                   store.buffers.batch_bytes - len(head))
            block = 0
            hashing: asyncio.Future | None = None
            while filled:
                # A node that went read-only meanwhile (its cluster lease lost:
                # cut off, most likely) stops here, not after its RPC timeouts.
                store.check_writable()
                if hashing is not None:
                    await hashing  # MD5 is sequential: one batch at a time
                view = batch.data[:filled]
                hashing = store.run(_md5_update, md5, hashers, view) if own_md5 else None
                writing = store.run(encode_and_write, store.codec, store.geometry, self.dist,
                                    batch, filled, block, dict(self.writers), store.scratch)
                inflight.append((batch, hashing, writing))
                block += batch.blocks
                batch = None
                if len(inflight) > self.INFLIGHT:
                    await self._retire(inflight.popleft(), lease)
                if await chunks.at_end():
                    break
                batch = lease.acquire()
                filled = await chunks.fill(batch.data, store.buffers.batch_bytes)
            while inflight:
                await self._retire(inflight.popleft(), lease)
            md5_hex = md5.hexdigest()
            _check_digest(md5_hex, content_md5)
            checksums = finalize(md5_hex) if finalize else None
        except BaseException:
            for item in inflight:
                await asyncio.gather(*(f for f in item[1:] if f is not None),
                                     return_exceptions=True)
            lease.close()
            await asyncio.shield(self.discard())
            raise
        lease.close()
        # Past this point the body is complete: finish even if the client goes away.
        return await asyncio.shield(self._finish(chunks.total, md5_hex, checksums, commit))

    async def _open(self) -> None:
        store = self.store
        pending = AddPending(self.data_id, self.bucket, self.key, [self.number], self.upload_id)
        done = await store.set.commit_all([pending])
        done.require(store.write_quorum, f"writing {self.bucket}/{self.key}")
        ready = [store.disks[p] for p in done.results]
        opened = await asyncio.gather(
            *(store.run(d.create_shard, self.data_id, self.number, self.stage) for d in ready),
            return_exceptions=True)
        for d, w in zip(ready, opened):
            if isinstance(w, BaseException):
                self.failed[d.position] = w
            else:
                self.writers[d.position] = w
        self._require(len(self.writers), list(self.failed.values()))

    def _require(self, ok: int, results: Sequence[Any]) -> None:
        if ok < self.store.write_quorum:
            errors = [r for r in results if isinstance(r, BaseException)]
            if any(isinstance(e, DiskFull) for e in errors):
                raise DiskFull(f"not enough disks with free space for {self.bucket}/{self.key}")
            raise WriteQuorumError(f"{ok} disks writable, {self.store.write_quorum} needed")

    async def _retire(self, item: tuple[Batch, asyncio.Future | None, asyncio.Future],
                      lease: Lease) -> None:
        batch, hashing, writing = item
        try:
            if hashing is not None:
                await hashing
            failed = await writing
        finally:
            lease.release(batch)
        for pos, exc in failed.items():
            # Several batches in flight can fail on the same disk: the first
            # one retires its writer. Aborting may be a request to another node.
            writer = self.writers.pop(pos, None)
            if writer is not None:
                with contextlib.suppress(Exception):
                    await self.store.run(writer.abort)
            self.failed[pos] = exc
        self._require(len(self.writers), list(self.failed.values()))

    async def _finish(self, size: int, md5_hex: str, checksums: Mapping[str, str] | None,
                      commit: Callable[[Stored], Awaitable[T]]) -> T:
        store = self.store
        positions = list(self.writers)
        results = await asyncio.gather(*(store.run(self.writers[p].commit) for p in positions),
                                       return_exceptions=True)
        done = [p for p, r in zip(positions, results) if not isinstance(r, BaseException)]
        for p, r in zip(positions, results):
            if isinstance(r, BaseException):
                self.failed[p] = r
        self.writers.clear()
        try:
            self._require(len(done), results)
        except BaseException:
            await self.discard()
            raise
        return await commit(Stored(self.data_id, self.number, size, md5_hex, checksums, done))

    async def discard(self) -> None:
        """Remove this stream's files (and pending records) everywhere."""
        store = self.store
        for w in self.writers.values():
            await store.run(w.abort)
        self.writers.clear()
        await store.purge_everywhere(self.data_id, [self.number])


async def commit_version(store: ObjectStore, info: ObjectInfo,
                         blobs: dict[int, bytes] | None, condition: Condition | None,
                         positions: Sequence[int]) -> ObjectInfo:
    """Commit ``info`` on ``positions``; roll back unless a write quorum took it.

    The bucket's versioning decides whether it becomes a new version (Enabled)
    or the key's null version, replacing the previous null one. ``blobs`` holds
    each disk's inline shard for small objects. Versions it displaced are
    purged in the background once the write stands.
    """
    settings = await store.bucket_settings(info.bucket)
    versioned = settings.versioning == "Enabled"
    async with store.key_lock(info.bucket, info.key):
        if condition is not None:
            check_condition(await store.resolve(info.bucket, info.key), info.bucket, info.key,
                            condition)
        for attempt in range(RACE_RETRIES + 1):
            # Stamped under the lock with a clock that never goes back in this
            # process, so the last commit is the newest and every disk keeps it.
            stamp = store.stamp()
            info = dataclasses.replace(info, mtime_ns=stamp, versioned=versioned)
            if not info.delete_marker and not info.lock_mode and settings.lock is not None:
                mode, until = settings.lock.default_retention(stamp)
                info = dataclasses.replace(info, lock_mode=mode, lock_until_ns=until)
            record = info.pack()
            ops = {p: [PutObject(info.bucket, info.key, record, blobs[p] if blobs else None)]
                   for p in positions}
            done = await store.set.commit_all(ops.__getitem__, positions)
            applied: dict[int, Replaced] = done.applied()
            newer = max((record_version(r.record)[0] for p, r in done.firsts().items()
                         if p not in applied and r.record is not None), default=0)
            if len(applied) >= store.write_quorum:
                break
            await _undo(store, info, applied)
            if newer and attempt < RACE_RETRIES:
                # Another process committed a newer null version between our stamp
                # and our commit: S3's last writer wins, so go again, newer still.
                store.stamp_after(newer)
                continue
            for data_id, numbers in info.own_files().items():
                await store.purge_everywhere(data_id, numbers)
            done.require(store.write_quorum, f"commit of {info.bucket}/{info.key}", len(applied))
    if len(applied) < store.n:
        store.heal_queue.add(info.bucket, info.key)
    for pos in positions:
        if pos not in applied:  # a newer version won on that disk: ours is garbage there
            for data_id, numbers in info.own_files().items():
                store.background(store.purge(pos, data_id, numbers))
    for pos, replaced in applied.items():
        store.purge_displaced(pos, info.bucket, info.key, replaced.record, info.version_id)
    return info


def check_condition(current: Resolved | None, bucket: str, key: str,
                    condition: Condition) -> None:
    """Raise PreconditionFailed unless the current version satisfies ``condition``."""
    if current is not None and current.info.delete_marker:
        current = None
    if condition.absent and current is not None:
        raise PreconditionFailed(f"{bucket}/{key} already exists")
    if condition.etag is not None and (
            current is None or condition.etag not in (current.info.etag, "*")):
        raise PreconditionFailed(f"{bucket}/{key} does not have ETag {condition.etag}")


async def _undo(store: ObjectStore, info: ObjectInfo, applied: dict[int, Replaced]) -> None:
    """Remove ``info``'s record where it was applied, restoring what it displaced."""
    await store.set.commit_all(
        lambda p: [RestoreObject(info.bucket, info.key, info.mtime_ns, info.version_id,
                                 applied[p].record, applied[p].inline)], applied)
