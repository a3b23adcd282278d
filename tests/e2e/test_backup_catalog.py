"""`basalt volume backups list|prune`: three backups with changes between, prune to
one, the packs only the removed ones used collected, the kept one restores exactly."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess

import pytest

from basalt.backup import Target, load_backup, load_manifest

from .conftest import start_server, stop_server
from .test_volume_backup import CHUNK, MIB, change_chunks, cli_with, export_sha256


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module: its tests use their own volume and bucket names."""
    s = start_server(str(tmp_path_factory.mktemp("catalog")))
    yield s
    stop_server(s)


def backup(server, volume: str) -> dict:
    out = server.cli("volume", "backup", volume, "--to", "s3://backups/vols", "--json")
    return json.loads(out.stdout.strip().splitlines()[-1])


def listing(server) -> list[dict]:
    return json.loads(server.cli("volume", "backups", "list", "s3://backups/vols",
                                 "--json").stdout)


def packs(s3) -> dict[str, int]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="backups", Prefix="vols/packs/")
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def refused(out: subprocess.CompletedProcess, text: str) -> None:
    assert out.returncode != 0 and text in out.stderr, out.stderr + out.stdout
    assert "Traceback" not in out.stderr
    lines = out.stderr.rstrip().splitlines()  # the error, maybe what to do next
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  ")), out.stderr


def test_list_prune_and_restore_the_kept_backup(server, tmp_path):
    s3 = server.client()
    s3.create_bucket(Bucket="backups")
    server.cli("volume", "create", "vol", "--size", "16M")
    port = server.nbd_port
    asyncio.run(change_chunks(port, "vol", list(range(64)), seed=1))    # 4 MiB: pack P1
    first = backup(server, "vol")
    asyncio.run(change_chunks(port, "vol", list(range(16)), seed=2))    # P2, only backup 2's
    second = backup(server, "vol")
    # garbage an interrupted run left before the last backup: collected
    s3.put_object(Bucket="backups", Key="vols/packs/leftover", Body=b"l" * 1000)
    asyncio.run(change_chunks(port, "vol", list(range(32)), seed=3))    # P3 replaces all of P2
    third = backup(server, "vol")
    # a pack a concurrent backup uploaded after the newest manifest: kept
    s3.put_object(Bucket="backups", Key="vols/packs/in-flight", Body=b"f" * 1000)
    expected = export_sha256(server, "vol", tmp_path)
    assert first["kind"] == "full" and third["kind"] == "incremental"

    listed = listing(server)
    assert [b["id"] for b in listed] == [first["backup"], second["backup"], third["backup"]]
    for b in listed:
        assert b["volume"] == "vol" and b["size"] == 16 * MIB and b["chunks"] == 64
        assert b["bytes"] == 64 * CHUNK and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                                                         b["time"])
    assert [b["packs"] for b in listed] == [1, 2, 2]
    assert [b["time"] for b in listed] == sorted(b["time"] for b in listed)

    before = packs(s3)
    stored = load_manifest(s3, Target("backups", "vols"), f"vols/backups/{third['backup']}.json.gz")
    # an incremental's manifest names only what changed (32 chunks), read through its bases
    assert stored["format"] == 3 and stored["base"] == second["backup"]
    assert len(stored["chunks"]) == 32 and stored["removed"] == []
    third_packs = {e[0] for e in load_backup(s3, Target("backups", "vols"), third["backup"])
                   ["chunks"].values()}
    refused(server.cli("volume", "backups", "prune", "s3://backups/vols", "--keep", "0",
                       check=False), "--keep must be")
    result = json.loads(server.cli("volume", "backups", "prune", "s3://backups/vols",
                                   "--keep", "1", "--json").stdout)
    assert result["kept"] == [third["backup"]]
    assert result["removed"] == [first["backup"], second["backup"]]
    after = packs(s3)
    # P2 and the leftover are gone; P1 (still used by backup 3), P3 and the in-flight stay
    assert set(after) == third_packs | {"vols/packs/in-flight"} and len(third_packs) == 2
    assert result["packs_deleted"] == len(before) - len(after) == 2
    assert result["bytes_freed"] == sum(before[k] for k in set(before) - set(after)) \
        == 16 * CHUNK + 1000
    assert [b["id"] for b in listing(server)] == [third["backup"]]
    # pruning again changes nothing
    again = json.loads(server.cli("volume", "backups", "prune", "s3://backups/vols",
                                  "--keep", "1", "--json").stdout)
    assert again["removed"] == [] and again["packs_deleted"] == 0

    server.cli("volume", "restore", "s3://backups/vols", "--to", "restored")
    assert export_sha256(server, "restored", tmp_path) == expected
    # the next backup is still incremental from the chain's snapshot
    asyncio.run(change_chunks(port, "vol", [40], seed=5))
    fourth = backup(server, "vol")
    assert fourth["kind"] == "incremental" and fourth["uploaded"] == CHUNK
    # the chain's length is bounded: at the limit, the manifest is written whole
    asyncio.run(change_chunks(port, "vol", [41], seed=6))
    fifth = json.loads(cli_with(server, {"BASALT_BACKUP_CHAIN": "2"}, "volume", "backup", "vol",
                                "--to", "s3://backups/vols", "--json").stdout.splitlines()[-1])
    stored = load_manifest(s3, Target("backups", "vols"), f"vols/backups/{fifth['backup']}.json.gz")
    assert fifth["kind"] == "incremental" and fifth["uploaded"] == CHUNK
    assert stored["format"] == 1 and stored["base"] == fourth["backup"]
    assert len(stored["chunks"]) == 64 and stored["chunks"]["41"][0] not in third_packs

    # the blocking snapshots named, with what to do about each
    server.cli("volume", "snapshot", "vol", "before")
    out = server.cli("volume", "delete", "vol", check=False)
    refused(out, "volume vol has snapshots: vol@before (delete it first), vol@backup-")
    assert "kept by backups to s3://backups/vols" in out.stderr
    snap = re.search(r"basalt volume delete (vol@backup-\S+?)[,;)]", out.stderr).group(1)
    assert snap.endswith(fifth["backup"])


def test_a_missing_bucket_is_named(server):
    server.cli("volume", "create", "v", "--size", "1M")
    for args in (("volume", "backups", "list", "s3://nobucket/p"),
                 ("volume", "backups", "prune", "s3://nobucket/p", "--keep", "2"),
                 ("volume", "backup", "v", "--to", "s3://nobucket/p"),
                 ("volume", "restore", "s3://nobucket/p", "--to", "w")):
        refused(server.cli(*args, check=False), "bucket nobucket does not exist")
    out = json.loads(server.cli("volume", "backups", "list", "s3://nobucket/p", "--json",
                                check=False).stdout)
    assert out["message"] == "bucket nobucket does not exist"
