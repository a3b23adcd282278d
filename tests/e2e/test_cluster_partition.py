"""A cluster of four hosts (network namespaces on one bridge) losing a node to a
network partition, and nodes SIGKILLed in the middle of uploads.

Four nodes n1..n4 (pool ``--ec 3+1``, one disk each: the write quorum is 3) and
three etcd members living beside n1, n2 and n3 in their namespaces, as a small
deployment would place them. The partitioned node is n4, which holds no etcd
member: the majority side keeps both its write quorum and etcd's quorum, and the
minority side has neither -- the case the issue describes ("a partitioned minority
stops accepting writes it cannot make durable"). Killing a node's process (n2,
n3) leaves the etcd member beside it running, so etcd stays whole there too.

Clients run with a bounded timeout (botocore read_timeout 30 s, no retries), so a
server that never gives up fails the test instead of hanging it.

Two tests cut a node off / kill it while one upload is certainly in the middle
of its body (SLOW_UPLOAD): the upload through the majority finishes on the disks
left (a node that sends nothing for storaged.remote_disk.TIMEOUT seconds is taken
for gone) and the one through the cut-off node gets a 5xx, both within the
client's timeout. The other two check that nothing acknowledged is lost and that
no key has two latest versions.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import random
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from botocore.exceptions import ClientError

from tests.e2e.conftest import ACCESS, SECRET
from tests.e2e.netns_cluster import NetnsCluster

READ_TIMEOUT = 30
CLIENT = {"connect_timeout": 5, "read_timeout": READ_TIMEOUT,
          "retries": {"total_max_attempts": 1}}
BUCKET = "cluster-partition"


def body(seed: int, size: int) -> bytes:
    """The deterministic content of one write (so only the seed needs keeping)."""
    return random.Random(seed).randbytes(size)


@pytest.fixture
def cluster(tmp_path):
    with NetnsCluster(logs_to=tmp_path, nodes=4, etcd_members=3) as c:
        c.create_pool("3+1")
        yield c


def client(c: NetnsCluster, i: int):
    return c.node(i).client(**CLIENT)


# Seconds a node may answer a read with a 5xx before it counts: after a partition
# heals, a node may hold a peer it heard nothing from for storaged.remote_disk's
# TIMEOUT (15 s) as cut off for as long again while it reattaches its disks, and
# on a loaded 2-core CI machine that took longer than 20 s once.
TRANSIENT_PATIENCE = 45


def read_all(c: NetnsCluster, i: int, keys, transient: list[str] | None = None
             ) -> dict[str, tuple[str, str] | str]:
    """key → (sha256 of the body, ETag) as node ``i`` serves it, or the error code
    (with its message and request id when it is not NoSuchKey).

    A 5xx answer (e.g. 503 while the disks are being reattached after a partition)
    is not a version: the read is tried again, as S3 clients do, for up to
    TRANSIENT_PATIENCE seconds; each such answer is appended to ``transient``
    (printed by the tests) and the last one stands if it never goes away."""
    s3 = client(c, i)
    seen: dict[str, tuple[str, str] | str] = {}
    for key in sorted(keys):
        deadline = time.monotonic() + TRANSIENT_PATIENCE
        while True:
            try:
                got = s3.get_object(Bucket=BUCKET, Key=key)
                seen[key] = (hashlib.sha256(got["Body"].read()).hexdigest(), got["ETag"])
                break
            except ClientError as exc:
                error, meta = exc.response["Error"], exc.response.get("ResponseMetadata", {})
                seen[key] = error["Code"] if error["Code"] == "NoSuchKey" else \
                    f"{error['Code']}: {error.get('Message')} (request {meta.get('RequestId')})"
                if meta.get("HTTPStatusCode", 0) < 500 or time.monotonic() > deadline:
                    break
                if transient is not None:
                    transient.append(f"GET {key} through {c.name(i)}: {seen[key]}")
                time.sleep(0.2)
    return seen


# The minority's client: runs inside n4's namespace (the test process cannot
# reach n4 across the partition, a client beside it can) and reports each PUT.
MINORITY_CLIENT = textwrap.dedent("""
    import json, random, sys, time
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
    endpoint, access, secret, bucket, config, writes = json.loads(sys.argv[1])
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access,
                      aws_secret_access_key=secret, region_name="us-east-1",
                      config=Config(**config))
    out = []
    for key, seed, size in writes:
        start = time.monotonic()
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=random.Random(seed).randbytes(size))
            outcome = "ok"
        except ClientError as exc:
            outcome = "HTTP %s %s: %s" % (exc.response["ResponseMetadata"]["HTTPStatusCode"],
                                          exc.response["Error"]["Code"],
                                          exc.response["Error"].get("Message", ""))
        except Exception as exc:
            outcome = "client %s: %s" % (type(exc).__name__, exc)
        out.append([key, outcome, round(time.monotonic() - start, 2)])
    print(json.dumps(out))
""")


def minority_writes(c: NetnsCluster, i: int, writes: list[tuple[str, int, int]]) -> list:
    """PUT ``writes`` (key, seed, size) through node ``i`` from inside its namespace:
    [key, "ok" | "HTTP status code: message" | "client Error: ...", seconds]."""
    arg = json.dumps([c.node(i).endpoint, ACCESS, SECRET, BUCKET, CLIENT, writes])
    done = c.exec_in(i, [sys.executable, "-c", MINORITY_CLIENT, arg],
                     timeout=len(writes) * (READ_TIMEOUT + 10) + 30)
    assert done.returncode == 0, f"minority client failed: {done.stderr}"
    return json.loads(done.stdout)


def test_partitioned_node_refuses_writes_and_loses_nothing(cluster):
    c = cluster
    acked: dict[str, tuple[int, int]] = {}  # key → (seed, size) of its last acknowledged PUT
    seeds = iter(range(1, 1_000_000))

    def put(i: int, key: str, size: int) -> None:
        seed = next(seeds)
        client(c, i).put_object(Bucket=BUCKET, Key=key, Body=body(seed, size))
        acked[key] = (seed, size)

    sizes = (0, 1000, 150_000, 2 * 1024 * 1024 + 3)  # inline records and shard files
    client(c, 0).create_bucket(Bucket=BUCKET)
    for i in range(4):
        for j, size in enumerate(sizes):
            put(i, f"before/n{i + 1}-{j}", size)
    for j, size in enumerate(sizes):
        put(3, f"contested-{j}", size)          # written by n4; overwritten on both sides below

    c.partition(3)
    # The majority goes on at once (its connections to n4 now lead nowhere)...
    majority_times = []
    for j, size in enumerate(sizes):
        start = time.monotonic()
        put(0, f"contested-{j}", size)
        put(0, f"during/n1-{j}", size)
        majority_times.append(round(time.monotonic() - start, 1))
    # ...n4 sees its peers and etcd vanish; a client beside it tries to write,
    # over the keys the majority has just written and new ones.
    tried = [(f"contested-{j}", next(seeds), size) for j, size in enumerate(sizes)]
    tried += [(f"minority/n4-{j}", next(seeds), size) for j, size in enumerate(sizes)]
    minority = minority_writes(c, 3, tried)
    # ...and the majority still writes after that.
    for j, size in enumerate(sizes):
        put(1, f"after/n2-{j}", size)
    put(2, "contested-0", 10)

    c.heal_partition(3)
    c.wait_for(lambda: "n4" in c.alive(0) and c.health(3) == 200, "n4 back in the cluster")

    print("majority PUT pairs (s):", majority_times)
    print("minority PUTs:", json.dumps(minority, indent=1))
    accepted = {key: outcome for key, outcome, _ in minority if outcome == "ok"}
    for key in accepted:  # a write n4 acknowledged must not be lost either
        acked[key] = next((seed, size) for k, seed, size in tried if k == key)
    keys = set(acked) | {key for key, _, _ in tried}
    expected = {key: hashlib.sha256(body(*acked[key])).hexdigest() if key in acked else "NoSuchKey"
                for key in keys}

    transient: list[str] = []

    def check_every_node(when: str) -> None:
        views = [read_all(c, i, keys, transient) for i in range(4)]
        if transient:
            print(f"{when}: answers tried again:", *transient, sep="\n  ")
            transient.clear()
        for key in sorted(keys):
            seen = {c.name(i): views[i][key] for i in range(4)}
            assert len(set(seen.values())) == 1, f"{when}: {key} differs between nodes: {seen}"
            got = views[0][key]
            assert (got[0] if isinstance(got, tuple) else got) == expected[key], (
                f"{when}: {key} is {got}, the last acknowledged write was {acked.get(key)}")

    # No acknowledged write lost and no second "latest" version, on any node, even
    # before the heal (n4's disk missed the majority's writes: it must not win).
    check_every_node("after the partition healed")
    assert not accepted, f"n4 accepted writes it could not make durable: {minority}"
    for key, outcome, seconds in minority:
        assert outcome.startswith("HTTP 5"), (
            f"PUT {key} through the partitioned n4: expected a server error, got {outcome} "
            f"after {seconds} s")

    c.wait_for(lambda: c.sees_every_disk(0), "n1 attached to n4's disk again")
    c.node(0).cli("heal", timeout=120)
    check_every_node("after basalt heal")
    # n4's own disk now holds what it missed: with n1 gone, every read needs it.
    c.kill_node(0)
    for key, seen in read_all(c, 3, keys, transient).items():
        assert (seen[0] if isinstance(seen, tuple) else seen) == expected[key], (
            f"through n4 with n1 down: {key} is {seen}")


def test_sigkill_during_uploads_loses_no_acknowledged_object(cluster):
    c = cluster
    client(c, 0).create_bucket(Bucket=BUCKET)
    acked: dict[str, tuple[int, int]] = {}
    failed: list[tuple[int, str, float, float, str]] = []  # node, key, start, end, error
    lock = threading.Lock()
    stop = threading.Event()
    killed_at = [float("inf")]

    def uploader(node: int, worker: int) -> None:
        s3 = client(c, node)
        n = 0
        while not stop.is_set():
            n += 1
            key = f"up/n{node + 1}-w{worker}-{n}"
            seed = node * 1_000_000 + worker * 10_000 + n
            size = random.Random(seed).randint(1, 6) * 1024 * 1024 + seed % 977
            start = time.monotonic()
            try:
                s3.put_object(Bucket=BUCKET, Key=key, Body=body(seed, size))
            except Exception as exc:
                with lock:
                    failed.append((node, key, start, time.monotonic(), repr(exc)[:300]))
                if node == 1 and start >= killed_at[0]:
                    time.sleep(0.2)  # n2 is gone: keep trying, slowly
                continue
            with lock:
                acked[key] = (seed, size)

    def acked_through(nodes) -> int:
        with lock:
            return sum(1 for key in acked if int(key.split("/n")[1].split("-")[0]) - 1 in nodes)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(uploader, node, w) for node in (0, 1, 2) for w in (0, 1)]
        c.wait_for(lambda: len(acked) >= 6, "the first uploads", timeout=60)
        c.kill_node(1)
        killed_at[0] = time.monotonic()  # n2's processes are dead, their sockets closed
        before = acked_through({0, 2})
        c.wait_for(lambda: acked_through({0, 2}) >= before + 8, "uploads through n1 and n3 "
                   "after n2's kill", timeout=60, running=[0, 2, 3])
        stop.set()
        for f in futures:
            f.result()

    print(f"acknowledged: {len(acked)}; failed: {len(failed)}")
    for node, key, start, end, error in failed:
        print(f"  n{node + 1} {key} {start - killed_at[0]:+.2f}..{end - killed_at[0]:+.2f} s "
              f"from the kill: {error}")
    # (An upload through n1/n3 already in flight when n2 died may fail: see
    # test_upload_in_flight_when_a_node_is_sigkilled.)
    late_failures = [f for f in failed if f[0] != 1 and f[2] > killed_at[0]]
    assert not late_failures, f"uploads through n1/n3 started after n2 was killed failed: " \
                              f"{late_failures}"
    expected = {key: hashlib.sha256(body(*sb)).hexdigest() for key, sb in acked.items()}

    def check(via: int, when: str) -> None:
        transient: list[str] = []
        seen = read_all(c, via, expected, transient)
        if transient:
            print(f"{when}: answers tried again:", *transient, sep="\n  ")
        bad = {k: seen[k] for k in expected
               if not isinstance(seen[k], tuple) or seen[k][0] != expected[k]}
        assert not bad, f"{when}: acknowledged objects not intact through {c.name(via)}: {bad}"

    check(3, "n2 killed")

    c.start_node(1)
    c.wait_for(lambda: c.health(1) == 200 and "n2" in c.alive(0) and c.sees_every_disk(0),
               "n2 back", running=[0, 1, 2, 3])
    c.node(0).cli("heal", timeout=120)
    c.kill_node(2)
    check(3, "n2 healed, n3 killed")
    check(1, "n2 healed, n3 killed")


# One PUT whose body is sent in two parts, the second only when told: the first
# part (several 2 MiB batches) is written to every disk before the test cuts a
# node off, the rest after, so the upload is certainly in flight when it happens.
# Signed as a presigned URL (UNSIGNED-PAYLOAD): the body is streamed as it is sent.
SLOW_UPLOAD = textwrap.dedent("""
    import http.client, json, random, sys, time, urllib.parse
    import boto3
    from botocore.config import Config
    endpoint, access, secret, bucket, key, seed, size, first, timeout = json.loads(sys.argv[1])
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access,
                      aws_secret_access_key=secret, region_name="us-east-1",
                      config=Config(signature_version="s3v4"))
    url = urllib.parse.urlsplit(s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600))
    data = random.Random(seed).randbytes(size)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    conn.putrequest("PUT", url.path + "?" + url.query, skip_accept_encoding=True)
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    conn.send(data[:first])
    print("sent", flush=True)
    sys.stdin.readline()
    start = time.monotonic()
    try:
        for off in range(first, size, 1 << 20):
            conn.send(data[off:off + (1 << 20)])
        resp = conn.getresponse()
        out = {"status": resp.status, "body": resp.read().decode(errors="replace")[:400]}
    except Exception as exc:
        out = {"status": None, "error": "%s: %s" % (type(exc).__name__, exc)}
    out["seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(out), flush=True)
""")
MiB = 1 << 20


def _refused_mid_body(outcome: dict) -> bool:
    """The server answered its error before the body was all sent and closed the
    connection (gateway/app.py never reads a rejected body, as S3 does not): a
    client still sending sees the reset instead of the 503. Nothing was stored."""
    return outcome["status"] is None and outcome["error"].startswith(
        ("ConnectionResetError", "BrokenPipeError"))


class SlowUpload:
    """SLOW_UPLOAD of ``key`` through node ``via``, run from namespace ``ns``
    (None: the root namespace, i.e. across the bridge)."""

    def __init__(self, c: NetnsCluster, via: int, key: str, seed: int, size: int = 24 * MiB,
                 first: int = 10 * MiB, ns: int | None = None) -> None:
        self.key, self.seed, self.size = key, seed, size
        arg = json.dumps([c.node(via).endpoint, ACCESS, SECRET, BUCKET, key, seed, size, first,
                          READ_TIMEOUT])
        args = [sys.executable, "-c", SLOW_UPLOAD, arg]
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
        if ns is None:
            self.proc = subprocess.Popen(args, start_new_session=True, **pipes)
        else:
            self.proc = c.spawn_in(ns, args, **pipes)
        line = self.proc.stdout.readline()
        assert line.strip() == "sent", f"upload of {key} did not start: {line!r}"

    def finish(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict:
        try:
            out = self.proc.communicate(timeout=READ_TIMEOUT + 30)[0]
        finally:
            NetnsCluster.kill_group(self.proc)
        return json.loads(out)

    def sha(self) -> str:
        return hashlib.sha256(body(self.seed, self.size)).hexdigest()


def test_upload_in_flight_when_a_node_is_partitioned(cluster):
    c = cluster
    client(c, 0).create_bucket(Bucket=BUCKET)
    client(c, 0).put_object(Bucket=BUCKET, Key="contested", Body=body(1, 3 * MiB))
    acked = {"contested": hashlib.sha256(body(1, 3 * MiB)).hexdigest()}
    majority = SlowUpload(c, 0, "inflight/majority", seed=2)
    minority = SlowUpload(c, 3, "contested", seed=3, ns=3)  # a client beside n4
    time.sleep(1)  # the first part is on every disk
    c.partition(3)
    time.sleep(0.5)
    majority.finish()
    minority.finish()
    outcomes = {"majority": majority.result(), "minority": minority.result()}
    print("outcomes:", outcomes)
    problems = []
    if outcomes["majority"]["status"] == 200:
        acked[majority.key] = majority.sha()
    else:
        problems.append(f"PUT {majority.key} through n1 (majority side) did not succeed within "
                        f"{READ_TIMEOUT} s: {outcomes['majority']}")
    if outcomes["minority"]["status"] == 200:
        acked["contested"] = minority.sha()
        problems.append(f"PUT contested through the partitioned n4 succeeded: {outcomes['minority']}")
    elif not (str(outcomes["minority"]["status"]).startswith("5") or _refused_mid_body(
            outcomes["minority"])):
        problems.append(f"PUT contested through the partitioned n4: no server error within "
                        f"{READ_TIMEOUT} s: {outcomes['minority']}")

    c.heal_partition(3)
    c.wait_for(lambda: "n4" in c.alive(0) and c.health(3) == 200, "n4 back in the cluster")
    c.wait_for(lambda: c.sees_every_disk(0), "n1 attached to n4's disk again")
    healed = c.node(0).cli("heal", check=False, timeout=120)
    if healed.returncode != 0:
        problems.append(f"basalt heal failed: {healed.stderr}{healed.stdout}")
    keys = {"contested", majority.key}
    views = {c.name(i): read_all(c, i, keys) for i in range(4)}
    for key in sorted(keys):
        seen = {name: view[key] for name, view in views.items()}
        if len(set(seen.values())) != 1:
            problems.append(f"{key} differs between nodes: {seen}")
        if key in acked and any(not isinstance(v, tuple) or v[0] != acked[key]
                                for v in seen.values()):
            problems.append(f"{key}: the acknowledged write is not what the nodes serve: {seen}")
    assert not problems, "\n".join(problems)


def test_upload_in_flight_when_a_node_is_sigkilled(cluster):
    c = cluster
    client(c, 0).create_bucket(Bucket=BUCKET)
    upload = SlowUpload(c, 0, "inflight/kill", seed=4)
    time.sleep(1)  # the first part is on every disk
    c.kill_node(1)
    upload.finish()
    outcome = upload.result()
    assert outcome["status"] == 200, (
        f"PUT {upload.key} through n1, in flight when n2 was SIGKILLed: {outcome}")
    for via in (2, 3):
        seen = read_all(c, via, [upload.key])[upload.key]
        assert isinstance(seen, tuple) and seen[0] == upload.sha(), (
            f"{upload.key} through {c.name(via)}: {seen}")
