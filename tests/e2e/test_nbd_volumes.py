"""Block volumes end to end: the `basalt volume` CLI and real NBD clients
(nbdinfo, qemu-img, qemu-io, nbdcopy, fio) against a real `basalt serve`,
byte-exact, including SIGKILL of the whole server and wiped disk directories.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from .conftest import start_server, stop_server
from .nbd_e2e_helpers import (
    BLOCK,
    CHUNK,
    KiB,
    MiB,
    RawNBD,
    allocated,
    api,
    blocks,
    create_volume,
    nbd_map,
    new_volume,
    one_error_line,
    qemu_io,
    qemu_io_args,
    read_volume,
    require,
    run,
    state_at,
    uri,
    volume_info,
    write_file,
)

ONE_WORKER = ("--workers", "1")  # quicker restarts; NBD is served by the disk owner anyway


@pytest.fixture(autouse=True)
def _tools():
    require("qemu-io", "qemu-img", "nbdinfo", "nbdcopy", "fio")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One `basalt serve` for the tests that need no restart."""
    server = start_server(str(tmp_path_factory.mktemp("nbd-e2e")), extra=ONE_WORKER)
    try:
        yield server
    finally:
        stop_server(server)


# --- the CLI --------------------------------------------------------------------------


def test_create_list_info_and_allocation_grows(srv):
    created = create_volume(srv, "cli-a", "1G")
    assert created["size"] == 1 << 30 and created["allocated"] == 0
    listed = {v["name"]: v for v in json.loads(srv.cli("volume", "list", "--json").stdout)}
    assert listed["cli-a"]["size"] == 1 << 30 and listed["cli-a"]["allocated"] == 0
    lines = srv.cli("volume", "list").stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "ALLOCATED", "CONNECTIONS", "ORIGIN"], lines
    assert any(line.split()[:4] == ["cli-a", "1.0", "GiB", "0"] for line in lines[1:]), lines
    qemu_io(srv, "cli-a", "write -P 0x61 0 4096", "write -P 0x62 300000 200000", "flush")
    info = volume_info(srv, "cli-a")
    # one chunk for the first write, chunks 4..7 for the second
    assert info["size"] == 1 << 30 and info["allocated"] == 5 * CHUNK, info
    assert "320.0 KiB allocated" in srv.cli("volume", "info", "cli-a").stdout


def test_invalid_requests_fail_with_one_clear_line(srv):
    new_volume(srv, "dup", MiB)
    for args, words in [
        (("create", "dup", "--size", "2M"), "exists"),
        (("create", "bad/name", "--size", "1G"), "name"),
        (("create", "ok-name", "--size", "12Q"), "size"),
        (("create", "ok-name", "--size", "4P"), "size"),
        (("info", "no-such-volume"), "no-such-volume"),
    ]:
        line = one_error_line(srv.cli("volume", *args, check=False))
        assert words in line.lower(), (args, line)
    names = {v["name"]: v for v in json.loads(srv.cli("volume", "list", "--json").stdout)}
    assert "ok-name" not in names and names["dup"]["size"] == MiB


def test_resize_grows_online_while_a_client_stays_connected(srv):
    new_volume(srv, "grow", 64 * MiB)
    qemu_io(srv, "grow", "write -P 0x42 0 64k")
    with RawNBD(srv.nbd_port, "grow") as held:
        assert held.size == 64 * MiB
        assert api(srv, "GET", "/grow")["connections"] == 1
        resized = json.loads(srv.cli("volume", "resize", "grow", "--size", "1G", "--json").stdout)
        assert resized["size"] == 1 << 30
        assert run("nbdinfo", "--size", uri(srv, "grow")).stdout.strip() == str(1 << 30)
        assert held.pread(0, 4096) == b"\x42" * 4096  # the old connection still serves
        held.pwrite(8192, b"held" * 1024)
        held.flush()
        assert held.pread(8000, 4500) == b"\x42" * 192 + b"held" * 1024 + b"\x42" * 212
    # the new space is usable and reads as zeros until written
    qemu_io(srv, "grow", "read -P 0 1000M 1M", "write -P 0x43 1023M 1M", "read -P 0x43 1023M 1M",
            "read -P 0x42 0 8192", "read -P 0x42 12288 4096")


def test_shrink_needs_force_and_drops_the_tail(srv):
    new_volume(srv, "shrink", 8 * MiB)
    qemu_io(srv, "shrink", "write -P 0x11 0 4M", "write -P 0x22 4M 4M")
    line = one_error_line(srv.cli("volume", "resize", "shrink", "--size", "4M", check=False))
    assert "force" in line
    assert run("nbdinfo", "--size", uri(srv, "shrink")).stdout.strip() == str(8 * MiB)
    qemu_io(srv, "shrink", "read -P 0x22 4M 4M")  # nothing was cut
    new = 4 * MiB + 1000  # mid-chunk and mid-block: the tail of that chunk must go too
    srv.cli("volume", "resize", "shrink", "--size", str(new), "--force")
    assert run("nbdinfo", "--size", uri(srv, "shrink")).stdout.strip() == str(new)
    assert nbd_map(srv, "shrink") == [(0, new, "data")]
    qemu_io(srv, "shrink", "read -P 0x11 0 4M", "read -P 0x22 4M 1000")
    srv.cli("volume", "resize", "shrink", "--size", "8M")
    qemu_io(srv, "shrink", "read -P 0x11 0 4M", "read -P 0x22 4M 1000",
            f"read -P 0 {new} {8 * MiB - new}")


def test_delete_refused_while_connected(srv):
    new_volume(srv, "busy", 16 * MiB)
    qemu_io(srv, "busy", "write -P 0x33 0 1M")
    with RawNBD(srv.nbd_port, "busy"):
        line = one_error_line(srv.cli("volume", "delete", "busy", check=False))
        assert "connection" in line.lower() or "in use" in line.lower(), line
    qemu_io(srv, "busy", "read -P 0x33 0 1M")  # the refused delete left it whole
    deadline = time.monotonic() + 10
    while (out := srv.cli("volume", "delete", "busy", check=False)).returncode:
        assert time.monotonic() < deadline, f"closed connection still counted: {out.stderr}"
        time.sleep(0.1)
    assert "deleted" in out.stdout
    gone = run("nbdinfo", "--size", uri(srv, "busy"), check=False)
    assert gone.returncode != 0 and "busy" in gone.stderr
    # the name is free again, and the new volume does not see the old data
    new_volume(srv, "busy", 16 * MiB)
    qemu_io(srv, "busy", "read -P 0 0 1M")
    assert nbd_map(srv, "busy") == [(0, 16 * MiB, "hole,zero")]


# --- nbdinfo --------------------------------------------------------------------------


def test_nbdinfo_list_size_and_unknown_export(srv):
    new_volume(srv, "info-one", 3 * MiB)
    new_volume(srv, "info-two", 5 << 30)
    listing = run("nbdinfo", "--list", "--json", uri(srv)).stdout
    exports = {e["export-name"]: e for e in json.loads(listing)["exports"]}
    assert exports["info-one"]["export-size"] == 3 * MiB
    assert exports["info-two"]["export-size"] == 5 << 30
    assert exports["info-one"]["can_flush"] and exports["info-one"]["can_trim"]
    assert not exports["info-one"]["is_read_only"]
    assert run("nbdinfo", "--size", uri(srv, "info-two")).stdout.strip() == str(5 << 30)
    unknown = run("nbdinfo", "--size", uri(srv, "no-such-export"), check=False)
    assert unknown.returncode != 0 and "no-such-export" in unknown.stderr
    assert not unknown.stdout.strip()
    refused = run("qemu-io", "-f", "raw", "-c", "read 0 512", uri(srv, "no-such-export"),
                  check=False)
    assert refused.returncode != 0
    # the server still serves after refusing
    assert run("nbdinfo", "--size", uri(srv, "info-one")).stdout.strip() == str(3 * MiB)


def test_map_reports_holes_data_and_discarded_chunks(srv):
    new_volume(srv, "mapped", 4 * MiB)
    assert nbd_map(srv, "mapped") == [(0, 4 * MiB, "hole,zero")]
    qemu_io(srv, "mapped", "write -P 0x5a 0 512k", "write -P 0x5b 3000000 10")
    runs = nbd_map(srv, "mapped")
    assert state_at(runs, 0) == "data" and state_at(runs, 512 * KiB - 1) == "data"
    assert state_at(runs, 512 * KiB) == "hole,zero"
    assert state_at(runs, 3000000) == "data"
    assert state_at(runs, 3000000 // CHUNK * CHUNK + CHUNK) == "hole,zero"
    assert allocated(srv, "mapped") == 9 * CHUNK
    # discard chunks 2..4 whole, and part of chunk 6 (which must stay data)
    qemu_io(srv, "mapped", "discard 128k 192k", "discard 400k 1000", "flush")
    runs = nbd_map(srv, "mapped")
    for off in (0, CHUNK, 5 * CHUNK, 6 * CHUNK, 7 * CHUNK + 5):
        assert state_at(runs, off) == "data", (off, runs)
    for off in (2 * CHUNK, 3 * CHUNK, 5 * CHUNK - 1, 8 * CHUNK):
        assert state_at(runs, off) == "hole,zero", (off, runs)
    assert allocated(srv, "mapped") == 6 * CHUNK
    qemu_io(srv, "mapped", "read -P 0x5a 0 128k", "read -P 0 128k 192k", "read -P 0x5a 320k 80k",
            "read -P 0x5a 393216 16384", "read -P 0x5a 410600 113688", "read -P 0x5b 3000000 10")


# --- qemu-img, qemu-io ----------------------------------------------------------------


def test_qemu_img_convert_compare_and_back(srv, tmp_path):
    size = 256 * MiB
    src = write_file(tmp_path / "src.raw", os.urandom(size))
    new_volume(srv, "img", 256 * MiB)
    try:
        run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, uri(srv, "img"),
            timeout=300)
        run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri(srv, "img"), timeout=300)
        out = tmp_path / "out.raw"
        run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri(srv, "img"), str(out),
            timeout=300)
        run("cmp", src, str(out))
        # a changed byte is seen by compare: it really compares
        with open(src, "rb") as f:
            byte = f.read(5000)[4321] ^ 0xff
        qemu_io(srv, "img", f"write -P {byte} 4321 1")
        diff = run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri(srv, "img"),
                   check=False)
        assert diff.returncode == 1 and "mismatch at offset 4096" in diff.stdout, diff
    finally:
        api(srv, "DELETE", "/img")


def test_qemu_io_unaligned_patterns_zeroes_discard_fua(srv, tmp_path):
    size = 8 * MiB
    new_volume(srv, "qio", 8 * MiB)
    model = bytearray(size)

    def fill(off, n, byte):
        model[off:off + n] = bytes([byte]) * n

    qemu_io(srv, "qio",
            "write -P 0xab 1000 5000", "read -P 0xab 1000 5000", "read -P 0 0 1000",
            "read -P 0 6000 200000", "read -P 0 7M 1M")
    fill(1000, 5000, 0xab)
    # across a chunk boundary, across block boundaries, single bytes
    qemu_io(srv, "qio", "write -P 0xcd 65530 20", "write -P 0x01 131071 1",
            "write -P 0x02 200003 70001", "read -P 0xcd 65530 20", "read -P 0x01 131071 1",
            "read -P 0 65550 65521", "read -P 0x02 200003 70001")
    fill(65530, 20, 0xcd)
    fill(131071, 1, 0x01)
    fill(200003, 70001, 0x02)
    # zeroes: unaligned inside data, and whole blocks/chunks
    qemu_io(srv, "qio", "write -z 3000 1500", "write -z 200100 65536", "write -z 5M 100",
            "read -P 0xab 1000 2000", "read -P 0 3000 1500", "read -P 0xab 4500 1500",
            "read -P 0x02 200003 97", "read -P 0 200100 65536", "read -P 0x02 265636 4368")
    fill(3000, 1500, 0)
    fill(200100, 65536, 0)
    # FUA writes and an aio burst, then a flush
    burst = [f"aio_write -P {0x40 + i} {1 * MiB + i * 69632} 69632" for i in range(12)]
    qemu_io(srv, "qio", "write -f -P 0xef 300000 4096", "write -f -P 0xee 4M 3",
            *burst, "aio_flush", "read -P 0xef 300000 4096")
    fill(300000, 4096, 0xef)
    fill(4 * MiB, 3, 0xee)
    for i in range(12):
        fill(1 * MiB + i * 69632, 69632, 0x40 + i)
    # discard whole chunks (they read as zeros) and part of one (the rest stays)
    qemu_io(srv, "qio", "write -P 0x77 6M 256k", "discard 6M 128k", "discard 6500000 5000",
            "read -P 0 6M 128k", "read -P 0x77 6422528 77472", "read -P 0x77 6505000 48600")
    fill(6 * MiB, 256 * KiB, 0x77)
    fill(6 * MiB, 128 * KiB, 0)
    runs = nbd_map(srv, "qio")
    assert state_at(runs, 6 * MiB) == "hole,zero" and state_at(runs, 6 * MiB + CHUNK) == "hole,zero"
    assert state_at(runs, 6 * MiB + 2 * CHUNK) == "data"
    got = bytearray(read_volume(srv, "qio", tmp_path / "qio.raw"))
    assert len(got) == size
    got[6500000:6505000] = model[6500000:6505000]  # a partial TRIM leaves unspecified bytes
    first = next((i for i in range(size) if got[i] != model[i]), None) if got != model else None
    assert first is None, (f"first difference at byte {first}: got {bytes(got[first:first + 16])!r}"
                           f", expected {bytes(model[first:first + 16])!r}")


# --- nbdcopy, concurrent clients, fio --------------------------------------------------


def test_nbdcopy_multi_conn_both_directions(srv, tmp_path):
    data = bytearray(os.urandom(64 * MiB))
    data[10 * MiB:13 * MiB] = bytes(3 * MiB)  # zero runs: copied as zeroes/holes
    data[40 * MiB + 1000:40 * MiB + 300000] = bytes(299000)
    src = write_file(tmp_path / "src.raw", bytes(data))
    new_volume(srv, "copy", 64 * MiB)
    try:
        run("nbdcopy", "-C", "4", "--flush", src, uri(srv, "copy"), timeout=300)
        out = tmp_path / "out.raw"
        run("nbdcopy", "-C", "4", uri(srv, "copy"), str(out), timeout=300)
        run("cmp", src, str(out))
        run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri(srv, "copy"), timeout=300)
    finally:
        api(srv, "DELETE", "/copy")


def test_concurrent_qemu_io_writers(srv, tmp_path):
    """Four clients write neighbouring regions at once, the regions meeting inside
    64 KiB chunks (allocated by whichever client comes first)."""
    new_volume(srv, "multi", 16 * MiB)
    bounds = [0, 4 * MiB - 3 * BLOCK, 8 * MiB + 5 * BLOCK, 12 * MiB + BLOCK, 16 * MiB]
    piece = 100_000  # > 64 KiB: the server does these off its event loop
    procs = []
    for i in range(4):
        lo, hi = bounds[i], bounds[i + 1]
        pat = 0x31 + i
        edges = [f"aio_write -P {pat} {lo} {piece}", f"aio_write -P {pat} {hi - piece} {piece}"]
        cmds = edges * 6 + ["aio_flush"]
        cmds += [f"write -P {pat} {o} {min(piece * 3, hi - o)}" for o in range(lo, hi, piece * 3)]
        cmds += edges * 6 + ["aio_flush"]
        procs.append(subprocess.Popen(qemu_io_args(srv, "multi", cmds), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    for p, text in zip(procs, outputs):
        assert p.returncode == 0 and "error" not in text.lower(), text
    qemu_io(srv, "multi", *[f"read -P {0x31 + i} {bounds[i]} {bounds[i + 1] - bounds[i]}"
                            for i in range(4)])


def test_fio_randrw_verifies(srv):
    new_volume(srv, "fio", 64 * MiB)
    out = run("fio", "--name=randrw", "--ioengine=nbd", f"--uri={uri(srv, 'fio')}",
              "--rw=randrw", "--bsrange=512-64k", "--size=32M", "--iodepth=8",
              "--numjobs=2", "--offset_increment=32M", "--verify=crc32c", "--verify_fatal=1",
              "--do_verify=1", "--group_reporting", "--output-format=json", timeout=300)
    report = json.loads(out.stdout[out.stdout.index("{"):])
    job = report["jobs"][0]
    assert job["error"] == 0 and job["write"]["io_bytes"] > 0 and job["read"]["io_bytes"] > 0


def test_concurrent_writes_sharing_a_block_keep_both(srv):
    """One client pipelines non-overlapping writes that meet inside 4 KiB blocks
    (the export advertises a 1-byte minimum block size): every byte must stick.
    The race is timing-dependent: up to 8 rounds, stopping at the first loss."""
    new_volume(srv, "rmw", 8 * MiB)
    n, count = 70_000, 96  # > 64 KiB each (the server writes them in threads), unaligned
    failures: list[str] = []
    for rnd in range(8):
        spans = [(12_345 + i * n, 0x21 + (i + rnd * 7) % 200) for i in range(count)]
        qemu_io(srv, "rmw", *[f"aio_write -P {p} {off} {n}" for off, p in spans], "aio_flush")
        out = run(*qemu_io_args(srv, "rmw", [f"read -P {p} {off} {n}" for off, p in spans]),
                  check=False)
        failures = [line for line in out.stdout.splitlines() if "verification failed" in line]
        if failures:
            break
    assert not failures, f"round {rnd}: {len(failures)} of {count} writes lost bytes: " \
                         f"{failures[:2]}"


# --- crashes and lost disks ------------------------------------------------------------


def _old_or_new(got: bytes, old: bytes, new: bytes) -> list[int]:
    """Blocks that are neither their old nor their new content."""
    return [b for b in range(len(got) // BLOCK)
            if got[b * BLOCK:(b + 1) * BLOCK] not in (old[b * BLOCK:(b + 1) * BLOCK],
                                                      new[b * BLOCK:(b + 1) * BLOCK])]


def test_sigkill_keeps_flushed_writes_and_never_tears_unflushed_ones(tmp_path):
    """SIGKILL the whole server. Flushed (or FUA) writes read back byte-exact.
    Acknowledged but never flushed ones leave every 4 KiB block old or new: on
    "torn", old = 4 MiB flushed then 4 MiB never written, new = all 8 MiB."""
    server = start_server(str(tmp_path), extra=ONE_WORKER)
    try:
        new_volume(server, "durable", 32 * MiB)
        data = os.urandom(32 * MiB)
        run("nbdcopy", "-C", "2", "--flush", write_file(tmp_path / "src.raw", data),
            uri(server, "durable"))
        qemu_io(server, "durable", "write -P 0x99 1000 3000", "flush")
        data = data[:1000] + b"\x99" * 3000 + data[4000:]
        new_volume(server, "fua", 1 * MiB)
        qemu_io(server, "fua", "write -f -P 0x5c 5000 70000")  # FUA, no separate flush
        new_volume(server, "torn", 8 * MiB)
        old = blocks(b"OLD", 1024) + bytes(4 * MiB)
        new = blocks(b"NEW", 2048)
        run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw",
            write_file(tmp_path / "old.raw", old[:4 * MiB]), uri(server, "torn"))
        run("nbdcopy", "-C", "4", write_file(tmp_path / "new.raw", new), uri(server, "torn"))
        with RawNBD(server.nbd_port, "torn") as raw:  # unaligned, acknowledged, unflushed
            raw.pwrite(100, new[100:5000])
            stop_server(server, signal.SIGKILL)
        server = start_server(str(tmp_path), extra=ONE_WORKER)
        assert read_volume(server, "durable", tmp_path / "back.raw") == data
        qemu_io(server, "fua", "read -P 0x5c 5000 70000", "read -P 0 0 5000")
        got = read_volume(server, "torn", tmp_path / "got.raw")
        assert len(got) == 8 * MiB
        bad = _old_or_new(got, old, new)
        assert not bad, f"{len(bad)} blocks are neither old nor new, first {bad[:5]}"
        qemu_io(server, "torn", "write -P 0x1f 0 8M", "read -P 0x1f 0 8M")  # still writable
        assert allocated(server, "durable") == 32 * MiB
    finally:
        stop_server(server)


def test_unflushed_trim_then_write_never_shows_other_data(tmp_path):
    """TRIM a chunk and write a new one, both acknowledged, neither flushed, then
    SIGKILL: the trimmed chunk is its old content or zeros, never the new chunk's."""
    server = start_server(str(tmp_path), extra=ONE_WORKER)
    try:
        new_volume(server, "reuse", 4 * MiB)
        old = blocks(b"OLD", 256) + bytes(3 * MiB)
        run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw",
            write_file(tmp_path / "old.raw", old[:MiB]), uri(server, "reuse"))
        fresh = blocks(b"NEW", 16, first=48 * 16)
        with RawNBD(server.nbd_port, "reuse") as raw:
            raw.trim(3 * CHUNK, CHUNK)
            raw.pwrite(48 * CHUNK, fresh)
            assert raw.pread(3 * CHUNK, CHUNK) == bytes(CHUNK)
            stop_server(server, signal.SIGKILL)
        server = start_server(str(tmp_path), extra=ONE_WORKER)
        got = read_volume(server, "reuse", tmp_path / "got.raw")
        new = bytearray(old)
        new[3 * CHUNK:4 * CHUNK] = bytes(CHUNK)
        new[48 * CHUNK:49 * CHUNK] = fresh
        bad = _old_or_new(got, old, bytes(new))
        assert not bad, (f"blocks {bad[:3]}.. of trimmed chunk 3 hold "
                         f"{[got[b * BLOCK:b * BLOCK + 11] for b in bad[:3]]}")
    finally:
        stop_server(server)


def test_wiped_disks_one_at_a_time_with_heal_between(tmp_path):
    server = start_server(str(tmp_path), extra=ONE_WORKER)
    disks = os.path.join(str(tmp_path), "data", "disks")
    try:
        new_volume(server, "safe", 16 * MiB)
        data = bytearray(os.urandom(16 * MiB))
        data[4 * MiB:5 * MiB] = bytes(MiB)
        run("nbdcopy", "--flush", write_file(tmp_path / "src.raw", bytes(data)),
            uri(server, "safe"))
        stop_server(server)
        shutil.rmtree(os.path.join(disks, "disk1"))
        server = start_server(str(tmp_path), extra=ONE_WORKER)
        assert read_volume(server, "safe", tmp_path / "a.raw") == data
        # writes while degraded, then heal everything
        qemu_io(server, "safe", "write -P 0x66 8M 200000", "flush")
        data[8 * MiB:8 * MiB + 200000] = b"\x66" * 200000
        report = json.loads(server.cli("heal", "--json").stdout.strip().splitlines()[-1])
        # (the server's own background heal may have got there first: no disks_healed check)
        assert report["failed"] == 0, report
        assert report["volumes"]["slots"] == allocated(server, "safe") // CHUNK, report
        stop_server(server)
        shutil.rmtree(os.path.join(disks, "disk2"))
        server = start_server(str(tmp_path), extra=ONE_WORKER)
        assert read_volume(server, "safe", tmp_path / "b.raw") == data
        report = json.loads(server.cli("heal", "--json").stdout.strip().splitlines()[-1])
        assert report["failed"] == 0, report
        stop_server(server)
        # healed twice: every slot has all its copies again, so two disks may go at once
        shutil.rmtree(os.path.join(disks, "disk0"))
        shutil.rmtree(os.path.join(disks, "disk3"))
        server = start_server(str(tmp_path), extra=ONE_WORKER)
        assert read_volume(server, "safe", tmp_path / "c.raw") == data
    finally:
        stop_server(server)
