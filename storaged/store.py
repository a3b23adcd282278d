"""ObjectStore: the engine's public API over one erasure set of disks.

Buckets and objects with S3 semantics, minus the HTTP: streaming puts and
ranged gets, listing, copy, delete, healing. Every method that touches shard
data is a coroutine; hashing, coding and file I/O run in a thread pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import msgpack

from erasure import Codec

from . import multipart, usage
from .buffers import BATCH_BYTES, POOL_BATCHES, BufferPool
from .disk import Disk, LocalDisk
from .erasure_set import ErasureSet
from .errors import (
    BucketExists,
    BucketNotEmpty,
    DeleteMarker,
    InvalidBucketState,
    InvalidRange,
    NoSuchBucket,
    NoSuchKey,
    NoSuchVersion,
    ReadOnly,
    ReadQuorumError,
    StorageError,
    WriteQuorumError,
)
from .format import assemble
from .healing import Healer, HealReport, Progress, heal_all, resolve_pending
from .layout import Geometry, distribution
from .listing import ListPage, list_objects, list_versions
from .locks import KeyLocks
from .meta import ObjectInfo, new_id, parse_version, record_inline, record_version
from .metadb import (
    ClearPending,
    DeleteBucket,
    DeleteVersion,
    PutBucket,
    PutBucketConfig,
    UpdateVersion,
    newest_settings,
)
from .quorum import Resolved, resolve
from .reader import ObjectReader, inline_blob
from .request_memo import inline_key, request_memo
from .stripes import CORRUPT, Damage
from .writer import Body, Condition, Finalize, ObjectAttrs, Seal, commit_version, put_object

log = logging.getLogger("basalt.storaged")

T = TypeVar("T")

BLOCK_SIZE = 1 << 20
INLINE_LIMIT = 128 * 1024


def default_ec(disks: int) -> tuple[int, int]:
    """Erasure coding chosen from the disk count (parity grows with the set)."""
    if disks < 1:
        raise ValueError("at least one disk is needed")
    if disks == 1:
        return 1, 0
    if disks <= 3:
        return disks - 1, 1
    if disks <= 7:
        return disks - 2, 2
    return disks - 4, 4


@dataclasses.dataclass(frozen=True)
class BucketInfo:
    name: str
    created_ns: int


@dataclasses.dataclass(frozen=True)
class BucketSettings:
    """What the write path needs of a bucket's settings."""

    versioning: str = ""          # "" (never enabled) | Enabled | Suspended
    lock: Any = None              # object_lock.LockConfig when object lock is on


@dataclasses.dataclass(frozen=True)
class DeleteResult:
    version_id: str | None        # client version id of the removed version or new marker
    delete_marker: bool           # a marker was created, or the removed version was one


@dataclasses.dataclass(frozen=True)
class VersionEntry:
    info: ObjectInfo
    is_latest: bool


@dataclasses.dataclass
class VersionPage:
    entries: list[VersionEntry]
    prefixes: list[str]
    truncated: bool
    next_key_marker: str
    next_version_marker: str


class HealQueue:
    """Objects waiting for the background healer (deduplicated)."""

    def __init__(self, on_add: Callable[[], None] | None = None) -> None:
        self._items: dict[tuple[str, str], bool] = {}
        self.on_add = on_add

    def add(self, bucket: str, key: str, deep: bool = False) -> None:
        self._items[(bucket, key)] = self._items.get((bucket, key), False) or deep
        if self.on_add:
            self.on_add()

    def pop(self) -> tuple[tuple[str, str], bool] | None:
        if not self._items:
            return None
        item = next(iter(self._items))
        return item, self._items.pop(item)

    def __len__(self) -> int:
        return len(self._items)


# Within one S3 request the bucket's record and settings are read from the disks
# once (a PUT consults them for the bucket check, versioning, object lock,
# lifecycle headers): see request_scope. A store change to them clears it.
def _changes_buckets(method: Callable) -> Callable:
    """A store method changing bucket records or settings: the request's
    memory of them is dropped before and after it."""
    @functools.wraps(method)
    async def changing(*args: Any, **kwargs: Any) -> Any:
        memo = request_memo()
        if memo is not None:
            memo.clear()
        try:
            return await method(*args, **kwargs)
        finally:
            if memo is not None:
                memo.clear()
    return changing


async def copy_through(store: Any, src_bucket: str, src_key: str, dst_bucket: str,
                       dst_key: str, attrs: ObjectAttrs | None,
                       source: ObjectInfo | None) -> ObjectInfo:
    """Copy an object by reading it from ``store`` and putting it back there
    (``attrs`` replaces the metadata, else it is kept)."""
    source = source or await store.head_object(src_bucket, src_key)
    if attrs is None:
        attrs = ObjectAttrs(source.content_type, dict(source.headers), dict(source.user_meta),
                            dict(source.tags))
    reader = await store.get_object(src_bucket, src_key, info=source)
    try:
        return await store.put_object(dst_bucket, dst_key, reader, size=source.size,
                                      attrs=attrs)
    finally:
        await reader.aclose()


def _settled(answers: Sequence[tuple[Disk, Any]], with_bucket: bool) -> bool:
    """Disks' ``object_view`` answers that all hold one record of the key (and,
    ``with_bucket``, one record of its bucket), none of them being healed."""
    (state, record, _), first = answers[0][1], answers[0][0]
    if not record or first.healing or (with_bucket and not state[0]):
        return False
    return all(not disk.healing and view[1] == record
               and (not with_bucket or view[0][0] == state[0])
               for disk, view in answers[1:])


class BucketNames(Protocol):
    """Where a cluster claims bucket names (see ObjectStore.bucket_names)."""

    async def claim(self, name: str, record: bytes) -> bool:
        """True for exactly one of concurrent claimants; False: the name is taken."""

    async def release(self, name: str, record: bytes) -> None:
        """Give the name up, if ``record`` is still what holds it."""


class WriteGate:
    """What every store (one erasure set, or the sets of several pools) does
    before writing: refuse while read-only, and stamp the write with a time in
    ns that never goes back within the store."""

    read_only: str | None
    _last_stamp: int

    def check_writable(self) -> None:
        """Raise ReadOnly while the store takes no writes."""
        if self.read_only is not None:
            raise ReadOnly(self.read_only)

    def stamp(self) -> int:
        """A modification time in ns, strictly increasing within this store."""
        self._last_stamp = max(time.time_ns(), self._last_stamp + 1)
        return self._last_stamp

    def stamp_after(self, ns: int) -> None:
        """Make the next :meth:`stamp` later than ``ns`` (another process's)."""
        self._last_stamp = max(self._last_stamp, ns)


class ObjectStore(WriteGate):
    """Buckets and objects on one erasure set."""

    def __init__(self, disks: Sequence[Disk], *, inline_limit: int = INLINE_LIMIT,
                 batch_bytes: int = BATCH_BYTES, threads: int | None = None,
                 buffer_limit: int = POOL_BATCHES, min_part_size: int = multipart.MIN_PART_SIZE,
                 upload_expiry: float = 7 * 86400) -> None:
        fmt = disks[0].format
        self.set = ErasureSet(disks, fmt.k, fmt.m)
        self.disks = self.set.disks
        self.k, self.m, self.n = fmt.k, fmt.m, fmt.k + fmt.m
        self.write_quorum = self.set.write_quorum
        self.geometry = Geometry(self.k, self.m, fmt.block_size)
        self.codec = Codec(self.k, self.m)
        self.inline_limit = min(inline_limit, fmt.block_size)
        self.buffers = BufferPool(self.geometry, max(1, batch_bytes // fmt.block_size),
                                  buffer_limit)
        self.scratch = self.buffers.scratch
        self.pool = concurrent.futures.ThreadPoolExecutor(
            threads or max(16, 4 * self.n), thread_name_prefix="basalt-io")
        self.stats: Counter[str] = Counter()
        self.on_event: Callable[[str, int], None] | None = None  # metrics hook
        self.min_part_size = min_part_size
        self.upload_expiry = upload_expiry  # seconds before an abandoned upload is aborted
        self.lifecycle_day_ns = 86400 * 10**9  # a lifecycle "day" (shorter in tests and demos)
        # Set by a server with several processes on these disks (see locks.KeyLocks).
        self.key_locks: KeyLocks | None = None
        self.healer = Healer(self)
        self.heal_queue = HealQueue(self.healer.wake)
        self._locks: dict[tuple[str, str], list[Any]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._last_stamp = 0
        # Why the store takes no writes now (None: it does); set by a cluster node
        # out of touch with etcd. Healing goes on: it only restores what was written.
        self.read_only: str | None = None
        # Whether this process runs a background job ("heal" full passes,
        # "uploads" expiry, "lifecycle"): a cluster node runs one only while it
        # leads the cluster's election for it; a lone server always does.
        self.leads: Callable[[str], bool] = lambda job: True
        # A cluster's register of bucket names (etcd): a creation claims the name
        # there first, so creators on different nodes never both win. None on a
        # lone server, where the set's first disk decides (see make_bucket).
        self.bucket_names: BucketNames | None = None

    # lifecycle -------------------------------------------------------------------

    @classmethod
    def open(cls, roots: Sequence[str], *, ec: tuple[int, int] | None = None,
             block_size: int = BLOCK_SIZE, sync: bool = True, map_size: int = 1 << 40,
             clean: bool = True, create: Callable[[str], bool] | None = None,
             **kwargs: Any) -> ObjectStore:
        """Open (formatting when new) the disk directories ``roots``.

        ``clean`` is the process that owns the disks at start-up: it removes
        leftovers of interrupted writes and formats new or wiped disks; other
        processes (S3 workers) leave unformatted disks offline for it.
        ``create(root)``: a missing root may be recreated (default: every root;
        the server allows it only inside its data dir). Disks ruled out by their
        mount facts stay offline with a reason (see format.assemble).
        """
        roots = [os.path.abspath(r) for r in roots]
        k, m = ec if ec is not None else (None, None)
        if not any(os.path.exists(os.path.join(r, "format.json")) for r in roots) and ec is None:
            k, m = default_ec(len(roots))
        disks = [LocalDisk(slot, sync=sync, map_size=map_size)
                 for slot in assemble(roots, k, m, block_size, format=clean, create=create)]
        for disk in disks:
            if disk.reason is not None:
                log.warning("disk offline", extra={"fields": {"path": disk.root,
                                                              "reason": disk.reason}})
                continue
            disk.open()
            if clean:
                disk.clean_tmp()
        return cls(disks, **kwargs)

    async def start(self, *, heal: bool = True, settle: bool = True, owner: bool = True) -> None:
        """Settle interrupted writes and start background healing.

        ``owner`` is the process responsible for the disks: it settles
        interrupted writes, reformats replaced disks and runs full heals.
        Other processes serving the same disks pass False.
        """
        self.healer.owner = owner
        if settle and owner:
            settled = await resolve_pending(self)
            if settled:
                log.info("settled %d interrupted writes", settled)
        if heal:
            self.healer.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.healer.stop()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for disk in self.disks:
            disk.close()
        self.pool.shutdown(wait=True)

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run blocking ``fn(*args)`` in the engine's thread pool."""
        return asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def background(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def online_positions(self) -> list[int]:
        return self.set.online_positions()

    def offline_positions(self) -> frozenset[int]:
        return self.set.offline_positions()

    def disk_states(self) -> list[dict[str, Any]]:
        """Per disk: position, path, state (online | healing | offline) and, when
        offline, the reason."""
        states = []
        for d in self.disks:
            state = ("healing" if d.healing else "online") if d.online else "offline"
            entry: dict[str, Any] = {"position": d.position, "path": d.name,
                                     "state": state}
            if state == "offline":
                entry["reason"] = d.reason or "unavailable"
            states.append(entry)
        return states

    # buckets ---------------------------------------------------------------------

    async def _bucket_state(self, name: str) -> list[tuple[Disk, tuple[bytes | None, dict]]]:
        """Every disk's record and settings of a bucket, asked once per request."""
        memo = request_memo()
        key = (id(self), name)  # one request may use several stores (sets)
        if memo is not None and key in memo:
            return memo[key]
        answers = await self._ask_bucket_state(name)
        if memo is not None:
            memo[key] = answers
        return answers

    async def _ask_bucket_state(self, name: str) -> list[tuple[Disk, Any]]:
        """Every disk's bucket state — or, where disks are remote (each asked is
        a round trip), K of them when they agree: the local ones and the rest
        at random. K answers meet every write quorum (K > N - W), so the newest
        setting is among them, and K records that agree are a vote."""
        online = self.set.online_positions()
        local = [p for p in online if self.disks[p].local]
        remote = [p for p in online if not self.disks[p].local]
        if not remote or len(online) <= self.k:
            return await self.set.ask("bucket_state", name)
        chosen = local + random.sample(remote, max(0, self.k - len(local)))
        answers = await self.set.ask("bucket_state", name, positions=chosen)
        records = {raw for _, (raw, _) in answers}
        if len(answers) >= self.k and len(records) == 1 and not any(
                disk.healing for disk, _ in answers):
            return answers
        rest = await self.set.ask("bucket_state", name,
                                  positions=[p for p in online if p not in chosen])
        return sorted(answers + rest, key=lambda answer: answer[0].position)

    async def bucket_info(self, name: str) -> BucketInfo | None:
        return await self._derived("info", name, self._bucket_info)

    async def _derived(self, what: str, name: str, derive: Callable[[str], Awaitable[T]]) -> T:
        """``derive(name)``, once per request: a request asks for its bucket's
        record and settings several times (existence, owner, policy, versioning,
        lock, quota, lifecycle), all answered from the same disks' answers."""
        memo = request_memo()
        key = (what, id(self), name)
        if memo is not None and key in memo:
            return memo[key]
        value = await derive(name)
        if memo is not None:
            memo[key] = value
        return value

    async def _bucket_info(self, name: str) -> BucketInfo | None:
        votes: Counter[bytes] = Counter()
        answered = 0
        for disk, (raw, _) in await self._bucket_state(name):
            if raw is not None:
                votes[raw] += 1
                if votes[raw] >= self.k:  # a read quorum agrees
                    return BucketInfo(name, msgpack.unpackb(raw)["ct"])
            if raw is not None or not disk.healing:
                answered += 1
        if answered < self.n and sum(votes.values()) + self.n - answered >= self.write_quorum:
            raise ReadQuorumError(f"bucket {name}: too many disks unavailable to tell")
        return None

    async def require_bucket(self, name: str) -> BucketInfo:
        info = await self.bucket_info(name)
        if info is None:
            raise NoSuchBucket(name)
        return info

    async def bucket_configs(self, name: str) -> dict[str, bytes]:
        """A bucket's settings (kind → value): the newest stamp wins (a setting
        was stored on a write quorum, so every reader sees one disk that has it).
        The caller must not change the dict (it serves the rest of the request)."""
        return await self._derived("configs", name, self._bucket_configs)

    async def _bucket_configs(self, name: str) -> dict[str, bytes]:
        held = [configs for _, (_, configs) in await self._bucket_state(name)]
        return {kind: value for kind, (_, value) in newest_settings(held).items()
                if value is not None}

    async def bucket_config(self, name: str, kind: str) -> bytes | None:
        """One kind of a bucket's settings: versioning, lock, lifecycle, tagging
        (NoSuchBucket when there is no such bucket)."""
        value = (await self.bucket_configs(name)).get(kind)
        if value is None:
            await self.require_bucket(name)
        return value

    async def bucket_settings(self, name: str) -> BucketSettings:
        configs = await self.bucket_configs(name)
        lock = None
        if "lock" in configs:
            from .object_lock import LockConfig
            lock = LockConfig.unpack(configs["lock"])
        return BucketSettings(configs.get("versioning", b"").decode(), lock)

    async def versioning(self, name: str) -> str:
        """"" (never enabled), "Enabled" or "Suspended"."""
        return (await self.bucket_settings(name)).versioning

    @_changes_buckets
    async def set_bucket_config(self, name: str, kind: str, value: bytes | None) -> None:
        """Set (None: remove) one kind of a bucket's settings on a write quorum.

        Versioning cannot be suspended while object lock is on.
        """
        self.check_writable()
        await self.require_bucket(name)
        if kind == "versioning" and value != b"Enabled" and (await self.bucket_settings(name)).lock:
            raise InvalidBucketState("An Object Lock configuration is present on this bucket, "
                                     "so the versioning state cannot be changed.")
        done = await self.set.commit_all([PutBucketConfig(name, kind, self.stamp(), value)])
        done.require(self.write_quorum, f"bucket {name} {kind} settings", len(done.applied()))

    async def list_buckets(self) -> list[BucketInfo]:
        names: set[str] = set()
        for _, held in await self.set.ask("buckets"):
            names.update(held)
        infos = await asyncio.gather(*(self.bucket_info(n) for n in sorted(names)))
        return [i for i in infos if i is not None]

    async def bucket_usage(self, name: str) -> usage.Usage:
        """(bytes, objects) of a bucket's versions holding data, from every disk's
        counters (see storaged/usage.py: the largest, from a read quorum)."""
        answers = await self.set.ask("get", usage.TABLE, name.encode())
        return usage.reduce(((disk.healing, raw) for disk, raw in answers), self.k,
                            f"bucket {name}")

    @_changes_buckets
    async def make_bucket(self, name: str, settings: dict[str, bytes] | None = None) -> BucketInfo:
        """Create a bucket, with initial ``settings`` (kind → value, e.g. object lock)."""
        self.check_writable()
        if await self.bucket_info(name) is not None:
            raise BucketExists(name)
        info = BucketInfo(name, time.time_ns())
        # A creator id makes this record ours alone: a rollback removes only it.
        raw = msgpack.packb({"ct": info.created_ns, "by": new_id()})
        ops = [PutBucket(name, raw)] + [PutBucketConfig(name, kind, info.created_ns, value)
                                        for kind, value in (settings or {}).items()]
        if self.bucket_names is not None and not await self.bucket_names.claim(name, raw):
            raise BucketExists(name)
        try:
            return await self._make_bucket(name, info, raw, ops)
        except BaseException:
            if self.bucket_names is not None:
                await self.bucket_names.release(name, raw)
            raise

    async def _make_bucket(self, name: str, info: BucketInfo, raw: bytes,
                           ops: list[Any]) -> BucketInfo:
        positions = self.online_positions()
        # The first disk that answers decides between concurrent creators (in
        # any process): its LMDB write lock serialises them, PutBucket only
        # adds a missing bucket, and only its winner goes on to the others.
        ok: list[int] = []
        while positions and not ok:
            first = positions.pop(0)
            try:
                created = (await self.disks[first].commit(ops))[0]
            except Exception:
                continue
            if not created:
                raise BucketExists(name)
            ok.append(first)
        ok += list((await self.set.commit_all(ops, positions)).applied())
        if len(ok) < self.write_quorum:
            await self.set.commit_all([DeleteBucket(name, True, raw)], ok)
            raise WriteQuorumError(f"bucket {name}: {len(ok)} disks committed")
        return info

    @_changes_buckets
    async def delete_bucket(self, name: str) -> None:
        self.check_writable()
        await self.require_bucket(name)
        if (await list_versions(self, name, max_keys=1)).entries:
            raise BucketNotEmpty(name)
        for upload in (await multipart.list_uploads(self, name, max_uploads=1 << 30)).uploads:
            await multipart.end_upload(self, name, upload.key, upload.upload_id)
        records = [r for r in (await self.set.vote("get_bucket", name)).values() if r]
        done = await self.set.commit_all([DeleteBucket(name, force=True)])
        done.require(self.write_quorum, f"deletion of bucket {name}")
        if self.bucket_names is not None and records:
            await self.bucket_names.release(name, Counter(records).most_common(1)[0][0])

    # objects ---------------------------------------------------------------------

    async def records(self, bucket: str, key: str) -> dict[int, bytes | None]:
        """Each readable disk's record of an object.

        A disk still being healed has not got every record back yet: what it
        holds counts, what it lacks is not evidence of absence.
        """
        return await self.set.vote("get_object", bucket, key)

    async def resolve(self, bucket: str, key: str, *, body: bool = False) -> Resolved | None:
        """The latest version of a key, resolved by quorum. ``body``: the caller
        reads the object next, so the inline shards of a small one come along
        (kept for :func:`~storaged.reader.read_inline` in the request's scope)."""
        records = await self._latest_records(bucket, key, body)
        return resolve(bucket, key, records, self.k, self.write_quorum,
                       offline=self.n - len(records))

    async def _latest_records(self, bucket: str, key: str, body: bool) -> dict[int, bytes | None]:
        """:meth:`records`, asked in one query per disk together with what the
        request reads next: the bucket's state (unless the request has it) and,
        for ``body``, the inline shards. Each is a round trip to a remote disk."""
        memo = request_memo()
        if memo is None:
            return await self.records(bucket, key)
        fetched = memo.get(("records", id(self), bucket, key, body))
        if fetched is not None:  # prefetched by this GET/HEAD (see :meth:`prefetch`)
            return fetched
        state_key = (id(self), bucket)
        with_bucket = state_key not in memo
        answers = await self._object_views(bucket, key, with_bucket, body)
        if with_bucket:
            memo[state_key] = [(disk, state) for disk, (state, _, _) in answers]
        if body:
            memo[inline_key(self, bucket, key)] = {
                disk.position: inline for disk, (_, _, inline) in answers if inline}
        # as ErasureSet.vote: a healing disk's silence is no evidence of absence
        return {disk.position: record or None for disk, (_, record, _) in answers
                if record or not disk.healing}

    async def _object_views(self, bucket: str, key: str, with_bucket: bool, body: bool
                            ) -> list[tuple[Disk, Any]]:
        """Each disk's ``object_view`` — or, when they settle it, only those of the
        K disks that hold the key's data shards (``distribution``: the shards a
        GET of a small object reads, no decoding). K answers meet every write
        quorum (K > N - W), so K disks holding the same record (and the same
        bucket record) have the latest committed one, and the newest setting is
        among theirs, as in :meth:`_ask_bucket_state`. Anything else (a disk
        offline, remote or healing, an absent key, disagreement) asks the rest."""
        chosen = distribution(bucket, key, self.n)[:self.k]
        if not all(self.disks[p].online and self.disks[p].local for p in chosen):
            return await self.set.ask("object_view", bucket, key, with_bucket, body)
        answers = await self.set.ask("object_view", bucket, key, with_bucket, body,
                                     positions=chosen)
        if len(answers) == self.k and _settled(answers, with_bucket):
            return answers
        rest = await self.set.ask("object_view", bucket, key, with_bucket, body,
                                  positions=[p for p in self.set.online_positions()
                                             if p not in chosen])
        return sorted(answers + rest, key=lambda answer: answer[0].position)

    async def prefetch(self, bucket: str, key: str, *, body: bool = False) -> None:
        """Read the bucket's state and a key's latest records now, in the one query
        per disk a GET makes, for this request's next :meth:`resolve` (the gateway
        judges the request by the bucket's settings before it reads the object)."""
        memo = request_memo()
        if memo is not None and (id(self), bucket) not in memo:
            records = await self._latest_records(bucket, key, body)
            memo[("records", id(self), bucket, key, body)] = records

    async def resolve_version(self, bucket: str, key: str, version_id: str) -> Resolved | None:
        """A version by its client id ("null" included), resolved by quorum.

        Raises NoSuchVersion for an id Basalt could not have issued.
        """
        try:
            version = parse_version(version_id)
        except ValueError:
            raise NoSuchVersion(bucket, key, version_id) from None
        records = await self.set.vote("get_version", bucket, key, version)
        return resolve(bucket, key, records, self.k, self.write_quorum,
                       offline=self.n - len(records))

    async def resolve_any(self, bucket: str, key: str, version_id: str | None, *,
                          body: bool = False) -> Resolved | None:
        """The latest version (``version_id`` None) or the one named."""
        if version_id is None:
            return await self.resolve(bucket, key, body=body)
        return await self.resolve_version(bucket, key, version_id)

    async def head_object(self, bucket: str, key: str, version_id: str | None = None, *,
                          body: bool = False) -> ObjectInfo:
        """The info of the current version (or of ``version_id``); ``body``: the
        object is read next (see :meth:`resolve`).

        Raises NoSuchKey / NoSuchVersion / NoSuchBucket when absent, and
        DeleteMarker when the version is a delete marker.
        """
        res = await self.resolve_any(bucket, key, version_id, body=body)
        if res is None:
            await self.require_bucket(bucket)
            if version_id is None:
                raise NoSuchKey(bucket, key)
            raise NoSuchVersion(bucket, key, version_id)
        if res.info.delete_marker:
            raise DeleteMarker(bucket, key, res.info.version, version_id is not None,
                               res.info.mtime_ns)
        return res.info

    async def put_object(self, bucket: str, key: str, body: Body, *, size: int | None = None,
                         attrs: ObjectAttrs | None = None, content_md5: bytes | None = None,
                         hashers: Sequence[Any] = (), finalize: Finalize | None = None,
                         condition: Condition | None = None, seal: Seal | None = None
                         ) -> ObjectInfo:
        """Store an object from an async iterable of byte chunks.

        ``size`` (when known) is enforced; ``content_md5`` is checked against
        the body; ``hashers`` (objects with ``update``) see every byte;
        ``finalize(md5_hex)`` runs before the commit and returns extra checksums
        to store, or raises to reject the body. Nothing is visible unless the
        whole body was stored durably on a write quorum. ``seal`` encrypts it:
        sizes, MD5 and checksums stay the plaintext's, the shards hold its
        sealed form (``attrs.encryption`` says how, for the reader).
        """
        self.check_writable()
        return await put_object(self, bucket, key, body, size=size, attrs=attrs,
                                content_md5=content_md5, hashers=hashers, finalize=finalize,
                                condition=condition, seal=seal)

    async def get_object(self, bucket: str, key: str, offset: int = 0,
                         length: int | None = None, info: ObjectInfo | None = None, *,
                         stored: bool = False) -> ObjectReader:
        """A reader of ``length`` bytes from ``offset`` (to the end when None).

        An encrypted object is read as stored (``stored=True``: offsets into its
        sealed body, which the caller opens); never as if it were plaintext.
        """
        info = info or await self.head_object(bucket, key)
        if info.encryption and not stored:
            raise StorageError(f"{bucket}/{key} is encrypted: read it with its key")
        size = info.stored_size
        if offset < 0 or offset > size or (offset == size and size and length):
            raise InvalidRange(size)
        length = size - offset if length is None else min(length, size - offset)
        return ObjectReader(self, info, offset, length)

    async def delete_object(self, bucket: str, key: str, version_id: str | None = None, *,
                            bypass_governance: bool = False,
                            expect: tuple[int, str] | None = None) -> DeleteResult:
        """Delete as S3 does: without ``version_id`` an unversioned bucket loses
        the object and a versioned one gets a delete marker; with it, that
        version is removed for good — unless object lock protects it.

        ``expect`` (mtime, data id): act only while that version is still the one
        deleted (the latest, without ``version_id``): a background job that judged
        a version must not hit a newer write instead. Nothing is done otherwise.
        """
        self.check_writable()
        if version_id is None and await self.versioning(bucket):
            if expect is not None and not await self._is_latest(bucket, key, expect):
                return DeleteResult(None, False)
            marker = ObjectInfo(bucket, key, new_id(), 0, "", 0, k=self.k, m=self.m,
                                block_size=self.geometry.block_size,
                                dist=tuple(distribution(bucket, key, self.n)), delete_marker=True)
            await self.require_bucket(bucket)
            marker = await commit_version(self, marker, None, None, self.online_positions())
            return DeleteResult(marker.version, True)
        async with self.version_lock(bucket, key):
            res = await self.resolve_any(bucket, key, version_id)
            if res is None:
                await self.require_bucket(bucket)
                return DeleteResult(version_id, False)
            info = res.info
            if expect is not None and (info.mtime_ns, info.version_id) != expect:
                return DeleteResult(None, False)
            if info.lock_mode or info.legal_hold:
                from .object_lock import check_delete
                check_delete(info, time.time_ns(), bypass_governance)
            op = DeleteVersion(bucket, key, info.mtime_ns, info.version_id)
            done = await self.set.commit_all([op])
        for pos, replaced in done.applied().items():
            self.purge_displaced(pos, bucket, key, replaced.record)
        done.require(self.write_quorum, f"deletion of {bucket}/{key}")
        if len(done.results) < self.n:
            self.heal_queue.add(bucket, key)
        return DeleteResult(version_id, info.delete_marker)

    async def _is_latest(self, bucket: str, key: str, version: tuple[int, str]) -> bool:
        res = await self.resolve(bucket, key)
        return res is not None and (res.info.mtime_ns, res.info.version_id) == version

    async def update_object(self, bucket: str, key: str, version_id: str | None, *,
                            tags: dict[str, str] | None = None,
                            retention: tuple[str, int] | None = None,
                            legal_hold: bool | None = None,
                            bypass_governance: bool = False,
                            acl: bytes | None = None) -> ObjectInfo:
        """Change a version's tags, retention, legal hold or ACL (its data stays)."""
        self.check_writable()
        async with self.version_lock(bucket, key):
            info = await self.head_object(bucket, key, version_id)
            changes: dict[str, Any] = {"meta_ns": max(self.stamp(), info.meta_ns + 1)}
            if tags is not None:
                changes["tags"] = dict(tags)
            if retention is not None:
                from .object_lock import check_retention_change
                check_retention_change(info, retention[0], retention[1], time.time_ns(),
                                       bypass_governance)
                changes["lock_mode"], changes["lock_until_ns"] = retention
            if legal_hold is not None:
                changes["legal_hold"] = legal_hold
            if acl is not None:
                changes["acl"] = acl
            info = dataclasses.replace(info, **changes)
            done = await self.set.commit_all([UpdateVersion(bucket, key, info.pack())])
        ok = len(done.applied())
        done.require(self.write_quorum, f"update of {bucket}/{key}", ok)
        if ok < self.n:
            self.heal_queue.add(bucket, key)
        return info

    async def copy_object(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str,
                          attrs: ObjectAttrs | None = None,
                          source: ObjectInfo | None = None) -> ObjectInfo:
        """Copy an object; ``attrs`` replaces the metadata, else it is kept."""
        return await copy_through(self, src_bucket, src_key, dst_bucket, dst_key, attrs, source)

    async def list_objects(self, bucket: str, prefix: str = "", delimiter: str = "",
                           after: str = "", max_keys: int = 1000) -> ListPage:
        """A page of the keys after ``after`` (rolled up at ``delimiter``)."""
        return await list_objects(self, bucket, prefix, delimiter, after, max_keys)

    async def list_versions(self, bucket: str, prefix: str = "", delimiter: str = "",
                            key_marker: str = "", version_marker: str = "",
                            max_keys: int = 1000) -> VersionPage:
        """A page of versions and delete markers in S3 order (key, newest first)."""
        return await list_versions(self, bucket, prefix, delimiter, key_marker, version_marker,
                             max_keys)

    async def heal(self, *, deep: bool = True, progress: Progress | None = None) -> HealReport:
        """Heal every object now (what ``basalt heal`` runs)."""
        await self.healer.settle_disks()
        return await heal_all(self, deep=deep, progress=progress)

    # multipart uploads -------------------------------------------------------------

    async def create_upload(self, bucket: str, key: str, attrs: ObjectAttrs | None = None,
                            checksum_algorithm: str = "",
                            checksum_type: str = "") -> multipart.UploadInfo:
        """Start a multipart upload."""
        self.check_writable()
        return await multipart.create_upload(self, bucket, key, attrs or ObjectAttrs(),
                                             checksum_algorithm, checksum_type)

    async def get_upload(self, bucket: str, key: str, upload_id: str) -> multipart.UploadInfo:
        return await multipart.get_upload(self, bucket, key, upload_id)

    async def upload_part(self, bucket: str, key: str, upload_id: str, number: int, body: Body,
                          **kwargs: Any) -> multipart.PartRecord:
        """Store one part (same options as :meth:`put_object`, minus attrs)."""
        self.check_writable()
        return await multipart.upload_part(self, bucket, key, upload_id, number, body, **kwargs)

    async def list_parts(self, bucket: str, key: str, upload_id: str, after: int = 0,
                         max_parts: int = 1000) -> tuple[list[multipart.PartRecord], bool]:
        return await multipart.list_parts(self, bucket, key, upload_id, after, max_parts)

    async def complete_upload(self, bucket: str, key: str, upload_id: str,
                              parts: Sequence[tuple[int, str]], **kwargs: Any) -> ObjectInfo:
        """Compose the named (number, ETag) parts into the object."""
        self.check_writable()
        return await multipart.complete_upload(self, bucket, key, upload_id, parts, **kwargs)

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self.check_writable()
        await multipart.abort_upload(self, bucket, key, upload_id)

    async def list_uploads(self, bucket: str, **kwargs: Any) -> multipart.UploadPage:
        return await multipart.list_uploads(self, bucket, **kwargs)

    async def part_uses(self, upload_id: str, data_id: str) -> bool:
        return await multipart.part_uses(self, upload_id, data_id)

    async def expire_uploads(self) -> int:
        """Abort uploads older than ``upload_expiry``; how many."""
        return await multipart.expire_uploads(self, int(self.upload_expiry * 1e9))

    # internals shared by the put, get and heal paths -----------------------------

    def inline_blobs(self, info: ObjectInfo, data: bytes) -> dict[int, bytes]:
        shards = self.codec.encode_block(data)
        return {info.dist[i]: inline_blob(info.version_id, s) for i, s in enumerate(shards)}

    @contextlib.asynccontextmanager
    async def key_lock(self, bucket: str, key: str) -> AsyncIterator[None]:
        """Serialise commits to one key within this process."""
        entry = self._locks.setdefault((bucket, key), [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[(bucket, key)]

    @contextlib.asynccontextmanager
    async def version_lock(self, bucket: str, key: str) -> AsyncIterator[None]:
        """:meth:`key_lock`, and across processes too when the server set ``key_locks``:
        held while a version is checked against object lock and changed."""
        async with self.key_lock(bucket, key):
            if self.key_locks is None:
                yield
                return
            # Not cancellable mid-wait: a cancelled waiter would leak the fd.
            fd = await asyncio.shield(self.run(self.key_locks.acquire, bucket, key))
            try:
                yield
            finally:
                self.key_locks.release(fd)

    def count(self, event: str, n: int = 1) -> None:
        """Count an engine event (bitrot found, degraded read, ...)."""
        self.stats[event] += n
        if self.on_event is not None:
            self.on_event(event, n)

    def report_damage(self, info: ObjectInfo, damage: Damage) -> None:
        corrupt = sum(1 for s in damage.bad.values() if s == CORRUPT)
        self.count("shards_corrupt", corrupt)
        self.count("shards_missing", len(damage.bad) - corrupt)
        self.count("degraded_reads")
        if corrupt:
            log.warning("bitrot in %s/%s version %s: shards %s", info.bucket, info.key,
                        info.version_id, sorted(damage.bad))
        self.heal_queue.add(info.bucket, info.key, deep=True)

    async def purge(self, pos: int, vid: str, parts: Sequence[int]) -> None:
        """Delete a version's shard files on one disk and forget its pending record."""
        disk = self.disks[pos]
        if not disk.online:
            return
        try:
            await self.run(disk.purge, vid, parts)
            await disk.commit([ClearPending(vid)])
        except Exception as exc:  # retried at the next start-up
            log.warning("purge of %s on %s failed: %s", vid, disk, exc)

    async def purge_everywhere(self, vid: str, parts: Sequence[int]) -> None:
        await asyncio.gather(*(self.purge(p, vid, parts) for p in self.online_positions()))

    def purge_displaced(self, pos: int, bucket: str, key: str, record: bytes | None,
                        new_vid: str | None = None) -> None:
        """Purge the files of the version a commit replaced on one disk."""
        if record is None or record_inline(record) or record_version(record)[1] == new_vid:
            return
        for data_id, numbers in ObjectInfo.unpack(bucket, key, record).files().items():
            self.background(self.purge(pos, data_id, numbers))
