"""Block volume metadata in the disks' LMDB: records, chunk maps, slot counts.

Tables (written on every disk with the engine's write quorum, read by vote
like object records, so losing M disks loses nothing):

``volumes``  volume name → record (map id, size, creation time, origin; for an
             encrypted volume its family's data key, sealed, and the family id)
``vmap``     map id (16 bytes) + chunk index (8 bytes) → slot (8 bytes); a
             snapshot's map, which never changes, is packed instead: map id +
             ``b"P"`` + segment number (4 bytes) → up to SEGMENT (index, slot)
             pairs, so taking or deleting a snapshot is a few puts, not one per chunk
``vslots``   ``b"next"`` → next never-used slot; ``b"stale" + disk`` → a disk that
             missed writes. (Each slot's count of maps using it is derived from the
             maps at start; ``b"rc" + slot`` counts and ``b"free" + slot`` entries
             that older versions stored are deleted then.)
"""

from __future__ import annotations

import array
import dataclasses
import struct
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack

from storaged import ObjectStore, ReadQuorumError, wire

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
SEGMENT = 1 << 16  # (index, slot) pairs per packed map record: 1 MiB values
_PACKED = b"P"


@dataclasses.dataclass
class VolumeRecord:
    name: str
    map_id: str          # 32 hex chars
    size: int
    created_ns: int
    origin: str = ""     # "volume@snapshot" a clone started from
    snapshot: bool = False
    note: str = ""       # what keeps it, e.g. the s3:// target of a backup chain's snapshot
    # Encrypted volumes: the XTS data key sealed by the key service (never in
    # clear) under the encryption context naming the family (the volume it was
    # made for, and its snapshots and clones, which share the key).
    key: bytes = dataclasses.field(default=b"", repr=False)
    family: str = ""

    @property
    def encrypted(self) -> bool:
        return bool(self.key)

    def pack(self) -> bytes:
        body = {"map": self.map_id, "size": self.size, "ct": self.created_ns,
                "origin": self.origin, "snap": self.snapshot}
        if self.note:
            body["note"] = self.note
        if self.key:
            body["key"], body["fam"] = self.key, self.family
        return msgpack.packb(body)

    @classmethod
    def unpack(cls, name: str, raw: bytes) -> VolumeRecord:
        d = msgpack.unpackb(raw)
        return cls(name, d["map"], d["size"], d["ct"], d.get("origin", ""), d.get("snap", False),
                   d.get("note", ""), d.get("key", b""), d.get("fam", ""))


def map_key(map_id: str, index: int) -> bytes:
    return bytes.fromhex(map_id) + _U64.pack(index)


def pack_map(entries: Mapping[int, int]) -> bytes:
    """A whole map as little-endian u64 (index, slot) pairs, in index order."""
    pairs = array.array("Q", [x for item in sorted(entries.items()) for x in item])
    if sys.byteorder == "big":
        pairs.byteswap()
    return pairs.tobytes()


def unpack_map(packed: bytes) -> dict[int, int]:
    pairs = array.array("Q", packed)
    if sys.byteorder == "big":
        pairs.byteswap()
    return dict(zip(pairs[0::2], pairs[1::2], strict=True))


def _put_packed(tx: Any, map_id: str, packed: bytes | None) -> None:
    """Replace a packed map's segments (none left when ``packed`` is None)."""
    prefix = bytes.fromhex(map_id) + _PACKED
    cur = tx.txn.cursor(db=tx.dbs[b"vmap"])
    found = cur.set_range(prefix)
    while found and cur.key().startswith(prefix):
        found = cur.delete()
    step = SEGMENT * 16
    for n, start in enumerate(range(0, len(packed or b""), step)):
        tx.put(b"vmap", prefix + _U32.pack(n), packed[start:start + step])


@wire.register
@dataclasses.dataclass
class MetaChanges:
    """Everything a flush commits: map entries, packed maps, allocator state."""

    records: dict[str, bytes | None] = dataclasses.field(default_factory=dict)
    maps: dict[tuple[str, int], int | None] = dataclasses.field(default_factory=dict)
    # Older versions' stored slot counts and free-list entries: only deletions
    # (count 0, False) are made now.
    refcounts: dict[int, int] = dataclasses.field(default_factory=dict)
    free: dict[int, bool] = dataclasses.field(default_factory=dict)
    next_slot: int | None = None
    stale: dict[int, bool] = dataclasses.field(default_factory=dict)  # disk → missed writes
    packed: dict[str, bytes | None] = dataclasses.field(default_factory=dict)  # see pack_map

    def __bool__(self) -> bool:
        return bool(self.records or self.maps or self.refcounts or self.free
                    or self.next_slot is not None or self.stale or self.packed)

    def merge(self, newer: MetaChanges) -> None:
        self.records.update(newer.records)
        self.maps.update(newer.maps)
        self.packed.update(newer.packed)
        self.refcounts.update(newer.refcounts)
        self.free.update(newer.free)
        self.stale.update(newer.stale)
        if newer.next_slot is not None:
            self.next_slot = newer.next_slot


@wire.register
@dataclasses.dataclass
class ApplyChanges:
    """The LMDB operation committing a :class:`MetaChanges` on one disk."""

    changes: MetaChanges

    def apply(self, tx: Any) -> None:
        c = self.changes
        for name, record in c.records.items():
            if record is None:
                tx.delete(b"volumes", name.encode())
            else:
                tx.put(b"volumes", name.encode(), record)
        for (map_id, index), slot in c.maps.items():
            if slot is None:
                tx.delete(b"vmap", map_key(map_id, index))
            else:
                tx.put(b"vmap", map_key(map_id, index), _U64.pack(slot))
        for map_id, packed in c.packed.items():
            _put_packed(tx, map_id, packed)
        for slot, count in c.refcounts.items():
            if count:
                tx.put(b"vslots", b"rc" + _U64.pack(slot), _U32.pack(count))
            else:
                tx.delete(b"vslots", b"rc" + _U64.pack(slot))
        for slot, is_free in c.free.items():
            if is_free:
                tx.put(b"vslots", b"free" + _U64.pack(slot), b"")
            else:
                tx.delete(b"vslots", b"free" + _U64.pack(slot))
        if c.next_slot is not None:
            tx.put(b"vslots", b"next", _U64.pack(c.next_slot))
        for pos, is_stale in c.stale.items():
            if is_stale:
                tx.put(b"vslots", b"stale" + _U32.pack(pos), b"")
            else:
                tx.delete(b"vslots", b"stale" + _U32.pack(pos))


@wire.register
@dataclasses.dataclass
class ReplaceVolumeTables:
    """The LMDB operation making a disk's volume tables exactly ``changes`` (a
    full state, see :func:`full_state`), dropping anything stale: the heal."""

    changes: MetaChanges

    def apply(self, tx: Any) -> None:
        for table in (b"volumes", b"vmap", b"vslots"):
            cur = tx.txn.cursor(db=tx.dbs[table])
            found = cur.first()
            while found:
                found = cur.delete()
        ApplyChanges(self.changes).apply(tx)


async def commit(store: ObjectStore, changes: MetaChanges,
                 positions: Iterable[int] | None = None) -> None:
    """Commit on every online disk; a write quorum must take it."""
    done = await store.set.commit_all([ApplyChanges(changes)], positions)
    done.require(store.write_quorum, "volume metadata")


def _voters(store: ObjectStore) -> list[int]:
    return [p for p in store.online_positions() if not store.disks[p].healing]


def vote_range(store: ObjectStore, table: bytes, prefix: bytes) -> dict[bytes, bytes]:
    """Items of a table under ``prefix`` that at least K disks agree on."""
    voters = _voters(store)
    if store.n - len(voters) > store.n - store.k:
        raise ReadQuorumError("too many disks unavailable to read volume metadata")
    seen: dict[bytes, Counter[bytes]] = {}
    for pos in voters:
        for key, value in store.disks[pos].read_now("range", table, prefix, prefix):
            seen.setdefault(key, Counter())[value] += 1
    out = {}
    for key, votes in seen.items():
        value, count = votes.most_common(1)[0]
        if count >= store.k:
            out[key] = value
    return out


@dataclasses.dataclass
class PoolState:
    """Slot bookkeeping of the whole pool, loaded at start."""

    next_slot: int
    refcounts: dict[int, int]
    free: set[int]
    stale: set[int] = dataclasses.field(default_factory=set)


def load_volumes(store: ObjectStore) -> dict[str, VolumeRecord]:
    return {k.decode(): VolumeRecord.unpack(k.decode(), v)
            for k, v in vote_range(store, b"volumes", b"").items()}


def load_map(store: ObjectStore, map_id: str) -> tuple[dict[int, int], bool]:
    """A map (each record voted on by itself), and whether it is stored packed."""
    entries: dict[int, int] = {}
    packed = False
    for key, value in sorted(vote_range(store, b"vmap", bytes.fromhex(map_id)).items()):
        if len(key) == 24:
            entries[_U64.unpack(key[16:])[0]] = _U64.unpack(value)[0]
        else:
            entries.update(unpack_map(value))
            packed = True
    return entries, packed


def load_pool(store: ObjectStore) -> PoolState:
    items = vote_range(store, b"vslots", b"")
    refcounts = {_U64.unpack(k[2:])[0]: _U32.unpack(v)[0] for k, v in items.items()
                 if k.startswith(b"rc")}
    free = {_U64.unpack(k[4:])[0] for k in items if k.startswith(b"free")}
    stale = {_U32.unpack(k[5:])[0] for k in items if k.startswith(b"stale")}
    next_slot = _U64.unpack(items[b"next"])[0] if b"next" in items else 0
    return PoolState(next_slot, refcounts, free, stale)


def full_state(records: Mapping[str, VolumeRecord], maps: Mapping[str, Mapping[int, int]],
               pool: PoolState, packed: Iterable[str] = ()) -> MetaChanges:
    """All metadata as one change set (to heal a disk that lost it); the maps
    named in ``packed`` are stored packed."""
    changes = MetaChanges(next_slot=pool.next_slot)
    changes.records = {name: r.pack() for name, r in records.items()}
    packed = set(packed)
    for map_id, entries in maps.items():
        if map_id in packed:
            changes.packed[map_id] = pack_map(entries)
            continue
        for index, slot in entries.items():
            changes.maps[(map_id, index)] = slot
    return changes
