"""The master key and KMS keys as an operator uses them: `basalt serve` makes the
master key once, refuses another one, and `basalt kms key ...` manages keys."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from tests.e2e.conftest import BASALT, start_server, stop_server


def cli_json(server, *args: str, check: bool = True):
    out = server.cli(*args, "--json", check=check)
    return json.loads(out.stdout), out.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(str(tmp_path_factory.mktemp("kms")))
    yield srv
    stop_server(srv)


def test_master_key_made_once_with_mode_0600(server):
    path = os.path.join(server.data_dir, "master.key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(bytes.fromhex(open(path).read().strip())) == 32


def test_kms_key_lifecycle_through_the_cli(server):
    key, _ = cli_json(server, "kms", "key", "create", "backups", "--description", "nightly")
    assert key["name"] == "backups" and key["state"] == "Enabled" and key["versions"] == 1
    assert key["arn"] == f"arn:aws:kms:us-east-1:000000000000:key/{key['id']}"
    listed, _ = cli_json(server, "kms", "key", "list")
    assert [k["id"] for k in listed if k["name"] == "backups"] == [key["id"]]
    rotated, _ = cli_json(server, "kms", "key", "rotate", "backups")
    assert rotated["versions"] == 2 and rotated["rotated"]
    # options after the action, the key named by alias, then by id
    out = server.cli("kms", "key", "disable", "--json", "alias/backups")
    assert json.loads(out.stdout)["state"] == "Disabled"
    enabled, _ = cli_json(server, "kms", "key", "enable", key["id"])
    assert enabled["state"] == "Enabled"
    info, _ = cli_json(server, "kms", "key", "info", "backups")
    assert info["id"] == key["id"] and "material" not in json.dumps(info)
    error, code = cli_json(server, "kms", "key", "create", "backups", check=False)
    assert code != 0 and error["error"] == "AlreadyExistsException"
    error, code = cli_json(server, "kms", "key", "rotate", "nope", check=False)
    assert code != 0 and error["error"] == "NotFoundException"
    text = server.cli("kms", "key", "list").stdout
    assert "backups" in text and key["id"] in text


def test_a_wrong_master_key_stops_the_server(tmp_path):
    srv = start_server(str(tmp_path / "a"))
    try:
        cli_json(srv, "kms", "key", "create", "k")
    finally:
        stop_server(srv)
    other = tmp_path / "other.key"
    other.write_text(os.urandom(32).hex())
    other.chmod(0o600)
    run = subprocess.run([BASALT, "--data-dir", srv.data_dir, "serve", "--s3-address",
                          "127.0.0.1:0", "--nbd-address", "127.0.0.1:0",
                          "--master-key-file", str(other)], env=srv.env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode != 0 and "not the one" in run.stderr
    missing = subprocess.run([BASALT, "--data-dir", srv.data_dir, "serve",
                              "--master-key-file", str(tmp_path / "typo.key")], env=srv.env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    # the right key, named explicitly, starts it again
    again = start_server(str(tmp_path / "a"), extra=(
        "--master-key-file", os.path.join(srv.data_dir, "master.key")))
    try:
        assert cli_json(again, "kms", "key", "info", "k")[0]["name"] == "k"
    finally:
        stop_server(again)
