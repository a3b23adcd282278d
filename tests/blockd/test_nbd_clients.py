"""End to end with real clients: libnbd's nbdinfo/nbdcopy and QEMU's qemu-io/qemu-img."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import threading

import pytest
from memory_export import CHUNK
from nbd_helpers import MiB, require, run

from blockd import protocol as p


@pytest.fixture(autouse=True)
def _tools():
    for tool in ("nbdinfo", "nbdcopy", "qemu-io", "qemu-img"):
        require(tool)


def qemu_io(uri: str, *commands: str, read_only: bool = False, check: bool = True):
    args = ["qemu-io", "-f", "raw"] + (["-r"] if read_only else [])
    for command in commands:
        args += ["-c", command]
    return run(*args, uri, check=check)


def random_image(path, size: int, holes: bool = False) -> None:
    """A raw image of random data; with ``holes``, every other MiB left sparse."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, MiB):
            if holes and (offset // MiB) % 2:
                continue
            f.seek(offset)
            f.write(os.urandom(MiB))


def test_nbdinfo_list(nbd, make_export):
    extra = make_export(description="made for the list")
    out = run("nbdinfo", "--list", "--json", f"nbd://127.0.0.1:{nbd.port}").stdout
    exports = {e["export-name"]: e for e in json.loads(out)["exports"]}
    assert {"disk", "ro", extra.name} <= set(exports)
    assert exports["ro"]["is_read_only"] is True
    assert exports["disk"]["is_read_only"] is False
    assert exports[extra.name]["description"] == "made for the list"
    assert exports[extra.name]["export-size"] == 16 * MiB


def test_nbdinfo_size_and_capabilities(nbd):
    assert run("nbdinfo", "--size", nbd.uri("ro")).stdout.strip() == str(8 * MiB)
    info = json.loads(run("nbdinfo", "--json", nbd.uri("disk")).stdout)["exports"][0]
    assert info["contexts"] == ["base:allocation"]
    for cap in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero",
                "can_multi_conn", "can_cache", "can_df"):
        assert info[cap] is True, cap
    assert (info["block_size_minimum"], info["block_size_maximum"]) == (1, 32 * MiB)


def test_default_export_and_qemu_img_map(nbd, make_export):
    info = json.loads(run("qemu-img", "info", "--output=json", f"nbd://127.0.0.1:{nbd.port}").stdout)
    assert info["virtual-size"] == 64 * MiB
    export = make_export(size=2 * MiB)
    qemu_io(nbd.uri(export.name), f"write -P 1 {CHUNK} {CHUNK}")
    out = run("qemu-img", "map", "--output=json", "-f", "raw", nbd.uri(export.name)).stdout
    extents = [(e["start"], e["length"], e["data"], e["zero"]) for e in json.loads(out)]
    assert extents == [
        (0, CHUNK, False, True),
        (CHUNK, CHUNK, True, False),
        (2 * CHUNK, 2 * MiB - 2 * CHUNK, False, True),
    ]


def test_nbdinfo_unknown_export_fails_cleanly(nbd):
    proc = run("nbdinfo", nbd.uri("no-such-volume"), check=False)
    assert proc.returncode != 0
    assert "no-such-volume" in proc.stderr
    assert run("nbdinfo", "--size", nbd.uri("disk")).stdout.strip() == str(64 * MiB)


def test_nbdinfo_map_shows_holes(nbd, make_export):
    export = make_export(size=4 * MiB)
    qemu_io(nbd.uri(export.name), f"write -P 0x33 {MiB} {CHUNK}")
    out = run("nbdinfo", "--map", "--json", nbd.uri(export.name)).stdout
    extents = [(e["offset"], e["length"], e["description"]) for e in json.loads(out)]
    assert extents == [
        (0, MiB, "hole,zero"),
        (MiB, CHUNK, "data"),
        (MiB + CHUNK, 3 * MiB - CHUNK, "hole,zero"),
    ]


def test_qemu_io_unaligned_patterns_trim_zero_fua(nbd, make_export):
    export = make_export()
    uri = nbd.uri(export.name)
    out = qemu_io(
        uri,
        "write -P 0xab 1000 5000",
        "read -P 0xab 1000 5000",
        "read -P 0 0 1000",
        "write -f -P 0xcd 70001 9999",  # FUA
        "read -P 0xcd 70001 9999",
        "write -P 0x11 0 1048576",
        "discard 0 524288",
        "write -z 524288 100000",  # write zeroes, may not punch holes
        "write -z -u 700000 300000",  # write zeroes, may unmap
        "read -P 0 524288 100000",
        "read -P 0 700000 300000",
        "read -P 0x11 1000000 48576",
        "flush",
    ).stdout
    assert "Pattern verification failed" not in out
    data = bytes(export.chunks[15])  # 983040..1048575: last chunk, still 0x11 past the zeroes
    assert data[1_000_000 - 983_040 :] == b"\x11" * (1_048_576 - 1_000_000)
    assert export.calls["flush"] >= 1


def test_qemu_img_convert_and_compare(nbd, make_export, tmp_path):
    export = make_export(size=32 * MiB)
    image = tmp_path / "random.raw"
    random_image(image, 32 * MiB)
    uri = nbd.uri(export.name)
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(image), uri)
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(image), uri)


def test_nbdcopy_multi_conn_both_directions(nbd, make_export, tmp_path):
    export = make_export(size=32 * MiB)
    source, back = tmp_path / "source.raw", tmp_path / "back.raw"
    random_image(source, 32 * MiB, holes=True)
    uri = nbd.uri(export.name)
    run("nbdcopy", "-C", "4", "--flush", str(source), uri)
    # The sparse half stayed unallocated on the export.
    assert len(export.chunks) * CHUNK == 16 * MiB
    run("nbdcopy", "-C", "4", uri, str(back))
    assert source.read_bytes() == back.read_bytes()


def test_concurrent_clients_on_one_export(nbd, make_export):
    export = make_export(size=16 * MiB)
    uri = nbd.uri(export.name)
    errors = []

    def writer(i: int) -> None:
        try:
            qemu_io(uri, f"write -P {i + 1} {i * MiB + 7} {MiB - 100}")
        except AssertionError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    checks = [f"read -P {i + 1} {i * MiB + 7} {MiB - 100}" for i in range(8)]
    assert "Pattern verification failed" not in qemu_io(uri, *checks, read_only=True).stdout


def test_read_only_export(nbd):
    proc = qemu_io(nbd.uri("ro"), "write 0 512", check=False)
    assert proc.returncode != 0 and "Permission denied" in proc.stderr
    out = qemu_io(nbd.uri("ro"), "read -P 0x5a 0 65536", "read -P 0 65536 65536", read_only=True)
    assert "Pattern verification failed" not in out.stdout


def test_unix_socket(nbd, make_export):
    export = make_export()
    uri = nbd.unix_uri(export.name)
    qemu_io(uri, "write -P 0x77 4096 8192")
    assert "Pattern verification failed" not in qemu_io(uri, "read -P 0x77 4096 8192").stdout
    assert run("nbdinfo", "--size", uri).stdout.strip() == str(16 * MiB)


def _misbehave(port: int, name: str) -> None:
    """Clients that break the protocol in every way, one connection each."""
    go = (
        p.S_OPTION.pack(p.IHAVEOPT, p.OPT_GO, 4 + len(name) + 2)
        + p.S_U32.pack(len(name)) + name.encode() + p.S_U16.pack(0)
    )
    hello = p.S_U32.pack(p.FLAG_C_FIXED_NEWSTYLE | p.FLAG_C_NO_ZEROES)
    attempts = [
        os.urandom(4096),  # garbage from the start
        hello + os.urandom(4096),  # garbage options
        hello + go + os.urandom(4096),  # garbage requests
        # half a large write, then hang up
        hello + go + struct.pack(">IHHQQI", p.REQUEST_MAGIC, 0, p.CMD_WRITE, 1, 0, 8 * MiB) + b"x" * MiB,
        # a write the size of the whole 4 GiB length field, then hang up
        hello + go + struct.pack(">IHHQQI", p.REQUEST_MAGIC, 0, p.CMD_WRITE, 2, 0, 0xFFFFFFFF) + b"y" * MiB,
        # reads whose replies are never read
        hello + go + b"".join(
            struct.pack(">IHHQQI", p.REQUEST_MAGIC, 0, p.CMD_READ, i, 0, MiB) for i in range(500)
        ),
    ]
    for payload in attempts:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(5)
            sock.recv(18)
            try:
                sock.sendall(payload)
            except OSError:
                pass  # the server may hang up first
            # Hard close: RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_misbehaving_clients_do_not_disturb_a_healthy_one(nbd, make_export, tmp_path):
    export = make_export(size=32 * MiB)
    image = tmp_path / "random.raw"
    random_image(image, 32 * MiB)
    uri = nbd.uri(export.name)
    copy = subprocess.Popen(
        ["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(image), uri],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    for _ in range(3):
        _misbehave(nbd.port, export.name)
    out, err = copy.communicate(timeout=120)
    assert copy.returncode == 0, err
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(image), uri)
