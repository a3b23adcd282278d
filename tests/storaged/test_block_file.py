"""Block files: the offset-addressed files a disk hands to the block service."""

import ctypes
import errno
import os
import subprocess
import sys
import textwrap

import pytest

from storaged import BlockFile
from storaged import block_file as bf
from storaged.block_file import LocalBlockFile

from .helpers import cached_bytes


@pytest.fixture
def local_file(tmp_path):
    files = []

    def _open(name="f", data=b""):
        path = tmp_path / name
        path.write_bytes(data)
        f = LocalBlockFile(os.open(path, os.O_RDWR | os.O_CLOEXEC))
        files.append(f)
        return f

    yield _open
    for f in files:
        f.close()


def test_is_a_block_file(local_file):
    assert isinstance(local_file(), BlockFile)


def test_pread_is_short_at_eof(local_file):
    f = local_file(data=b"0123456789")
    assert f.pread(4, 2) == b"2345"
    assert f.pread(100, 6) == b"6789"
    assert f.pread(10, 10) == b""
    assert f.pread(10, 1 << 30) == b""


def test_preadinto_fills_the_buffer_and_is_short_at_eof(local_file):
    f = local_file(data=bytes(range(256)) * 32)  # 8 KiB
    buf = bytearray(4096)
    assert f.preadinto(buf, 4096) == 4096
    assert buf == (bytes(range(256)) * 32)[4096:]
    view = memoryview(bytearray(4096))
    assert f.preadinto(view[:1000], 8192 - 100) == 100  # short: only 100 bytes left
    assert bytes(view[:100]) == bytes(range(156, 256))
    assert f.preadinto(view, 8192) == 0


def test_pwrite_then_pread(local_file):
    f = local_file()
    f.pwrite(b"hello", 0)
    f.pwrite(memoryview(bytearray(b"world")), 4096)  # grows the file, a hole between
    assert f.size() == 4096 + 5
    assert f.pread(5, 0) == b"hello"
    assert f.pread(4096 - 5, 5) == bytes(4096 - 5)
    assert f.pread(5, 4096) == b"world"
    f.pwrite(b"J", 0)
    assert f.pread(5, 0) == b"Jello"


def test_pwrite_finishes_a_short_write(local_file, monkeypatch):
    f = local_file()
    real = os.pwrite
    calls = []

    def dribble(fd, data, offset):  # a write that takes 1000 bytes at a time
        calls.append(offset)
        return real(fd, bytes(data)[:1000], offset)

    monkeypatch.setattr(bf.os, "pwrite", dribble)
    data = os.urandom(4500)
    f.pwrite(data, 100)
    monkeypatch.undo()
    assert calls == [100, 1100, 2100, 3100, 4100]
    assert f.pread(4500, 100) == data


def test_a_full_disk_surfaces_after_a_short_write(local_file, monkeypatch):
    f = local_file()
    real = os.pwrite
    calls = []

    def fill_up(fd, data, offset):  # room for 4 KiB, then ENOSPC
        calls.append(offset)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, bytes(data)[:4096], offset)

    monkeypatch.setattr(bf.os, "pwrite", fill_up)
    with pytest.raises(OSError) as err:
        f.pwrite(b"x" * 8192, 0)
    assert err.value.errno == errno.ENOSPC
    assert calls == [0, 4096]


def test_a_file_size_limit_surfaces_as_oserror(tmp_path):
    # A real short write: under RLIMIT_FSIZE the kernel writes up to the limit,
    # then refuses (EFBIG, SIGXFSZ ignored). In a child, to keep the limit out
    # of the test process.
    script = textwrap.dedent(f"""
        import errno, importlib.util, os, resource, signal
        spec = importlib.util.spec_from_file_location("block_file", {bf.__file__!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        LocalBlockFile = module.LocalBlockFile
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
        f = LocalBlockFile(os.open({str(tmp_path / "big")!r}, os.O_RDWR | os.O_CREAT, 0o644))
        try:
            f.pwrite(b"y" * 8192, 4096)
        except OSError as exc:
            assert exc.errno == errno.EFBIG, exc
            assert f.size() == 8192 and f.pread(4096, 4096) == b"y" * 4096
            print("refused")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "refused", out.stderr


def test_punch_reads_zeros_and_keeps_the_size(local_file):
    data = os.urandom(16 * 4096)
    f = local_file(data=data)
    f.punch(4096, 8 * 4096)
    assert f.size() == len(data)
    assert f.pread(8 * 4096, 4096) == bytes(8 * 4096)
    assert f.pread(4096, 0) == data[:4096]  # around the hole: untouched
    assert f.pread(7 * 4096, 9 * 4096) == data[9 * 4096:]
    # unaligned and small ranges (checksum files punch a few bytes)
    f.punch(10, 8)
    assert f.pread(30, 0) == data[:10] + bytes(8) + data[18:30]
    # past the end: nothing to free, the size stays
    f.punch(len(data) - 100, 10_000)
    assert f.size() == len(data)
    assert f.pread(200, len(data) - 200) == data[-200:-100] + bytes(100)
    f.punch(0, 0)
    assert f.pread(10, 0) == data[:10]


@pytest.mark.parametrize("how", ["refused", "missing"])
def test_punch_writes_zeros_where_holes_are_unsupported(local_file, monkeypatch, how):
    def refuse(fd, mode, offset, length):
        ctypes.set_errno(errno.EOPNOTSUPP)
        return -1

    monkeypatch.setattr(bf, "_fallocate", refuse if how == "refused" else None)
    data = os.urandom(8 * 4096)
    f = local_file(data=data)
    f.punch(4096, 2 * 4096)
    assert f.pread(len(data), 0) == data[:4096] + bytes(2 * 4096) + data[3 * 4096:]
    f.punch(len(data) - 50, 4096)  # over the end: zeros up to it, no growth
    assert f.size() == len(data)
    assert f.pread(100, len(data) - 100) == data[-100:-50] + bytes(50)


def test_punch_errors_other_than_unsupported_propagate(local_file, monkeypatch):
    def broken(fd, mode, offset, length):
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(bf, "_fallocate", broken)
    f = local_file(data=b"z" * 4096)
    with pytest.raises(OSError) as err:
        f.punch(0, 4096)
    assert err.value.errno == errno.EIO
    assert f.pread(4096, 0) == b"z" * 4096


def test_sync_and_size(local_file):
    f = local_file()
    assert f.size() == 0
    f.pwrite(b"durable", 100)
    f.sync()
    assert f.size() == 107


def test_a_closed_file_raises_oserror(local_file):
    f = local_file(data=b"abc")
    f.close()
    f.close()  # twice is harmless
    for call in (lambda: f.pread(1, 0), lambda: f.preadinto(bytearray(1), 0),
                 lambda: f.pwrite(b"x", 0), lambda: f.punch(0, 1), f.sync, f.size):
        with pytest.raises(OSError) as err:
            call()
        assert err.value.errno == errno.EBADF


def test_context_manager_closes(tmp_path):
    path = tmp_path / "c"
    path.write_bytes(b"q")
    with LocalBlockFile(os.open(path, os.O_RDWR)) as f:
        assert f.pread(1, 0) == b"q"
    with pytest.raises(OSError):
        f.pread(1, 0)


async def test_local_disk_block_files(open_store):
    store = await open_store(4)
    disk = store.disks[0]
    assert disk.open_block_file("vol", create=False) is None
    assert not disk.has_file("vol")
    f = disk.open_block_file("vol")
    try:
        assert isinstance(f, BlockFile)
        f.pwrite(b"data", 0)
    finally:
        f.close()
    assert disk.has_file("vol")
    f = disk.open_block_file("vol", create=False)
    try:
        assert f.pread(4, 0) == b"data"
    finally:
        f.close()
    disk.remove_file("vol")
    disk.remove_file("vol")  # missing is fine
    assert not disk.has_file("vol")
    assert disk.open_block_file("vol", create=False) is None


async def test_pool_clear_punches_every_replica(open_store):
    from blockd.pool import BLOCK, CHUNK, ChunkPool

    store = await open_store(4)
    pool = ChunkPool(store)
    try:
        data = os.urandom(CHUNK)
        pool.write(3, 0, data)
        pool.sync()
        pool.clear(3, BLOCK, 2 * BLOCK)
        assert pool.read(3, 0, CHUNK) == data[:BLOCK] + bytes(2 * BLOCK) + data[3 * BLOCK:]
        for pos in pool.positions(3):  # every copy, not just the one read
            slab, _ = pool._disk_files(pos)
            assert slab.pread(2 * BLOCK, 3 * CHUNK + BLOCK) == bytes(2 * BLOCK)
            assert slab.size() == 4 * CHUNK
        pool.clear(3)
        assert pool.read(3, 0, CHUNK) == bytes(CHUNK)
    finally:
        pool.close()


async def test_pool_serves_from_other_replicas_when_a_disk_cannot_open_its_files(open_store):
    """A replica's disk that raises on open (a remote node down) is skipped:
    the write lands on the others, which serve the read."""
    from blockd.pool import CHUNK, ChunkPool
    store = await open_store()
    pool = ChunkPool(store)
    broken = pool.positions(5)[0]

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("node down")
    store.disks[broken].open_block_file = refuse
    try:
        data = os.urandom(CHUNK)
        pool.write(5, 0, data)
        assert pool.read(5, 0, CHUNK) == data
        assert pool._disk_files(broken) is None
    finally:
        pool.close()


# -- pwrite_direct: bulk writes past the page cache (restores) -------------------

def aligned(data: bytes) -> memoryview:
    """``data`` in page-aligned (anonymous mmap) memory, as restores hold it."""
    import mmap
    buf = mmap.mmap(-1, len(data))
    buf[:] = data
    return memoryview(buf)


@pytest.fixture
def direct_file(local_file):
    f = local_file()
    if not f.direct_capable():
        pytest.skip("no O_DIRECT on this filesystem")
    return f


def test_pwrite_direct_writes_past_the_page_cache(direct_file):
    f, data = direct_file, os.urandom(1 << 20)
    f.pwrite(data, 0)  # buffered: the cache holds it (what the check below can see)
    assert cached_bytes(f.fd) == 1 << 20
    new = os.urandom(1 << 20)
    f.pwrite_direct(aligned(new), 1 << 20)
    f.pwrite_direct(aligned(new), 0)  # over cached pages: they are dropped, not stale
    assert cached_bytes(f.fd) == 0
    assert f.pread(2 << 20, 0) == new + new
    f.sync()


def test_a_mapping_of_the_file_sees_direct_writes(direct_file):
    import mmap
    f = direct_file
    f.pwrite(b"a" * 8192, 0)
    mapped = mmap.mmap(f.fd, 8192, prot=mmap.PROT_READ)
    try:
        assert mapped[:4] == b"aaaa"  # faulted in, then overwritten behind it
        f.pwrite_direct(aligned(b"b" * 8192), 0)
        assert mapped[:8192] == b"b" * 8192
    finally:
        mapped.close()


@pytest.mark.parametrize("case", ["offset", "length", "address", "read-only"])
def test_pwrite_direct_writes_unaligned_data_through_the_cache(direct_file, case):
    f, data = direct_file, os.urandom(8192)
    offset, view = 4096, aligned(data)
    if case == "offset":
        offset = 4096 + 512
    elif case == "length":
        view = view[:8000]
    elif case == "address":
        view = memoryview(bytearray(1) + data)[1:]
    else:
        view = memoryview(data)
    f.pwrite_direct(view, offset)
    assert f.pread(len(view), offset) == bytes(view)
    assert cached_bytes(f.fd) > 0


def test_pwrite_direct_without_o_direct_is_pwrite(local_file, monkeypatch):
    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT not supported")
        return real_open(path, flags, *args)
    monkeypatch.setattr(bf.os, "open", no_direct)
    f, data = local_file(), os.urandom(8192)
    f.pwrite_direct(aligned(data), 0)
    assert f._direct == -1 and f.pread(8192, 0) == data


def test_pwrite_direct_refused_by_the_filesystem_is_pwrite(direct_file, monkeypatch):
    """EINVAL on the direct write (stricter alignment rules): written buffered."""
    real_pwrite, f, data = os.pwrite, direct_file, os.urandom(8192)

    def strict(fd, buf, offset):
        if fd == f._direct:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, buf, offset)
    monkeypatch.setattr(bf.os, "pwrite", strict)
    f.pwrite_direct(aligned(data), 0)
    assert f.pread(8192, 0) == data


def test_pwrite_direct_reports_a_full_disk(direct_file, monkeypatch):
    f = direct_file

    def full(fd, buf, offset):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(bf.os, "pwrite", full)
    with pytest.raises(OSError) as err:
        f.pwrite_direct(aligned(bytes(4096)), 0)
    assert err.value.errno == errno.ENOSPC


def test_close_closes_the_direct_descriptor(direct_file):
    f = direct_file
    direct = f._direct
    f.close()
    with pytest.raises(OSError):
        os.fstat(direct)
