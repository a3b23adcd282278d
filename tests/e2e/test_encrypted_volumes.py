"""Encrypted volumes end to end (issue 16): real NBD clients (qemu-io, nbdcopy,
qemu-img) against `basalt serve`; no slab file or backup pack holds the
plaintext; snapshots, clones, SIGKILL, wiped disks, bitrot, KMS keys disabled
and rotated, restarts; encrypted backups restored with and without the key.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import time

import pytest

from .conftest import start_server, stop_server
from .nbd_e2e_helpers import MiB, RawNBD, qemu_io, read_volume, require, run, uri, write_file
from .test_volume_backup import cli_with

ONE_WORKER = ("--workers", "1")
PATTERN = b"BASALT-ENCRYPTED-VOLUME-PATTERN!"  # 32 bytes, repeated: a known plaintext


@pytest.fixture(autouse=True)
def _tools():
    require("qemu-io", "qemu-img", "nbdcopy")


def patterned(n: int) -> bytes:
    return PATTERN * (n // len(PATTERN))


def no_pattern_in(paths: list[str]) -> None:
    assert paths
    for path in paths:
        with open(path, "rb") as f:
            body = f.read()
        assert PATTERN[:16] not in body and PATTERN[16:] not in body, path


def slabs(server) -> list[str]:
    return glob.glob(os.path.join(server.data_dir, "disks", "*", "files", "volumes.*"))


def cli_json(server, *args: str) -> dict:
    return json.loads(server.cli(*args, "--json").stdout)


def test_encrypted_volume_with_real_clients(tmp_path):
    server = start_server(str(tmp_path), extra=ONE_WORKER)
    try:
        key = cli_json(server, "kms", "key", "create", "vk")
        sec = cli_json(server, "volume", "create", "sec", "--size", "64M", "--encrypted")
        assert sec["encrypted"] and sec["key_id"] and "sealed" not in json.dumps(sec)
        kv = cli_json(server, "volume", "create", "kv", "--size", "16M", "--encrypted",
                      "--kms-key", "vk")
        assert kv["key_id"] == key["id"]
        missing = server.cli("volume", "create", "x", "--size", "1M", "--encrypted",
                             "--kms-key", "nosuch", check=False)
        assert missing.returncode != 0 and "nosuch" in missing.stderr, missing.stderr
        listed = {v["name"]: v for v in json.loads(server.cli("volume", "list", "--json").stdout)}
        assert listed["sec"]["encrypted"] and listed["kv"]["key_id"] == key["id"]
        assert "encrypted" in server.cli("volume", "info", "sec").stdout
        data = bytearray(patterned(8 * MiB))
        run("nbdcopy", "--flush", write_file(tmp_path / "src.raw", bytes(data)), uri(server, "sec"))
        qemu_io(server, "sec", "write -P 0x41 1000 5000", "write -P 0x42 12M 100000",
                "write -z 2M 10000", "flush")
        data[1000:6000] = b"\x41" * 5000
        data[2 * MiB:2 * MiB + 10000] = bytes(10000)
        qemu_io(server, "sec", "read -P 0x41 1000 5000", "read -P 0x42 12M 100000",
                "read -P 0 2M 10000", "read -P 0 40M 1M")
        assert read_volume(server, "sec", tmp_path / "a.raw")[:8 * MiB] == data
        # snapshot and clone: same key, copy on write
        server.cli("volume", "snapshot", "sec", "s1")
        server.cli("volume", "clone", "sec@s1", "sec2")
        qemu_io(server, "sec2", "write -P 0x43 0 64k", "flush")
        qemu_io(server, "sec", "write -P 0x44 64k 64k", "flush")
        assert read_volume(server, "sec@s1", tmp_path / "s.raw")[:8 * MiB] == data
        clone = read_volume(server, "sec2", tmp_path / "c.raw")
        assert clone[:65536] == b"\x43" * 65536 and clone[65536:8 * MiB] == data[65536:]
        assert cli_json(server, "volume", "info", "sec2")["key_id"] == sec["key_id"]
        no_pattern_in(slabs(server))
        # bitrot in one replica of every slot: repaired from the others
        for path in glob.glob(os.path.join(server.data_dir, "disks", "disk0", "files",
                                           "volumes.slab")):
            with open(path, "r+b") as f:
                size = f.seek(0, 2)
                for offset in range(0, size, 65536):
                    f.seek(offset + 100)
                    f.write(b"\xff\x00\xff")
        assert read_volume(server, "sec@s1", tmp_path / "s.raw")[:8 * MiB] == data
        assert "checksum mismatch" in server.log()
        # a disabled KMS key: new connections refused, the open one keeps working
        qemu_io(server, "kv", "write -P 0x55 0 1M", "flush")
        with RawNBD(server.nbd_port, "kv") as held:
            server.cli("kms", "key", "disable", "vk")
            deadline = time.monotonic() + 10
            while (out := run("qemu-io", "-f", "raw", "-c", "read 0 4k", uri(server, "kv"),
                              check=False)).returncode == 0:
                assert time.monotonic() < deadline, out.stdout
                time.sleep(0.3)
            assert "disabled" in out.stdout + out.stderr, out.stdout + out.stderr
            assert held.pread(0, 4096) == b"\x55" * 4096
            held.pwrite(4096, b"\x56" * 4096)
            held.flush()
        server.cli("kms", "key", "enable", "vk")
        server.cli("kms", "key", "rotate", "vk")
        stop_server(server)
        server = start_server(str(tmp_path), extra=ONE_WORKER)
        qemu_io(server, "kv", "read -P 0x55 0 4k", "read -P 0x56 4k 4k", "read -P 0x55 8k 1016k")
        assert read_volume(server, "sec@s1", tmp_path / "s.raw")[:8 * MiB] == data
    finally:
        stop_server(server)


def test_encrypted_volume_survives_sigkill_wiped_disks_and_heal(tmp_path):
    server = start_server(str(tmp_path), extra=ONE_WORKER)
    disks = os.path.join(server.data_dir, "disks")
    try:
        server.cli("volume", "create", "safe", "--size", "16M", "--encrypted")
        data = bytearray(patterned(16 * MiB))
        data[4 * MiB:5 * MiB] = bytes(MiB)
        run("nbdcopy", "--flush", write_file(tmp_path / "src.raw", bytes(data)),
            uri(server, "safe"))
        qemu_io(server, "safe", "write -P 0x77 3000 9000", "flush")
        data[3000:12000] = b"\x77" * 9000
        stop_server(server, signal.SIGKILL)  # after the FLUSH: all of it acknowledged
        server = start_server(str(tmp_path), extra=ONE_WORKER)
        assert read_volume(server, "safe", tmp_path / "a.raw") == data
        stop_server(server)
        shutil.rmtree(os.path.join(disks, "disk1"))
        server = start_server(str(tmp_path), extra=ONE_WORKER)
        assert read_volume(server, "safe", tmp_path / "b.raw") == data
        qemu_io(server, "safe", "write -P 0x66 8M 200000", "flush")
        data[8 * MiB:8 * MiB + 200000] = b"\x66" * 200000
        report = json.loads(server.cli("heal", "--json").stdout.strip().splitlines()[-1])
        assert report["failed"] == 0, report
        stop_server(server)
        shutil.rmtree(os.path.join(disks, "disk0"))
        shutil.rmtree(os.path.join(disks, "disk3"))
        server = start_server(str(tmp_path), extra=ONE_WORKER)
        assert read_volume(server, "safe", tmp_path / "c.raw") == data
        no_pattern_in(slabs(server))
    finally:
        stop_server(server)


def test_encrypted_backups_reveal_nothing_and_restore_only_with_the_key(tmp_path):
    target = start_server(str(tmp_path / "target"))
    source = start_server(str(tmp_path / "source"))
    other = None
    env = {"AWS_ENDPOINT_URL": target.endpoint, "XDG_STATE_HOME": str(tmp_path / "state")}
    phrase, wrong = tmp_path / "pass", tmp_path / "wrong"
    phrase.write_text("correct horse battery staple\n")
    wrong.write_text("not it\n")
    try:
        s3 = target.client()
        s3.create_bucket(Bucket="backups")
        source.cli("volume", "create", "enc", "--size", "32M", "--encrypted")
        data = bytearray(patterned(8 * MiB))
        run("nbdcopy", "--flush", write_file(tmp_path / "src.raw", bytes(data)),
            uri(source, "enc"))
        cli_with(source, env, "volume", "backup", "enc", "--to", "s3://backups/sealed")
        cli_with(source, env, "volume", "backup", "enc", "--to", "s3://backups/pass",
                 "--passphrase-file", str(phrase))
        qemu_io(source, "enc", "write -P 0x61 1M 100000", "flush")
        data[MiB:MiB + 100000] = b"\x61" * 100000
        out = cli_with(source, env, "volume", "backup", "enc", "--to", "s3://backups/pass",
                       "--passphrase-file", str(phrase), "--json")
        assert json.loads(out.stdout.splitlines()[-1])["kind"] == "incremental"
        # a stolen bucket: no object holds the plaintext
        dump = tmp_path / "bucket"
        dump.mkdir()
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="backups")["Contents"]]
        assert any("/packs/" in k for k in keys)
        for i, key in enumerate(keys):
            (dump / str(i)).write_bytes(s3.get_object(Bucket="backups", Key=key)["Body"].read())
        no_pattern_in([str(p) for p in dump.iterdir()])
        # on the same server the sealed key opens; the restored volume is encrypted
        cli_with(source, env, "volume", "restore", "s3://backups/sealed", "--to", "back")
        assert source.cli("volume", "info", "back", "--json") and \
            json.loads(source.cli("volume", "info", "back", "--json").stdout)["encrypted"]
        assert read_volume(source, "back", tmp_path / "b.raw")[:8 * MiB] == \
            patterned(8 * MiB)
        # another Basalt (another master key): only the passphrase opens
        other = start_server(str(tmp_path / "other"))
        for args, words in (((), "passphrase-file"), (("--passphrase-file", str(wrong)),
                                                        "passphrase does not open")):
            out = cli_with(other, env, "volume", "restore", "s3://backups/pass", "--to", "r",
                           *args, check=False)
            assert out.returncode != 0 and words in out.stderr, out.stderr
        out = cli_with(other, env, "volume", "restore", "s3://backups/sealed", "--to", "r",
                       check=False)
        assert out.returncode != 0 and "another master key" in out.stderr, out.stderr
        assert "r" not in {v["name"] for v in json.loads(other.cli("volume", "list",
                                                                   "--json").stdout)}
        cli_with(other, env, "volume", "restore", "s3://backups/pass", "--to", "r",
                 "--passphrase-file", str(phrase))
        assert json.loads(other.cli("volume", "info", "r", "--json").stdout)["encrypted"]
        assert read_volume(other, "r", tmp_path / "r.raw")[:8 * MiB] == data
        no_pattern_in(slabs(other))
    finally:
        for s in (other, source, target):
            if s is not None:
                stop_server(s)
