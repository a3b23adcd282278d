"""The serial console: reading and following its log, typing into its socket."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import socket
import tempfile
import time

import pytest

from compute import console

from .fakes import FakeConsoleSocket


def test_read_missing_log(tmp_path):
    assert console.read(str(tmp_path / "none.log")) == (b"", 0)
    assert console.size(str(tmp_path / "none.log")) == 0


def test_read_offsets_and_limits(tmp_path):
    path = tmp_path / "c.log"
    path.write_bytes(b"0123456789")
    p = str(path)
    assert console.read(p) == (b"0123456789", 10)
    assert console.read(p, 4, limit=3) == (b"456", 7)
    assert console.read(p, -3) == (b"789", 10)
    assert console.read(p, -100) == (b"0123456789", 10)
    assert console.read(p, 10) == (b"", 10)


def test_truncated_log_starts_over(tmp_path):
    path = tmp_path / "c.log"
    path.write_bytes(b"new")
    assert console.read(str(path), 50) == (b"new", 3)


async def test_follow_yields_new_output_until_told_to_stop(tmp_path):
    path = tmp_path / "c.log"
    path.write_bytes(b"boot\n")
    stop = False
    got = []

    async def writer():
        nonlocal stop
        await asyncio.sleep(0.1)
        with open(path, "ab") as f:
            f.write(b"login:\n")
        await asyncio.sleep(0.1)
        with open(path, "ab") as f:
            f.write(b"bye\n")
        stop = True

    task = asyncio.ensure_future(writer())
    async for chunk in console.follow(str(path), 0, until=lambda: stop, poll=0.02):
        got.append(chunk)
    await task
    assert b"".join(got) == b"boot\nlogin:\nbye\n"


async def test_follow_from_an_offset(tmp_path):
    path = tmp_path / "c.log"
    path.write_bytes(b"old old\nnew")
    chunks = [c async for c in console.follow(str(path), 8, until=lambda: True)]
    assert b"".join(chunks) == b"new"


# -- input: the console socket ---------------------------------------------------------

@pytest.fixture
def sock_dir():
    """A short directory: a Unix socket path holds at most 107 bytes."""
    path = tempfile.mkdtemp(prefix="bsc-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_socket_path_sits_beside_the_log_unless_too_long():
    assert console.socket_path("/var/lib/basalt/compute/console/web.log") == \
        "/var/lib/basalt/compute/console/web.sock"
    assert console.socket_path("/" + "d" * 100 + "/web.log") is None


def test_send_waits_until_every_byte_is_taken(sock_dir):
    qemu = FakeConsoleSocket(os.path.join(sock_dir, "c.sock"))
    try:
        typed = b"root\r" + bytes(range(256)) * 64  # more than the socket buffers at once
        console.send(qemu.path, typed)
        console.send(qemu.path, b"ls\r")
        # One connection per call, closed only after the peer read it all (the fake
        # reads 7 bytes at a time, so an early close would cut it short).
        deadline = time.monotonic() + 5
        while len(qemu.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert qemu.received == [typed, b"ls\r"]
    finally:
        qemu.close()


def test_concurrent_senders_take_turns(sock_dir):
    qemu = FakeConsoleSocket(os.path.join(sock_dir, "c.sock"))
    try:
        lines = [f"line {n}\r".encode() * 50 for n in range(4)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda line: console.send(qemu.path, line), lines))
        deadline = time.monotonic() + 5
        while len(qemu.received) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(qemu.received) == sorted(lines)  # whole, never interleaved
    finally:
        qemu.close()


def test_send_without_a_listener(sock_dir):
    path = os.path.join(sock_dir, "c.sock")
    with pytest.raises(console.ConsoleClosed):
        console.send(path, b"x")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a socket file nobody listens on (QEMU gone)
    stale.close()
    with pytest.raises(console.ConsoleClosed):
        console.send(path, b"x")


def test_a_guest_that_never_reads_times_out_instead_of_blocking(sock_dir):
    qemu = FakeConsoleSocket(os.path.join(sock_dir, "c.sock"), reads=False)
    try:
        big = b"y" * (4 << 20)  # far beyond what the socket buffers
        with pytest.raises(console.ConsoleTimeout) as caught:
            console.send(qemu.path, big, timeout=0.3)
        assert caught.value.total == len(big) and caught.value.taken < len(big)
    finally:
        qemu.close()
