"""What a large GET costs, from counters (not timing).

A GET's batches after the first are read from the page cache on the event
loop: thread hops per GET stay at one per data disk however large the object,
and every frame is still checked (bitrot in a later batch is found and rebuilt).
"""

import os

import pytest

from storaged.layout import HASH_LEN

from .helpers import chunks, read

MIB = 1 << 20


def _nowait_supported(path) -> bool:
    probe = path / "probe"
    probe.write_bytes(b"x" * 4096)
    fd = os.open(probe, os.O_RDONLY)
    try:
        return os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT) == 4096
    except OSError:
        return False
    finally:
        os.close(fd)


@pytest.fixture
async def cached_object(open_store, tmp_path):
    if not _nowait_supported(tmp_path):
        pytest.skip("no RWF_NOWAIT reads on this file system")
    store = await open_store()
    await store.make_bucket("b")
    data = os.urandom(16 * MIB + 5)
    await store.put_object("b", "k", chunks(data, MIB), size=len(data))
    hops = []
    run = store.run
    store.run = lambda fn, *args: hops.append(fn.__name__) or run(fn, *args)
    return store, data, hops


async def test_a_cached_get_hops_to_threads_for_its_first_batch_only(cached_object):
    store, data, hops = cached_object
    assert await read(store, "b", "k") == data
    # 17 batches: the first read in a thread per data disk, the other 16 on the loop
    assert hops == ["_read_frames"] * store.k, hops
    hops.clear()
    assert await read(store, "b", "k", 5 * MIB + 3, 7 * MIB) == data[5 * MIB + 3:12 * MIB + 3]
    assert hops == ["_read_frames"] * store.k, hops


async def test_bitrot_in_a_batch_read_on_the_loop_is_found_and_rebuilt(cached_object):
    store, data, hops = cached_object
    info = await store.head_object("b", "k")
    disk = store.disks[info.dist[0]]
    frame = store.geometry.frame_offset(9)  # block 9: read from the page cache
    with open(disk.shard_path(info.version_id, 1), "r+b") as f:
        f.seek(frame + HASH_LEN + 1000)
        byte = f.read(1)
        f.seek(frame + HASH_LEN + 1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert await read(store, "b", "k") == data
    assert store.stats["shards_corrupt"] == 1
    assert "_repair_blocks" in hops  # parity was read for the one bad block
