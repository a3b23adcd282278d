"""The audit log of a real `basalt serve` (three S3 workers writing one file): boto3's
requests, successful and refused, each leave one line with who, what and how it
ended; `basalt audit search|tail` read them back; a stopping server writes what it
had queued."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.e2e.conftest import ACCESS, BASALT, SECRET, start_server, stop_server

ROOT_ACCOUNT = "000000000000"


@pytest.fixture(scope="module")
def server():
    tmp = tempfile.mkdtemp(prefix="basalt-audit-")
    srv = start_server(tmp, extra=("--workers", "3"))
    yield srv
    stop_server(srv)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def s3(server):
    return server.client(retries={"max_attempts": 1})


@pytest.fixture
def bucket(s3):
    name = f"aud-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def audit_path(server) -> str:
    return os.path.join(server.data_dir, "logs", "audit.jsonl")


def read_log(server) -> list[dict]:
    if not os.path.exists(audit_path(server)):
        return []  # no worker has flushed yet
    with open(audit_path(server), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def lines_for(server, bucket: str, count: int, timeout: float = 10) -> list[dict]:
    """The bucket's lines in the file once there are ``count`` (workers flush within 100 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in read_log(server) if e.get("bucket") == bucket]
        if len(found) >= count or time.monotonic() > deadline:
            return sorted(found, key=lambda e: e["time"])
        time.sleep(0.05)


def code(err: ClientError) -> str:
    return err.response["Error"]["Code"]


def test_requests_leave_lines_with_who_what_and_how(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="docs/a.txt", Body=b"a" * 2048)
    assert s3.get_object(Bucket=bucket, Key="docs/a.txt")["Body"].read() == b"a" * 2048
    s3.list_objects_v2(Bucket=bucket, Prefix="docs/")
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="docs/none.txt")
    assert code(missing.value) == "NoSuchKey"
    wrong = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=ACCESS,
                         aws_secret_access_key="not-the-secret", region_name="us-east-1",
                         config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as forged:
        wrong.get_object(Bucket=bucket, Key="docs/a.txt")
    assert code(forged.value) == "SignatureDoesNotMatch"
    try:
        urllib.request.urlopen(f"{server.endpoint}/{bucket}/docs/a.txt", timeout=10)
    except urllib.error.HTTPError as err:
        anonymous = err.code
    assert anonymous == 403
    s3.delete_object(Bucket=bucket, Key="docs/a.txt")

    found = lines_for(server, bucket, 8)
    assert [(e["operation"], e["status"], e["error"]) for e in found] == [
        ("CreateBucket", 200, None), ("PutObject", 200, None), ("GetObject", 200, None),
        ("ListObjectsV2", 200, None), ("GetObject", 404, "NoSuchKey"),
        ("GetObject", 403, "SignatureDoesNotMatch"), ("GetObject", 403, "AccessDenied"),
        ("DeleteObject", 204, None)]
    put, get = found[1], found[2]
    for e in found[:5] + found[7:]:
        assert (e["account"], e["account_name"], e["user"], e["access_key"]) == \
            (ROOT_ACCOUNT, "root", "root", ACCESS)
        assert e["source_ip"] == "127.0.0.1" and e["request_id"] and e["duration"] >= 0
    for e in found[5:7]:  # a forged signature and an anonymous request prove no one
        assert (e["account"], e["user"], e["access_key"]) == (None, None, None)
    assert (put["method"], put["key"], put["bytes_in"], put["bytes_out"]) == \
        ("PUT", "docs/a.txt", 2048, 0)
    assert (get["bytes_in"], get["bytes_out"]) == (0, 2048)
    assert found[3]["key"] is None and found[4]["key"] == "docs/none.txt"
    # The line's request id is the one S3 sent the client.
    assert missing.value.response["ResponseMetadata"]["RequestId"] == found[4]["request_id"]
    raw = open(audit_path(server), "rb").read()
    assert SECRET.encode() not in raw and b"Signature=" not in raw
    assert b"not-the-secret" not in raw


def test_lines_name_accounts_and_users(server):
    """An account's root and one of its users, by id, name and key; search by both."""
    name = f"acme{uuid.uuid4().hex[:6]}"

    def made(*args: str) -> dict:
        return json.loads(server.cli(*args, "--json").stdout)

    account = made("account", "create", name)
    made("user", "create", name, "alice")
    root_key, alice_key = made("key", "create", name), made("key", "create", name, "alice")

    def client(key: dict):
        return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                            aws_access_key_id=key["access_key"],
                            aws_secret_access_key=key["secret_key"],
                            config=Config(retries={"max_attempts": 1}))

    bucket = f"aud-{uuid.uuid4().hex[:12]}"
    client(root_key).create_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as refused:  # a user with no policy may do nothing
        client(alice_key).put_object(Bucket=bucket, Key="by-alice", Body=b"x")
    assert code(refused.value) == "AccessDenied"
    found = lines_for(server, bucket, 2)
    assert [(e["operation"], e["status"], e["account"], e["account_name"], e["user"],
             e["access_key"]) for e in found] == [
        ("CreateBucket", 200, account["id"], name, "root", root_key["access_key"]),
        ("PutObject", 403, account["id"], name, "alice", alice_key["access_key"])]
    raw = open(audit_path(server), "rb").read()
    assert root_key["secret_key"].encode() not in raw
    assert alice_key["secret_key"].encode() not in raw

    rows = made("audit", "search", "--user", "alice", "--account", name)
    assert [(r["key"], r["error"]) for r in rows] == [("by-alice", "AccessDenied")]
    rows = made("audit", "search", "--account", account["id"], "--bucket", bucket)
    assert [r["user"] for r in rows] == ["root", "alice"]
    rows = made("audit", "search", "--access-key", alice_key["access_key"])
    assert [r["operation"] for r in rows] == ["PutObject"]


def test_versions_are_logged(server, s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"1")["VersionId"]
    s3.put_object(Bucket=bucket, Key="k", Body=b"2")
    s3.head_object(Bucket=bucket, Key="k", VersionId=first)
    s3.delete_object(Bucket=bucket, Key="k", VersionId=first)
    found = lines_for(server, bucket, 6)[2:]
    assert [(e["operation"], e["version"] == first) for e in found] == [
        ("PutObject", True), ("PutObject", False), ("HeadObject", True),
        ("DeleteObject", True)]
    assert found[1]["version"] and len(found[1]["version"]) == 32


def test_cli_search_and_tail(server, s3, bucket):
    other = f"aud-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=other)
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x")
    s3.put_object(Bucket=other, Key="elsewhere", Body=b"y")
    lines_for(server, bucket, 4)
    lines_for(server, other, 2)

    out = server.cli("audit", "search", "--bucket", bucket, "--json")
    rows = json.loads(out.stdout)
    assert [(r["operation"], r["key"]) for r in rows] == [
        ("CreateBucket", None), ("PutObject", "k0"), ("PutObject", "k1"), ("PutObject", "k2")]
    assert all(r["bucket"] == bucket and r["user"] == "root" for r in rows)

    # Global options after the subcommand; filters combine.
    out = server.cli("audit", "search", "--json", "--bucket", bucket, "--operation",
                     "PutObject", "--user", "root", "--key", "k1", "--since", "10m")
    assert [r["key"] for r in json.loads(out.stdout)] == ["k1"]
    out = server.cli("audit", "search", "--bucket", bucket, "--account", "root",
                     "--limit", "2", "--json")
    assert [r["key"] for r in json.loads(out.stdout)] == ["k1", "k2"]
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    out = server.cli("audit", "search", "--bucket", bucket, "--since", future, "--json")
    assert json.loads(out.stdout) == []
    out = server.cli("audit", "search", "--bucket", bucket, "--until", future, "--json")
    assert len(json.loads(out.stdout)) == 4
    out = server.cli("audit", "search", "--user", "nobody", "--json")
    assert json.loads(out.stdout) == []

    table = server.cli("audit", "search", "--bucket", bucket).stdout.splitlines()
    assert table[0].split()[:8] == ["TIME", "ACCOUNT", "USER", "SOURCE", "OPERATION", "BUCKET",
                                    "KEY", "STATUS"]
    assert len(table) == 5 and table[-1].split()[1:8] == [
        "root", "root", "127.0.0.1", "PutObject", bucket, "k2", "200"]

    s3.put_object(Bucket=other, Key="last", Body=b"z")
    lines_for(server, other, 3)
    tail = json.loads(server.cli("audit", "tail", "-n", "2", "--json", "--bucket",
                                 other).stdout)
    assert [r["key"] for r in tail] == ["elsewhere", "last"]
    tail = server.cli("--json", "audit", "tail", "-n", "1").stdout
    assert len(json.loads(tail)) == 1

    bad = server.cli("audit", "search", "--since", "last tuesday", "--json", check=False)
    assert bad.returncode != 0 and json.loads(bad.stdout)["error"] == "InvalidArgument"
    bad = server.cli("audit", "search", "--limit", "0", "--json", check=False)
    assert bad.returncode != 0 and json.loads(bad.stdout)["error"] == "InvalidArgument"


def test_tail_follow_prints_new_requests(server, s3, bucket):
    proc = subprocess.Popen([BASALT, "--data-dir", server.data_dir, "audit", "tail", "-f",
                             "-n", "1", "--json", "--bucket", bucket], env=server.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    got: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [got.put(json.loads(line)) for line in proc.stdout],
                     daemon=True).start()
    try:
        assert got.get(timeout=30)["operation"] == "CreateBucket"
        for i in range(3):
            s3.put_object(Bucket=bucket, Key=f"followed{i}", Body=b"f")
        keys = [got.get(timeout=30)["key"] for _ in range(3)]
        assert keys == ["followed0", "followed1", "followed2"]
        time.sleep(2.5)  # polls that overlap the last ones print nothing twice
        assert got.empty()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read()


def test_a_stopping_server_writes_what_it_queued(tmp_path):
    srv = start_server(str(tmp_path), extra=("--workers", "2"))
    try:
        s3 = srv.client()
        s3.create_bucket(Bucket="last-words")
        s3.put_object(Bucket="last-words", Key="k", Body=b"1")
        stop_server(srv)  # SIGTERM at once: the lines are still queued in the worker
        assert [(e["operation"], e["bucket"]) for e in read_log(srv)
                if e["operation"] != "Admin"] == [("CreateBucket", "last-words"),
                                                  ("PutObject", "last-words")]
    finally:
        stop_server(srv)
