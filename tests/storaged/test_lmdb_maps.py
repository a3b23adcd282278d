"""LMDB pages a process touched leave its RSS when released, and read back the same.

Every server process releases them past a budget (storaged.lmdb_maps.keep_released):
without that, small-object traffic left each worker mapping all its disks'
metadata (~170 MiB each after ~10,000 small PUTs).
"""

import os
import sys

import lmdb
import pytest

from storaged import lmdb_maps

MIB = 1 << 20

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self")


def resident(path: str) -> int:
    """Bytes of ``path``'s mappings resident in this process (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(maxsplit=5)
            if "-" in first[0] and len(first) >= 5:  # a mapping's header line
                inside = len(first) == 6 and first[5].strip() == os.path.realpath(path)
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total


def test_released_pages_leave_the_rss_and_read_back_the_same(tmp_path):
    env = lmdb.open(str(tmp_path), map_size=1 << 30, readahead=False)
    data_file = str(tmp_path / "data.mdb")
    try:
        values = {b"k%06d" % i: os.urandom(3000) for i in range(8000)}  # ~32 MiB of pages
        with env.begin(write=True) as txn:
            for key, value in values.items():
                txn.put(key, value)
        before = lmdb_maps.mapped_file_bytes()
        with env.begin() as txn:
            assert sum(1 for _ in txn.cursor()) == len(values)  # maps every page
        mapped = lmdb_maps.mapped_file_bytes()
        assert mapped - before > 24 * MIB
        lmdb_maps.release()
        assert resident(data_file) > 24 * MIB  # not a MetaDB's: left alone
        lmdb_maps.register(data_file)
        assert lmdb_maps.release() > 24 * MIB
        assert lmdb_maps.mapped_file_bytes() < before + 2 * MIB
        with env.begin() as txn:  # faulted back in from the page cache, unchanged
            assert dict(txn.cursor()) == values
    finally:
        with lmdb_maps.MAPS_LOCK:
            lmdb_maps.forget(data_file)
            env.close()


def test_a_metadb_is_never_unmapped_while_its_pages_are_released(tmp_path):
    """MetaDB.close waits for a release in progress (which holds MAPS_LOCK from
    reading /proc/self/maps to its last madvise): a range unmapped in between
    could be reused by anonymous memory, which MADV_DONTNEED would zero."""
    import threading

    from storaged.metadb import MetaDB

    db = MetaDB(str(tmp_path / "meta"), sync=False, map_size=1 << 26)
    closed = threading.Event()
    closer = threading.Thread(target=lambda: (db.close(), closed.set()))
    with lmdb_maps.MAPS_LOCK:
        closer.start()
        assert not closed.wait(0.2)  # waits for the release to end
    closer.join(5)
    assert closed.is_set()
