"""PooledStore: one object store over several erasure sets, grouped in pools.

An :class:`~storaged.store.ObjectStore` is one erasure set. A cluster has
*pools*, each a fixed group of sets formed once, and grows by adding pools (the
MinIO server-pool model). :class:`PooledStore` is a drop-in for ``ObjectStore``
as the S3 gateway, the lifecycle scanner and the admin API use it.

Placement
    Inside a pool an object (bucket, key) lives in exactly one set,
    :func:`set_index` (xxh3-64 of ``bucket/key`` with a seed of its own, so the
    choice of set is independent of the disk rotation inside the set;
    :func:`cluster.layout.set_for_key` calls it). Which *pool* holds a key is not
    computed but found: a key stays in the pool that holds its newest version.

Reads
    With one pool, its set answers, exactly as an ObjectStore would. With
    several, the key's set in every pool is asked at once and the newest version
    wins (mtime, then version id; delete markers count, so a newer marker hides
    an older object in another pool); a version id is looked for in every pool.
    An unanswerable pool (no read quorum) fails the read rather than risk
    serving an older version.

Writes
    Puts, copies, delete markers and completions go to the pool holding the
    key's newest version when that pool is active, else to the active pool with
    the most free space (the disks' ``space()``, each filesystem counted once,
    cached for ``free_ttl`` seconds; ties go to the earlier pool). Draining and
    drained pools receive nothing new, not even a new version of a key they
    hold: the drain would chase writes otherwise; the newest-wins read rule
    makes the write visible at once. Removals by version id go to every pool
    holding that version; an unversioned delete removes the key from every
    pool holding it.

Buckets
    The first set of the first pool that is not drained (the *deciding* set)
    decides creation, as one set's first disk does inside an ObjectStore; the
    bucket is then created on every other set, idempotently. Settings and
    bucket reads come from the deciding set (the next set that answers when it
    lacks a read quorum); settings are written to every set, since each set's
    write path reads its own.

Drain
    :meth:`PooledStore.drain` moves every version of a draining pool to the
    active pools (:mod:`storaged.relocate`: identity kept), writing the new copy
    before removing the old one, under the key's lock, so readers see every
    object throughout.

Drained pools are left out of everything but :meth:`start` and :meth:`close`
(reads, bucket operations, heal, health, disks): they hold nothing and are on
their way out of the cluster.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
import weakref
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import xxhash

from . import relocate, usage
from .errors import (
    BucketExists,
    BucketNotEmpty,
    DeleteMarker,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NoSuchVersion,
    ReadQuorumError,
    StorageError,
    WriteQuorumError,
)
from .healing import HealReport, Progress
from .layout import Geometry
from .listing import ListPage
from .meta import ObjectInfo
from .metadb import version_suffix
from .multipart import PartRecord, UploadInfo, UploadPage
from .quorum import Resolved
from .reader import ObjectReader
from .store import (
    BucketInfo,
    BucketSettings,
    DeleteResult,
    ObjectStore,
    VersionEntry,
    VersionPage,
    WriteGate,
    copy_through,
)
from .writer import Body, Condition, ObjectAttrs, check_condition

log = logging.getLogger("basalt.storaged.pools")

# The set of an object is chosen with another seed than its in-set disk rotation
# (storaged.layout.distribution hashes the same name with seed 0), so the two are
# independent: the objects of one set still rotate over all its disks.
SET_HASH_SEED = 0x62617361   # "basa"
POOL_STATES = ("active", "draining", "drained")
FREE_TTL = 5.0               # seconds a pool's measured free space is trusted
PURGE_DELAY = 10.0           # seconds a moved version's old files outlive it (readers)
DRAIN_PAGE = 256
DRAIN_PASSES = 5
UPLOAD_CACHE = 4096


def set_index(bucket: str, key: str, count: int) -> int:
    """The set (0 .. count-1) of a pool of ``count`` sets that holds ``bucket/key``."""
    if count < 1:
        raise ValueError("a pool has at least one set")
    return xxhash.xxh3_64_intdigest(f"{bucket}/{key}".encode(), seed=SET_HASH_SEED) % count


class NoActivePool(WriteQuorumError):
    """No pool takes new objects (every pool is draining or drained)."""


@dataclasses.dataclass
class StorePool:
    """A pool as the store sees it: its name, state and erasure sets (in the
    cluster layout's set order: set i of the layout is ``sets[i]``)."""

    name: str
    state: str
    sets: list[ObjectStore]

    def __post_init__(self) -> None:
        if self.state not in POOL_STATES:
            raise ValueError(f"bad pool state {self.state!r}: one of {', '.join(POOL_STATES)}")
        if not self.sets:
            raise ValueError(f"pool {self.name} has no sets")


@dataclasses.dataclass
class DrainReport:
    pool: str
    buckets: int = 0
    versions: int = 0           # versions looked at (a version retried in a later pass counts again)
    moved: int = 0              # copied to an active pool, then removed here
    present: int = 0            # already in an active pool (an earlier interrupted drain)
    superseded: int = 0         # an obsolete null version (a newer one exists): removed
    gone: int = 0               # deleted or changed by a client meanwhile (looked at again)
    bytes_moved: int = 0
    failed: int = 0             # versions still not moved (errors says why)
    uploads_left: int = 0       # multipart uploads in progress still in the pool
    uploads_aborted: int = 0
    done: bool = False          # the pool holds nothing any more and was marked drained
    errors: list[str] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("started")
        d["elapsed"] = round(self.elapsed, 3)
        return d


class PooledHealQueue:
    """The heal queue of the key's set in every pool (what a reader that found
    damage would add to)."""

    def __init__(self, store: PooledStore) -> None:
        self.store = store

    def add(self, bucket: str, key: str, deep: bool = False) -> None:
        for pool in self.store.live_pools():
            self.store.key_set(pool, bucket, key).heal_queue.add(bucket, key, deep)

    def __len__(self) -> int:
        return sum(len(s.heal_queue) for s in self.store.sets)


@dataclasses.dataclass
class _Found:
    pool: StorePool
    store: ObjectStore
    res: Resolved

    @property
    def rank(self) -> tuple[tuple[int, str], bool]:
        # Newest first; the same version in two pools (a move in progress):
        # the active pool's copy, which outlives the other.
        return self.res.info.order, self.pool.state == "active"


OnDrained = Callable[[str], Awaitable[None] | None]


class PooledStore(WriteGate):
    """Buckets and objects over the erasure sets of several pools (see the module
    docstring). ``on_drained(pool name)`` is called (and awaited when it returns
    an awaitable) when a drain has emptied a pool, before the pool is marked
    ``drained`` here: the cluster registry records the state there."""

    def __init__(self, pools: Sequence[StorePool], *, on_drained: OnDrained | None = None,
                 free_ttl: float = FREE_TTL, purge_delay: float = PURGE_DELAY) -> None:
        if not pools:
            raise ValueError("a pooled store needs at least one pool")
        names = [p.name for p in pools]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names repeat: {names}")
        self.pools = list(pools)
        self.on_drained = on_drained
        self.free_ttl = free_ttl
        self.purge_delay = purge_delay
        self.heal_queue = PooledHealQueue(self)
        self._free: dict[str, int] | None = None
        self._free_at = 0.0
        self._origins: dict[int, tuple[weakref.ref, ObjectStore]] = {}
        self._uploads: dict[str, ObjectStore] = {}
        self._tasks: set[asyncio.Task] = set()
        self._last_stamp = 0
        self._lifecycle_day_ns = self.sets[0].lifecycle_day_ns
        self._bucket_names: Any = None
        for s in self.sets:
            # One clock for every set: versions of a key in two pools compare by mtime.
            s.stamp = self.stamp  # type: ignore[method-assign]
            s.stamp_after = self.stamp_after  # type: ignore[method-assign]

    # the sets ----------------------------------------------------------------------

    @property
    def sets(self) -> list[ObjectStore]:
        """Every set of every pool (drained ones included), pool by pool."""
        return [s for p in self.pools for s in p.sets]

    def live_pools(self) -> list[StorePool]:
        """The pools that are not drained: those that may hold objects."""
        return [p for p in self.pools if p.state != "drained"]

    def live_sets(self) -> list[ObjectStore]:
        return [s for p in self.live_pools() for s in p.sets]

    def pool(self, name: str) -> StorePool:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(f"no pool {name}")

    @staticmethod
    def key_set(pool: StorePool, bucket: str, key: str) -> ObjectStore:
        """The set of ``pool`` that holds ``bucket/key``."""
        return pool.sets[set_index(bucket, key, len(pool.sets))]

    def _deciding(self) -> ObjectStore:
        live = self.live_pools()
        if not live:
            raise NoActivePool("every pool is drained")
        return live[0].sets[0]

    def _first(self) -> ObjectStore:
        live = self.live_sets()
        return live[0] if live else self.sets[0]

    # what the gateway, admin API and metrics read -----------------------------------

    @property
    def disks(self) -> list[Any]:
        """Every disk of the pools that are not drained, set by set (the order of
        :meth:`disk_states`)."""
        return [d for s in self.live_sets() for d in s.disks]

    # K, M, N, write quorum and geometry are the first set's: every set of a pool
    # has the same, pools may differ (see sets_health for each set's quorum).
    @property
    def k(self) -> int:
        return self._first().k

    @property
    def m(self) -> int:
        return self._first().m

    @property
    def n(self) -> int:
        return self._first().n

    @property
    def write_quorum(self) -> int:
        return self._first().write_quorum

    @property
    def geometry(self) -> Geometry:
        return self._first().geometry

    def disk_states(self) -> list[dict[str, Any]]:
        """Per disk (in :attr:`disks` order): ObjectStore's fields plus ``pool``
        and ``set`` (the set's index in its pool); positions repeat across sets."""
        out = []
        for pool in self.live_pools():
            for index, s in enumerate(pool.sets):
                for entry in s.disk_states():
                    out.append({**entry, "pool": pool.name, "set": index})
        return out

    def sets_health(self, disks: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Per set of the live pools: pool, set index, EC, write quorum, disks online
        and whether the set still takes writes (``available``). ``disks``: entries
        in :meth:`disk_states` order with their ``state`` (the health endpoint passes
        the owner's view); this process's view when None."""
        disks = self.disk_states() if disks is None else disks
        online: Counter[tuple[str, int]] = Counter(
            (d["pool"], d["set"]) for d in disks if d["state"] != "offline")
        out = []
        for pool in self.live_pools():
            for index, s in enumerate(pool.sets):
                count = online[(pool.name, index)]
                out.append({"pool": pool.name, "set": index, "state": pool.state,
                            "ec": f"{s.k}+{s.m}", "write_quorum": s.write_quorum,
                            "disks_online": count, "available": count >= s.write_quorum})
        return out

    def available(self, disks: list[dict[str, Any]] | None = None) -> bool:
        """Whether every set of the live pools reaches its write quorum."""
        return all(s["available"] for s in self.sets_health(disks))

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """Run blocking ``fn(*args)`` in the engine's thread pool (the first set's)."""
        return self._first().run(fn, *args)

    @property
    def stats(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for s in self.sets:
            total.update(s.stats)
        return total

    @property
    def on_event(self) -> Callable[[str, int], None] | None:
        return self.sets[0].on_event

    @on_event.setter
    def on_event(self, hook: Callable[[str, int], None] | None) -> None:
        for s in self.sets:
            s.on_event = hook

    @property
    def key_locks(self) -> Any:
        return self.sets[0].key_locks

    @key_locks.setter
    def key_locks(self, locks: Any) -> None:
        for s in self.sets:
            s.key_locks = locks

    @property
    def read_only(self) -> str | None:
        return getattr(self.sets[0], "read_only", None)

    @read_only.setter
    def read_only(self, reason: str | None) -> None:
        for s in self.sets:
            s.read_only = reason

    @property
    def lifecycle_day_ns(self) -> int:
        return self._lifecycle_day_ns

    @lifecycle_day_ns.setter
    def lifecycle_day_ns(self, ns: int) -> None:
        self._lifecycle_day_ns = ns
        for s in self.sets:
            s.lifecycle_day_ns = ns

    @property
    def upload_expiry(self) -> float:
        return self.sets[0].upload_expiry

    @upload_expiry.setter
    def upload_expiry(self, seconds: float) -> None:
        for s in self.sets:
            s.upload_expiry = seconds

    @property
    def leads(self) -> Callable[[str], bool]:
        """Whether this process runs a background job (a cluster's elections)."""
        return self.sets[0].leads

    @leads.setter
    def leads(self, leads: Callable[[str], bool]) -> None:
        for s in self.sets:
            s.leads = leads

    @property
    def bucket_names(self) -> Any:
        """A cluster's register of bucket names (etcd), or None. Only the deciding
        set claims names in it: the other sets create a bucket it already decided."""
        return self._bucket_names

    @bucket_names.setter
    def bucket_names(self, names: Any) -> None:
        self._bucket_names = names
        self._assign_names()

    def _assign_names(self) -> None:
        live = self.live_pools()
        deciding = live[0].sets[0] if live else None
        for s in self.sets:
            s.bucket_names = self._bucket_names if s is deciding else None

    # lifecycle ---------------------------------------------------------------------

    async def start(self, *, heal: bool = True, settle: bool = True, owner: bool = True) -> None:
        for s in self.sets:
            await s.start(heal=heal, settle=settle, owner=owner)

    async def close(self) -> None:
        # Delayed purges still waiting stay pending records: the next start purges them.
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in self.sets))

    async def heal(self, *, deep: bool = True, progress: Progress | None = None) -> HealReport:
        """Heal every set of the live pools, one after the other (after giving every
        set the buckets the deciding set knows); one report for all."""
        total = HealReport()
        try:
            total.errors += await self.sync_buckets()
        except StorageError as exc:
            total.errors.append(f"buckets: {exc}")
        for s in self.live_sets():
            def step(report: HealReport, before: HealReport = total) -> None:
                if progress is not None:
                    progress(_merged(before, report))

            report = await s.heal(deep=deep, progress=step if progress else None)
            total = _merged(total, report)
        if progress is not None:
            progress(total)
        return total

    async def sync_buckets(self) -> list[str]:
        """Give every set of the live pools the buckets of the deciding set, with
        its settings (a pool just added, a creation or a setting cut short).
        Returns what failed, one line each. A drain runs it first and last: once
        the pool that decides is drained, the next one decides."""
        deciding = self._deciding()
        errors: list[str] = []
        buckets = await self.list_buckets()
        for s in self.live_sets():
            if s is deciding:
                continue
            held = {b.name for b in await s.list_buckets()}
            for bucket in buckets:
                try:
                    if bucket.name not in held:
                        await self._ensure_bucket(s, bucket.name)
                        continue
                    want = await self.bucket_configs(bucket.name)
                    have = await s.bucket_configs(bucket.name)
                    # Versioning before object lock: a set refuses the reverse.
                    for kind in sorted(set(want) | set(have), key=lambda k: k != "versioning"):
                        if want.get(kind) != have.get(kind):
                            await s.set_bucket_config(bucket.name, kind, want.get(kind))
                except StorageError as exc:
                    errors.append(f"bucket {bucket.name}: {exc}")
        return errors

    async def expire_uploads(self) -> int:
        return sum([await s.expire_uploads() for s in self.live_sets()])

    # buckets -----------------------------------------------------------------------

    async def _bucket_read(self, method: str, *args: Any) -> Any:
        """A bucket read from the deciding set, else the next set that can tell."""
        error: BaseException | None = None
        for s in self.live_sets():
            try:
                return await getattr(s, method)(*args)
            except ReadQuorumError as exc:
                error = error or exc
        raise error or NoActivePool("every pool is drained")

    async def bucket_info(self, name: str) -> BucketInfo | None:
        return await self._bucket_read("bucket_info", name)

    async def require_bucket(self, name: str) -> BucketInfo:
        return await self._bucket_read("require_bucket", name)

    async def bucket_configs(self, name: str) -> dict[str, bytes]:
        return await self._bucket_read("bucket_configs", name)

    async def bucket_config(self, name: str, kind: str) -> bytes | None:
        return await self._bucket_read("bucket_config", name, kind)

    async def bucket_settings(self, name: str) -> BucketSettings:
        return await self._bucket_read("bucket_settings", name)

    async def versioning(self, name: str) -> str:
        return await self._bucket_read("versioning", name)

    async def list_buckets(self) -> list[BucketInfo]:
        return await self._bucket_read("list_buckets")

    async def bucket_usage(self, name: str) -> usage.Usage:
        """(bytes, objects) of a bucket: the sum over every set of the live pools
        (a version being moved by a drain may count twice for a moment)."""
        found = await asyncio.gather(*(s.bucket_usage(name) for s in self.live_sets()))
        return usage.Usage(sum(u.bytes for u in found), sum(u.objects for u in found))

    async def set_bucket_config(self, name: str, kind: str, value: bytes | None) -> None:
        """Set one kind of a bucket's settings on every set (a write quorum in each):
        the deciding set first (it checks the bucket and the rules), then the others."""
        deciding = self._deciding()
        await deciding.set_bucket_config(name, kind, value)
        others = [s for s in self.live_sets() if s is not deciding]
        outcomes = await asyncio.gather(*(self._set_config_on(s, name, kind, value)
                                          for s in others), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _set_config_on(self, s: ObjectStore, name: str, kind: str,
                             value: bytes | None) -> None:
        try:
            await s.set_bucket_config(name, kind, value)
        except NoSuchBucket:
            await self._ensure_bucket(s, name)  # created with the settings just written

    async def make_bucket(self, name: str, settings: dict[str, bytes] | None = None) -> BucketInfo:
        """Create a bucket: the deciding set decides (BucketExists), then every other
        set gets it with the same settings (a set that already has it is left alone;
        a set that cannot take it now gets it from the next heal or first write)."""
        self.check_writable()
        self._assign_names()
        deciding = self._deciding()
        info = await deciding.make_bucket(name, settings)
        others = [s for s in self.live_sets() if s is not deciding]
        outcomes = await asyncio.gather(*(s.make_bucket(name, settings) for s in others),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, BucketExists):
                log.warning("bucket %s not created on every set yet: %s", name, outcome)
        return info

    async def _ensure_bucket(self, s: ObjectStore, name: str) -> None:
        """Give set ``s`` the bucket the deciding set holds (NoSuchBucket when it
        holds none), with its current settings."""
        await self.require_bucket(name)
        configs = await self.bucket_configs(name)
        try:
            await s.make_bucket(name, configs)
        except BucketExists:
            pass

    async def delete_bucket(self, name: str) -> None:
        """Delete a bucket that is empty in every set (BucketNotEmpty otherwise):
        the other sets first, the deciding set last, so a deletion cut short leaves
        the bucket existing (and it is given back to the sets that lost it)."""
        self.check_writable()
        self._assign_names()
        await self.require_bucket(name)
        sets = self.live_sets()
        pages = await asyncio.gather(*(s.list_versions(name, max_keys=1) for s in sets),
                                     return_exceptions=True)
        for page in pages:
            if isinstance(page, NoSuchBucket):
                continue
            if isinstance(page, BaseException):
                raise page
            if page.entries:
                raise BucketNotEmpty(name)
        deciding = self._deciding()
        for s in sets:
            if s is deciding:
                continue
            try:
                await s.delete_bucket(name)
            except NoSuchBucket:
                pass
        await deciding.delete_bucket(name)

    # finding objects ---------------------------------------------------------------

    async def _locate(self, bucket: str, key: str, version_id: str | None = None,
                      pools: Sequence[StorePool] | None = None) -> list[_Found]:
        """Each pool's answer for the key (its latest, or version ``version_id``),
        asked concurrently; raises when a pool cannot tell."""
        pools = self.live_pools() if pools is None else pools
        sets = [(p, self.key_set(p, bucket, key)) for p in pools]
        answers = await asyncio.gather(*(s.resolve_any(bucket, key, version_id) for _, s in sets),
                                       return_exceptions=True)
        found = []
        for (pool, s), answer in zip(sets, answers):
            if isinstance(answer, BaseException):
                raise answer
            if answer is not None:
                found.append(_Found(pool, s, answer))
        return found

    async def _newest(self, bucket: str, key: str, version_id: str | None = None,
                      pools: Sequence[StorePool] | None = None) -> _Found | None:
        found = await self._locate(bucket, key, version_id, pools)
        return max(found, key=lambda f: f.rank) if found else None

    def _single(self) -> StorePool | None:
        """The one live pool when there is only one and it is active: every call
        then goes straight to the key's set, as to an ObjectStore."""
        live = self.live_pools()
        return live[0] if len(live) == 1 and live[0].state == "active" else None

    def _remember(self, info: ObjectInfo, s: ObjectStore) -> ObjectInfo:
        """Note which set an info came from: a later get_object(info=...) reads there."""
        ident = id(info)

        def forget(_: weakref.ref, ident: int = ident) -> None:
            self._origins.pop(ident, None)

        self._origins[ident] = (weakref.ref(info, forget), s)
        return info

    def _origin(self, info: ObjectInfo) -> ObjectStore | None:
        entry = self._origins.get(id(info))
        if entry is not None and entry[0]() is info:
            return entry[1]
        return None

    async def resolve_any(self, bucket: str, key: str, version_id: str | None
                          ) -> Resolved | None:
        """The newest version across the pools (``version_id`` None) or the one named."""
        found = await self._newest(bucket, key, version_id)
        if found is None:
            return None
        self._remember(found.res.info, found.store)
        return found.res

    async def resolve(self, bucket: str, key: str) -> Resolved | None:
        return await self.resolve_any(bucket, key, None)

    async def resolve_version(self, bucket: str, key: str, version_id: str) -> Resolved | None:
        return await self.resolve_any(bucket, key, version_id)

    async def head_object(self, bucket: str, key: str, version_id: str | None = None, *,
                          body: bool = False) -> ObjectInfo:
        """As :meth:`ObjectStore.head_object`, over every pool."""
        single = self._single()
        if single is not None:
            return await self.key_set(single, bucket, key).head_object(
                bucket, key, version_id, body=body)
        found = await self._newest(bucket, key, version_id)
        if found is None:
            await self.require_bucket(bucket)
            if version_id is None:
                raise NoSuchKey(bucket, key)
            raise NoSuchVersion(bucket, key, version_id)
        info = found.res.info
        if info.delete_marker:
            raise DeleteMarker(bucket, key, info.version, version_id is not None, info.mtime_ns)
        return self._remember(info, found.store)

    async def _holder(self, info: ObjectInfo) -> ObjectStore:
        """The set holding version ``info`` (where it was read, else looked up)."""
        s = self._origin(info)
        if s is not None:
            return s
        single = self._single()
        if single is not None:
            return self.key_set(single, info.bucket, info.key)
        found = [f for f in await self._locate(info.bucket, info.key,
                                               relocate.exact_version_id(info))
                 if f.res.info.order == info.order]
        if not found:
            raise NoSuchKey(info.bucket, info.key)
        return max(found, key=lambda f: f.rank).store

    async def get_object(self, bucket: str, key: str, offset: int = 0,
                         length: int | None = None, info: ObjectInfo | None = None, *,
                         stored: bool = False) -> ObjectReader:
        """A reader of the newest version (or of ``info``, read from its set)."""
        info = info or await self.head_object(bucket, key)
        s = await self._holder(info)
        return await s.get_object(bucket, key, offset, length, info=info, stored=stored)

    # writing objects ---------------------------------------------------------------

    async def _free_space(self) -> dict[str, int]:
        now = time.monotonic()
        if self._free is None or now - self._free_at > self.free_ttl:
            self._free = await self.run(self._measure_free)
            self._free_at = now
        return self._free

    def _measure_free(self) -> dict[str, int]:
        """Free bytes per pool: its online disks' filesystems, each counted once."""
        out = {}
        for pool in self.pools:
            filesystems: dict[str, int] = {}
            for s in pool.sets:
                for disk in s.disks:
                    if not disk.online:
                        continue
                    try:
                        _, _, free, fs = disk.space()
                    except OSError:
                        continue
                    filesystems[fs] = free
            out[pool.name] = sum(filesystems.values())
        return out

    async def emptiest_pool(self) -> StorePool:
        """The active pool with the most free space (ties: the earlier pool)."""
        active = [p for p in self.pools if p.state == "active"]
        if not active:
            raise NoActivePool("no active pool takes new objects")
        if len(active) == 1:
            return active[0]
        free = await self._free_space()
        return max(active, key=lambda p: (free.get(p.name, 0), -self.pools.index(p)))

    async def _write_target(self, bucket: str, key: str) -> tuple[ObjectStore, _Found | None]:
        """The set a new version of the key goes to, and the key's newest version
        (None also when there is one pool: that set checks for itself)."""
        single = self._single()
        if single is not None:
            return self.key_set(single, bucket, key), None
        newest = await self._newest(bucket, key)
        if newest is not None and newest.pool.state == "active":
            return newest.store, newest
        return self.key_set(await self.emptiest_pool(), bucket, key), newest

    async def _on_set(self, s: ObjectStore, bucket: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call()`` on set ``s``, giving ``s`` the bucket first when only it lacks it
        (a creation cut short); every set checks the bucket before anything else."""
        try:
            return await call()
        except NoSuchBucket:
            if s is self._deciding():
                raise
            await self._ensure_bucket(s, bucket)
        return await call()

    async def put_object(self, bucket: str, key: str, body: Body, *, size: int | None = None,
                         attrs: ObjectAttrs | None = None, content_md5: bytes | None = None,
                         hashers: Sequence[Any] = (), finalize: Any = None,
                         condition: Condition | None = None, seal: Any = None) -> ObjectInfo:
        """As :meth:`ObjectStore.put_object`, into the key's pool (see the module)."""
        self.check_writable()
        s, newest = await self._write_target(bucket, key)
        if condition is not None and newest is not None and newest.store is not s:
            # The set written to cannot see the newest version, in another pool.
            check_condition(newest.res, bucket, key, condition)
            condition = None
        return await self._on_set(s, bucket, lambda: s.put_object(
            bucket, key, body, size=size, attrs=attrs, content_md5=content_md5, hashers=hashers,
            finalize=finalize, condition=condition, seal=seal))

    async def copy_object(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str,
                          attrs: ObjectAttrs | None = None,
                          source: ObjectInfo | None = None) -> ObjectInfo:
        """Copy an object (from whichever pool holds it into the destination key's)."""
        return await copy_through(self, src_bucket, src_key, dst_bucket, dst_key, attrs, source)

    async def delete_object(self, bucket: str, key: str, version_id: str | None = None, *,
                            bypass_governance: bool = False,
                            expect: tuple[int, str] | None = None) -> DeleteResult:
        """As :meth:`ObjectStore.delete_object`: a delete marker goes where a put
        would; a version id is removed from every pool holding it; an unversioned
        delete removes the key from every pool."""
        self.check_writable()
        single = self._single()
        if single is not None:
            return await self.key_set(single, bucket, key).delete_object(
                bucket, key, version_id, bypass_governance=bypass_governance, expect=expect)
        if version_id is not None:
            return await self._delete_version(bucket, key, version_id, bypass_governance, expect)
        if await self.versioning(bucket):
            s, newest = await self._write_target(bucket, key)
            if expect is not None and (newest is None or newest.res.info.order != expect):
                return DeleteResult(None, False)
            return await self._on_set(s, bucket, lambda: s.delete_object(
                bucket, key, bypass_governance=bypass_governance))
        found = sorted(await self._locate(bucket, key), key=lambda f: f.rank, reverse=True)
        if not found:
            await self.require_bucket(bucket)
            return DeleteResult(None, False)
        if expect is not None and found[0].res.info.order != expect:
            return DeleteResult(None, False)
        results = [await f.store.delete_object(bucket, key, bypass_governance=bypass_governance,
                                               expect=f.res.info.order) for f in found]
        return results[0]

    async def _delete_version(self, bucket: str, key: str, version_id: str,
                              bypass_governance: bool, expect: tuple[int, str] | None
                              ) -> DeleteResult:
        """Remove version ``version_id`` from every pool holding it; looked for
        again after each round, since a drain may have moved it meanwhile (the
        drain holds the key's lock while it moves a version, so the round that
        waited for it finds the version in its new pool)."""
        result: DeleteResult | None = None
        for _ in range(3):
            found = await self._locate(bucket, key, version_id)
            if not found:
                break
            for f in found:
                result = await f.store.delete_object(bucket, key, version_id,
                                                     bypass_governance=bypass_governance,
                                                     expect=expect)
        if result is None:
            await self.require_bucket(bucket)
            return DeleteResult(version_id, False)
        return result

    async def update_object(self, bucket: str, key: str, version_id: str | None, *,
                            tags: dict[str, str] | None = None,
                            retention: tuple[str, int] | None = None,
                            legal_hold: bool | None = None,
                            bypass_governance: bool = False,
                            acl: bytes | None = None) -> ObjectInfo:
        """Change a version's tags, retention, legal hold or ACL where it lives (every
        pool holding it while a drain moves it)."""
        self.check_writable()
        kwargs: dict[str, Any] = {"tags": tags, "retention": retention, "legal_hold": legal_hold,
                                  "bypass_governance": bypass_governance, "acl": acl}
        single = self._single()
        if single is not None:
            return await self.key_set(single, bucket, key).update_object(
                bucket, key, version_id, **kwargs)
        for _ in range(3):
            newest = await self._newest(bucket, key, version_id)
            if newest is None or newest.res.info.delete_marker:
                break
            exact = relocate.exact_version_id(newest.res.info)
            holders = [f for f in await self._locate(bucket, key, exact)
                       if f.res.info.order == newest.res.info.order]
            holders.sort(key=lambda f: f.rank, reverse=True)
            done: ObjectInfo | None = None
            for f in holders:
                try:
                    info = await f.store.update_object(bucket, key, exact, **kwargs)
                except (NoSuchKey, NoSuchVersion):
                    continue  # moved away meanwhile
                done = done or info
            if done is not None:
                return done
        await self.head_object(bucket, key, version_id)  # raises the right error
        raise NoSuchKey(bucket, key)

    # listing -----------------------------------------------------------------------

    async def list_objects(self, bucket: str, prefix: str = "", delimiter: str = "",
                           after: str = "", max_keys: int = 1000) -> ListPage:
        """A page of keys after ``after`` merged over every set: each set is asked
        for ``max_keys`` at a time, the streams merge in key order, common prefixes
        once, and a key in two pools (a drain moving it) shows its newest version."""
        sets = self.live_sets()
        if len(sets) == 1:
            return await sets[0].list_objects(bucket, prefix, delimiter, after, max_keys)
        await self.require_bucket(bucket)
        if max_keys <= 0:
            return ListPage([], [], False, "")
        cursors = [_ObjectCursor(s, pool, bucket, prefix, delimiter, after, max_keys)
                   for pool in self.live_pools() for s in pool.sets]
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        last = ""
        while True:
            heads = await _heads(cursors)
            if not heads:
                return ListPage(objects, prefixes, False, last)
            name = min(h[0] for _, h in heads)
            entries = [(c, c.buf.popleft()) for c, h in heads if h[0] == name]
            infos = [(c, item[1]) for c, item in entries if item[1] is not None]
            info: ObjectInfo | None = None
            if infos:
                c, info = max(infos, key=lambda ci: ci[1].order)
                info = await self._visible(c.pool, info)
                if info is None:
                    continue
            if len(objects) + len(prefixes) >= max_keys:
                return ListPage(objects, prefixes, True, last)
            if info is None:
                prefixes.append(name)
            else:
                objects.append(info)
            last = name

    async def _visible(self, pool: StorePool, info: ObjectInfo) -> ObjectInfo | None:
        """A listed latest version, checked against the other pools when it comes
        from a pool taking no writes (a newer version or marker may have gone to
        another pool); None when the key is deleted there."""
        if pool.state == "active":
            return info
        try:
            newest = await self._newest(info.bucket, info.key)
        except StorageError:
            return info
        if newest is None or newest.res.info.order <= info.order:
            return info
        return None if newest.res.info.delete_marker else newest.res.info

    async def list_versions(self, bucket: str, prefix: str = "", delimiter: str = "",
                            key_marker: str = "", version_marker: str = "",
                            max_keys: int = 1000) -> VersionPage:
        """A page of versions in S3 order (key, newest first) merged over every set;
        the first version of a key across all pools is the latest."""
        sets = self.live_sets()
        if len(sets) == 1:
            return await sets[0].list_versions(bucket, prefix, delimiter, key_marker,
                                               version_marker, max_keys)
        await self.require_bucket(bucket)
        if max_keys <= 0:
            return VersionPage([], [], False, "", "")
        marker = version_marker
        if key_marker and version_marker == "null":
            # Only the set holding the null version can place "null"; the others
            # are given its exact id (mtime and data id), which every set can seek to.
            null = await self._newest(bucket, key_marker, "null")
            if null is not None:
                marker = relocate.exact_version_id(null.res.info)
        cursors = [_VersionCursor(s, pool, bucket, prefix, delimiter, key_marker, marker, max_keys)
                   for pool in self.live_pools() for s in pool.sets]
        entries: list[VersionEntry] = []
        prefixes: list[str] = []
        last_key = key_marker if key_marker and version_marker else None
        last_version = ""
        while True:
            heads = await _heads(cursors)
            if not heads:
                return VersionPage(entries, prefixes, False, "", "")
            at = min((h[0], h[1]) for _, h in heads)
            same = [(c, c.buf.popleft()) for c, h in heads if (h[0], h[1]) == at]
            name = at[0]
            found = [(c, item[2]) for c, item in same if item[2] is not None]
            info: ObjectInfo | None = None
            if found:
                c, info = max(found, key=lambda ci: ci[0].pool.state == "active")
                if not info.versioned and c.pool.state != "active" and \
                        await self._stale_null(c.pool, info):
                    continue
            if len(entries) + len(prefixes) >= max_keys:
                return VersionPage(entries, prefixes, True, last_key or "", last_version)
            if info is None:
                prefixes.append(name)
                last_key, last_version = name, ""
                continue
            entries.append(VersionEntry(info, name != last_key))
            last_key, last_version = name, info.version

    async def _stale_null(self, pool: StorePool, info: ObjectInfo) -> bool:
        """Whether a null version a non-active pool holds was replaced by a newer
        null version in another pool (a key has one null version)."""
        try:
            newest = await self._newest(info.bucket, info.key, "null")
        except StorageError:
            return False
        return newest is not None and newest.res.info.order > info.order

    # multipart uploads ---------------------------------------------------------------

    async def create_upload(self, bucket: str, key: str, attrs: ObjectAttrs | None = None,
                            checksum_algorithm: str = "", checksum_type: str = "") -> UploadInfo:
        """Start a multipart upload in the key's pool (where a put would go)."""
        self.check_writable()
        s, _ = await self._write_target(bucket, key)
        upload = await self._on_set(s, bucket, lambda: s.create_upload(
            bucket, key, attrs, checksum_algorithm, checksum_type))
        self._note_upload(upload.upload_id, s)
        return upload

    def _note_upload(self, upload_id: str, s: ObjectStore) -> None:
        if len(self._uploads) >= UPLOAD_CACHE:
            self._uploads.pop(next(iter(self._uploads)))
        self._uploads[upload_id] = s

    async def _upload_set(self, bucket: str, key: str, upload_id: str) -> ObjectStore:
        """The set holding an upload: the key's set of the pool that has it (upload
        ids are unique, so each pool is simply asked)."""
        cached = self._uploads.get(upload_id)
        if cached is not None:
            return cached
        pools = self.live_pools()
        sets = [self.key_set(p, bucket, key) for p in pools]
        if len(sets) == 1:
            return sets[0]
        answers = await asyncio.gather(*(s.get_upload(bucket, key, upload_id) for s in sets),
                                       return_exceptions=True)
        error: BaseException | None = None
        for s, answer in zip(sets, answers):
            if not isinstance(answer, BaseException):
                self._note_upload(upload_id, s)
                return s
            if not isinstance(answer, (NoSuchUpload, NoSuchBucket)):
                error = error or answer
        if error is not None:
            raise error
        await self.require_bucket(bucket)
        raise NoSuchUpload(upload_id)

    async def _on_upload(self, bucket: str, key: str, upload_id: str, method: str,
                         *args: Any, **kwargs: Any) -> Any:
        s = await self._upload_set(bucket, key, upload_id)
        try:
            return await getattr(s, method)(bucket, key, upload_id, *args, **kwargs)
        except NoSuchUpload:
            if self._uploads.pop(upload_id, None) is None:
                raise
        s = await self._upload_set(bucket, key, upload_id)  # the cache was stale
        return await getattr(s, method)(bucket, key, upload_id, *args, **kwargs)

    async def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo:
        return await self._on_upload(bucket, key, upload_id, "get_upload")

    async def upload_part(self, bucket: str, key: str, upload_id: str, number: int, body: Body,
                          **kwargs: Any) -> PartRecord:
        self.check_writable()
        return await self._on_upload(bucket, key, upload_id, "upload_part", number, body, **kwargs)

    async def list_parts(self, bucket: str, key: str, upload_id: str, after: int = 0,
                         max_parts: int = 1000) -> tuple[list[PartRecord], bool]:
        return await self._on_upload(bucket, key, upload_id, "list_parts", after, max_parts)

    async def complete_upload(self, bucket: str, key: str, upload_id: str,
                              parts: Sequence[tuple[int, str]], **kwargs: Any) -> ObjectInfo:
        """Complete an upload in the pool it was started in (its parts are there)."""
        self.check_writable()
        info = await self._on_upload(bucket, key, upload_id, "complete_upload", parts, **kwargs)
        self._uploads.pop(upload_id, None)
        return info

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self.check_writable()
        await self._on_upload(bucket, key, upload_id, "abort_upload")
        self._uploads.pop(upload_id, None)

    async def list_uploads(self, bucket: str, prefix: str = "", delimiter: str = "",
                           key_marker: str = "", upload_id_marker: str = "",
                           max_uploads: int = 1000) -> UploadPage:
        """In-progress uploads of a bucket, every set's page merged (by key, then
        upload id; common prefixes once), cut at ``max_uploads``."""
        kwargs = {"prefix": prefix, "delimiter": delimiter, "key_marker": key_marker,
                  "upload_id_marker": upload_id_marker, "max_uploads": max_uploads}
        sets = self.live_sets()
        if len(sets) == 1:
            return await sets[0].list_uploads(bucket, **kwargs)
        await self.require_bucket(bucket)
        pages = await asyncio.gather(*(s.list_uploads(bucket, **kwargs) for s in sets),
                                     return_exceptions=True)
        items: dict[tuple[str, str], UploadInfo | None] = {}
        truncated = False
        for page in pages:
            if isinstance(page, NoSuchBucket):
                continue
            if isinstance(page, BaseException):
                raise page
            truncated = truncated or page.truncated
            for upload in page.uploads:
                items[(upload.key, upload.upload_id)] = upload
            for cp in page.prefixes:
                items[(cp, "")] = None
        ordered = sorted(items.items())
        if len(ordered) > max_uploads:
            truncated = True
        ordered = ordered[:max(max_uploads, 0)]
        uploads = [u for _, u in ordered if u is not None]
        prefixes = [name for (name, _), u in ordered if u is None]
        if not truncated or not ordered:
            return UploadPage(uploads, prefixes, truncated, "", "")
        (name, upload_id), _ = ordered[-1]
        return UploadPage(uploads, prefixes, True, name, upload_id)

    # draining a pool -----------------------------------------------------------------

    async def drain(self, pool_name: str, progress: Callable[[DrainReport], None] | None = None,
                    *, abort_uploads: bool = False) -> DrainReport:
        """Move every version of every bucket of a draining pool to the active pools,
        then mark it drained (``on_drained``, then the state here).

        Each version is copied with its identity (:func:`relocate.copy_version`)
        to the active pool holding the key, else the emptiest, then removed from
        the draining pool, under the key's lock (a client's delete or tag change
        of the key waits for the move and then finds the version in its new pool).
        Readers see every object throughout: a version is in one pool or the other,
        or briefly in both. Multipart uploads in progress in the pool are left to
        finish there (their parts are there) and keep the pool draining unless
        ``abort_uploads``; a completed one is moved by the next drain. Returns a
        report; the pool is marked drained only when it holds nothing any more.
        Run it again after a failure: versions already moved are not moved twice.
        """
        pool = self.pool(pool_name)
        report = DrainReport(pool_name)
        if pool.state == "drained":
            report.done = True
            return report
        if pool.state != "draining":
            raise StorageError(f"pool {pool_name} is {pool.state}: only a draining pool is drained")
        if not any(p.state == "active" for p in self.pools):
            raise NoActivePool(f"no active pool to move pool {pool_name}'s objects to")
        self.check_writable()
        for line in await self.sync_buckets():
            log.warning("drain of pool %s: %s", pool_name, line)
        failures: dict[tuple[str, str, str], str] = {}
        buckets: set[str] = set()
        for s in pool.sets:
            names = sorted(b.name for b in await s.list_buckets())
            buckets.update(names)
            for bucket in names:
                await self._drain_bucket(pool, s, bucket, report, failures, progress)
        report.buckets = len(buckets)
        remaining = 0
        for s in pool.sets:
            for bucket in sorted(buckets):
                try:
                    page = await s.list_uploads(bucket, max_uploads=1 << 30)
                    remaining += len((await s.list_versions(bucket, max_keys=1)).entries)
                except NoSuchBucket:
                    continue
                for upload in page.uploads:
                    if abort_uploads:
                        await s.abort_upload(bucket, upload.key, upload.upload_id)
                        report.uploads_aborted += 1
                    else:
                        report.uploads_left += 1
        report.failed = len(failures)
        report.errors = [f"{b}/{k} version {v}: {e}" for (b, k, v), e in sorted(failures.items())]
        if remaining == 0 and report.uploads_left == 0 and not failures:
            sync = await self.sync_buckets()
            if sync:  # the next deciding set must know every bucket first
                report.errors += sync
                return report
            if self.on_drained is not None:
                outcome = self.on_drained(pool_name)
                if inspect.isawaitable(outcome):
                    await outcome
            pool.state = "drained"
            self._assign_names()
            report.done = True
        if progress is not None:
            progress(report)
        return report

    async def _drain_bucket(self, pool: StorePool, s: ObjectStore, bucket: str,
                            report: DrainReport, failures: dict[tuple[str, str, str], str],
                            progress: Callable[[DrainReport], None] | None) -> None:
        """Walk the bucket's versions in set ``s`` page by page, moving each; again
        while a pass moved something and something is left (versions written by a
        completed upload, or passed over because a move changed a page marker)."""
        for _ in range(DRAIN_PASSES):
            moved = 0
            key_marker = version_marker = ""
            while True:
                try:
                    page = await s.list_versions(bucket, key_marker=key_marker,
                                                 version_marker=version_marker,
                                                 max_keys=DRAIN_PAGE)
                except NoSuchBucket:
                    return
                for entry in page.entries:
                    info = entry.info
                    report.versions += 1
                    ident = (bucket, info.key, info.version)
                    try:
                        outcome = await self._move(pool, s, info)
                    except Exception as exc:
                        failures[ident] = str(exc) or type(exc).__name__
                        log.warning("drain of %s/%s version %s failed: %s", bucket, info.key,
                                    info.version, exc)
                    else:
                        failures.pop(ident, None)
                        if outcome != "gone":
                            moved += 1
                        if outcome == relocate.COPIED:
                            report.moved += 1
                            report.bytes_moved += 0 if info.delete_marker else info.size
                        elif outcome == relocate.PRESENT:
                            report.present += 1
                        elif outcome == relocate.SUPERSEDED:
                            report.superseded += 1
                        else:
                            report.gone += 1
                    if progress is not None:
                        progress(report)
                if not page.truncated:
                    break
                key_marker, version_marker = page.next_key_marker, page.next_version_marker
            if not moved:
                return
            if not (await s.list_versions(bucket, max_keys=1)).entries:
                return

    async def _move(self, pool: StorePool, src: ObjectStore, listed: ObjectInfo) -> str:
        """Move one version out of ``src`` (see :meth:`drain`)."""
        bucket, key = listed.bucket, listed.key
        async with src.version_lock(bucket, key):
            current = await relocate.find_exact(src, listed)
            if current is None:
                return "gone"  # deleted (or moved) since it was listed
            info = current.info
            active = [p for p in self.pools if p.state == "active"]
            home = await self._newest(bucket, key, pools=active)
            dst = home.store if home is not None else \
                self.key_set(await self.emptiest_pool(), bucket, key)
            try:
                await dst.require_bucket(bucket)
            except NoSuchBucket:
                await self._ensure_bucket(dst, bucket)
            outcome = await relocate.copy_version(src, dst, info)
            await relocate.drop_version(src, info, self._purger(src))
        return outcome

    def _purger(self, s: ObjectStore) -> Callable[[int, str, list[int]], None]:
        """Purge a moved version's old files after ``purge_delay``: a reader that
        resolved the version in its old pool just before the move keeps reading."""
        def purge(pos: int, data_id: str, numbers: list[int]) -> None:
            if self.purge_delay <= 0:
                s.background(s.purge(pos, data_id, numbers))
                return

            async def later() -> None:
                await asyncio.sleep(self.purge_delay)
                await s.purge(pos, data_id, numbers)

            task = asyncio.ensure_future(later())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return purge


# listing cursors -------------------------------------------------------------------


async def _heads(cursors: Sequence[Any]) -> list[tuple[Any, tuple]]:
    """(cursor, its next item) of the cursors that have one, refilling empty ones
    (concurrently)."""
    empty = [c for c in cursors if not c.buf and not c.done]
    if empty:
        await asyncio.gather(*(c.fill() for c in empty))
    return [(c, c.buf[0]) for c in cursors if c.buf]


class _ObjectCursor:
    """One set's keys and common prefixes in order, a page of ``page`` at a time:
    items (name, ObjectInfo or None for a common prefix)."""

    def __init__(self, s: ObjectStore, pool: StorePool, bucket: str, prefix: str,
                 delimiter: str, after: str, page: int) -> None:
        self.store, self.pool, self.bucket = s, pool, bucket
        self.prefix, self.delimiter, self.after, self.page = prefix, delimiter, after, page
        self.buf: deque[tuple[str, ObjectInfo | None]] = deque()
        self.done = False

    async def fill(self) -> None:
        try:
            page = await self.store.list_objects(self.bucket, self.prefix, self.delimiter,
                                                 self.after, self.page)
        except NoSuchBucket:  # a set the bucket's creation has not reached yet
            self.done = True
            return
        items: list[tuple[str, ObjectInfo | None]] = [(o.key, o) for o in page.objects]
        items += [(p, None) for p in page.prefixes]
        items.sort(key=lambda item: item[0])
        self.buf.extend(items)
        self.done = not page.truncated or not items
        self.after = page.next_marker


class _VersionCursor:
    """One set's versions and common prefixes in S3 order: items (name, order
    suffix, ObjectInfo or None for a common prefix)."""

    def __init__(self, s: ObjectStore, pool: StorePool, bucket: str, prefix: str,
                 delimiter: str, key_marker: str, version_marker: str, page: int) -> None:
        self.store, self.pool, self.bucket = s, pool, bucket
        self.prefix, self.delimiter, self.page = prefix, delimiter, page
        self.key_marker, self.version_marker = key_marker, version_marker
        self.buf: deque[tuple[str, bytes, ObjectInfo | None]] = deque()
        self.done = False

    async def fill(self) -> None:
        try:
            page = await self.store.list_versions(self.bucket, self.prefix, self.delimiter,
                                                  self.key_marker, self.version_marker,
                                                  self.page)
        except NoSuchBucket:
            self.done = True
            return
        items: list[tuple[str, bytes, ObjectInfo | None]] = [
            (e.info.key, version_suffix(e.info.mtime_ns, e.info.version_id), e.info)
            for e in page.entries]
        items += [(p, b"", None) for p in page.prefixes]
        items.sort(key=lambda item: (item[0], item[1]))
        self.buf.extend(items)
        self.done = not page.truncated or not items
        self.key_marker, self.version_marker = page.next_key_marker, page.next_version_marker


def _merged(a: HealReport, b: HealReport) -> HealReport:
    """One report counting both (``a``'s start time)."""
    out = HealReport(buckets=max(a.buckets, b.buckets),
                     disks_offline=a.disks_offline + b.disks_offline,
                     errors=a.errors + b.errors, started=a.started)
    out.add(a)
    out.add(b)
    return out


__all__ = ["PooledStore", "StorePool", "DrainReport", "NoActivePool", "set_index",
           "SET_HASH_SEED", "POOL_STATES"]
