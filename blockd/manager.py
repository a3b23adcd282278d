"""The volume manager: volume administration, flushes, and the export registry.

One manager per server (in the process that owns the disks) keeps every
volume record and, in its :class:`~blockd.chunk_map.ChunkMaps`, every chunk
map in memory, and is the only writer of volume metadata, so chunk allocation
and copy-on-write need no cross-process locking. It creates, resizes,
snapshots, clones, rolls back and deletes volumes (an image's internal ones
only for blockd/images.py), makes writes durable (pool first, then the
metadata pointing at it), and is the NBD server's export registry: export
names are volume names.

Encrypted volumes: :meth:`create` asks the key service (storaged/kms.py) for a
64-byte data key sealed under the named KMS key (or the built-in one) with the
encryption context naming the volume's family; the record keeps only the sealed
key, snapshots and clones copy it. :meth:`unlock` opens it (every NBD connect:
a disabled KMS key refuses new connections) into one cached
:class:`~blockd.volume_cipher.VolumeCipher` per family.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from storaged import ObjectStore, StorageError
from storaged.kms import KMSError, key_id_of
from storaged.meta import new_id

from . import volmeta
from .chunk_map import ChunkMaps
from .errors import (
    InternalVolume,
    InvalidArgument,
    InvalidVolumeName,
    NoSuchVolume,
    ServiceUnavailable,
    ShrinkRefused,
    VolumeExists,
    VolumeHasSnapshots,
    VolumeInUse,
    VolumeKeyError,
)
from .export import Export, ExportRegistry, NBDError
from .pool import BLOCKS, CHUNK, ChunkPool
from .volmeta import VolumeRecord
from .volume import Volume, _zero_range
from .volume_cipher import KEY_BYTES, VolumeCipher

if TYPE_CHECKING:
    from storaged.kms import KeyService

log = logging.getLogger("basalt.blockd")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MAX_SIZE = 1 << 50
# Volumes blockd/images.py makes (``image.NAME.ID`` and ``image.NAME.ID@base``):
# hidden from listings and changed only by the image code (``internal=True``).
INTERNAL = re.compile(r"^image\.(?P<image>.+)\.(?P<id>[0-9a-f]{12})(?:@.*)?$")
# The snapshot basalt/backup.py keeps per backup chain (``backup-<target tag>-<id>``).
BACKUP_SNAPSHOT = re.compile(r"^backup-[0-9a-f]{8}-")


def internal_image(name: str) -> str | None:
    """The image whose internal volume (or snapshot) ``name`` is, else None."""
    m = INTERNAL.match(name)
    return m.group("image") if m else None


def is_backup_snapshot(name: str) -> bool:
    return BACKUP_SNAPSHOT.match(name.partition("@")[2]) is not None


def _context(family: str) -> dict[str, str]:
    """The encryption context a volume family's data key is sealed with."""
    return {"basalt:volume-family": family}


def _guard(name: str, internal: bool) -> None:
    """Refuse a user's change to (or creation of) an image's internal volume."""
    image = internal_image(name)
    if image is not None and not internal:
        raise InternalVolume(name, image)


class RWGate:
    """Many holders of ``shared()`` at once, or one of ``exclusive()``."""

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._cond = asyncio.Condition()

    @property
    def closed(self) -> bool:
        """An ``exclusive()`` holder is waiting or running: new writes must wait."""
        return self._writer

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        if self._writer:
            async with self._cond:
                await self._cond.wait_for(lambda: not self._writer)
        self._readers += 1
        try:
            yield
        finally:
            self._readers -= 1
            if self._readers == 0:
                async with self._cond:
                    self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._writer)
            self._writer = True
            await self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            async with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclasses.dataclass
class VolumeInfo:
    name: str
    size: int
    allocated: int
    created_ns: int
    origin: str
    connections: int
    note: str = ""
    encrypted: bool = False
    key_id: str | None = None  # the KMS key sealing an encrypted volume's data key

    @property
    def snapshot(self) -> bool:
        return "@" in self.name

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "snapshot": self.snapshot}


class VolumeManager(ExportRegistry):
    """Volumes on one store; also the NBD export registry."""

    def __init__(self, store: ObjectStore, keys: KeyService | None = None) -> None:
        self.store = store
        self.keys = keys  # storaged.kms.KeyService; None: no encrypted volumes here
        self.ciphers: dict[str, VolumeCipher] = {}  # family → its opened key
        self.pool = ChunkPool(store)
        self.chunks = ChunkMaps(self.pool)
        self.chunks.punch_later = self._punch_later
        self._punches: set[asyncio.Future] = set()
        self.pool.has_data = lambda: bool(self.chunks.refcounts)
        self.records: dict[str, VolumeRecord] = {}
        self.exports: dict[str, Volume] = {}
        self.writes = RWGate()
        self._flush_lock = asyncio.Lock()
        self._admin_lock = asyncio.Lock()
        self._watcher: asyncio.Future | None = None
        # blockd/images.py: one image operation at a time (materialise, clone, delete)
        self.image_lock = asyncio.Lock()

    # lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load every record and map (voted across the disks)."""
        self.records = volmeta.load_volumes(self.store)
        state = volmeta.load_pool(self.store)
        maps, packed = {}, set()
        for record in self.records.values():
            maps[record.map_id], is_packed = volmeta.load_map(self.store, record.map_id)
            if is_packed:
                packed.add(record.map_id)
        self.chunks.load(maps, state, packed)
        # Disks that missed writes while away keep stale copies: never read
        # them before a heal. Opening every disk's files now marks replaced ones.
        self.pool.untrusted |= state.stale
        for pos in self.store.online_positions():
            self.pool.open(pos)
        log.info("volumes ready", extra={"fields": {
            "volumes": sum(1 for r in self.records.values() if not r.snapshot),
            "slots": len(self.chunks.refcounts), "free": len(self.chunks.free)}})

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        try:
            await self.flush()
        finally:
            await self.reclaimed()
            self.pool.close()

    def _punch_later(self, slots: list[int]) -> None:
        """Punch released slots in a thread (see blockd.chunk_map), then free them."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop running: here, then
            self._clear(slots)
            self.chunks.reclaimed(slots)
            return
        job = loop.create_task(self._punch(slots))
        self._punches.add(job)
        job.add_done_callback(self._punches.discard)

    async def _punch(self, slots: list[int]) -> None:
        try:
            await self.store.run(self._clear, slots)
        except asyncio.CancelledError:
            raise  # the thread may still be punching: never hand these slots out
        except Exception:  # only space left used: an allocation clears its slot anyway
            log.exception("punching %d released volume slots failed", len(slots))
        self.chunks.reclaimed(slots)

    def _clear(self, slots: list[int]) -> None:
        for slot in slots:
            self.pool.clear(slot)

    async def reclaimed(self) -> None:
        """Wait until every released slot is punched and free."""
        while self._punches:
            await asyncio.gather(*self._punches, return_exceptions=True)

    def watch(self, interval: float = 5.0) -> None:
        """Heal in the background when a disk comes back replaced or wiped."""
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    for pos in self.store.online_positions():
                        self.pool.open(pos)  # notices a replaced disk
                    if self.pool.untrusted & set(self.store.online_positions()):
                        report = await self.heal()
                        log.info("volumes healed", extra={"fields": report})
                except Exception:
                    log.exception("volume heal failed")
        self._watcher = asyncio.ensure_future(loop())

    # the registry the NBD server asks ----------------------------------------------

    async def lookup(self, name: str) -> Export | None:
        if name not in self.records:
            return None
        export = self.exports.get(name)
        if export is None:
            # an image's base volume is written by the image code only, never over NBD
            read_only = self.records[name].snapshot or internal_image(name) is not None
            export = self.exports[name] = Volume(self, name, read_only=read_only)
        return export

    async def names(self) -> list[str]:
        """Export names to advertise: an image's internal volumes are not."""
        return sorted(n for n in self.records if internal_image(n) is None)

    async def listing(self) -> list[tuple[str, str]]:
        return [(name, (await self.lookup(name)).description) for name in await self.names()]

    # what volumes use while serving I/O -------------------------------------------

    def record(self, name: str) -> VolumeRecord:
        record = self.records.get(name)
        if record is None:
            raise NBDError(errno.EIO, f"volume {name} was deleted")
        return record

    def map_of(self, name: str) -> dict[int, int]:
        return self.chunks.maps[self.record(name).map_id]

    def shared(self, slot: int) -> bool:
        return self.chunks.shared(slot)

    @contextlib.asynccontextmanager
    async def io(self) -> AsyncIterator[None]:
        """Count data I/O in flight: released slots wait for it to finish."""
        with self.chunks.io():
            yield

    def own_chunk(self, name: str, index: int) -> int:
        """The slot chunk ``index`` of ``name`` may be written in: allocated when
        unmapped, copied when shared. Never awaits."""
        return self.chunks.own(self.record(name).map_id, index)

    def unmap(self, name: str, index: int) -> None:
        self.chunks.unmap(self.record(name).map_id, index)

    # The allocator's counts, as the tests and reports read them.
    @property
    def refcounts(self) -> dict[int, int]:
        return self.chunks.refcounts

    @property
    def free(self) -> set[int]:
        return self.chunks.free

    async def flush(self) -> None:
        """Make every acknowledged write and map change durable: pool first, then
        the metadata that points at it."""
        async with self._flush_lock:
            if self.pool.missed:
                self.chunks.changes.stale.update({p: True for p in self.pool.missed})
                self.pool.untrusted |= self.pool.missed
                self.pool.missed = set()
            changes, released = self.chunks.take()
            try:
                await self.store.run(self.pool.sync)
                if changes:
                    await volmeta.commit(self.store, changes)
            except (OSError, StorageError) as exc:
                self.chunks.untake(changes, released)
                raise NBDError(errno.EIO, f"flush failed: {exc}") from None
            self.chunks.committed(released)

    # administration ----------------------------------------------------------------

    def _require(self, name: str, snapshot: bool = False) -> VolumeRecord:
        record = self.records.get(name)
        if record is None or record.snapshot != snapshot:
            raise NoSuchVolume(name)
        return record

    def info(self, name: str) -> VolumeInfo:
        record = self.records.get(name)
        if record is None:
            raise NoSuchVolume(name)
        export = self.exports.get(name)
        return VolumeInfo(name, record.size, len(self.chunks.maps[record.map_id]) * CHUNK,
                          record.created_ns, record.origin, export.connections if export else 0,
                          record.note, record.encrypted,
                          key_id_of(record.key) if record.encrypted else None)

    def list(self, snapshots: bool = False, internal: bool = False) -> list[VolumeInfo]:
        """Volumes (and snapshots, backup ones included, when asked); an image's
        internal volumes only with ``internal``."""
        return [self.info(n) for n in sorted(self.records)
                if (snapshots or not self.records[n].snapshot)
                and (internal or internal_image(n) is None)]

    def _changed(self, name: str) -> None:
        """Note a record created, changed or (gone from ``records``) deleted."""
        record = self.records.get(name)
        self.chunks.changes.records[name] = record.pack() if record is not None else None

    async def _commit_admin(self) -> None:
        try:
            await self.flush()
        except NBDError as exc:
            raise ServiceUnavailable(str(exc)) from None

    async def create(self, name: str, size: int, origin: str = "", internal: bool = False,
                     encrypted: bool = False, kms_key: str | None = None) -> VolumeInfo:
        """A new empty volume; ``encrypted``: under a fresh data key sealed by KMS
        key ``kms_key`` (None: the built-in key)."""
        if not NAME.match(name):
            raise InvalidVolumeName()
        _guard(name, internal)
        if not 0 < size <= MAX_SIZE:
            raise InvalidArgument("InvalidSize", f"size must be between 1 byte and {MAX_SIZE}")
        if name in self.records:
            raise VolumeExists(name)
        map_id = new_id()
        sealed = await self._new_key(map_id, kms_key) if encrypted else b""
        async with self._admin_lock:
            if name in self.records:
                raise VolumeExists(name)
            record = VolumeRecord(name, map_id, size, time.time_ns(), origin,
                                  key=sealed, family=map_id if sealed else "")
            self.records[name] = record
            self.chunks.add(record.map_id)
            self._changed(name)
            await self._commit_admin()
        log.info("volume created", extra={"fields": {"volume": name, "size": size,
                                                     "encrypted": bool(sealed)}})
        return self.info(name)

    # encryption --------------------------------------------------------------------

    def _key_service(self) -> KeyService:
        if self.keys is None:
            raise VolumeKeyError("EncryptionUnavailable",
                                 "this server has no key service for encrypted volumes")
        return self.keys

    async def _new_key(self, family: str, kms_key: str | None) -> bytes:
        """A fresh data key for a volume family, sealed (the only form kept)."""
        try:
            made = await self._key_service().data_key(kms_key, _context(family), size=KEY_BYTES)
        except KMSError as exc:
            raise VolumeKeyError(exc.code, exc.message) from None
        return made.sealed

    async def unlock(self, name: str) -> VolumeCipher | None:
        """The cipher of an encrypted volume (None for a plaintext one), its key
        opened now: refused while its KMS key is disabled or missing."""
        record = self.records.get(name)
        if record is None:
            raise NoSuchVolume(name)
        if not record.encrypted:
            return None
        try:
            plaintext = await self._key_service().open(record.key, _context(record.family))
        except KMSError as exc:
            raise VolumeKeyError(exc.code, f"volume {name}: {exc.message}") from None
        cipher = self.ciphers.get(record.family)
        if cipher is None:
            cipher = self.ciphers[record.family] = VolumeCipher(plaintext)
        return cipher

    async def resize(self, name: str, size: int, force: bool = False,
                     internal: bool = False) -> VolumeInfo:
        _guard(name, internal)
        if not 0 < size <= MAX_SIZE:
            raise InvalidArgument("InvalidSize", f"size must be between 1 byte and {MAX_SIZE}")
        async with self._admin_lock:
            record = self._require(name)
            if size < record.size and not force:
                raise ShrinkRefused(name, record.size, size)
            if size < record.size:
                cipher = await self.unlock(name)  # the cut's last block is rewritten
                async with self.writes.exclusive():
                    self._cut(record, size, cipher)
            record.size = size
            self._changed(name)
            await self._commit_admin()
        return self.info(name)

    def _cut(self, record: VolumeRecord, size: int, cipher: VolumeCipher | None) -> None:
        """Drop the chunks past ``size``; zero the tail of the last one."""
        entries = self.chunks.maps[record.map_id]
        last = size // CHUNK
        for index in [i for i in entries if i > last or (i == last and size % CHUNK == 0)]:
            self.unmap(record.name, index)
        if size % CHUNK and last in entries:
            slot = self.own_chunk(record.name, last)
            _zero_range(self.pool, slot, size % CHUNK, CHUNK - size % CHUNK, cipher,
                        last * BLOCKS)

    def snapshots(self, name: str) -> list[VolumeInfo]:
        """The snapshots of a volume (``NAME@SNAP``), oldest first."""
        self._require(name)
        snaps = [r for n, r in self.records.items() if r.snapshot and n.startswith(name + "@")]
        return [self.info(r.name) for r in sorted(snaps, key=lambda r: r.created_ns)]

    async def snapshot(self, name: str, snap: str, note: str = "",
                       internal: bool = False) -> VolumeInfo:
        """An instant, read-only, point-in-time copy (``NAME@SNAP``); ``note`` says
        what keeps it (a backup chain's target), for the messages that name it."""
        if not NAME.match(snap):
            raise InvalidVolumeName(snapshot=True)
        _guard(name, internal)
        full = f"{name}@{snap}"
        async with self._admin_lock:
            record = self._require(name)
            if full in self.records:
                raise VolumeExists(full)
            # No write may be half-applied while the map is copied; writes
            # already acknowledged are in it, later ones go to copies.
            async with self.writes.exclusive():
                snapshot = VolumeRecord(full, new_id(), record.size, time.time_ns(), name,
                                        snapshot=True, note=note, key=record.key,
                                        family=record.family)
                self.chunks.share(record.map_id, snapshot.map_id, frozen=True)
                self.records[full] = snapshot
                self._changed(full)
                await self._commit_admin()
        log.info("snapshot created", extra={"fields": {"snapshot": full}})
        return self.info(full)

    async def clone(self, source: str, name: str) -> VolumeInfo:
        """A new writable volume sharing a snapshot's chunks until they change
        (an image's ``@base`` included: that is how volumes are made from images)."""
        if "@" not in source:
            raise InvalidArgument("InvalidSource", "clones are made from a snapshot: NAME@SNAP")
        if not NAME.match(name):
            raise InvalidVolumeName()
        _guard(name, False)
        async with self._admin_lock:
            snap = self._require(source, snapshot=True)
            if name in self.records:
                raise VolumeExists(name)
            record = VolumeRecord(name, new_id(), snap.size, time.time_ns(), source,
                                  key=snap.key, family=snap.family)
            self.chunks.share(snap.map_id, record.map_id)
            self.records[name] = record
            self._changed(name)
            await self._commit_admin()
        log.info("clone created", extra={"fields": {"volume": name, "origin": source}})
        return self.info(name)

    async def rollback(self, source: str, internal: bool = False) -> VolumeInfo:
        """Make a volume what it was at one of its snapshots (refused while in use)."""
        name, _, _ = source.partition("@")
        _guard(name, internal)
        async with self._admin_lock:
            snap = self._require(source, snapshot=True)
            record = self._require(name)
            self._idle(name)
            async with self.writes.exclusive():
                self.chunks.empty(record.map_id)
                self.chunks.share(snap.map_id, record.map_id)
                record.size = snap.size
                self._changed(name)
                await self._commit_admin()
            self.chunks.recycle()
        log.info("volume rolled back", extra={"fields": {"volume": name, "snapshot": source}})
        return self.info(name)

    def diff(self, name: str, base: str | None) -> tuple[dict[int, int], list[int]]:
        """A snapshot's map, and the chunks that differ from ``base`` (all when None)."""
        entries = self.chunks.maps[self._require(name, snapshot=True).map_id]
        if base is None:
            return entries, sorted(entries)
        old = self.chunks.maps[self._require(base, snapshot=True).map_id]
        changed = {i for i, s in entries.items() if old.get(i) != s}
        changed |= {i for i in old if i not in entries}
        return entries, sorted(changed)

    def _idle(self, name: str) -> None:
        export = self.exports.get(name)
        if export is not None and export.connections:
            raise VolumeInUse(name, export.connections)

    async def delete(self, name: str, internal: bool = False) -> None:
        """Delete a volume (once it has no snapshots) or a snapshot ``NAME@SNAP``."""
        async with self._admin_lock:
            record = self.records.get(name)
            if record is None:
                raise NoSuchVolume(name)
            _guard(name, internal)
            self._idle(name)
            if not record.snapshot:
                snaps = [r for n, r in self.records.items() if n.startswith(name + "@")]
                if snaps:
                    snaps.sort(key=lambda r: r.created_ns)
                    raise VolumeHasSnapshots(name, [r.name for r in snaps], {
                        r.name: r.note for r in snaps if is_backup_snapshot(r.name)})
            async with self.writes.exclusive():
                self.chunks.drop(record.map_id)
                del self.records[name]
                self.exports.pop(name, None)
                self._changed(name)
            await self._commit_admin()
            self.chunks.recycle()
        log.info("volume deleted", extra={"fields": {"volume": name}})

    # healing -----------------------------------------------------------------------

    async def heal(self) -> dict:
        """Rewrite the volume metadata on every disk and every slot's lost or
        damaged copies (after a disk was wiped or replaced)."""
        async with self._admin_lock, self.writes.exclusive():
            await self.flush()
            positions = self.store.online_positions()
            healed = [p for p in positions if p in self.pool.untrusted]
            full = volmeta.full_state(self.records, self.chunks.maps, self.chunks.state(),
                                      self.chunks.packed)
            # Disks still offline keep their stale mark; those healed lose it.
            full.stale = {p: True for p in self.pool.untrusted if p not in positions}
            done = await self.store.set.commit_all([volmeta.ReplaceVolumeTables(full)], positions)
            if done.errors:  # every disk must take the repaired tables
                raise next(iter(done.errors.values()))
            slots = sorted(self.chunks.refcounts)
            repaired = await self.store.run(self.pool.heal, slots)
            for pos in positions:
                self.pool.trust(pos)
        return {"volumes": len(self.list()), "slots": len(slots), "blocks_repaired": repaired,
                "disks_healed": healed}

