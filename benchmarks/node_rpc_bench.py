#!/usr/bin/env python3
"""The node RPC's two transports in one run: the data channel against the HTTP routes.

A cluster node reaches another node's disks through storaged.remote_disk; shard
bytes and metadata go over the data channel (storaged/data_channel.py) and, for
a node over TLS or one that answers the upgrade 404, over the node API's HTTP
routes. This runs one disk server (storaged.disk_server.disk_app in its own
process, 127.0.0.1, a fresh temp dir removed at the end) and one client, and
measures each row over both transports, one after the other:

- 1 MiB shard writes and reads (4 threads, as the engine's I/O threads do);
- metadata queries and commits from the event loop (16 concurrent).

Reported per operation: ops/s, and the CPU each side spent (server from /proc,
client from getrusage), with the channel/HTTP ratios.

    .venv/bin/python benchmarks/node_rpc_bench.py [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SECRET = b"node-rpc-bench-secret-0123456789"
MIB = 1 << 20
THREADS = 4
TASKS = 16


def _serve(root: str, ready: multiprocessing.Queue) -> None:
    import uvloop
    from aiohttp import web

    from storaged.disk import LocalDisk
    from storaged.disk_server import disk_app
    from storaged.format import assemble
    from storaged.store import BLOCK_SIZE

    slots = assemble([os.path.join(root, f"d{i}") for i in range(3)], 2, 1, BLOCK_SIZE)
    disk = LocalDisk(slots[2], sync=True)
    disk.open()

    async def main() -> None:
        runner = web.AppRunner(disk_app([disk], SECRET, "bench"), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        ready.put((runner.addresses[0][1], disk.format.to_json()))
        await asyncio.Event().wait()

    uvloop.run(main())


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(pid: int, run, count: int) -> dict:
    server, client, started = _cpu_seconds(pid), _own_cpu(), time.perf_counter()
    run(count)
    wall = time.perf_counter() - started
    return {"ops_per_s": count / wall,
            "server_ms_per_op": 1000 * (_cpu_seconds(pid) - server) / count,
            "client_ms_per_op": 1000 * (_own_cpu() - client) / count}


def rows(remote, pid: int, label: str) -> dict[str, dict]:
    """The rows over ``remote``'s transport (``label``: a hex digit naming its files)."""
    from storaged.metadb import PutBucketConfig

    payload = os.urandom(MIB)

    def writes(count: int) -> None:
        def run(k: int) -> None:
            writer = remote.create_shard(f"{label}{k:02x}".ljust(32, "0"), 1)
            for i in range(count // THREADS):
                writer.write([payload], i * MIB)
            writer.commit()
        _threads(run)

    def reads(count: int) -> None:
        def run(k: int) -> None:
            buf = bytearray(MIB)
            vid = f"{label}{k:02x}".ljust(32, "0")
            for i in range(count // THREADS):
                remote.read_shard(vid, 1, (i % 16) * MIB, [buf])
        _threads(run)

    def queries(count: int) -> None:
        async def run() -> None:
            for i in range(count // TASKS):
                await remote.read("object_view", "b", f"k{i}", True, True)
        asyncio.run(_gather(run, remote))

    def commits(count: int) -> None:
        async def run() -> None:
            for i in range(count // TASKS):
                await remote.commit([PutBucketConfig(f"b{label}", "tagging", i + 1, b"t")])
        asyncio.run(_gather(run, remote))

    return {"1 MiB shard write": measure(pid, writes, 256),
            "1 MiB shard read": measure(pid, reads, 256),
            "metadata query": measure(pid, queries, 3200),
            "metadata commit": measure(pid, commits, 1600)}


async def _gather(run, remote) -> None:
    try:
        await asyncio.gather(*(run() for _ in range(TASKS)))
    finally:
        remote.client.release(remote)  # close this loop's channels before it ends
        remote.client.use(remote)


def _threads(run) -> None:
    """``run(k)`` in THREADS threads; the first failure is raised here."""
    failures: list[BaseException] = []

    def guarded(k: int) -> None:
        try:
            run(k)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args()
    from storaged.format import DiskFormat
    from storaged.remote_disk import RemoteDisk

    root = tempfile.mkdtemp(prefix="node-rpc-bench-")
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads
    ready = spawn.Queue()
    server = spawn.Process(target=_serve, args=(root, ready), daemon=True)
    try:
        server.start()
        port, fmt = ready.get(timeout=60)
        fmt = DiskFormat.from_json(fmt)
        results = {}
        for transport in ("http", "channel"):
            remote = RemoteDisk(f"http://127.0.0.1:{port}", fmt.disk_id, 2, fmt, SECRET, "bench",
                                caller="node-rpc-bench")
            remote.client._channel_ok = transport == "channel"
            remote.client.use(remote)
            results[transport] = rows(remote, server.pid, "a" if transport == "http" else "c")
            remote.close()
    finally:
        if server.pid is not None:
            server.kill()
            server.join(10)
        shutil.rmtree(root, ignore_errors=True)
    report = {"machine": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
              "results": results}
    if options.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"node RPC: data channel vs HTTP routes, one disk server, this machine "
          f"({os.cpu_count()} CPUs); CPU in ms per operation")
    print(f"{'row':20} {'transport':9} {'ops/s':>8} {'server':>8} {'client':>8}")
    for row in results["http"]:
        for transport in ("http", "channel"):
            r = results[transport][row]
            print(f"{row:20} {transport:9} {r['ops_per_s']:8,.0f} {r['server_ms_per_op']:8.3f} "
                  f"{r['client_ms_per_op']:8.3f}")
        h, c = results["http"][row], results["channel"][row]
        print(f"{'':20} {'ratio':9} {c['ops_per_s'] / h['ops_per_s']:7.2f}x "
              f"{c['server_ms_per_op'] / h['server_ms_per_op']:7.2f}x "
              f"{c['client_ms_per_op'] / h['client_ms_per_op']:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
