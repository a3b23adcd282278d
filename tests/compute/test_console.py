"""Reading and following the serial console log."""

from __future__ import annotations

import asyncio

from compute import console


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
