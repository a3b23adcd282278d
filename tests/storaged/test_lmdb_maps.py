"""LMDB pages a process touched leave its RSS when released, and read back the same.

The S3 workers release them past a budget (basalt.worker.release_lmdb_pages):
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


def test_released_pages_leave_the_rss_and_read_back_the_same(tmp_path):
    env = lmdb.open(str(tmp_path), map_size=1 << 30, readahead=False)
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
        assert lmdb_maps.release() > 24 * MIB
        assert lmdb_maps.mapped_file_bytes() < before + 2 * MIB
        with env.begin() as txn:  # faulted back in from the page cache, unchanged
            assert dict(txn.cursor()) == values
    finally:
        env.close()
