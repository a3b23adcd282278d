"""The audit log: what a line holds (and never holds), batching, rotation shared by
processes, search, and the admin API over it, through a real Gateway and boto3."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from gateway import audit

AK, SK = "AKIDAUDITTEST0000001", "audit/secret+key/0123456789abcdefghijkl"
COOKIE = "basalt_session=SESSIONCOOKIE0123456789"


# --- helpers ------------------------------------------------------------------------------


class FakeRequest(dict):
    """What AuditLog.record reads of an aiohttp request."""

    def __init__(self, rid: str, path: str = "/b/k", method: str = "PUT",
                 query: dict | None = None, headers: dict | None = None,
                 principal=None) -> None:
        super().__init__(request_id=rid, principal=principal)
        self.path, self.method, self.remote = path, method, "10.0.0.7"
        self.query, self.headers = query or {}, headers or {}


class FakeRoute:
    def __init__(self, bucket: str | None = "b", key: str | None = "k") -> None:
        self.bucket, self.key = bucket, key


def lines(directory: str, name: str = audit.FILE) -> list[dict]:
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def raw_log(data_dir: str) -> bytes:
    logs = os.path.join(data_dir, "logs")
    return b"".join(open(os.path.join(logs, n), "rb").read() for n in sorted(os.listdir(logs))
                    if n.startswith(audit.FILE))


async def wait_for_lines(data_dir: str, count: int, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = lines(os.path.join(data_dir, "logs"))
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


# --- lines through the real gateway ----------------------------------------------------------


@pytest.fixture
async def served(tmp_path, aiohttp_server):
    """A Gateway with a data dir over a small store, and a boto3 client of the root."""
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    from gateway import Gateway
    from gateway.request import GatewayConfig
    from storaged import ObjectStore
    store = ObjectStore.open([str(tmp_path / f"d{i}") for i in range(3)], ec=(2, 1),
                             sync=False)
    await store.start(heal=False)
    data_dir = str(tmp_path / "data")
    server = await aiohttp_server(Gateway(store, GatewayConfig(
        credentials={AK: SK}, data_dir=data_dir)).app())
    endpoint = str(server.make_url("")).rstrip("/")
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=AK,
                      aws_secret_access_key=SK, region_name="us-east-1",
                      config=Config(retries={"max_attempts": 1}, signature_version="s3v4",
                                    s3={"addressing_style": "path"}))
    signatures: list[str] = []

    def keep_signature(request, **_):
        signatures.append(request.headers.get("Authorization", b""))
    s3.meta.events.register("before-send.s3.*", keep_signature)
    s3.v2 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=AK,  # SigV2 presigns
                         aws_secret_access_key=SK, region_name="us-east-1")
    yield endpoint, s3, data_dir, signatures
    await server.close()
    await store.close()


def _status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_lines_name_who_did_what_and_keep_no_secret(served):
    endpoint, s3, data_dir, signatures = served

    def work() -> dict:
        s3.create_bucket(Bucket="audited")
        s3.put_object(Bucket="audited", Key="dir/obj.txt", Body=b"x" * 1000)
        got = s3.get_object(Bucket="audited", Key="dir/obj.txt")["Body"].read()
        try:
            s3.get_object(Bucket="audited", Key="missing")
        except s3.exceptions.NoSuchKey:
            pass
        url = s3.generate_presigned_url("get_object",
                                        Params={"Bucket": "audited", "Key": "dir/obj.txt"})
        presigned = _status(url, {"Cookie": COOKIE})
        url_v2 = s3.v2.generate_presigned_url("get_object",
                                              Params={"Bucket": "audited", "Key": "dir/obj.txt"})
        presigned_v2 = _status(url_v2)
        signature = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["X-Amz-Signature"][0]
        forged = _status(url.replace(signature, signature[::-1]))
        anonymous = _status(f"{endpoint}/audited/dir/obj.txt", {"Cookie": COOKIE})
        return {"got": len(got), "presigned": (presigned, presigned_v2),
                "forged": forged, "anonymous": anonymous, "urls": (url, url_v2)}

    done = await asyncio.to_thread(work)
    assert (done["got"], done["presigned"], done["forged"], done["anonymous"]) == \
        (1000, (200, 200), 403, 403)
    found = await wait_for_lines(data_dir, 8)
    ops = [(e["operation"], e["status"], e["error"]) for e in found]
    assert ops == [("CreateBucket", 200, None), ("PutObject", 200, None),
                   ("GetObject", 200, None), ("GetObject", 404, "NoSuchKey"),
                   ("GetObject", 200, None), ("GetObject", 200, None),
                   ("GetObject", 403, "SignatureDoesNotMatch"),
                   ("GetObject", 403, "AccessDenied")]
    put, get = found[1], found[2]
    for field in ("time", "request_id", "account", "user", "access_key", "source_ip",
                  "operation", "bucket", "key", "status", "bytes_in", "bytes_out", "version",
                  "duration"):
        assert field in put, field
    assert put["account"] == "000000000000" and put["account_name"] == "root"
    assert (put["user"], put["access_key"], put["source_ip"]) == ("root", AK, "127.0.0.1")
    assert (put["bucket"], put["key"], put["bytes_in"], put["bytes_out"]) == \
        ("audited", "dir/obj.txt", 1000, 0)
    assert (get["bytes_in"], get["bytes_out"]) == (0, 1000)
    assert put["time"].endswith("Z") and 0 <= put["duration"] < 10
    assert len({e["request_id"] for e in found}) == 8
    assert found[4]["access_key"] == found[5]["access_key"] == AK  # presigned, verified
    for refused in found[6:]:  # a failed signature and an anonymous request: nobody
        assert (refused["account"], refused["user"], refused["access_key"]) == (None,) * 3

    raw = raw_log(data_dir)
    secrets = [SK, COOKIE, "SESSIONCOOKIE", "X-Amz-Signature", "Signature=", "AWS4-HMAC"]
    v4, v2 = (urllib.parse.parse_qs(urllib.parse.urlsplit(u).query) for u in done["urls"])
    secrets += v4["X-Amz-Signature"] + v2["Signature"] + [urllib.parse.quote(v2["Signature"][0])]
    secrets += [h.decode().rsplit("Signature=", 1)[1] for h in signatures if h]
    assert len(secrets) > 10
    for secret in secrets:
        assert secret.encode() not in raw, secret


async def test_versions_created_and_asked_for(served):
    _, s3, data_dir, _ = served

    def work() -> tuple[str, str, str]:
        s3.create_bucket(Bucket="vers")
        s3.put_bucket_versioning(Bucket="vers", VersioningConfiguration={"Status": "Enabled"})
        first = s3.put_object(Bucket="vers", Key="k", Body=b"1")["VersionId"]
        s3.put_object(Bucket="vers", Key="k", Body=b"2")
        s3.get_object(Bucket="vers", Key="k", VersionId=first)["Body"].read()
        marker = s3.delete_object(Bucket="vers", Key="k")["VersionId"]
        return first, marker, s3.list_objects_v2(Bucket="vers")["KeyCount"]

    first, marker, _ = await asyncio.to_thread(work)
    found = await wait_for_lines(data_dir, 7)
    by_op = [(e["operation"], e["version"]) for e in found[2:]]
    assert by_op[0] == ("PutObject", first)
    assert by_op[1][0] == "PutObject" and by_op[1][1] not in (None, first)
    assert by_op[2] == ("GetObject", first)
    assert by_op[3] == ("DeleteObject", marker)
    assert by_op[4] == ("ListObjectsV2", None)


async def test_admin_api_searches_and_is_logged(served):
    from basalt.admin_client import AdminClient, AdminError
    from basalt.credentials import Credentials
    endpoint, s3, data_dir, _ = served

    def work():
        for b in ("one", "two"):
            s3.create_bucket(Bucket=b)
            s3.put_object(Bucket=b, Key="k", Body=b"data")
        admin = AdminClient(endpoint, Credentials(AK, SK))
        everything = admin.call("GET", "/_basalt/v1/audit")
        two = admin.call("GET", "/_basalt/v1/audit", {"bucket": "two"})
        puts = admin.call("GET", "/_basalt/v1/audit",
                          {"operation": "putobject", "user": "root", "limit": "1"})
        errors = []
        for query in ({"since": "yesterday"}, {"limit": "0"}, {"limit": "x"}):
            try:
                admin.call("GET", "/_basalt/v1/audit", query)
            except AdminError as exc:
                errors.append((exc.status, exc.code))
        unsigned = _status(endpoint + "/_basalt/v1/audit")
        return everything, two, puts, errors, unsigned

    everything, two, puts, errors, unsigned = await asyncio.to_thread(work)
    assert [(e["operation"], e["bucket"]) for e in everything] == [
        ("CreateBucket", "one"), ("PutObject", "one"), ("CreateBucket", "two"),
        ("PutObject", "two")]
    assert [e["operation"] for e in two] == ["CreateBucket", "PutObject"]
    assert [(e["operation"], e["bucket"]) for e in puts] == [("PutObject", "two")]
    assert errors == [(400, "InvalidArgument")] * 3
    assert unsigned == 403
    found = await wait_for_lines(data_dir, 4 + 6 + 1)
    admin = [e for e in found if e["operation"] == "Admin"]
    assert [e["status"] for e in admin] == [200, 200, 200, 400, 400, 400, 403]
    assert admin[0]["path"] == "/_basalt/v1/audit" and admin[0]["method"] == "GET"
    assert (admin[0]["account"], admin[0]["user"], admin[0]["access_key"]) == \
        ("000000000000", "root", AK)
    assert admin[-1]["access_key"] is None  # refused: whoever it was, unverified


async def test_health_probes_are_not_logged(served):
    endpoint, _, data_dir, _ = served
    assert await asyncio.to_thread(_status, endpoint + "/_basalt/health") == 200
    assert await asyncio.to_thread(_status, endpoint + "/_basalt/nothing-here") == 404
    found = await wait_for_lines(data_dir, 1)
    await asyncio.sleep(0.3)
    assert [e.get("path") for e in lines(os.path.join(data_dir, "logs"))] == \
        ["/_basalt/nothing-here"] == [e["path"] for e in found]


# --- batching, bounds, shutdown --------------------------------------------------------------


async def test_lines_are_batched_and_written_within_the_interval(tmp_path):
    log = audit.AuditLog(str(tmp_path))
    log.record(FakeRequest("r1"), "PutObject", FakeRoute(), 200, "", 5, 0, 0.002)
    assert lines(str(tmp_path)) == []  # not on the request's path
    await asyncio.sleep(audit.FLUSH_INTERVAL * 3)
    assert [e["request_id"] for e in lines(str(tmp_path))] == ["r1"]
    for i in range(audit.FLUSH_LINES):  # a full batch goes at once
        log.record(FakeRequest(f"n{i}"), "PutObject", FakeRoute(), 200, "", 5, 0, 0.002)
    await asyncio.sleep(audit.FLUSH_INTERVAL / 4)
    assert len(lines(str(tmp_path))) == 1 + audit.FLUSH_LINES
    await log.aclose()


async def test_flush_under_steady_load_returns(tmp_path):
    """The admin API flushes before it reads: that must not wait for a quiet moment."""
    log = audit.AuditLog(str(tmp_path))
    done = asyncio.Event()

    async def steady() -> None:
        i = 0
        while not done.is_set():
            log.record(FakeRequest(f"s{i}"), "GetObject", FakeRoute(), 200, "", 0, 1, 0.001)
            i += 1
            await asyncio.sleep(0)  # a line every turn of the loop: never a quiet moment

    producer = asyncio.ensure_future(steady())
    await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(log.flush(), 2)
        assert lines(str(tmp_path))  # what was queued is in the file
    finally:
        done.set()
        await producer
    await log.aclose()
    ids = [e["request_id"] for e in lines(str(tmp_path))]
    assert ids == [f"s{i}" for i in range(len(ids))]  # in order, none twice


async def test_close_writes_what_is_queued(tmp_path):
    log = audit.AuditLog(str(tmp_path))
    for i in range(3):
        log.record(FakeRequest(f"r{i}"), "DeleteObject", FakeRoute(), 204, "", 0, 0, 0.001)
    await log.aclose()
    assert [e["request_id"] for e in lines(str(tmp_path))] == ["r0", "r1", "r2"]
    assert oct(os.stat(os.path.join(str(tmp_path), audit.FILE)).st_mode & 0o777) == "0o600"


def test_long_keys_are_cut_with_a_marker():
    base = {"time": time.time(), "request_id": "r", "key": "k" * 5000}
    entry = json.loads(audit.encode(base))
    assert len(entry["key"]) == audit.MAX_KEY_BYTES and entry["key_truncated"] == 5000
    # Control characters escape to six bytes each: the line stays bounded anyway.
    line = audit.encode(dict(base, key="\x01" * 1024, user_agent="\x02" * 256))
    cut = json.loads(line)
    assert len(line) <= audit.MAX_LINE and cut["key_truncated"] == 1024
    assert cut["key"] == "\x01" * 128 and cut["user_agent"] == "\x02" * 64
    assert "key_truncated" not in json.loads(audit.encode(dict(base, key="é" * 512)))
    assert json.loads(audit.encode(dict(base, key="é" * 513)))["key"] == "é" * 512


def test_anonymous_and_admin_principals():
    from gateway.identity import Principal
    log = audit.AuditLog("/nonexistent")
    log._closed = True
    written: list[dict] = []
    log._write = written.extend
    user = Principal("123456789012", "acme", "alice", "AKIDALICE")
    log.record(FakeRequest("u", principal=user), "PutObject", FakeRoute(), 200, "", 1, 0, 0.1)
    log.record(FakeRequest("a"), "GetObject", FakeRoute(), 403, "AccessDenied", 0, 0, 0.1)
    log.record(FakeRequest("h", path="/_basalt/health", method="GET"), "Admin", None, 200, "",
               0, 0, 0.1)
    log.record(FakeRequest("v", path="/b/k", method="GET", query={"versionId": "v" * 999}),
               "GetObject", FakeRoute(), 200, "", 0, 0, 0.1)
    assert [e["request_id"] for e in written] == ["u", "a", "v"]
    assert [(e["account"], e["account_name"], e["user"], e["access_key"])
            for e in written[:2]] == [("123456789012", "acme", "alice", "AKIDALICE"),
                                      (None, None, None, None)]
    assert written[2]["version"] == "v" * audit.MAX_FIELD


# --- rotation -------------------------------------------------------------------------------

WRITER = """
import asyncio, sys
from gateway import audit

class R(dict):
    def __init__(self, rid):
        super().__init__(request_id=rid, principal=None)
        self.path, self.method, self.remote = "/b/k", "PUT", "10.0.0.1"
        self.query, self.headers = {}, {}

class Route:
    bucket, key = "b", "k" * 100

async def main(name, count, directory, max_bytes, keep):
    log = audit.AuditLog(directory, max_bytes=max_bytes, keep=keep)
    for i in range(count):
        log.record(R(f"{name}-{i}"), "PutObject", Route(), 200, "", i, 0, 0.001)
        if i % 50 == 0:
            await asyncio.sleep(0.001)
    await log.aclose()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
"""


def _writers(directory: str, count: int, max_bytes: int, keep: int, names=("p1", "p2")):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, name, str(count), directory,
                               str(max_bytes), str(keep)], cwd=os.getcwd())
             for name in names]
    assert [p.wait(60) for p in procs] == [0] * len(procs)


def test_rotation_shared_by_two_processes_loses_and_mixes_nothing(tmp_path):
    directory, count, max_bytes = str(tmp_path), 4000, 60_000
    _writers(directory, count, max_bytes, keep=1000)
    names = sorted(os.listdir(directory))
    rotated = [n for n in names if n.startswith(audit.FILE + ".")]
    assert len(rotated) > 10, names
    ids: list[str] = []
    for name in [audit.FILE, *rotated]:
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        assert data.endswith(b"\n") or (name == audit.FILE and not data)
        ids += [json.loads(line)["request_id"] for line in data.splitlines()]  # whole lines
        if name != audit.FILE:
            # Over the limit by at most the batches written before a process noticed.
            assert max_bytes <= len(data) < max_bytes + 4 * audit.MAX_WRITE, name
    assert sorted(ids) == sorted(f"{p}-{i}" for p in ("p1", "p2") for i in range(count))
    # Each process's lines are in order across the files (oldest file first).
    log = audit.AuditLog(directory, keep=1000)
    in_order = [e["request_id"] for e in log.search(limit=audit.MAX_LIMIT, bucket="b")]
    assert len(in_order) == 2 * count
    for p in ("p1", "p2"):
        mine = [int(r.split("-")[1]) for r in in_order if r.startswith(p + "-")]
        assert mine == sorted(mine)


def test_rotation_keeps_only_keep_files(tmp_path):
    _writers(str(tmp_path), 3000, 20_000, keep=2, names=("p1",))
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(audit.FILE)) == \
        [audit.FILE, audit.FILE + ".1", audit.FILE + ".2"]


# --- search ---------------------------------------------------------------------------------


def _entries(directory: str, specs: list[tuple]) -> audit.AuditLog:
    """Lines written straight to the file: (time, request id, bucket, user, operation)."""
    log = audit.AuditLog(directory)
    log._write([{"time": t, "request_id": rid, "account": "123456789012",
                 "account_name": "acme" if user != "root" else "root", "user": user,
                 "access_key": f"AK{user}", "operation": op, "bucket": bucket, "key": f"{rid}.txt",
                 "status": 200} for t, rid, bucket, user, op in specs])
    return log


def test_search_filters_and_order(tmp_path):
    t0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    log = _entries(str(tmp_path), [
        (t0, "a", "photos", "alice", "PutObject"),
        (t0 + 10, "b", "photos", "bob", "GetObject"),
        (t0 + 20, "c", "backups", "alice", "DeleteObject"),
        (t0 + 30, "d", "photos", "root", "DeleteObject"),
        (t0 + 25, "e", "photos", "alice", "GetObject"),  # another process's late batch
    ])

    def ids(**filters) -> list[str]:
        return [e["request_id"] for e in log.search(**filters)]

    assert ids() == ["a", "b", "c", "e", "d"]
    assert ids(bucket="photos") == ["a", "b", "e", "d"]
    assert ids(user="alice") == ["a", "c", "e"]
    assert ids(user="alice", bucket="photos") == ["a", "e"]
    assert ids(account="acme") == ["a", "b", "c", "e"]
    assert ids(account="123456789012", limit=2) == ["e", "d"]  # the newest two
    assert ids(operation="deleteobject") == ["c", "d"]
    assert ids(access_key="AKbob") == ["b"]
    assert ids(key="c.") == ["c"]
    assert ids(since="2023-11-14T22:13:40Z") == ["c", "e", "d"]
    assert ids(since="2023-11-14T23:13:40+01:00", until="2023-11-14T22:13:50") == ["c", "e"]
    assert ids(since="2023-11-15") == []
    assert ids(bucket="nothing") == []
    with pytest.raises(ValueError):
        log.search(since="last tuesday")


def test_search_reads_rotated_files_and_stops_early(tmp_path):
    t0 = 1_700_000_000.0
    log = _entries(str(tmp_path), [(t0 + i, f"old{i}", "b", "u", "PutObject") for i in range(3)])
    old = os.path.join(str(tmp_path), audit.FILE)
    os.utime(old, (t0 + 3, t0 + 3))
    os.replace(old, old + ".1")
    log._fd = None
    log._write([{"time": t0 + 1000 + i, "request_id": f"new{i}", "bucket": "b"}
                for i in range(3)])
    assert [e["request_id"] for e in log.search()] == [
        "old0", "old1", "old2", "new0", "new1", "new2"]
    assert [e["request_id"] for e in log.search(limit=4)] == ["old2", "new0", "new1", "new2"]
    # `since` after the rotated file's last write: that file is not read at all.
    with open(old + ".1", "ab") as f:
        f.write(b'{"time":"2099-01-01T00:00:00.000Z","request_id":"planted"}\n')
    os.utime(old + ".1", (t0 + 3, t0 + 3))
    assert [e["request_id"] for e in log.search(since="2023-11-14T22:20:00Z")] == [
        "new0", "new1", "new2"]


def test_partial_last_line_is_skipped(tmp_path):
    log = _entries(str(tmp_path), [(1_700_000_000.0, "whole", "b", "u", "PutObject")])
    with open(os.path.join(str(tmp_path), audit.FILE), "ab") as f:
        f.write(b'{"time":"2023-11-14T22:13:21.000Z","request_id":"half')
    assert [e["request_id"] for e in log.search()] == ["whole"]
