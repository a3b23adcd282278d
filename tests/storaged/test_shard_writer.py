"""Local shard writers: frames written through the page cache, or past it
(multipart parts) from staging buffers, byte for byte the same files."""

import concurrent.futures
import errno
import fcntl
import os
import random

import pytest

from storaged import block_file
from storaged.buffers import Scratch
from storaged.disk import DIRECT_ALIGN, DIRECT_MIN, iov_range

from .helpers import cached_bytes, chunks, need_direct, read

MIB = 1 << 20
PAGE = DIRECT_ALIGN  # the edges of a direct write are at most this long


def test_iov_range_is_a_slice_of_the_concatenation():
    rng = random.Random(7)
    iov = [os.urandom(n) for n in (16, 0, 5000, 1, 16, 70000)]
    whole = b"".join(iov)
    for _ in range(300):
        start = rng.randrange(len(whole) + 1)
        stop = rng.randrange(start, len(whole) + 1)
        views = iov_range(iov, start, stop)
        assert b"".join(bytes(v) for v in views) == whole[start:stop]
        assert all(len(v) for v in views)  # no empty pieces


@pytest.fixture
async def disk(open_store):
    store = await open_store(1)
    return store.disks[0]


class CountingScratch(Scratch):
    def __init__(self, size):
        super().__init__(size)
        self.uses = 0

    def use(self):
        self.uses += 1
        return super().use()


def frames(count: int, seed: int = 1) -> list[tuple[list[bytes], int]]:
    """Batches of (checksum, shard) frames at their offsets, as encode_and_write
    sends them: 16-byte checksums make every offset after the first unaligned."""
    rng, out, offset = random.Random(seed), [], 0
    for _ in range(count):
        iov = [rng.randbytes(16), rng.randbytes(300_000), rng.randbytes(16), rng.randbytes(5)]
        out.append((iov, offset))
        offset += sum(len(b) for b in iov)
    return out


def write_all(writer, batches, threads=4):
    """Every batch written from a pool of threads, in reverse order."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda b: writer.write(*b), reversed(batches)))


def expected(batches) -> bytes:
    return b"".join(b"".join(iov) for iov, _ in batches)


def test_a_staged_writer_writes_past_the_page_cache(disk):
    need_direct(disk)
    stage, batches = CountingScratch(256 * 1024), frames(6)
    writer = disk.create_shard("ab" * 16, 1, stage)
    write_all(writer, batches)
    tmp = writer.tmp
    cached = cached_bytes(tmp)
    writer.commit()
    data = expected(batches)
    with open(disk.shard_path("ab" * 16, 1), "rb") as f:
        assert f.read() == data
    # Only the pages holding a batch boundary went through the cache.
    assert 0 < cached <= 2 * PAGE * len(batches), cached
    assert stage.uses == len(batches)


def test_without_a_stage_every_byte_goes_through_the_cache(disk):
    batches = frames(3)
    writer = disk.create_shard("cd" * 16, 1)
    write_all(writer, batches)
    assert cached_bytes(writer.tmp) >= len(expected(batches)) // PAGE * PAGE
    writer.commit()
    with open(disk.shard_path("cd" * 16, 1), "rb") as f:
        assert f.read() == expected(batches)


def test_short_writes_are_not_staged(disk):
    need_direct(disk)
    stage = CountingScratch(256 * 1024)
    writer = disk.create_shard("ef" * 16, 1, stage)
    small = [os.urandom(16), os.urandom(DIRECT_MIN - 16)]  # no aligned 64 KiB inside
    writer.write(small, 100)
    writer.commit()
    assert stage.uses == 0
    with open(disk.shard_path("ef" * 16, 1), "rb") as f:
        assert f.read() == bytes(100) + b"".join(small)


def test_without_o_direct_nothing_is_staged(disk, monkeypatch):
    monkeypatch.setattr(block_file.LocalBlockFile, "_open_direct", lambda self: -1)
    stage, batches = CountingScratch(256 * 1024), frames(2)
    writer = disk.create_shard("aa" * 16, 1, stage)
    write_all(writer, batches)
    writer.commit()
    assert stage.uses == 0
    with open(disk.shard_path("aa" * 16, 1), "rb") as f:
        assert f.read() == expected(batches)


def opened_direct(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


def test_a_full_disk_fails_a_direct_write(disk, monkeypatch):
    need_direct(disk)
    writer = disk.create_shard("bb" * 16, 1, Scratch(256 * 1024))
    real = os.pwrite

    def full(fd, data, offset):
        if opened_direct(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(block_file.os, "pwrite", full)
    with pytest.raises(OSError) as caught:
        writer.write(*frames(1)[0])
    assert caught.value.errno == errno.ENOSPC
    writer.abort()
    assert not os.path.exists(writer.tmp)


async def test_multipart_parts_skip_the_cache_and_puts_do_not(open_store):
    store = await open_store()
    await store.make_bucket("b")
    need_direct(store.disks[0])
    body = os.urandom(6 * MIB)
    up = await store.create_upload("b", "parts")
    part = await store.upload_part("b", "parts", up.upload_id, 1, chunks(body), size=len(body))
    await store.put_object("b", "single", chunks(body), size=len(body))

    def cached_shards(files):
        return sum(cached_bytes(d.shard_path(data_id, n)) for d in store.disks
                   for data_id, numbers in files.items() for n in numbers)

    single = (await store.head_object("b", "single")).files()
    assert cached_shards(single) >= len(body)  # K+M shards of it, all in the cache
    parts = {part.data_id: [1]}
    assert cached_shards(parts) <= 2 * PAGE * 6 * len(store.disks)  # edge pages per batch
    await store.complete_upload("b", "parts", up.upload_id, [(1, part.etag)])
    assert await read(store, "b", "parts") == body


def test_a_writer_that_cannot_open_leaves_nothing_behind(disk, monkeypatch):
    from storaged import disk as disk_module

    def no_descriptors(fd):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(disk_module.os, "dup", no_descriptors)
    with pytest.raises(OSError):
        disk.create_shard("ab" * 16, 1, Scratch(256 * 1024))
    assert os.listdir(os.path.join(disk.root, "tmp")) == []
