"""A cluster on this machine: a real 3-member etcd and four `basalt serve
--cluster` nodes on 127.0.0.1, one disk each, driven with boto3 and the CLI.

A node serves nothing but the cluster admin API until a pool uses its disks;
then every node serves S3 over the pool's one erasure set (3+1 here: its own
disk locally, the others' through the node RPC).
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import signal
import subprocess
import time
import urllib.request

import boto3
import pytest

from tests.cluster.etcd_helpers import EtcdCluster, free_ports, require_etcd
from tests.e2e.conftest import ACCESS, BASALT, SECRET, Server, stop_server
from tests.e2e.nbd_e2e_helpers import require, run, uri

NODES = 4
node_ports: list[tuple[int, int, int]] = []  # (S3, RPC, NBD): a restarted node keeps its own
SECRET_ENV = "a-cluster-secret-for-the-tests-0123456789"
PART = 5 * 1024 * 1024  # S3's smallest part


def start_node(tmp, name: str, etcd: str, ports: tuple[int, int, int], disks: int = 1,
               extra: tuple[str, ...] = ()) -> Server:
    """Start node ``name`` (``extra``: more `basalt serve` options)."""
    s3_port, rpc_port, nbd_port = ports
    data_dir = os.path.join(tmp, name)
    os.makedirs(data_dir, exist_ok=True)
    log_path = os.path.join(data_dir, "serve.log")
    args = [BASALT, "--data-dir", data_dir, "serve", "--cluster", etcd, "--node", name,
            "--advertise", f"127.0.0.1:{rpc_port}",
            *[a for i in range(disks) for a in ("--disk", os.path.join(data_dir, f"disk{i}"))],
            "--s3-address", f"127.0.0.1:{s3_port}", "--nbd-address", f"127.0.0.1:{nbd_port}",
            "--workers", "1", *extra]
    env = dict(os.environ, BASALT_ACCESS_KEY=ACCESS, BASALT_SECRET_KEY=SECRET,
               BASALT_CLUSTER_SECRET=SECRET_ENV)
    log = open(log_path, "w")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return Server(proc, data_dir, f"http://127.0.0.1:{s3_port}", nbd_port, None, log_path)


def health(server: Server) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(server.endpoint + "/_basalt/health", timeout=2) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def wait_for(predicate, what: str, servers: list[Server], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in servers:
            if s.proc.poll() is not None:
                raise AssertionError(f"a node exited while waiting for {what}: {s.log()}")
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: " + "\n".join(
        s.log()[-3000:] for s in servers))


@pytest.fixture
def cluster(tmp_path, request):
    require_etcd()
    disks = getattr(request, "param", 1)  # disks per node
    etcd = EtcdCluster(tmp_path / "etcd", size=3)
    nodes: list[Server] = []
    try:
        etcd.start()
        ports = free_ports(3 * NODES)
        node_ports[:] = [tuple(ports[3 * i:3 * i + 3]) for i in range(NODES)]
        for i in range(NODES):
            nodes.append(start_node(str(tmp_path), f"n{i + 1}", etcd.endpoints, node_ports[i],
                                    disks))
        yield etcd, nodes
    finally:
        # All at once: one after another, the four clean stops took up to 9 s.
        with concurrent.futures.ThreadPoolExecutor(NODES) as pool:
            list(pool.map(stop_server, nodes))
        etcd.stop()


def wait_serving(serving: list[Server], nodes: list[Server] | None = None) -> None:
    """Until every node of ``serving`` reports every disk online and none healing
    (a new pool's disks are healed once before its first bucket can be decided)."""
    wait_for(lambda: all(health(n)[1].get("status") == "ok" for n in serving),
             "every node serving", nodes or serving)


def wait_registered(nodes: list[Server]) -> None:
    wait_for(lambda: all(health(n)[0] == 503 for n in nodes), "the waiting fronts", nodes)
    wait_for(lambda: sum(n["alive"] for n in status(nodes[0])["nodes"]) == NODES,
             "every node registered", nodes)


def status(node: Server) -> dict:
    return json.loads(node.cli("cluster", "status", "--json").stdout)


def test_nodes_join_a_pool_forms_and_any_node_serves_any_object(cluster, tmp_path):
    etcd, nodes = cluster
    # Before a pool: the cluster admin API answers, S3 does not.
    wait_registered(nodes)
    # A second node with a live node's name is refused (it would claim the same
    # disk ids) once the first one's lease has not ended in twice its time.
    dup = start_node(str(tmp_path / "dup"), "n2", etcd.endpoints, tuple(free_ports(3)))
    try:
        assert dup.proc.wait(timeout=60) != 0
        with open(dup.log_path) as f:
            assert "a node named n2 is already alive in the cluster" in f.read()
    finally:
        stop_server(dup)
    seen = status(nodes[1])
    assert sorted(n["name"] for n in seen["nodes"]) == ["n1", "n2", "n3", "n4"]
    assert all(len(n["disks"]) == 1 and n["advertise"] for n in seen["nodes"])
    assert seen["pools"] == []

    # A layout where one node would hold more than M shards is refused, with the reason.
    refused = nodes[0].cli("cluster", "pool", "create", "--ec", "3+1", "n1", "n2", check=False)
    assert refused.returncode != 0
    assert "n1" in refused.stderr + refused.stdout or "node" in refused.stderr + refused.stdout

    nodes[0].cli("cluster", "pool", "create", "--ec", "3+1", "--name", "p1",
                 "n1", "n2", "n3", "n4")
    wait_serving(nodes)
    pools = status(nodes[2])["pools"]
    assert [(p["name"], p["k"], p["m"], len(p["sets"])) for p in pools] == [("p1", 3, 1, 1)]
    # One node runs the background jobs (heal passes, upload expiry, lifecycle).
    assert status(nodes[0])["leader"] in {"n1", "n2", "n3", "n4"}

    # Objects written through one node are read through every other.
    a, b, c = nodes[0].client(), nodes[1].client(), nodes[2].client()
    a.create_bucket(Bucket="shared")
    bodies = {f"k{i}": os.urandom(size) for i, size in
              enumerate((0, 100, 4096, 200_000, 3 * 1024 * 1024 + 7))}
    for key, body in bodies.items():
        a.put_object(Bucket="shared", Key=key, Body=body)
    for key, body in bodies.items():
        assert b.get_object(Bucket="shared", Key=key)["Body"].read() == body
    listed = [o["Key"] for o in c.list_objects_v2(Bucket="shared")["Contents"]]
    assert listed == sorted(bodies)
    assert [bk["Name"] for bk in nodes[3].client().list_buckets()["Buckets"]] == ["shared"]

    # Every node lists the same keys.
    for node in nodes:
        page = node.client().list_objects_v2(Bucket="shared")
        assert [o["Key"] for o in page["Contents"]] == sorted(bodies)
    # A multipart upload through one node (its parts' shards on the others
    # written past their page cache), read back through another.
    bodies["multi"] = upload_multipart(a, "multi")
    assert b.get_object(Bucket="shared", Key="multi")["Body"].read() == bodies["multi"]

    # One bucket name created at once through two nodes: exactly one wins.
    def create(client):
        try:
            client.create_bucket(Bucket="race")
            return "created"
        except client.exceptions.ClientError as exc:
            return exc.response["Error"]["Code"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(create, [nodes[1].client(), nodes[2].client()]))
    assert outcomes[0] in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou")
    assert outcomes[1] == "created"
    # Deleted through one node, the name is free again through another.
    nodes[3].client().delete_bucket(Bucket="race")
    assert create(nodes[0].client()) == "created"

    # One etcd member killed: nothing changes.
    etcd.kill(0)
    b.put_object(Bucket="shared", Key="etcd-member-down", Body=b"fine")
    assert sum(n["alive"] for n in status(nodes[1])["nodes"]) == NODES

    # One node (M = 1) SIGKILLed: the others go on reading and writing.
    os.killpg(nodes[3].proc.pid, signal.SIGKILL)
    nodes[3].proc.wait()
    wait_for(lambda: not alive(nodes[0], "n4"), "n4 seen dead", nodes[:3])
    wait_for(lambda: status(nodes[0])["leader"] in {"n1", "n2", "n3"},
             "a living leader", nodes[:3])
    missed = {f"while-n4-is-down-{i}": os.urandom(50_000 * i + 1) for i in range(4)}
    for key, body in missed.items():
        b.put_object(Bucket="shared", Key=key, Body=body)
    missed["while-n4-is-down-multi"] = upload_multipart(b, "while-n4-is-down-multi")
    for key, body in bodies.items():
        assert c.get_object(Bucket="shared", Key=key)["Body"].read() == body

    # n4 comes back and is healed; then another node goes: what n4 missed
    # must now be readable from n4's rebuilt shards.
    nodes[3] = start_node(str(nodes[3].data_dir).rsplit("/", 1)[0], "n4", etcd.endpoints,
                          node_ports[3])
    wait_for(lambda: health(nodes[3])[0] == 200 and alive(nodes[0], "n4"), "n4 back", nodes)
    # Each node reconnects to n4's disks on its own: until all see them, a GET
    # through one that does not yet finds n4's rebuilt shard "offline".
    wait_for(lambda: all(health(n)[1]["status"] == "ok" for n in nodes), "n4's disks seen",
             nodes)
    nodes[0].cli("heal")
    os.killpg(nodes[1].proc.pid, signal.SIGKILL)
    nodes[1].proc.wait()
    for key, body in {**bodies, **missed}.items():
        assert c.get_object(Bucket="shared", Key=key)["Body"].read() == body
        assert nodes[3].client().get_object(Bucket="shared", Key=key)["Body"].read() == body

    # A node whose disks an active pool uses cannot be removed, dead or alive.
    refused = nodes[2].cli("cluster", "node", "remove", "n2", "--json", check=False)
    assert refused.returncode != 0 and json.loads(refused.stdout)["error"] == "NodeInUse"
    assert "n2" in {n["name"] for n in status(nodes[2])["nodes"]}


def upload_multipart(client, key: str) -> bytes:
    """Upload a random body of three parts to bucket "shared" as boto3 does; returns it."""
    from boto3.s3.transfer import TransferConfig
    body = os.urandom(2 * PART + 3)
    client.upload_fileobj(io.BytesIO(body), "shared", key,
                          Config=TransferConfig(multipart_threshold=PART, multipart_chunksize=PART))
    assert client.head_object(Bucket="shared", Key=key)["ETag"].endswith('-3"')
    return body


def alive(node: Server, name: str) -> bool:
    return next(n for n in status(node)["nodes"] if n["name"] == name)["alive"]


def test_losing_etcd_quorum_makes_the_cluster_read_only_until_it_returns(cluster):
    etcd, nodes = cluster
    wait_registered(nodes)
    nodes[0].cli("cluster", "pool", "create", "--ec", "3+1", "n1", "n2", "n3", "n4")
    wait_serving(nodes)
    s3 = nodes[1].client(retries={"max_attempts": 1, "mode": "standard"})
    s3.create_bucket(Bucket="quorum")
    s3.put_object(Bucket="quorum", Key="before", Body=b"written before")

    etcd.kill(0)
    etcd.kill(1)

    attempts: list[str] = []

    def refused() -> bool:
        attempts.append(f"during-{len(attempts)}")
        try:
            s3.put_object(Bucket="quorum", Key=attempts[-1], Body=b"x")
            return False
        except s3.exceptions.ClientError as exc:
            error = exc.response["Error"]
            assert error["Code"] == "ServiceUnavailable", error
            assert "etcd" in error["Message"], error
            return True
    wait_for(refused, "writes refused without etcd quorum", nodes, timeout=40)
    # Reads of what is readable go on, through every node.
    for node in nodes:
        body = node.client().get_object(Bucket="quorum", Key="before")["Body"].read()
        assert body == b"written before"
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket="quorum", Key=attempts[-1])  # the refused write left nothing

    etcd.start(0)
    etcd.start(1)

    def writable() -> bool:
        try:
            s3.put_object(Bucket="quorum", Key="after", Body=b"written after")
            return True
        except s3.exceptions.ClientError:
            return False
    wait_for(writable, "writes back once etcd has quorum", nodes, timeout=60)
    assert nodes[3].client().get_object(Bucket="quorum", Key="after")["Body"].read() == b"written after"


def test_a_volume_moves_when_its_owner_dies_and_nothing_flushed_is_lost(cluster):
    require("qemu-io", "fio")
    etcd, nodes = cluster
    wait_registered(nodes)
    nodes[0].cli("cluster", "pool", "create", "--ec", "3+1", "n1", "n2", "n3", "n4")
    wait_serving(nodes)
    wait_for(lambda: status(nodes[0])["leader"] is not None, "a volume owner", nodes)
    owner = int(status(nodes[0])["leader"][1:]) - 1
    x, y, z = [n for i, n in enumerate(nodes) if i != owner]
    # Volume admin through a node that does not own volumes: forwarded to the owner.
    wait_for(lambda: x.cli("volume", "create", "v", "--size", "64M", check=False).returncode == 0,
             "the volume owner ready", nodes)
    assert "v" in y.cli("volume", "list").stdout
    # An encrypted volume too: its data key is sealed by the pool's key service,
    # which every node (and so the next owner) opens with the shared master key.
    x.cli("volume", "create", "e", "--size", "16M", "--encrypted")
    run("qemu-io", "-f", "raw", uri(y, "e"), "-c", "write -P 0x6b 1M 1M", "-c", "flush")

    # fio writes and verifies the first half through one relay, fsync at the end.
    run("fio", "--name=seed", "--ioengine=nbd", f"--uri={uri(y, 'v')}", "--rw=randwrite",
        "--bs=4k", "--size=8M", "--iodepth=8", "--verify=crc32c", "--verify_fatal=1",
        "--do_verify=1", "--end_fsync=1", "--randrepeat=1", timeout=300)

    # A QEMU client (reconnecting) writes and flushes through another relay, the owner
    # is SIGKILLed while it waits, then it reads its write back through the new owner.
    opts = (f"driver=raw,file.driver=nbd,file.host=127.0.0.1,file.port={z.nbd_port},"
            "file.export=v,file.reconnect-delay=30")
    client = subprocess.Popen(["qemu-io", "--image-opts", "-c", "write -P 0x5a 40M 1M",
                               "-c", "flush", "-c", "sleep 8000", "-c", "read -P 0x5a 40M 1M",
                               opts], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(3)
    os.killpg(nodes[owner].proc.pid, signal.SIGKILL)
    nodes[owner].proc.wait()
    out, _ = client.communicate(timeout=120)
    assert client.returncode == 0, out
    assert "read 1048576/1048576" in out and "fail" not in out.lower(), out
    survivors = [n for i, n in enumerate(nodes) if i != owner]
    assert status(survivors[0])["leader"] != f"n{owner + 1}"

    out = run("qemu-io", "-r", "-f", "raw", uri(x, "e"), "-c", "read -P 0x6b 1M 1M").stdout
    assert "read 1048576/1048576" in out and "fail" not in out.lower(), out
    assert json.loads(x.cli("volume", "info", "e", "--json").stdout)["encrypted"] is True

    # Everything fio wrote and fsynced is intact, read through yet another node.
    run("fio", "--name=seed", "--ioengine=nbd", f"--uri={uri(x, 'v')}", "--rw=randwrite",
        "--bs=4k", "--size=8M", "--iodepth=8", "--verify=crc32c", "--verify_fatal=1",
        "--verify_only", "--randrepeat=1", timeout=300)


@pytest.mark.parametrize("cluster", [2], indirect=True)
def test_a_pool_of_several_sets_spreads_objects_and_survives_a_node(cluster):
    etcd, nodes = cluster
    wait_registered(nodes)
    nodes[0].cli("cluster", "pool", "create", "--ec", "2+2", "n1", "n2", "n3", "n4")
    wait_serving(nodes)
    pool = status(nodes[1])["pools"][0]
    assert len(pool["sets"]) == 2
    for s in pool["sets"]:  # each node holds one disk of each set: a node costs 1 shard
        assert sorted(d["node"] for d in s["disks"]) == ["n1", "n2", "n3", "n4"]
    a = nodes[0].client()
    a.create_bucket(Bucket="wide")
    bodies = {f"key-{i}": os.urandom(1000 + i * 5000) for i in range(24)}
    for key, body in bodies.items():
        a.put_object(Bucket="wide", Key=key, Body=body)
    # Every disk was formatted into one of the two sets.
    sets = {json.load(open(os.path.join(n.data_dir, f"disk{i}", "format.json")))["deployment_id"]
            for n in nodes for i in range(2)}
    assert len(sets) == 2
    # An account's key made through one node signs on every other (the records
    # are settings of the system bucket, in every set).
    nodes[0].cli("account", "create", "tenant")
    key = json.loads(nodes[0].cli("key", "create", "tenant", "--json").stdout)
    tenant = boto3.client("s3", endpoint_url=nodes[3].endpoint, region_name="us-east-1",
                          aws_access_key_id=key["access_key"],
                          aws_secret_access_key=key["secret_key"])
    tenant.create_bucket(Bucket="tenant-data")
    tenant.put_object(Bucket="tenant-data", Key="k", Body=b"tenant's")
    os.killpg(nodes[2].proc.pid, signal.SIGKILL)
    nodes[2].proc.wait()
    b = nodes[1].client()
    assert "tenant-data" not in [x["Name"] for x in b.list_buckets()["Buckets"]]
    tenant = boto3.client("s3", endpoint_url=nodes[1].endpoint, region_name="us-east-1",
                          aws_access_key_id=key["access_key"],
                          aws_secret_access_key=key["secret_key"])
    assert tenant.get_object(Bucket="tenant-data", Key="k")["Body"].read() == b"tenant's"
    b.put_object(Bucket="wide", Key="late", Body=b"after n3 died")
    listed = [o["Key"] for o in b.list_objects_v2(Bucket="wide")["Contents"]]
    assert listed == sorted([*bodies, "late"])
    for key, body in bodies.items():
        assert nodes[3].client().get_object(Bucket="wide", Key=key)["Body"].read() == body


def test_a_pool_added_live_then_the_old_one_drained_keeps_every_object_readable(cluster):
    etcd, nodes = cluster
    wait_registered(nodes)
    nodes[0].cli("cluster", "pool", "create", "--ec", "1+1", "--name", "old", "n1", "n2")
    wait_serving(nodes[:2], nodes)
    s3 = nodes[0].client()
    s3.create_bucket(Bucket="move")
    bodies = {f"k{i}": os.urandom(700 + i * 20_000) for i in range(12)}
    for key, body in bodies.items():
        s3.put_object(Bucket="move", Key=key, Body=body)

    # A second pool on the other nodes, while everything runs.
    nodes[2].cli("cluster", "pool", "create", "--ec", "1+1", "--name", "new", "n3", "n4")
    wait_serving(nodes)
    wait_for(lambda: all(writable(n, "move") for n in nodes), "every node writing", nodes)
    everything_probe = {f"probe-{n.endpoint[-5:]}" for n in nodes}
    more = {f"m{i}": os.urandom(5000 + i) for i in range(6)}
    for key, body in more.items():
        nodes[3].client().put_object(Bucket="move", Key=key, Body=body)
    everything = {**bodies, **more, **{k: b"probe" for k in everything_probe}}

    def all_readable(node: Server) -> None:
        client = node.client()
        assert sorted(o["Key"] for o in client.list_objects_v2(Bucket="move")["Contents"]) \
            == sorted(everything)
        for key, body in everything.items():
            assert client.get_object(Bucket="move", Key=key)["Body"].read() == body

    for node in nodes:
        all_readable(node)

    nodes[1].cli("cluster", "pool", "drain", "old")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:   # readable throughout the drain
        all_readable(nodes[2])
        states = {p["name"]: p["state"] for p in status(nodes[0])["pools"]}
        if states["old"] == "drained":
            break
        time.sleep(0.5)
    assert states == {"old": "drained", "new": "active"}, states
    time.sleep(3)  # every node takes the layout without the drained pool
    for node in nodes:
        all_readable(node)
    # The drained pool's nodes can now be removed.
    nodes[0].cli("cluster", "node", "remove", "n1")


def writable(node: Server, bucket: str) -> bool:
    """Whether a PUT through ``node`` succeeds now (a node just given a pool may
    still be opening its disks)."""
    try:
        node.client(retries={"max_attempts": 1}).put_object(
            Bucket=bucket, Key=f"probe-{node.endpoint[-5:]}", Body=b"probe")
        return True
    except Exception:
        return False
