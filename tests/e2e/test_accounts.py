"""Accounts, users, access keys and identity policies, as several users of several
accounts would use them: the CLI for the admin side, boto3 for S3."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import time
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from gateway.identity import canonical_id
from tests.e2e.conftest import start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(str(tmp_path_factory.mktemp("accounts")))
    yield srv
    stop_server(srv)


def cli_json(server, *args: str, check: bool = True):
    out = server.cli(*args, "--json", check=check)
    return json.loads(out.stdout), out.returncode


def client(server, key: dict):
    return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=key["access_key"],
                        aws_secret_access_key=key["secret_key"],
                        config=Config(retries={"max_attempts": 1}))


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def denied(call, *args, **kwargs) -> str:
    with pytest.raises(ClientError) as err:
        call(*args, **kwargs)
    return code(err.value)


def allow(actions: list[str], resources: list[str]) -> dict:
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": resources}]}


def put_policy(server, tmp_path, account: str, user: str, document: dict) -> None:
    path = tmp_path / f"{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(document))
    server.cli("user", "policy", "put", account, user, str(path))
    time.sleep(1.1)  # every worker reads the records again within a second


@pytest.fixture(scope="module")
def tenants(server):
    """Two accounts (acme with alice and carol, globex with bob), a key each."""
    suffix = uuid.uuid4().hex[:6]
    made = {}
    for account, users in ((f"acme{suffix}", ("alice", "carol")), (f"globex{suffix}", ("bob",))):
        info, _ = cli_json(server, "account", "create", account)
        assert info["name"] == account and len(info["id"]) == 12 and info["id"].isdigit()
        made[account] = {"id": info["id"]}
        for user in users:
            created, _ = cli_json(server, "user", "create", account, user)
            assert created["arn"] == f"arn:aws:iam::{info['id']}:user/{user}"
            key, _ = cli_json(server, "key", "create", account, user)
            assert set(key) >= {"access_key", "secret_key"}
            made[account][user] = key
    return made


def test_a_user_without_policy_may_do_nothing(server, tenants):
    acme = next(v for k, v in tenants.items() if k.startswith("acme"))
    carol = client(server, acme["carol"])
    assert denied(carol.list_buckets) == "AccessDenied"
    assert denied(carol.create_bucket, Bucket=f"carol-{uuid.uuid4().hex[:8]}") == "AccessDenied"


def test_identity_policy_scopes_a_user(server, tenants, tmp_path):
    name, acme = next((k, v) for k, v in tenants.items() if k.startswith("acme"))
    bucket = f"acme-{uuid.uuid4().hex[:8]}"
    put_policy(server, tmp_path, name, "alice", allow(
        ["s3:CreateBucket", "s3:ListAllMyBuckets", "s3:ListBucket", "s3:PutObject",
         "s3:GetObject"],
        ["arn:aws:s3:::acme-*", "arn:aws:s3:::acme-*/*", "*"]))
    alice = client(server, acme["alice"])
    alice.create_bucket(Bucket=bucket)
    alice.put_object(Bucket=bucket, Key="report.txt", Body=b"q3")
    assert alice.get_object(Bucket=bucket, Key="report.txt")["Body"].read() == b"q3"
    assert denied(alice.delete_object, Bucket=bucket, Key="report.txt") == "AccessDenied"
    # Listings name the owning account as its ACL does (canonical id, account name).
    listed = alice.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"][0]["Owner"]
    assert listed == {"ID": canonical_id(acme["id"]), "DisplayName": name}
    assert alice.list_buckets()["Owner"] == listed
    # Her listing shows her account's buckets only; the admin's show the root account's.
    assert bucket in [b["Name"] for b in alice.list_buckets()["Buckets"]]
    root = server.client()
    assert bucket not in [b["Name"] for b in root.list_buckets()["Buckets"]]
    # Bucket names are global.
    assert denied(root.create_bucket, Bucket=bucket) == "BucketAlreadyExists"
    assert denied(alice.create_bucket, Bucket=bucket) == "BucketAlreadyOwnedByYou"
    # Another account's root (here the admin's) gets nothing without a grant.
    assert denied(root.get_object, Bucket=bucket, Key="report.txt") == "AccessDenied"
    # A colleague in the same account without a policy: nothing either.
    assert denied(client(server, acme["carol"]).get_object, Bucket=bucket,
                  Key="report.txt") == "AccessDenied"


def test_username_variable_gives_each_user_a_home(server, tenants, tmp_path):
    name, acme = next((k, v) for k, v in tenants.items() if k.startswith("acme"))
    bucket = f"acme-home-{uuid.uuid4().hex[:8]}"
    put_policy(server, tmp_path, name, "alice", allow(["s3:*"], ["*"]))
    client(server, acme["alice"]).create_bucket(Bucket=bucket)
    put_policy(server, tmp_path, name, "carol", allow(
        ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
        [f"arn:aws:s3:::{bucket}/home/${{aws:username}}/*"]))
    carol = client(server, acme["carol"])
    carol.put_object(Bucket=bucket, Key="home/carol/notes", Body=b"mine")
    assert denied(carol.put_object, Bucket=bucket, Key="home/alice/notes",
                  Body=b"x") == "AccessDenied"
    client(server, acme["alice"]).put_object(Bucket=bucket, Key="home/alice/notes", Body=b"a")
    # A multi-object delete judges each key on its own.
    result = carol.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "home/carol/notes"}, {"Key": "home/alice/notes"}]})
    assert [d["Key"] for d in result["Deleted"]] == ["home/carol/notes"]
    assert [(e["Key"], e["Code"]) for e in result["Errors"]] == [
        ("home/alice/notes", "AccessDenied")]
    root_of_acme = client(server, acme["alice"])
    assert root_of_acme.get_object(Bucket=bucket, Key="home/alice/notes")["Body"].read() == b"a"


def test_cross_account_needs_both_sides(server, tenants, tmp_path):
    (acme_name, acme), (globex_name, globex) = sorted(tenants.items())
    bucket = f"acme-shared-{uuid.uuid4().hex[:8]}"
    put_policy(server, tmp_path, acme_name, "alice", allow(["s3:*"], ["*"]))
    alice = client(server, acme["alice"])
    alice.create_bucket(Bucket=bucket)
    alice.put_object(Bucket=bucket, Key="shared.txt", Body=b"for globex")
    bob = client(server, globex["bob"])
    bob_arn = f"arn:aws:iam::{globex['id']}:user/bob"
    grant = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": bob_arn}, "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*"}]}
    # The bucket's side alone: bob's own account has not allowed him.
    alice.put_bucket_policy(Bucket=bucket, Policy=json.dumps(grant))
    assert denied(bob.get_object, Bucket=bucket, Key="shared.txt") == "AccessDenied"
    # Both sides: allowed.
    put_policy(server, tmp_path, globex_name, "bob",
               allow(["s3:GetObject"], [f"arn:aws:s3:::{bucket}/*"]))
    assert bob.get_object(Bucket=bucket, Key="shared.txt")["Body"].read() == b"for globex"
    # Bob's side alone: allowed by his account, not by the bucket.
    alice.delete_bucket_policy(Bucket=bucket)
    assert denied(bob.get_object, Bucket=bucket, Key="shared.txt") == "AccessDenied"
    # Only the owner account may see or change the bucket policy.
    assert denied(bob.get_bucket_policy, Bucket=bucket) == "MethodNotAllowed"


def test_unknown_principal_is_a_malformed_policy(server, tenants):
    name, acme = next((k, v) for k, v in tenants.items() if k.startswith("acme"))
    root = server.client()
    bucket = f"root-{uuid.uuid4().hex[:8]}"
    root.create_bucket(Bucket=bucket)
    for arn in (f"arn:aws:iam::{acme['id']}:user/nobody", "arn:aws:iam::123456789012:root"):
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": arn}, "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*"}]}
        assert denied(root.put_bucket_policy, Bucket=bucket,
                      Policy=json.dumps(policy)) == "MalformedPolicy"
    assert denied(root.get_bucket_policy, Bucket=bucket) == "NoSuchBucketPolicy"


def test_keys_disable_enable_delete_and_secrets_at_rest(server, tenants, tmp_path):
    name, acme = next((k, v) for k, v in tenants.items() if k.startswith("acme"))
    key, _ = cli_json(server, "key", "create", name)  # the account's root key
    s3 = client(server, key)
    bucket = f"acme-root-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)  # an account's root needs no policy
    listed, _ = cli_json(server, "key", "list", name)
    mine = next(k for k in listed if k["access_key"] == key["access_key"])
    assert mine["status"] == "Active" and mine["user"] is None and "secret_key" not in mine
    cli_json(server, "key", "disable", key["access_key"])
    assert _eventually(lambda: _code_of(s3.list_objects_v2, Bucket=bucket),
                       "InvalidAccessKeyId") == "InvalidAccessKeyId"
    cli_json(server, "key", "enable", key["access_key"])
    assert _eventually(lambda: _code_of(s3.list_objects_v2, Bucket=bucket), None) is None
    # No secret is stored in clear anywhere in the data dir.
    secrets = [key["secret_key"].encode()] + [
        u["secret_key"].encode() for v in tenants.values() for u in v.values()
        if isinstance(u, dict)]
    for root_dir, _, files in os.walk(server.data_dir):
        for f in files:
            if not stat.S_ISREG(os.lstat(os.path.join(root_dir, f)).st_mode):
                continue  # the run dir's sockets
            with open(os.path.join(root_dir, f), "rb") as fh:
                data = fh.read()
            assert not any(s in data for s in secrets), f
    s3.delete_bucket(Bucket=bucket)
    cli_json(server, "key", "delete", key["access_key"])
    assert _eventually(lambda: _code_of(s3.list_buckets),
                       "InvalidAccessKeyId") == "InvalidAccessKeyId"


def test_admin_side_refusals(server, tenants, tmp_path):
    name, acme = next((k, v) for k, v in tenants.items() if k.startswith("acme"))
    error, rc = cli_json(server, "account", "create", name, check=False)
    assert rc != 0 and error["error"] == "EntityAlreadyExists"
    error, rc = cli_json(server, "user", "delete", name, "alice", check=False)
    assert rc != 0 and error["error"] == "DeleteConflict"  # she still has a key
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*", "Principal": "*"}]}))
    error, rc = cli_json(server, "user", "policy", "put", name, "alice", str(bad), check=False)
    assert rc != 0 and error["error"] == "MalformedPolicyDocument"
    error, rc = cli_json(server, "account", "delete", "root", check=False)
    assert rc != 0 and error["error"] == "DeleteConflict"
    # A user's key may not use the admin API.
    out = server.cli("account", "list", check=False)
    assert out.returncode == 0
    env_user = dict(server.env, BASALT_ACCESS_KEY=acme["alice"]["access_key"],
                    BASALT_SECRET_KEY=acme["alice"]["secret_key"])
    import subprocess

    from tests.e2e.conftest import BASALT
    refused = subprocess.run([BASALT, "--endpoint", server.endpoint, "account", "list", "--json"],
                             env=env_user, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and json.loads(refused.stdout)["error"] == "AccessDenied"


def test_account_lifecycle(server):
    name = f"tmp{uuid.uuid4().hex[:6]}"
    info, _ = cli_json(server, "account", "create", name, "--email", f"{name}@example.com")
    cli_json(server, "user", "create", name, "dave")
    key, _ = cli_json(server, "key", "create", name, "dave")
    error, rc = cli_json(server, "account", "delete", name, check=False)
    assert rc != 0 and error["error"] == "DeleteConflict"
    cli_json(server, "key", "delete", key["access_key"])
    cli_json(server, "user", "delete", name, "dave")
    cli_json(server, "account", "delete", name)
    accounts, _ = cli_json(server, "account", "list")
    assert name not in [a["name"] for a in accounts]
    assert "root" in [a["name"] for a in accounts]


def _code_of(call, **kwargs) -> str | None:
    try:
        call(**kwargs)
    except ClientError as exc:
        return code(exc)
    return None


def _eventually(probe, want, timeout: float = 5.0):
    """Keys change everywhere within a second (each worker re-reads its snapshot)."""
    deadline = time.monotonic() + timeout
    while (value := probe()) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def test_accounts_and_keys_survive_two_lost_disks_and_a_kill(tmp_path):
    """The records are bucket settings on every disk: two of four disks wiped (2+2)
    and the server SIGKILLed, the key still signs and heals onto the new disks."""
    server = start_server(str(tmp_path / "a"))
    try:
        cli_json(server, "account", "create", "durable")
        key, _ = cli_json(server, "key", "create", "durable")
        s3 = client(server, key)
        s3.create_bucket(Bucket="durable-data")
        s3.put_object(Bucket="durable-data", Key="k", Body=b"kept")
        stop_server(server, signal.SIGKILL)
        for name in ("disk0", "disk2"):
            shutil.rmtree(os.path.join(server.data_dir, "disks", name))
        server = start_server(str(tmp_path / "a"))
        s3 = client(server, key)
        assert s3.get_object(Bucket="durable-data", Key="k")["Body"].read() == b"kept"
        server.cli("heal")
        stop_server(server, signal.SIGKILL)
        for name in ("disk1", "disk3"):  # now only the healed disks hold them
            shutil.rmtree(os.path.join(server.data_dir, "disks", name))
        server = start_server(str(tmp_path / "a"))
        accounts, _ = cli_json(server, "account", "list")
        assert "durable" in [a["name"] for a in accounts]
        s3 = client(server, key)
        assert "durable-data" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    finally:
        stop_server(server)


def test_keys_outlive_a_new_root_secret(tmp_path):
    """Secrets are sealed under the master key, not the root secret: the root
    credentials can be changed without breaking every account's keys."""
    server = start_server(str(tmp_path / "a"))
    try:
        cli_json(server, "account", "create", "kept")
        key, _ = cli_json(server, "key", "create", "kept")
        client(server, key).create_bucket(Bucket="kept-data")
        stop_server(server)
        server = start_server(str(tmp_path / "a"), secret="a-whole-new-root-secret-0123456789")
        assert "kept-data" in [b["Name"] for b in client(server, key).list_buckets()["Buckets"]]
    finally:
        stop_server(server)
