"""A Basalt cluster whose nodes are separate hosts: one network namespace each.

    with NetnsCluster(logs_to=tmp_path, nodes=4) as c:  # bridge, namespaces, etcd, nodes
        c.create_pool("3+1")                    # then until every node serves S3
        c.node(0).client().put_object(...)      # conftest.Server objects
        c.partition(3); c.heal_partition(3)     # node n4's link down / up
        c.kill_node(1); c.start_node(1)         # SIGKILL n2's process group; restart it
        c.spawn_in(3, [...], stdout=PIPE)       # a client beside n4, inside its namespace

The topology, all of it made here and removed on exit (even when the test or the
set-up failed):

* a bridge ``bsl<hex>`` in the root namespace with 10.R.0.254/24 (R random, and
  not a subnet the host already routes), through which the test process reaches
  every node's S3 port;
* N namespaces ``bsl-<hex>-<i>``, each with ``lo`` up and ``eth0`` at
  10.R.0.(i+1)/24, the other end of the veth pair (``bv<hex>-<i>``) a port of the
  bridge. ``partition(i)`` sets that bridge-side end down: the namespace keeps its
  address (its own processes and clients inside it still reach it) but every
  packet to or from the rest is dropped, as with a pulled cable;
* etcd members (default 3) in namespaces 0..M-1 on port 2379 (peers on 2380);
* ``basalt serve --cluster`` node ``n<i+1>`` in namespace i, S3 on
  10.R.0.(i+1):9000 and the node RPC on 10.R.0.(i+1):9100, one disk, one worker.

Every process is started in its own session through ``ip netns exec`` (so the
whole group can be killed) with PR_SET_PDEATHSIG (it dies if the test process
does; start processes from the main thread: the signal follows the thread that
forked). Teardown kills those groups, then anything still inside the namespaces
(only the test's own processes can be there), deletes the namespaces, the
veths and the bridge, and removes the temporary directory (data dirs, disks,
etcd) after copying the logs (``*.log``) to ``logs_to`` when given.

Needs root and ``ip netns``: without them the test is skipped with the reason,
except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.etcd_helpers import ELECTION_MS, HEARTBEAT_MS, EtcdMember, require_etcd
from tests.e2e.conftest import ACCESS, BASALT, SECRET, Server

CLUSTER_SECRET = "a-cluster-secret-for-the-netns-tests-0123456789"
S3_PORT, RPC_PORT, ETCD_CLIENT_PORT, ETCD_PEER_PORT = 9000, 9100, 2379, 2380


def _fail_or_skip(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def require_netns() -> None:
    """Skip (fail under CI) unless this process can make namespaces and bridges."""
    if os.geteuid() != 0:
        _fail_or_skip("needs root: the test creates network namespaces, veths and a bridge")
    if shutil.which("ip") is None:
        _fail_or_skip("needs iproute2's `ip` (Debian package iproute2)")
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        _fail_or_skip(f"`ip netns` is unavailable: {probe.stderr.strip()}")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip ARGS``; raise with its stderr when it fails and ``check``."""
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {out.stderr.strip()}")
    return out


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process goes away."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _routed_subnets() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the root namespace has a route or address for."""
    nets = []
    for line in ip("-4", "route", "show", "table", "all").stdout.splitlines() + \
            ip("-4", "-o", "addr", "show").stdout.split("\n"):
        for word in line.split():
            if "." in word and word[0].isdigit():
                with contextlib.suppress(ValueError):
                    nets.append(ipaddress.ip_network(word, strict=False))
    return nets


def _pick_subnet() -> int:
    """A random R such that 10.R.0.0/24 clashes with nothing the host routes
    (a default route is not a clash: ours is more specific)."""
    taken = [n for n in _routed_subnets() if n.prefixlen > 0]
    for _ in range(200):
        r = random.randint(20, 250)
        mine = ipaddress.ip_network(f"10.{r}.0.0/24")
        if not any(mine.overlaps(n) for n in taken):
            return r
    raise RuntimeError("no free 10.R.0.0/24 subnet for the test bridge")


class NetnsEtcdMember(EtcdMember):
    """An etcd member of tests/cluster/etcd_helpers.py listening on a namespace's
    address (the helpers' members listen on 127.0.0.1 of the root namespace)."""

    def __init__(self, name: str, base: Path, host: str, cluster: NetnsCluster, ns: str):
        super().__init__(name, base, ETCD_CLIENT_PORT, ETCD_PEER_PORT)
        self.host, self.cluster, self.ns = host, cluster, ns

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def start(self, binary: str, initial_cluster: str, state: str) -> None:
        assert not self.running, f"{self.name} is already running"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = self.cluster.run_in(self.ns, [
            binary, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", initial_cluster, "--initial-cluster-state", state,
            "--initial-cluster-token", f"basalt-netns-{self.cluster.tag}",
            "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
        ], self.log_path)

    def kill(self) -> None:
        if self.proc is not None:
            self.cluster.kill_group(self.proc)


class NetnsCluster:
    """``nodes`` Basalt nodes and ``etcd_members`` etcd members, each node in its
    own namespace on one bridge (see the module's docstring)."""

    def __init__(self, logs_to: str | Path | None = None, nodes: int = 4, etcd_members: int = 3,
                 workers: int = 1) -> None:
        if not 1 <= etcd_members <= nodes:
            raise ValueError("the etcd members live in the nodes' namespaces: 1..nodes of them")
        self.size, self.etcd_size, self.workers = nodes, etcd_members, workers
        self.tag = uuid.uuid4().hex[:8]
        self.bridge = f"bsl{self.tag}"                                  # 11 chars
        self.namespaces = [f"bsl-{self.tag}-{i}" for i in range(nodes)]
        self.veths = [f"bv{self.tag}-{i}" for i in range(nodes)]       # <= 15 chars
        self.r = 0
        self.logs_to = Path(logs_to) if logs_to is not None else None
        self.base = Path(tempfile.mkdtemp(prefix="basalt-netns-"))
        self.nodes: list[Server | None] = [None] * nodes
        self.etcd: list[NetnsEtcdMember] = []
        self._procs: list[subprocess.Popen] = []
        self._made_ns: list[str] = []
        self._made_links: list[str] = []

    # addresses --------------------------------------------------------------------

    def addr(self, i: int) -> str:
        """The address of namespace ``i`` (node ``n{i+1}``)."""
        return f"10.{self.r}.0.{i + 1}"

    @property
    def host_addr(self) -> str:
        """The root namespace's address on the bridge."""
        return f"10.{self.r}.0.254"

    @property
    def etcd_url(self) -> str:
        return "etcd://" + ",".join(f"{m.host}:{m.client_port}" for m in self.etcd)

    def name(self, i: int) -> str:
        return f"n{i + 1}"

    # the network ------------------------------------------------------------------

    def __enter__(self) -> NetnsCluster:
        require_netns()
        etcd_binary = require_etcd()
        try:
            self._make_network()
            self._start_etcd(etcd_binary)
            for i in range(self.size):
                self.start_node(i)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _make_network(self) -> None:
        self.r = _pick_subnet()
        ip("link", "add", self.bridge, "type", "bridge", "forward_delay", "0")
        self._made_links.append(self.bridge)
        ip("addr", "add", f"{self.host_addr}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i, (ns, veth) in enumerate(zip(self.namespaces, self.veths)):
            ip("netns", "add", ns)
            self._made_ns.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._made_links.append(veth)
            ip("link", "set", veth, "master", self.bridge, "up")
            ip("-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        deadline = time.monotonic() + 10
        for i in range(self.size):
            while subprocess.run(["ping", "-n", "-q", "-c1", "-W1", self.addr(i)],
                                 capture_output=True).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"namespace {i} ({self.addr(i)}) unreachable over the bridge")
                time.sleep(0.1)

    def partition(self, i: int) -> None:
        """Cut namespace ``i`` off the bridge (its link down): nothing gets in or out."""
        ip("link", "set", self.veths[i], "down")

    def heal_partition(self, i: int) -> None:
        """Plug namespace ``i`` back in."""
        ip("link", "set", self.veths[i], "up")
        deadline = time.monotonic() + 10
        while subprocess.run(["ping", "-n", "-q", "-c1", "-W1", self.addr(i)],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"namespace {i} still unreachable after its link came up")
            time.sleep(0.1)

    # processes --------------------------------------------------------------------

    def run_in(self, ns: int | str, args: Sequence[str], log_path: str | Path,
               env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``args`` inside namespace ``ns`` (index or name) in a new session,
        stdout+stderr appended to ``log_path``; killed at teardown at the latest."""
        with open(log_path, "ab") as log:
            return self.spawn_in(ns, args, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT)

    def spawn_in(self, ns: int | str, args: Sequence[str], **popen: Any) -> subprocess.Popen:
        """``subprocess.Popen(args, **popen)`` inside namespace ``ns`` in a new session
        (pipes and all up to the caller); killed at teardown at the latest."""
        name = self.namespaces[ns] if isinstance(ns, int) else ns
        proc = subprocess.Popen(["ip", "netns", "exec", name, *args], start_new_session=True,
                                preexec_fn=_die_with_parent, **popen)
        self._procs.append(proc)
        return proc

    def exec_in(self, ns: int | str, args: Sequence[str], timeout: float,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run ``args`` inside namespace ``ns`` to completion (text output captured)."""
        name = self.namespaces[ns] if isinstance(ns, int) else ns
        return subprocess.run(["ip", "netns", "exec", name, *args], env=env, capture_output=True,
                              text=True, timeout=timeout, start_new_session=True)

    @staticmethod
    def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal ``proc``'s whole process group (it leads its own session) and reap it
        when the signal is SIGKILL."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        if sig == signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # workers left behind by a dead main
            proc.wait(timeout=30)

    def _start_etcd(self, binary: str) -> None:
        base = self.base / "etcd"
        self.etcd = [NetnsEtcdMember(f"m{i}", base, self.addr(i), self, self.namespaces[i])
                     for i in range(self.etcd_size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.etcd)
        for member in self.etcd:
            member.start(binary, initial, "new")
        deadline = time.monotonic() + 30
        while not all(m.healthy() for m in self.etcd):
            dead = [m for m in self.etcd if not m.running]
            if dead:
                raise RuntimeError(f"etcd member {dead[0].name} exited:\n{dead[0].log_tail()}")
            if time.monotonic() > deadline:
                sick = next(m for m in self.etcd if not m.healthy())
                raise RuntimeError(f"etcd member {sick.name} not healthy:\n{sick.log_tail()}")
            time.sleep(0.1)

    def node_dir(self, i: int) -> Path:
        return self.base / self.name(i)

    def start_node(self, i: int) -> Server:
        """Start (or restart, on its data dir and disk) node ``n{i+1}`` in namespace ``i``."""
        old = self.nodes[i]
        if old is not None and old.proc.poll() is None:
            raise RuntimeError(f"{self.name(i)} is already running")
        data_dir = self.node_dir(i)
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = data_dir / "serve.log"
        with open(log_path, "a") as log:
            log.write(f"---- start at {time.strftime('%H:%M:%S')}\n")
        args = [BASALT, "--data-dir", str(data_dir), "serve", "--cluster", self.etcd_url,
                "--node", self.name(i), "--advertise", f"{self.addr(i)}:{RPC_PORT}",
                "--disk", str(data_dir / "disk"), "--s3-address", f"{self.addr(i)}:{S3_PORT}",
                "--workers", str(self.workers)]
        env = dict(os.environ, BASALT_ACCESS_KEY=ACCESS, BASALT_SECRET_KEY=SECRET,
                   BASALT_CLUSTER_SECRET=CLUSTER_SECRET)
        proc = self.run_in(i, args, log_path, env=env)
        server = Server(proc, str(data_dir), f"http://{self.addr(i)}:{S3_PORT}", 0, None,
                        str(log_path))
        self.nodes[i] = server
        return server

    def kill_node(self, i: int) -> None:
        """SIGKILL node ``i``'s main process and workers (its whole process group)."""
        server = self.nodes[i]
        assert server is not None
        self.kill_group(server.proc)

    def node(self, i: int) -> Server:
        server = self.nodes[i]
        assert server is not None, f"{self.name(i)} was never started"
        return server

    # the cluster ------------------------------------------------------------------

    def health(self, i: int) -> int:
        """HTTP status of node ``i``'s health endpoint (0: no answer)."""
        return self.health_report(i)[0]

    def health_report(self, i: int) -> tuple[int, dict]:
        """Node ``i``'s health: (HTTP status, body) -- (0, {}) when it does not answer.
        The body's ``status`` is ``ok`` only with every disk of its set online and
        none being healed."""
        try:
            with urllib.request.urlopen(self.node(i).endpoint + "/_basalt/health", timeout=2) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as exc:
            with contextlib.suppress(ValueError):
                return exc.code, json.load(exc)
            return exc.code, {}
        except (OSError, ValueError):
            return 0, {}

    def sees_every_disk(self, via: int) -> bool:
        """Node ``via`` has every disk of its set attached (online or being healed)."""
        disks = self.health_report(via)[1].get("disks") or []
        return len(disks) > 0 and all(d.get("state") != "offline" for d in disks)

    def settled(self, nodes: Sequence[int] | None = None) -> bool:
        """Every node in ``nodes`` (default: all) reports health ``ok``."""
        return all(self.health_report(i)[1].get("status") == "ok"
                   for i in (range(self.size) if nodes is None else nodes))

    def status(self, via: int = 0) -> dict:
        """``basalt cluster status --json`` through node ``via``."""
        return json.loads(self.node(via).cli("cluster", "status", "--json", timeout=60).stdout)

    def alive(self, via: int) -> set[str]:
        """Names of the nodes node ``via`` sees alive in etcd."""
        return {n["name"] for n in self.status(via)["nodes"] if n["alive"]}

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 60,
                 running: Sequence[int] | None = None) -> None:
        """Until ``predicate()``; fails with the nodes' logs on timeout or when a
        node in ``running`` (default: every started node) exits meanwhile."""
        watch = range(self.size) if running is None else running
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in watch:
                node = self.nodes[i]
                if node is not None and node.proc.poll() is not None:
                    raise AssertionError(f"{self.name(i)} exited while waiting for {what}:\n"
                                         + node.log()[-3000:])
            try:
                if predicate():
                    return
            except (OSError, AssertionError, ValueError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n" + self.logs())

    def create_pool(self, ec: str = "3+1", name: str = "p1") -> None:
        """Once every node is registered: ``basalt cluster pool create --ec EC`` over
        every node, then until every node serves S3 with every disk online and
        healed (health ``ok``): until then a node can answer 200 to health and yet
        503 to a CreateBucket, since its freshly formatted disks are all still
        being healed and cannot vouch that a name is free."""
        everyone = {self.name(i) for i in range(self.size)}
        self.wait_for(lambda: self.alive(0) == everyone, "every node registered")
        self.node(0).cli("cluster", "pool", "create", "--ec", ec, "--name", name,
                         *sorted(everyone))
        self.wait_for(self.settled, "every node serving S3 with every disk healed")

    def logs(self, tail: int = 4000) -> str:
        parts = []
        for i, node in enumerate(self.nodes):
            if node is not None:
                with contextlib.suppress(OSError):
                    parts.append(f"==== {self.name(i)} ({self.addr(i)})\n{node.log()[-tail:]}")
        return "\n".join(parts)

    # teardown ---------------------------------------------------------------------

    def close(self) -> None:
        """Kill every process started here, delete namespaces, veths and bridge, and
        the temporary directory. Never raises (a failed step is printed)."""
        for proc in self._procs:
            try:
                self.kill_group(proc)
            except Exception as exc:  # pragma: no cover - best effort
                print(f"netns cluster teardown: {proc.args}: {exc}", file=sys.stderr)
        for ns in self._made_ns:
            # Only the test's own processes can be inside its namespaces.
            pids = ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            deadline = time.monotonic() + 5
            while pids and ip("netns", "pids", ns, check=False).stdout.strip():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        for ns in reversed(self._made_ns):
            out = ip("netns", "del", ns, check=False)
            if out.returncode != 0:
                print(f"netns cluster teardown: netns del {ns}: {out.stderr}", file=sys.stderr)
        for link in reversed(self._made_links):
            if ip("link", "show", link, check=False).returncode == 0:
                ip("link", "del", link, check=False)
        self._made_ns.clear()
        self._made_links.clear()
        if self.logs_to is not None:
            for log in self.base.rglob("*.log"):
                with contextlib.suppress(OSError):
                    target = self.logs_to / log.relative_to(self.base)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(log, target)
        shutil.rmtree(self.base, ignore_errors=True)
