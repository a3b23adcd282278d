"""The chunk maps and slot allocator on their own, over a pool that only records."""

import pytest

from blockd.chunk_map import ChunkMaps
from blockd.volmeta import PoolState, pack_map, unpack_map


class RecordingPool:
    """Slots as dict entries; notes which slots were cleared and copied."""

    def __init__(self) -> None:
        self.data: dict[int, bytes] = {}
        self.cleared: list[int] = []
        self.copies: list[tuple[int, int]] = []

    def clear(self, slot: int) -> None:
        self.cleared.append(slot)
        self.data.pop(slot, None)

    def copy(self, src: int, dst: int) -> None:
        self.copies.append((src, dst))
        self.data[dst] = self.data.get(src, b"")


def maps_with_volume() -> tuple[ChunkMaps, RecordingPool]:
    pool = RecordingPool()
    chunks = ChunkMaps(pool)
    chunks.add("vol")
    return chunks, pool


def flush(chunks: ChunkMaps) -> None:
    """What a successful flush does around its commit."""
    _, released = chunks.take()
    chunks.committed(released)


def test_first_write_allocates_a_cleared_slot_once():
    chunks, pool = maps_with_volume()
    pool.data[0] = b"an earlier life"
    a = chunks.own("vol", 7)
    b = chunks.own("vol", 9)
    assert (a, b) == (0, 1) and chunks.maps["vol"] == {7: 0, 9: 1}
    assert pool.cleared == [0, 1] and 0 not in pool.data  # reads as zeros
    assert chunks.own("vol", 7) == 0 and pool.cleared == [0, 1]  # no second allocation
    assert chunks.refcounts == {0: 1, 1: 1} and chunks.next_slot == 2
    changes = chunks.changes
    assert changes.maps == {("vol", 7): 0, ("vol", 9): 1}
    assert not changes.refcounts and changes.next_slot == 2  # counts are derived at load


def test_a_snapshot_shares_every_slot_and_a_write_copies_only_its_chunk():
    chunks, pool = maps_with_volume()
    for index in range(3):
        pool.data[chunks.own("vol", index)] = b"v%d" % index
    flush(chunks)
    chunks.share("vol", "snap", frozen=True)
    assert chunks.maps["snap"] == chunks.maps["vol"] == {0: 0, 1: 1, 2: 2}
    assert chunks.refcounts == {0: 2, 1: 2, 2: 2}
    assert all(chunks.shared(slot) for slot in range(3))
    # a snapshot's map is committed as one packed value, not an entry per chunk
    assert not chunks.changes.maps and not chunks.changes.refcounts
    assert unpack_map(chunks.changes.packed["snap"]) == {0: 0, 1: 1, 2: 2}

    slot = chunks.own("vol", 1)  # copy-on-write
    assert slot == 3 and pool.copies == [(1, 3)] and pool.data[3] == b"v1"
    assert chunks.maps["vol"] == {0: 0, 1: 3, 2: 2} and chunks.maps["snap"][1] == 1
    assert chunks.refcounts == {0: 2, 1: 1, 2: 2, 3: 1}
    assert not chunks.shared(1) and not chunks.shared(3)
    assert chunks.own("vol", 1) == 3 and pool.copies == [(1, 3)]  # its own now
    for change in (lambda: chunks.own("snap", 9), lambda: chunks.unmap("snap", 0)):
        with pytest.raises(ValueError):
            change()  # a snapshot's map never changes
    assert chunks.maps["snap"] == {0: 0, 1: 1, 2: 2} and chunks.next_slot == 4


def test_a_clone_is_committed_entry_by_entry():
    chunks, _ = maps_with_volume()
    chunks.own("vol", 4)
    chunks.share("vol", "clone")
    assert chunks.changes.maps[("clone", 4)] == 0 and "clone" not in chunks.changes.packed
    assert chunks.own("clone", 4) == 1  # writable: copied on write


def test_packed_maps_round_trip():
    entries = {5: 1, 0: 7, 1 << 33: 2}
    assert unpack_map(pack_map(entries)) == entries and len(pack_map(entries)) == 48


def test_slots_given_up_by_copy_on_write_come_back_after_the_flush():
    chunks, pool = maps_with_volume()
    chunks.own("vol", 0)
    chunks.share("vol", "snap", frozen=True)
    assert chunks.own("vol", 0) == 1  # the snapshot keeps slot 0
    chunks.drop("snap")
    assert "snap" not in chunks.maps and chunks.refcounts == {1: 1}
    assert chunks.changes.packed["snap"] is None and ("snap", 0) not in chunks.changes.maps
    # released, but the map that no longer names it is not durable yet
    assert chunks.limbo == [0] and not chunks.free
    assert chunks.own("vol", 5) == 2  # a new slot, not the released one
    flush(chunks)
    assert chunks.free == {0} and not chunks.limbo and pool.cleared[-1] == 0
    assert chunks.own("vol", 6) == 0 and not chunks.free  # reused, cleared again
    assert pool.cleared[-1] == 0 and chunks.refcounts[0] == 1


def test_a_failed_flush_keeps_released_slots_and_changes_for_the_next():
    chunks, _ = maps_with_volume()
    chunks.own("vol", 0)
    flush(chunks)
    chunks.unmap("vol", 0)
    changes, released = chunks.take()
    assert released == [0] and changes.maps == {("vol", 0): None}
    chunks.own("vol", 1)  # a change made while the flush ran
    chunks.untake(changes, released)  # the commit failed
    assert chunks.limbo == [0] and not chunks.free
    assert chunks.changes.maps == {("vol", 0): None, ("vol", 1): 1}
    flush(chunks)
    assert chunks.free == {0}


def test_a_released_slot_is_not_reused_while_io_is_in_flight():
    chunks, pool = maps_with_volume()
    chunks.own("vol", 0)
    flush(chunks)
    with chunks.io():  # e.g. a read of chunk 0 still copying out of slot 0
        chunks.unmap("vol", 0)
        flush(chunks)
        assert chunks.releasable == [0] and not chunks.free
        cleared = len(pool.cleared)
        assert chunks.own("vol", 1) == 1  # allocation cannot take slot 0 yet
        assert 0 not in pool.cleared[cleared:]  # nor was slot 0 punched under the read
        with chunks.io():
            pass
        assert not chunks.free  # the outer I/O is still in flight
    assert chunks.free == {0} and not chunks.releasable
    assert chunks.own("vol", 2) == 0


def test_load_derives_counts_and_free_slots_from_the_maps():
    chunks, _ = maps_with_volume()
    maps = {"vol": {0: 4, 1: 2}, "snap": {0: 4}}
    # counts an older version stored (here stale ones): derived instead, and deleted
    chunks.load(maps, PoolState(next_slot=6, refcounts={4: 2, 3: 1}, free={1}))
    assert chunks.refcounts == {4: 2, 2: 1} and chunks.free == {0, 1, 3, 5}
    assert chunks.changes.refcounts == {4: 0, 3: 0} and chunks.changes.free == {1: False}
    assert chunks.next_slot == 6 and chunks.shared(4) and not chunks.shared(2)
    chunks.load({"vol": {0: 9}}, PoolState(next_slot=3, refcounts={9: 1}, free=set()))
    assert chunks.next_slot == 10  # never below a slot in use
