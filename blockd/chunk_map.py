"""Chunk maps and the slot allocator: which pool slot holds each volume chunk.

Every volume and snapshot has a map (chunk index → slot, under its map id).
Snapshots and clones share slots with the map they were taken from, so each
slot carries a count of the maps using it (in memory only: derived from the
maps at start); a write to a slot another map uses goes to a fresh copy first
(copy-on-write). Every map change is also noted in :attr:`ChunkMaps.changes`,
which the next flush commits to the disks. A snapshot's map never changes, so
it is committed packed (volmeta.pack_map): a few puts, not one per chunk.

Slot life cycle: allocated (hole-punched, so it reads as zeros) when a chunk
is first written or copied on write; released when no map uses it; punched
(its space given back) and free once no I/O that started before the release
can still touch it. With :attr:`ChunkMaps.punch_later` set (the manager), the
punching runs off the event loop and the slots are free when it calls
:meth:`ChunkMaps.reclaimed`: six fallocates per slot, 0.3 ms, so deleting a
10 GiB volume on the loop would stall every volume's I/O for ~50 s.

Only the process that owns the disks keeps these maps, and nothing here
awaits, so allocation and copy-on-write of one chunk never interleave with
another request's and need no locking.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

from .volmeta import MetaChanges, PoolState, pack_map


class SlotStore(Protocol):
    """What the allocator needs of the pool (blockd.pool.ChunkPool)."""

    def clear(self, slot: int) -> None: ...

    def copy(self, src: int, dst: int) -> None: ...


class ChunkMaps:
    """Every map, each slot's user count, and the free and released slots."""

    def __init__(self, pool: SlotStore) -> None:
        self.pool = pool
        self.maps: dict[str, dict[int, int]] = {}  # map id → chunk → slot
        self.refcounts: dict[int, int] = {}         # slot → maps using it
        self.free: set[int] = set()
        self.next_slot = 0
        self.limbo: list[int] = []       # released; their unmap not durable yet
        self.releasable: list[int] = []  # released, unmap durable; reusable once I/O drains
        self.reclaiming: set[int] = set()  # handed to punch_later, not free yet
        # Punches released slots elsewhere, then calls reclaimed(); None: here.
        self.punch_later: Callable[[list[int]], None] | None = None
        self.changes = MetaChanges()     # what the next flush commits
        self.packed: set[str] = set()    # maps stored packed: frozen, never changed
        self._inflight = 0

    def load(self, maps: dict[str, dict[int, int]], state: PoolState,
             packed: set[str] | None = None) -> None:
        """Take the maps (``packed``: those stored packed) and the pool state read
        at start; the counts are derived from the maps."""
        self.maps = maps
        self.packed = set(packed or ())
        refcounts: dict[int, int] = {}
        for entries in maps.values():
            for slot in entries.values():
                refcounts[slot] = refcounts.get(slot, 0) + 1
        # Counts and free-list entries an older version stored: the maps say it all.
        self.changes.refcounts.update({s: 0 for s in state.refcounts})
        self.changes.free.update({s: False for s in state.free})
        self.refcounts = refcounts
        self.next_slot = max(state.next_slot, max(refcounts, default=-1) + 1)
        self.free = set(range(self.next_slot)) - set(refcounts)

    def state(self) -> PoolState:
        """The slot bookkeeping as stored (free slots are derived at load)."""
        return PoolState(self.next_slot, dict(self.refcounts), set())

    # maps ----------------------------------------------------------------------------

    def add(self, map_id: str) -> None:
        """A new, empty map."""
        self.maps[map_id] = {}

    def share(self, source: str, map_id: str, frozen: bool = False) -> None:
        """Make ``map_id`` (new, or emptied) point at the slots of ``source``
        (one more user of each): a snapshot (``frozen``: never changed again,
        committed packed), a clone, a rollback."""
        entries = self.maps[source]
        self.maps[map_id] = copy = dict(entries)
        refcounts = self.refcounts
        for slot in entries.values():
            refcounts[slot] = refcounts.get(slot, 0) + 1
        if frozen:
            self.packed.add(map_id)
            self.changes.packed[map_id] = pack_map(copy)
        else:
            self.changes.maps.update({(map_id, i): s for i, s in entries.items()})

    def own(self, map_id: str, index: int) -> int:
        """The slot chunk ``index`` may be written in: allocated when unmapped,
        copied when shared."""
        slot = self.maps[map_id].get(index)
        if slot is None:
            self._writable(map_id)
            slot = self._alloc()
            self._set(map_id, index, slot)
        elif self.refcounts.get(slot, 0) > 1:
            self._writable(map_id)
            copy = self._alloc()
            self.pool.copy(slot, copy)
            self._release(slot)
            self._set(map_id, index, copy)
            slot = copy
        return slot

    def unmap(self, map_id: str, index: int) -> None:
        """Drop one chunk (it reads as zeros again); its slot loses a user."""
        slot = self.maps[map_id].get(index)
        if slot is not None:
            self._writable(map_id)
            self._set(map_id, index, None)
            self._release(slot)

    def empty(self, map_id: str) -> None:
        """Unmap every chunk of a map."""
        for index in list(self.maps[map_id]):
            self.unmap(map_id, index)

    def drop(self, map_id: str) -> None:
        """Unmap every chunk and forget the map."""
        if map_id in self.packed:
            self.packed.discard(map_id)
            self.changes.packed[map_id] = None
            for slot in self.maps.pop(map_id).values():
                self._release(slot)
            return
        self.empty(map_id)
        del self.maps[map_id]

    def shared(self, slot: int) -> bool:
        return self.refcounts.get(slot, 0) > 1

    # slots ---------------------------------------------------------------------------

    def _alloc(self) -> int:
        if self.free:
            slot = self.free.pop()
        else:
            slot = self.next_slot
            self.next_slot += 1
            self.changes.next_slot = self.next_slot
        self.pool.clear(slot)  # whatever an earlier life left there reads as zeros
        self.refcounts[slot] = 1
        return slot

    def _writable(self, map_id: str) -> None:
        if map_id in self.packed:
            raise ValueError(f"map {map_id} is a snapshot's: it never changes")

    def _set(self, map_id: str, index: int, slot: int | None) -> None:
        entries = self.maps[map_id]
        if slot is None:
            entries.pop(index, None)
        else:
            entries[index] = slot
        self.changes.maps[(map_id, index)] = slot

    def _release(self, slot: int) -> None:
        count = self.refcounts.get(slot, 0) - 1
        if count > 0:
            self.refcounts[slot] = count
        else:
            self.refcounts.pop(slot, None)
            self.limbo.append(slot)

    @contextlib.contextmanager
    def io(self) -> Iterator[None]:
        """Count data I/O in flight: released slots wait for it to finish."""
        self._inflight += 1
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0 and self.releasable:
                self.recycle()

    def recycle(self) -> None:
        """Reuse released slots: only once the map no longer naming them is durable
        (else a crash would bring back a map pointing at reused data) and no I/O
        that began before the release can still touch them. Their space is
        given back first (punched), here or by :attr:`punch_later`."""
        if self._inflight or not self.releasable:
            return
        slots, self.releasable = self.releasable, []
        if self.punch_later is not None:
            self.reclaiming.update(slots)
            self.punch_later(slots)
            return
        for slot in slots:
            self.pool.clear(slot)
        self.free.update(slots)

    def reclaimed(self, slots: list[int]) -> None:
        """``punch_later`` punched ``slots``: they are free."""
        self.reclaiming.difference_update(slots)
        self.free.update(slots)

    # flushes -------------------------------------------------------------------------

    def take(self) -> tuple[MetaChanges, list[int]]:
        """The changes for a flush to commit and the slots it releases; later
        changes collect anew."""
        changes, self.changes = self.changes, MetaChanges()
        released, self.limbo = self.limbo, []
        return changes, released

    def untake(self, changes: MetaChanges, released: list[int]) -> None:
        """The flush failed: its changes and slots wait for the next one."""
        changes.merge(self.changes)
        self.changes = changes
        self.limbo = released + self.limbo

    def committed(self, released: list[int]) -> None:
        """The flush is durable: its released slots can be reused once I/O drains."""
        self.releasable += released
        self.recycle()
