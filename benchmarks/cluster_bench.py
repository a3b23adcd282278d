#!/usr/bin/env python3
"""Single-node Basalt beside a 3-node Basalt cluster: same machine, same run, same client.

Issue 13's performance target: a 3-node cluster on this machine reaches at
least 60% of single-node 64 MiB PUT/GET throughput and 50% of single-node
4 KiB PUT/GET ops/s, and the report shows where the rest goes.

    .venv/bin/python benchmarks/cluster_bench.py                 # both, about 2 minutes
    .venv/bin/python benchmarks/cluster_bench.py --one-endpoint  # every request to node 1
    .venv/bin/python benchmarks/cluster_bench.py --only cluster --seconds 5 --json

What runs (127.0.0.1, free ports, fresh temp dirs, every process killed and
every dir removed at the end, also on Ctrl-C or failure; ``--keep`` keeps the dirs):

- single: ``basalt serve`` with 3 disks, ``--ec 2+1``, ``--workers N`` (default 1);
- cluster: a real 3-member etcd (tests/cluster/etcd_helpers.py) and 3
  ``basalt serve --cluster`` nodes with one disk and ``--workers N`` each, pool
  ``--ec 2+1`` over n1 n2 n3: the same coding and disk count as the single node.

The two are measured one after the other (single first), so only the system
under test uses the machine during its rows. The rows are s3_bench.py's own
(64 MiB PUT/GET MB/s, 4 KiB PUT/GET ops/s, through s3load.py's client, every
PUT's ETag checked against MD5 and every GET compared byte for byte). Against
the cluster the client sends its requests round-robin over the three nodes' S3
endpoints, as a load balancer in front would (``--one-endpoint``: all to n1).
Then ``aws s3 cp`` of a --cp-mib file up through n1 (aws-cli's defaults, 8 MiB
parts): the multipart path, no target (``--rows cp`` runs only it).

Where the rest goes, per row and system (only over the timed phase of a row):

- CPU seconds per wall second from /proc, per process group of each server:
  the main process (disk owner; in a cluster also the node-RPC server) and the
  S3 workers (S3, erasure coding, node-RPC client), plus the etcd members and
  this client; and the servers' CPU per S3 request.
- Node RPC: ``/_basalt/metrics`` counts only S3-side figures (requests, bytes,
  latency per S3 operation), nothing about node RPC. So the nodes are started
  through this script (``cluster_bench.py _rpc-counting-node ARGS`` = ``basalt
  ARGS`` with a counting middleware appended to storaged.disk_server's app,
  behind its authentication, and counting wrappers around the data channel's
  frame handlers; nothing else changes), which counts every node-RPC request
  and data channel frame served, by route and metadata operation, with its
  request and response body bytes, and answers a signed GET of the counts.
  Reported per S3 request of the row.
- p50/p99 latency per row for both.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # tests.cluster.etcd_helpers

NODE_SHIM = "_rpc-counting-node"
COUNTS_PATH = "/_basalt/node/v1/bench/rpc-counts"  # served by the counting middleware
BENCH_NODE = "clusterbench"                        # the name the bench signs as


# -- the node shim: `basalt ARGS` with node-RPC counting -------------------------
# Above the benchmark's imports: a node process runs only this part (and exits
# below, before them).

def _first_string(data: bytes) -> str:
    """The first element of a msgpack array (a wire record's class name), O(1)."""
    import msgpack
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    unpacker.read_array_header()
    value = unpacker.unpack()
    return value if isinstance(value, str) else "?"


def _wire_ops(route: str, body: bytes) -> str:
    """The metadata query of a ``read`` or the op classes of a ``commit``."""
    import msgpack
    names: list[str] = []

    def hook(code: int, data: bytes):
        if code == 2 and route == "commit":  # storaged.wire._RECORD
            names.append(_first_string(data))
        return None

    try:
        decoded = msgpack.unpackb(body, ext_hook=hook, strict_map_key=False, raw=False)
    except Exception:
        return "?"
    if route == "read":
        return decoded[0] if isinstance(decoded, list) and decoded else "?"
    return "+".join(dict.fromkeys(names)) or "-"


class RpcCounter:
    """Counts of the node-RPC requests a node served: label -> [requests,
    request body bytes, response body bytes, handler nanoseconds]."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}

    async def label(self, request) -> str:
        """``METHOD route`` (the route below /disks/{disk}), with the metadata
        query or op classes for ``read`` and ``commit``."""
        from storaged.disk_server import PREFIX
        resource = getattr(request.match_info.route, "resource", None)
        path = resource.canonical if resource is not None else "?"
        path = path.removeprefix(PREFIX).removeprefix("/disks/{disk}").lstrip("/") or "disks"
        label = f"{request.method} {path}"
        if path in ("read", "commit"):
            body = await request.read()  # already read (and kept) by the auth middleware
            label += " " + _wire_ops(path, body)
        return label

    def middleware(self):
        from aiohttp import web

        @web.middleware
        async def count(request, handler):
            if request.path == COUNTS_PATH:  # signed (we sit behind the auth middleware)
                return web.json_response(self.counts)
            response = None
            started = time.perf_counter_ns()
            try:
                response = await handler(request)
                return response
            finally:
                elapsed = time.perf_counter_ns() - started
                with contextlib.suppress(Exception):
                    label = await self.label(request)
                    got = getattr(request.content, "total_bytes", 0)
                    sent = 0
                    if response is not None:
                        if response.prepared:  # streamed: what was written
                            sent = response.body_length
                        else:
                            payload = getattr(response, "body", None)
                            sent = len(payload) if isinstance(payload, (bytes, bytearray)) else 0
                    entry = self.counts.setdefault(label, [0, 0, 0, 0])
                    entry[0] += 1
                    entry[1] += got
                    entry[2] += sent
                    entry[3] += elapsed

        return count

    def count_channel(self) -> None:
        """Count the data channel's frames too (shard bytes and metadata leave
        HTTP after one upgrade request, see storaged/data_channel.py): ``CHANNEL
        write``/``read``/``query Q``/``commit OPS``; request bytes = a write's
        body or the metadata sent, response bytes = what a read asked for."""
        import threading

        from storaged.disk_server import _Service
        lock = threading.Lock()

        def counted(method, label, got, sent):
            def wrapper(service, channel, args, *rest):
                started = time.perf_counter_ns()
                try:
                    return method(service, channel, args, *rest)
                finally:
                    elapsed = time.perf_counter_ns() - started
                    with lock:
                        entry = self.counts.setdefault(label, [0, 0, 0, 0])
                        entry[0] += 1
                        entry[1] += got(args)
                        entry[2] += sent(args)
                        entry[3] += elapsed
            return wrapper

        def size(i):
            return lambda args: args[i] if len(args) > i and isinstance(args[i], int) else 0

        _Service._channel_write = counted(_Service._channel_write, "CHANNEL write",
                                          size(3), lambda args: 0)
        _Service._channel_read = counted(_Service._channel_read, "CHANNEL read",
                                         lambda args: 0, size(4))
        meta = _Service._channel_meta

        def channel_meta(service, channel, op, args):
            label = "CHANNEL " + ("query " + _wire_ops("read", args[1]) if op == 3
                                  else "commit " + _wire_ops("commit", args[1]))
            counted(lambda s, c, a: meta(s, c, op, a), label,
                    lambda a: len(a[1]) if len(a) > 1 else 0, lambda a: 0)(
                service, channel, args)
        _Service._channel_meta = channel_meta


def node_shim(argv: list[str]) -> int:
    """``basalt ARGV`` with a counting middleware on the node-RPC app."""
    import basalt.cluster_node
    import storaged.disk_server
    from basalt.cli import main as basalt_main

    counter = RpcCounter()
    counter.count_channel()
    original = storaged.disk_server.disk_app

    def counted_disk_app(*args, **kwargs):
        app = original(*args, **kwargs)
        app.middlewares.append(counter.middleware())
        return app

    storaged.disk_server.disk_app = counted_disk_app
    basalt.cluster_node.disk_app = counted_disk_app
    sys.argv = ["basalt", *argv]
    return basalt_main(argv)


if __name__ == "__main__" and sys.argv[1:2] == [NODE_SHIM]:
    sys.exit(node_shim(sys.argv[2:]))


# -- the benchmark -------------------------------------------------------------------

import peers  # noqa: E402
import s3_bench  # noqa: E402
from s3_bench import (  # noqa: E402
    ACCESS_KEY,
    ROW_ERRORS,
    SECRET_KEY,
    Measurement,
    Payloads,
    Target,
    chosen,
    flush_page_cache,
    format_value,
    log,
    prepare,
    run_async,
)
from s3load import S3Client, Timing  # noqa: E402

# The rows: s3_bench's own functions (each calls s3_bench.measured around its
# timed phase; run_target swaps in `measured` below, which also takes the costs).
# cp up has no target (None): the cluster's multipart path, for reading.
TARGETS = {"64 MiB PUT": 0.60, "64 MiB GET": 0.60, "4 KiB PUT": 0.50, "4 KiB GET": 0.50,
           "aws s3 cp up": None}
ROWS = [row for row in s3_bench.ROWS if row.name in TARGETS]
SYSTEMS = ("single", "cluster")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def running(name: str, command: list[str], env: dict[str, str], data_dir: str,
            grace: float = 10.0):
    """peers' process runner, public here: ``command`` in its own session, output
    to DATA_DIR/NAME.log, SIGTERM then SIGKILL of its group on exit."""
    return peers._running(name, command, env, data_dir, grace)


# -- a round-robin client --------------------------------------------------------------

class RoundRobinClient:
    """s3load clients to several endpoints; each request goes to the next one
    (a load balancer's view). ``sent`` counts the requests per endpoint."""

    def __init__(self, endpoints: list[str], access_key: str, secret_key: str, *,
                 concurrency: int, sent: collections.Counter):
        self.clients = [S3Client(e, access_key, secret_key, concurrency=concurrency)
                        for e in endpoints]
        self.sent = sent
        self.turn = 0

    async def __aenter__(self) -> RoundRobinClient:
        async with contextlib.AsyncExitStack() as stack:
            for client in self.clients:
                await stack.enter_async_context(client)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._stack.aclose()

    def _next(self) -> S3Client:
        client = self.clients[self.turn % len(self.clients)]
        self.turn += 1
        self.sent[client.base] += 1
        return client

    async def put_object(self, *args, **kwargs):
        return await self._next().put_object(*args, **kwargs)

    async def get_object(self, *args, **kwargs):
        return await self._next().get_object(*args, **kwargs)

    async def delete_object(self, *args, **kwargs):
        return await self._next().delete_object(*args, **kwargs)

    async def create_bucket(self, *args, **kwargs):
        return await self._next().create_bucket(*args, **kwargs)

    async def request(self, *args, **kwargs):
        return await self._next().request(*args, **kwargs)


# -- what a row costs ----------------------------------------------------------------

@dataclass
class BenchTarget(Target):
    """A system under test: its S3 endpoints, its processes and node-RPC servers."""

    endpoints: list[str] = field(default_factory=list)
    groups: dict[str, int] = field(default_factory=dict)  # server name -> process group
    etcd_pids: list[int] = field(default_factory=list)
    rpc_urls: list[str] = field(default_factory=list)
    cluster_secret: bytes = b""
    sent: collections.Counter = field(default_factory=collections.Counter)
    row: str = ""
    costs: dict[str, dict] = field(default_factory=dict)  # row name -> costs

    def client(self, concurrency: int) -> RoundRobinClient:
        return RoundRobinClient(self.endpoints, self.server.access_key, self.server.secret_key,
                                concurrency=concurrency, sent=self.sent)


def cpu_snapshot(groups: dict[str, int], extra: dict[int, str]) -> dict[str, float]:
    """CPU seconds so far (user + system, every thread) by role: for each group
    ``NAME/main`` (its leader) and ``NAME/workers`` (the rest of the group), and
    ``extra`` pids under their given key; read from /proc/PID/stat."""
    by_group = {pgrp: name for name, pgrp in groups.items()}
    totals: dict[str, float] = collections.defaultdict(float)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, pgrp = int(entry), int(fields[2])  # fields[0] is field 3 (state)
        ticks = int(fields[11]) + int(fields[12])
        if pgrp in by_group:
            totals[f"{by_group[pgrp]}/{'main' if pid == pgrp else 'workers'}"] += ticks
        elif pid in extra:
            totals[extra[pid]] += ticks
    return {key: value / _CLOCK_TICKS for key, value in totals.items()}


def rpc_counts(url: str, secret: bytes) -> dict[str, list[int]]:
    """A node's node-RPC counts (see RpcCounter), by a signed GET."""
    from storaged import node_auth
    headers = node_auth.sign(secret, "GET", COUNTS_PATH, "", BENCH_NODE,
                             node_auth.body_digest(b""))
    request = urllib.request.Request(url + COUNTS_PATH, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


def snapshot(target: BenchTarget) -> dict:
    rpc: dict[str, list[int]] = {}
    per_node = {}
    for url in target.rpc_urls:  # before the CPU figures: fetching them costs a little
        counts = rpc_counts(url, target.cluster_secret)
        per_node[url] = sum(c[0] for c in counts.values())
        for label, values in counts.items():
            total = rpc.setdefault(label, [0, 0, 0, 0])
            for i, v in enumerate(values):
                total[i] += v
    return {"rpc": rpc, "rpc_per_node": per_node, "sent": dict(target.sent),
            "client": time.process_time() + peers.children_cpu(),  # + aws-cli's
            "cpu": cpu_snapshot(target.groups, dict.fromkeys(target.etcd_pids, "etcd"))}


def costs_between(before: dict, after: dict, timing: Timing) -> dict:
    """What the timed phase cost: CPU per wall second by role, node RPC and S3
    requests per endpoint (counted totals; per S3 request in the report)."""
    seconds = timing.seconds
    cpu = {key: (after["cpu"].get(key, 0.0) - before["cpu"].get(key, 0.0)) / seconds
           for key in sorted(set(before["cpu"]) | set(after["cpu"]))}
    rpc = {}
    for label, values in after["rpc"].items():
        old = before["rpc"].get(label, [0, 0, 0, 0])
        delta = [v - o for v, o in zip(values, old)]
        if delta[0]:
            rpc[label] = {"requests": delta[0], "bytes_in": delta[1], "bytes_out": delta[2],
                          "server_seconds": delta[3] / 1e9}
    return {
        "seconds": seconds, "ops": timing.ops,
        "client_cpu": (after["client"] - before["client"]) / seconds,
        "cpu": cpu,
        "main_cpu": sum(v for k, v in cpu.items() if k.endswith("/main")),
        "workers_cpu": sum(v for k, v in cpu.items() if k.endswith("/workers")),
        "etcd_cpu": cpu.get("etcd", 0.0),
        "rpc": dict(sorted(rpc.items(), key=lambda kv: -kv[1]["requests"])),
        "rpc_per_node": {url: after["rpc_per_node"][url] - before["rpc_per_node"].get(url, 0)
                         for url in after["rpc_per_node"]},
        "s3_per_endpoint": {e: n - before["sent"].get(e, 0) for e, n in after["sent"].items()
                            if n - before["sent"].get(e, 0)},
    }


async def measured(target: BenchTarget, phase: Awaitable[Timing],
                   value: Callable[[Timing], float]) -> Measurement:
    """s3_bench.measured, plus the costs of the phase for the report."""
    before = snapshot(target)
    timing = await phase
    after = snapshot(target)
    costs = costs_between(before, after, timing)
    target.costs[target.row] = costs
    servers = (costs["main_cpu"] + costs["workers_cpu"]) * timing.seconds
    return Measurement.from_timing(timing, value(timing), costs["client_cpu"] * timing.seconds,
                                   servers)


async def run_target(target: BenchTarget) -> dict[str, Measurement]:
    """s3_bench's probe (bucket, PUT/GET/DELETE, wrong secret refused), then the rows."""
    await prepare(target, target.options.timeout)
    results = {}
    saved, s3_bench.measured = s3_bench.measured, measured
    try:
        for row in chosen(ROWS, target.options):
            flush_page_cache()
            target.row = row.name
            log(f"{row.name} on {target.name} ...")
            try:
                measurement = await row.run(target)
            except ROW_ERRORS as err:
                measurement = Measurement(value=None, error=f"{type(err).__name__}: {err}")
            log(f"    {format_value(measurement)} {row.unit}")
            results[row.name] = measurement
    finally:
        s3_bench.measured = saved
    flush_page_cache()
    return results


# -- the systems ------------------------------------------------------------------------

def serve_args(options: argparse.Namespace) -> list[str]:
    return ["--workers", str(options.workers), *shlex.split(options.basalt_args)]


@contextlib.contextmanager
def single_node(options: argparse.Namespace, payloads: Payloads):
    """One ``basalt serve``, 3 disks, --ec 2+1 (peers.basalt_server runs it with
    its temp dir as the working directory: the relative disk paths land in its
    data dir)."""
    disks = " ".join(f"--disk data/disks/d{i}" for i in range(1, 4))
    extra = f"{disks} --ec 2+1 {shlex.join(serve_args(options))}"
    with peers.basalt_server(ACCESS_KEY, SECRET_KEY, extra_args=extra, timeout=options.timeout,
                             base_dir=options.dir, keep=options.keep) as server:
        log(f"  single node at {server.endpoint}")
        yield BenchTarget(server, options, payloads, label="single",
                          endpoints=[server.endpoint], groups={"single": server.process.pid}), \
            {"command": server.command}


def basalt_cli(args: list[str], env: dict[str, str], timeout: float = 60
               ) -> subprocess.CompletedProcess:
    binary = peers.find_executable("basalt", "BASALT_BIN")
    return subprocess.run([binary, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@contextlib.contextmanager
def cluster(options: argparse.Namespace, payloads: Payloads):
    """3 etcd members, 3 nodes (one disk, --workers N each), pool --ec 2+1."""
    from tests.cluster.etcd_helpers import EtcdCluster, free_ports

    binary = shutil.which("etcd")
    if binary is None:
        raise peers.ServerError("etcd not installed (Debian packages etcd-server, etcd-client)")
    secret = "clusterbench-" + secrets.token_hex(16)
    with peers.temp_dir("cluster", options.dir, options.keep, prefix="clusterbench") as base, \
            contextlib.ExitStack() as stack:
        etcd = EtcdCluster(Path(base) / "etcd", size=3, binary=binary)
        # Killed last (the nodes stop first); the dir goes with `base` unless --keep.
        stack.callback(lambda: [member.kill() for member in etcd.members])
        try:
            etcd.start()
        except (RuntimeError, AssertionError) as err:
            raise peers.ServerError(f"etcd did not start: {err}") from err
        log(f"  etcd {etcd.endpoints}")
        ports = free_ports(9)  # per node: S3, node RPC, NBD
        env = dict(os.environ, BASALT_ACCESS_KEY=ACCESS_KEY, BASALT_SECRET_KEY=SECRET_KEY,
                   BASALT_CLUSTER_SECRET=secret)
        nodes: list[peers.Server] = []
        for i in range(3):
            name, (s3_port, rpc_port, nbd_port) = f"n{i + 1}", ports[3 * i:3 * i + 3]
            node_dir = os.path.join(base, name)
            os.makedirs(node_dir)
            command = [sys.executable, str(Path(__file__).resolve()), NODE_SHIM,
                       "--data-dir", node_dir, "serve", "--cluster", etcd.endpoints,
                       "--node", name, "--advertise", f"127.0.0.1:{rpc_port}",
                       "--disk", os.path.join(node_dir, "disk"),
                       "--s3-address", f"127.0.0.1:{s3_port}",
                       "--nbd-address", f"127.0.0.1:{nbd_port}", *serve_args(options)]
            process, log_path = stack.enter_context(running(name, command, env, node_dir))
            nodes.append(peers.Server(
                name=name, endpoint=f"http://127.0.0.1:{s3_port}", access_key=ACCESS_KEY,
                secret_key=SECRET_KEY, version=peers._basalt_version(), command=command,
                durability="", data_dir=node_dir, log_path=log_path, process=process))
        rpc_urls = [f"http://127.0.0.1:{ports[3 * i + 1]}" for i in range(3)]
        for node in nodes:  # registered, serving the cluster admin API only
            health = node.endpoint + "/_basalt/health"
            peers.wait_until(lambda h=health: peers.http_status(h) == 503, node.process,
                             options.timeout, f"{node.name} (waiting for 503 from {health})",
                             node.log_path)
        cli_env = dict(env, BASALT_ENDPOINT=nodes[0].endpoint)

        def all_alive() -> bool:
            out = basalt_cli(["--json", "cluster", "status"], cli_env)
            return out.returncode == 0 and sum(
                bool(n.get("alive")) for n in json.loads(out.stdout)["nodes"]) == 3

        peers.wait_until(all_alive, nodes[0].process, options.timeout,
                         "3 nodes alive in `basalt cluster status`", nodes[0].log_path)
        created = basalt_cli(["cluster", "pool", "create", "--ec", "2+1", "--name", "bench",
                              "n1", "n2", "n3"], cli_env)
        if created.returncode != 0:
            raise peers.ServerError(f"pool create failed: {created.stderr}{created.stdout}")
        for node in nodes:  # strict: every disk of the set online on every node, none healing
            health = node.endpoint + "/_basalt/health?strict=1"
            peers.wait_until(lambda h=health: peers.http_status(h) == 200, node.process,
                             options.timeout, f"{node.name} (waiting for 200 from {health})",
                             node.log_path)
        endpoints = [nodes[0].endpoint] if options.one_endpoint else [n.endpoint for n in nodes]
        log(f"  cluster nodes at {', '.join(n.endpoint for n in nodes)}")
        target = BenchTarget(
            nodes[0], options, payloads, label="cluster", endpoints=endpoints,
            groups={n.name: n.process.pid for n in nodes},
            etcd_pids=[m.proc.pid for m in etcd.members], rpc_urls=rpc_urls,
            cluster_secret=secret.encode())
        rpc_counts(rpc_urls[0], target.cluster_secret)  # the counting shim answers
        yield target, {"command": nodes[0].command[2:], "etcd": etcd.endpoints,
                       "endpoints": endpoints, "nodes": {n.endpoint: n.name for n in nodes}}
        log("stopping the cluster ...")


# -- report -------------------------------------------------------------------------------

def summarize(results: dict[str, dict[str, Measurement]], costs: dict[str, dict],
              info: dict, options: argparse.Namespace) -> dict:
    rows = []
    for row in chosen(ROWS, options):
        systems = {}
        for name in SYSTEMS:
            if name not in results:
                continue
            m = results[name][row.name]
            cost = costs[name].get(row.name)
            entry = {**asdict(m), "costs": cost}
            if m.value is not None and cost and cost["ops"]:
                cpu = cost["main_cpu"] + cost["workers_cpu"] + cost["etcd_cpu"]
                entry["server_cpu_ms_per_op"] = cpu * cost["seconds"] / cost["ops"] * 1000
                entry["machine_busy"] = cpu + cost["client_cpu"]
            systems[name] = entry
        single, clustered = results.get("single", {}).get(row.name), \
            results.get("cluster", {}).get(row.name)
        ratio = None
        if single and clustered and single.value and clustered.value:
            ratio = clustered.value / single.value
        target = TARGETS[row.name]
        rows.append({"row": row.name, "unit": row.unit, "target_ratio": target,
                     "ratio": ratio, "systems": systems,
                     "pass": None if ratio is None or target is None else ratio >= target})
    return {
        "rows": rows,
        "systems": info,
        "client": "one endpoint (n1)" if options.one_endpoint else
                  "round-robin over the 3 nodes' S3 endpoints (a load balancer's view)",
        "rpc_counting": "a counting middleware added to each node's disk server by this "
                        "script's node shim (/_basalt/metrics has no node-RPC figures)",
        "settings": {k: getattr(options, k) for k in (
            "seconds", "warmup", "big_count", "big_concurrency", "small_concurrency",
            "small_get_keys", "workers", "basalt_args", "one_endpoint")},
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": options.loadavg_at_start,
                    "loadavg_at_end": os.getloadavg()},
    }


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


def print_report(summary: dict) -> None:
    print("Basalt: single node vs 3-node cluster on this machine "
          f"({summary['machine']['cpus']} CPUs)")
    settings = summary["settings"]
    print(f"  single : basalt serve, 3 disks, --ec 2+1, --workers {settings['workers']}")
    print(f"  cluster: 3 etcd members + 3 nodes x 1 disk, pool --ec 2+1, "
          f"--workers {settings['workers']} each")
    print(f"  client : {summary['client']}")
    print()
    header = f"{'row':<18}{'single':>10}{'cluster':>10}{'cluster/single':>16}  target"
    print(header)
    print("-" * (len(header) + 12))
    for row in summary["rows"]:
        cells = []
        for name in SYSTEMS:
            m = row["systems"].get(name)
            cells.append(format_value(Measurement(**{k: v for k, v in m.items()
                                                     if k in Measurement.__dataclass_fields__}))
                         if m else "-")
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "n/a"
        mark = "" if row["pass"] is None else ("PASS" if row["pass"] else "BELOW")
        target = "-" if row["target_ratio"] is None else f"{row['target_ratio']:.2f}"
        print(f"{row['row'] + ' ' + row['unit']:<18}{cells[0]:>10}{cells[1]:>10}{ratio:>16}"
              f"  {target} {mark}")
    print()
    print("Where the rest goes (timed phase of each row only)")
    print()
    print("latency p50 / p99 ms, and CPU seconds per wall second (2 cores = 2.00) by role:")
    print(f"  {'row':<11} {'system':<8} {'p50':>7} / {'p99':<7}  {'client':>6} {'main':>6} "
          f"{'workers':>7} {'etcd':>6} {'busy':>6}   server CPU per request")
    for row in summary["rows"]:
        for name in SYSTEMS:
            m = row["systems"].get(name)
            if m is None:
                continue
            if m["value"] is None:
                print(f"  {row['row']:<11} {name:<8} FAILED: {m['error']}")
                continue
            c = m["costs"]
            etcd = f"{c['etcd_cpu']:6.2f}" if name == "cluster" else f"{'-':>6}"
            print(f"  {row['row']:<11} {name:<8} {m['p50_ms']:7.1f} / {m['p99_ms']:<7.1f}  "
                  f"{c['client_cpu']:6.2f} {c['main_cpu']:6.2f} {c['workers_cpu']:7.2f} {etcd} "
                  f"{m['machine_busy']:6.2f}   {m['server_cpu_ms_per_op']:.2f} ms")
        single, clustered = row["systems"].get("single"), row["systems"].get("cluster")
        if single and clustered and single["value"] and clustered["value"]:
            print(f"  {'':<11} {'':<8} cluster/single server CPU per request: "
                  f"{clustered['server_cpu_ms_per_op'] / single['server_cpu_ms_per_op']:.2f}x")
    print("  (main: each server's main process: disk owner, in a cluster also the node-RPC "
          "server;\n   workers: S3 workers: S3, erasure coding, node-RPC client; busy: all of "
          "it + client)")
    print()
    print("node RPC per S3 request (cluster), counted by " + summary["rpc_counting"] + ":")
    print("  count per S3 request, request body bytes (to the serving node) and response body "
          "bytes\n  per S3 request, and the serving node's mean handler time per RPC request")
    names = summary["systems"].get("cluster", {}).get("nodes", {})
    for row in summary["rows"]:
        m = row["systems"].get("cluster")
        if not m or m["value"] is None:
            continue
        c = m["costs"]
        ops = max(1, c["ops"])
        rpc = c["rpc"].values()
        total = {k: sum(v[k] for v in rpc) for k in ("requests", "bytes_in", "bytes_out")}
        spread = ", ".join(f"{names.get(e, e)} {n}" for e, n in c["s3_per_endpoint"].items()
                           ) or "aws-cli's, to n1"
        served = c["main_cpu"] * c["seconds"] / max(1, total["requests"]) * 1000
        print(f"  {row['row']}: {total['requests'] / ops:.2f} RPC requests, "
              f"{_mb(total['bytes_in'] / ops)} to peers, {_mb(total['bytes_out'] / ops)} back "
              f"per S3 request ({c['ops']} S3 requests: {spread});\n    main processes' CPU "
              f"per RPC request served: {served:.2f} ms")
        for label, v in list(c["rpc"].items())[:8]:
            count = v["requests"] / ops
            count = f"{count:7.2f}" if count >= 0.01 else f"{'<0.01':>7}"
            print(f"    {count}  {label:<42} {_mb(v['bytes_in'] / ops):>9} "
                  f"{_mb(v['bytes_out'] / ops):>9} {v['server_seconds'] / v['requests'] * 1000:8.2f} ms")
        if len(c["rpc"]) > 8:
            print(f"    ... {len(c['rpc']) - 8} more kinds (see --json)")
    print()
    machine = summary["machine"]
    print(f"single node measured first, then the cluster (only the system under test runs "
          f"during its rows); load average at start "
          f"{', '.join(f'{x:.2f}' for x in machine['loadavg_at_start'])}, at end "
          f"{', '.join(f'{x:.2f}' for x in machine['loadavg_at_end'])}; every PUT ETag checked "
          f"against MD5, every GET compared byte for byte; MB = 10^6 bytes")


# -- main -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=SYSTEMS, help="measure one system only (no ratios)")
    parser.add_argument("--one-endpoint", action="store_true",
                        help="send every cluster request to node 1 (default: round-robin)")
    parser.add_argument("--workers", type=int, default=1,
                        help="S3 workers of the single node and of each cluster node (default 1)")
    s3_bench.add_row_options(parser)
    parser.add_argument("--basalt-args", default="",
                        help='extra arguments for every "basalt serve", e.g. "--no-fsync"')
    parser.add_argument("--dir", help="parent of the temp data dirs (default $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for a server or the cluster to be ready")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    options = parser.parse_args(argv)
    options.versioning = False  # what s3_bench's prepare() asks
    options.loadavg_at_start = os.getloadavg()
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    # Ctrl-C and SIGTERM raise KeyboardInterrupt, which unwinds the context
    # managers: nodes and servers stopped (group SIGTERM, then SIGKILL), etcd
    # members killed, temp dirs removed.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    payloads = Payloads()
    results: dict[str, dict[str, Measurement]] = {}
    costs: dict[str, dict] = {}
    info: dict[str, dict] = {}
    try:
        for name, system in (("single", single_node), ("cluster", cluster)):
            if options.only and options.only != name:
                continue
            log(f"starting {name} ...")
            with system(options, payloads) as (target, details):
                results[name] = run_async(run_target(target))
                costs[name] = target.costs
                info[name] = details
    except peers.ServerError as err:
        log(f"error: {err}")
        return 2
    except KeyboardInterrupt:
        log("interrupted; everything stopped and removed")
        return 130
    finally:
        if getattr(options, "cp_path", None) and os.path.exists(options.cp_path):
            os.unlink(options.cp_path)
    summary = summarize(results, costs, info, options)
    if options.json:
        print(json.dumps(summary, indent=2))
    else:
        print_report(summary)
    failed = any(m["value"] is None for row in summary["rows"] for m in row["systems"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
