"""Snapshots, clones, rollback, and the disaster drill: back up, lose everything, restore.

Real clients only: qemu-io and nbdcopy for the data, the basalt CLI for the
operations, a second `basalt serve` as the S3 backup target.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import subprocess

import pytest

from blockd.nbd_client import NBDClient

from .conftest import start_server, stop_server

MIB = 1 << 20
CHUNK = 64 * 1024


def qemu_io(server, export: str, *commands: str) -> str:
    args = ["qemu-io", "-f", "raw", f"nbd://127.0.0.1:{server.nbd_port}/{export}"]
    if "@" in export:  # snapshots are exported read-only
        args.insert(1, "-r")
    for c in commands:
        args += ["-c", c]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "failed" not in out.stdout.lower() + out.stderr.lower() \
        and "Pattern verification failed" not in out.stdout, out.stdout + out.stderr
    return out.stdout


def export_sha256(server, export: str, tmp_path) -> str:
    path = str(tmp_path / f"dump-{export.replace('@', '_')}.raw")
    subprocess.run(["nbdcopy", f"nbd://127.0.0.1:{server.nbd_port}/{export}", path],
                   check=True, timeout=300)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MIB):
            h.update(block)
    os.unlink(path)
    return h.hexdigest()


@pytest.fixture
def server(tmp_path):
    s = start_server(str(tmp_path / "a"))
    yield s
    stop_server(s)


def test_snapshot_clone_rollback_over_nbd(server):
    server.cli("volume", "create", "base", "--size", "64M")
    qemu_io(server, "base", "write -P 0x11 0 4M", "write -P 0x22 10M 100k", "flush")
    server.cli("volume", "snapshot", "base", "s1")
    qemu_io(server, "base", "write -P 0x33 0 1M", "write -P 0x44 10M 50k", "flush")
    # the snapshot keeps the old data, read-only; the volume has the new
    qemu_io(server, "base@s1", "read -P 0x11 0 4M", "read -P 0x22 10M 100k")
    qemu_io(server, "base", "read -P 0x33 0 1M", "read -P 0x11 1M 3M", "read -P 0x44 10M 50k",
            "read -P 0x22 10290k 50k")
    denied = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x55 0 4k",
                             f"nbd://127.0.0.1:{server.nbd_port}/base@s1"],
                            capture_output=True, text=True)
    assert "Permission denied" in denied.stdout + denied.stderr or denied.returncode != 0
    listed = json.loads(server.cli("volume", "list", "--json").stdout)
    assert {v["name"] for v in listed} >= {"base", "base@s1"}
    # clone: independent from then on, both ways
    server.cli("volume", "clone", "base@s1", "copy")
    qemu_io(server, "copy", "read -P 0x11 0 4M", "write -P 0x66 2M 64k", "flush")
    qemu_io(server, "base", "write -P 0x77 3M 64k", "flush")
    qemu_io(server, "copy", "read -P 0x66 2M 64k", "read -P 0x11 3M 64k")
    qemu_io(server, "base", "read -P 0x77 3M 64k", "read -P 0x11 2M 64k")
    qemu_io(server, "base@s1", "read -P 0x11 0 4M")
    # deleting the snapshot leaves the clone intact
    out = server.cli("volume", "delete", "base", check=False)
    assert out.returncode != 0 and "snapshots" in out.stderr
    server.cli("volume", "delete", "base@s1")
    qemu_io(server, "copy", "read -P 0x11 0 2M", "read -P 0x66 2M 64k", "read -P 0x22 10M 100k")
    # rollback
    server.cli("volume", "snapshot", "copy", "good")
    qemu_io(server, "copy", "write -P 0x99 0 8M", "flush")
    server.cli("volume", "rollback", "copy@good")
    qemu_io(server, "copy", "read -P 0x11 0 2M", "read -P 0x66 2M 64k")
    info = json.loads(server.cli("volume", "info", "copy", "--json").stdout)
    assert info["allocated"] >= 4 * MIB


async def change_chunks(port: int, export: str, indexes: list[int], seed: int) -> None:
    rng = random.Random(seed)
    async with NBDClient("127.0.0.1", port, export) as nbd:
        await asyncio.gather(*(nbd.write(i * CHUNK, rng.randbytes(CHUNK)) for i in indexes))
        await nbd.flush()


def test_disaster_drill_backup_change_backup_lose_everything_restore(tmp_path):
    target = start_server(str(tmp_path / "target"))   # the backup bucket lives here
    source = start_server(str(tmp_path / "source"))
    try:
        target.client().create_bucket(Bucket="backups")
        env_target = {"AWS_ENDPOINT_URL": target.endpoint}
        # 96 MiB of data, the rest a hole (the drill's steps, not its size, are the
        # point: backup and restore speed are benchmarks/backup_bench.py's)
        source.cli("volume", "create", "vol", "--size", "128M")
        image = tmp_path / "image.raw"
        with open(image, "wb") as f:
            block = os.urandom(16 * MIB)
            for i in range(6):
                f.write(i.to_bytes(8, "little") + block[8:])
            f.truncate(128 * MIB)
        subprocess.run(["nbdcopy", str(image), f"nbd://127.0.0.1:{source.nbd_port}/vol"],
                       check=True, timeout=300)
        os.unlink(image)
        first_sha = export_sha256(source, "vol", tmp_path)
        out = cli_with(source, env_target, "volume", "backup", "vol", "--to",
                       "s3://backups/drill", "--json")
        first = json.loads(out.stdout.strip().splitlines()[-1])
        assert first["kind"] == "full" and first["uploaded"] == 96 * MIB
        # change 1% of the allocated chunks
        allocated = 96 * MIB // CHUNK
        changed = random.Random(3).sample(range(allocated), allocated // 100)
        asyncio.run(change_chunks(source.nbd_port, "vol", changed, seed=4))
        second_sha = export_sha256(source, "vol", tmp_path)
        assert second_sha != first_sha
        out = cli_with(source, env_target, "volume", "backup", "vol", "--to",
                       "s3://backups/drill", "--json")
        second = json.loads(out.stdout.strip().splitlines()[-1])
        assert second["kind"] == "incremental"
        assert second["uploaded"] == len(changed) * CHUNK  # about 1% of the bytes
        third = json.loads(cli_with(source, env_target, "volume", "backup", "vol", "--to",
                                    "s3://backups/drill", "--json").stdout.splitlines()[-1])
        assert third["uploaded"] == 0 and third["read"] == 0
        # the disaster: the source host's whole data dir is gone
        stop_server(source)
        shutil.rmtree(source.data_dir)
        source = start_server(str(tmp_path / "source"))
        for backup, sha in ((first["backup"], first_sha), (second["backup"], second_sha)):
            name = f"r-{backup[-4:]}-{backup[:8]}"
            cli_with(source, env_target, "volume", "restore", f"s3://backups/drill@{backup}",
                     "--to", name)
            assert export_sha256(source, name, tmp_path) == sha
        # clear errors for a missing and a damaged backup
        missing = cli_with(source, env_target, "volume", "restore", "s3://backups/nothing",
                           "--to", "x", check=False)
        assert missing.returncode != 0 and "no backups" in missing.stderr
        s3 = target.client()
        pack = next(o["Key"] for o in s3.list_objects_v2(Bucket="backups",
                                                         Prefix="drill/packs/")["Contents"])
        s3.put_object(Bucket="backups", Key=pack, Body=b"garbage" * 1000)
        damaged = cli_with(source, env_target, "volume", "restore", "s3://backups/drill",
                           "--to", "y", check=False)
        assert damaged.returncode != 0 and "damaged" in damaged.stderr
    finally:
        stop_server(source)
        stop_server(target)


def cli_with(server, extra_env: dict, *args: str, check: bool = True):
    from .conftest import BASALT
    env = dict(server.env, **extra_env)
    out = subprocess.run([BASALT, "--data-dir", server.data_dir, *args], env=env,
                         capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_restore_resumes_after_the_server_is_killed(tmp_path):
    """SIGKILL the server mid-restore: the batches the CLI recorded as done are
    durable, and the same command run again finishes with the others only."""
    import signal
    import time
    target = start_server(str(tmp_path / "target"))
    source = start_server(str(tmp_path / "source"))
    env = {"AWS_ENDPOINT_URL": target.endpoint, "XDG_STATE_HOME": str(tmp_path / "state")}
    try:
        target.client().create_bucket(Bucket="backups")
        source.cli("volume", "create", "vol", "--size", "64M")
        asyncio.run(change_chunks(source.nbd_port, "vol", list(range(0, 1024, 2)), seed=5))
        sha = export_sha256(source, "vol", tmp_path)
        cli_with(source, env, "volume", "backup", "vol", "--to", "s3://backups/resume")
        from .conftest import BASALT
        restore = [BASALT, "--data-dir", source.data_dir, "volume", "restore",
                   "s3://backups/resume", "--to", "copy"]
        # batches of 4 chunks, so that the kill lands between two of them
        first = subprocess.Popen(restore, env=dict(source.env, **env,
                                                   BASALT_RESTORE_BATCH=str(4 * CHUNK)),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        states = tmp_path / "state" / "basalt" / "restores"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            recorded = [json.loads(p.read_text() or "[]") for p in states.glob("*.json")]
            if recorded and recorded[0]:
                break
            assert first.poll() is None, first.communicate()
            time.sleep(0.01)
        stop_server(source, signal.SIGKILL)
        assert first.wait(60) != 0
        done_before = len(json.loads(next(states.glob("*.json")).read_text()))
        assert 0 < done_before < 512
        source = restart_on_same_ports(source)  # the restore's record is per endpoint
        out = cli_with(source, env, "volume", "restore", "s3://backups/resume", "--to", "copy")
        number, unit = re.search(r"chunks, ([\d.]+) (\w+) written and verified",
                                 out.stdout).groups()
        written = float(number) * {"B": 1, "KiB": 1 << 10, "MiB": MIB}[unit]
        # only what was not recorded as done (printed rounded to 0.1 MiB)
        assert written <= (512 - done_before) * CHUNK + 0.05 * MIB
        assert not list(states.glob("*.json"))
        assert export_sha256(source, "copy", tmp_path) == sha
    finally:
        stop_server(source)
        stop_server(target)


def restart_on_same_ports(server):
    import dataclasses

    from .conftest import BASALT, wait_healthy
    port = server.endpoint.rsplit(":", 1)[1]
    log = open(server.log_path, "a")  # noqa: SIM115 - the server's log for its lifetime
    proc = subprocess.Popen([BASALT, "--data-dir", server.data_dir, "serve", "--s3-address",
                             f"127.0.0.1:{port}", "--nbd-address",
                             f"127.0.0.1:{server.nbd_port}"],
                            env=server.env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    again = dataclasses.replace(server, proc=proc)
    wait_healthy(again)
    return again
