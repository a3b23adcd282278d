"""What a snapshot costs in volume metadata, counted (issue 15's guard, not timed):
taking and deleting one commits a few LMDB puts per disk whatever the volume's
size, since a snapshot's map never changes and is stored packed; maps stored
entry by entry (older versions' snapshots) still load and delete."""

from __future__ import annotations

from collections import Counter

import pytest
from volume_helpers import close, open_manager

from blockd import volmeta
from storaged import metadb


@pytest.fixture
def writes(monkeypatch):
    """LMDB puts and deletes per table, on every disk."""
    counts: Counter[str] = Counter()
    put, delete = metadb.Tx.put, metadb.Tx.delete

    def counted_put(self, table, key, value):
        counts[f"put {table.decode()}"] += 1
        put(self, table, key, value)

    def counted_delete(self, table, key):
        counts[f"delete {table.decode()}"] += 1
        delete(self, table, key)

    monkeypatch.setattr(metadb.Tx, "put", counted_put)
    monkeypatch.setattr(metadb.Tx, "delete", counted_delete)
    return counts


async def fill(vm, name: str, chunks: int) -> None:
    """A volume with ``chunks`` chunks mapped (no data written: the map is what counts)."""
    await vm.create(name, chunks * (64 << 10))
    for index in range(chunks):
        vm.own_chunk(name, index)
    await vm.flush()


async def test_a_snapshot_commits_the_same_few_puts_whatever_the_volume_size(dirs, writes):
    store, vm = await open_manager(dirs)
    try:
        costs = []
        for name, chunks in (("small", 16), ("large", 4096)):
            await fill(vm, name, chunks)
            writes.clear()
            await vm.snapshot(name, "s")
            taken = dict(writes)
            writes.clear()
            await vm.delete(f"{name}@s")
            costs.append((taken, dict(writes)))
        assert costs[0] == costs[1]
        taken, deleted = costs[0]
        # per disk: the record and one packed map value; their deletion (the
        # packed value found by a cursor, not counted here)
        assert taken == {"put volumes": 4, "put vmap": 4}
        assert deleted == {"delete volumes": 4}
    finally:
        await close(store, vm)


async def test_maps_stored_entry_by_entry_still_load_and_delete(dirs):
    store, vm = await open_manager(dirs)
    await fill(vm, "v", 8)
    await vm.snapshot("v", "s")
    snap_map = vm.records["v@s"].map_id
    entries = dict(vm.map_of("v@s"))
    # what an older version stored: the snapshot's map entry by entry, slot counts
    legacy = volmeta.MetaChanges(packed={snap_map: None},
                                 maps={(snap_map, i): s for i, s in entries.items()},
                                 refcounts={s: 2 for s in entries.values()})
    await volmeta.commit(store, legacy)
    await close(store, vm)

    store, vm = await open_manager(dirs)
    try:
        assert vm.map_of("v@s") == entries and snap_map not in vm.chunks.packed
        assert set(vm.refcounts.values()) == {2}  # derived from the maps
        await vm.delete("v@s")
        assert volmeta.load_map(store, snap_map) == ({}, False)
        assert not volmeta.load_pool(store).refcounts  # the stored counts are gone
        await vm.snapshot("v", "t")
        assert volmeta.load_map(store, vm.records["v@t"].map_id) == (entries, True)
    finally:
        await close(store, vm)
