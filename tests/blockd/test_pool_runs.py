"""The preferred replica of a slot and runs of slots read from one disk: every
slot is read from a disk that holds it, every disk serves as many slots, runs
of consecutive slots go to one disk, and ChunkPool.read_range checks and
returns such a run as one view (anything damaged or unwritten in it: None)."""

from __future__ import annotations

import collections
import os

import pytest
from volume_helpers import close, open_manager

from blockd.pool import BLOCK, CHUNK, _preferred_table


@pytest.mark.parametrize("n", range(1, 10))
def test_preferred_replica_holds_the_slot_and_load_is_even(n):
    for replicas in range(1, n + 1):
        prefer, run = _preferred_table(n, replicas)
        period = len(prefer)
        for slot in range(2 * period):
            pos = prefer[slot % period]
            assert (pos - slot) % n < replicas  # one of positions(slot)
            assert all(prefer[(slot + i) % period] == pos for i in range(run[slot % period]))
        assert set(collections.Counter(prefer).values()) == {period // n}
        # a disk holds `replicas` consecutive slots of every n: runs that long
        assert max(run) == (16 if n == replicas else replicas)


async def test_a_run_of_slots_is_one_view(dirs):
    store, vm = await open_manager(dirs)
    pool = vm.pool
    try:
        slot = next(s for s in range(1, 64) if pool.run_length(s) == pool.replicas)
        count = pool.replicas
        assert count > 1 and len({pool.preferred(s) for s in range(slot, slot + count)}) == 1
        data = os.urandom(count * CHUNK)
        for i in range(count + 1):  # and the slot after the run
            pool.write(slot + i, 0, data[i * CHUNK:(i + 1) * CHUNK] if i < count else data[:CHUNK])
        view = pool.read_range(slot, 0, count * CHUNK)
        assert isinstance(view, memoryview) and view.readonly and view == data
        assert pool.read_range(slot, BLOCK, count * CHUNK - 2 * BLOCK) == data[BLOCK:-BLOCK]
        assert pool.read_range(slot, 0, (count + 1) * CHUNK) is None  # past the run

        # Bitrot in the run's middle slot on the disk reads go to: no view; the
        # careful path (slot by slot) repairs it from another replica.
        middle = slot + count // 2
        slab = pool._files[pool.preferred(middle)][1]
        os.pwrite(slab.fd, b"\xff" * 16, middle * CHUNK + 3 * BLOCK + 5)
        assert pool.read_range(slot, 0, count * CHUNK) is None
        assert pool.read(middle, 0, CHUNK) == data[count // 2 * CHUNK:][:CHUNK]
        assert pool.repaired == 1
        assert pool.read_range(slot, 0, count * CHUNK) == data

        # An unwritten block inside the run: the careful path answers.
        pool.clear(slot + 1, 2 * BLOCK, BLOCK)
        assert pool.read_range(slot, 0, count * CHUNK) is None
    finally:
        await close(store, vm)


async def test_small_reads_go_to_the_preferred_replica(dirs):
    """The 4 KiB path reads the replica read_range views: damage elsewhere is
    not seen (repaired by healing), damage there is repaired on read."""
    store, vm = await open_manager(dirs)
    pool = vm.pool
    try:
        data = os.urandom(CHUNK)
        for slot in range(1, 2 * pool.n * pool.replicas):
            pool.write(slot, 0, data)
            preferred = pool.preferred(slot)
            assert preferred in pool.positions(slot)
            other = next(p for p in pool.positions(slot) if p != preferred)
            os.pwrite(pool._files[other][1].fd, b"\xff", slot * CHUNK)
            assert pool.read(slot, 0, BLOCK) == data[:BLOCK] and pool.repaired == 0
        repaired = 0
        for slot in range(1, 2 * pool.n * pool.replicas):
            os.pwrite(pool._files[pool.preferred(slot)][1].fd, b"\xff", slot * CHUNK + BLOCK)
            assert pool.read(slot, BLOCK, BLOCK) == data[BLOCK:2 * BLOCK]
            repaired += 1
            assert pool.repaired == repaired
    finally:
        await close(store, vm)
