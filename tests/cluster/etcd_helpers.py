"""A real etcd cluster on 127.0.0.1 for tests: free ports, member processes, health.

Reusable by any suite (``from tests.cluster.etcd_helpers import EtcdCluster``):

    cluster = EtcdCluster(tmp_dir, size=3).start()
    cluster.endpoints          # "etcd://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
    cluster.kill(0); cluster.start(0)
    cluster.stop()             # SIGKILL + wait every member, remove the data dirs

Members run with fast raft timings (heartbeat 50 ms, election 500 ms) so a lost
leader is replaced within about a second. Each member dies with the test process
(PR_SET_PDEATHSIG) even if pytest itself is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

HEARTBEAT_MS = 50
ELECTION_MS = 500


def require_etcd() -> str:
    """Path of the ``etcd`` binary; skip without it (fail in CI, where it must be installed)."""
    path = shutil.which("etcd")
    if path is None:
        message = "etcd not installed (Debian packages etcd-server, etcd-client)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _listen_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range: between a test picking one and
    its server binding it, no outgoing connection can take it as its own
    (a port the kernel hands out, bind(0), can be: EADDRINUSE in the server)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(1024, low - 12000), low - 1


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now, outside the
    ephemeral range (all held open until every one is picked, so none is handed
    out twice)."""
    low, high = _listen_range()
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", random.randint(low, high) if high > low else 0))
            except OSError:  # taken: another
                sock.close()
                continue
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process goes away."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_process(args: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``args`` with stdout+stderr appended to ``log_path``, killed with the test run."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)


def kill_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGKILL and reap (no zombie left behind)."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait(timeout=timeout)


def http_json(url: str, timeout: float = 1.0) -> dict | None:
    """GET ``url`` as JSON, None when unreachable or not JSON."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except Exception:
        return None


def post_json(url: str, body: dict, timeout: float = 5.0) -> dict:
    """POST ``body`` as JSON to etcd's gateway, the answer's JSON."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())


class EtcdMember:
    def __init__(self, name: str, base: Path, client_port: int, peer_port: int):
        self.name = name
        self.dir = base / name
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "etcd.log"
        self.client_port = client_port
        self.peer_port = peer_port
        self.proc: subprocess.Popen | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, binary: str, initial_cluster: str, state: str) -> None:
        assert not self.running, f"{self.name} is already running"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = start_process([
            binary, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", initial_cluster, "--initial-cluster-state", state,
            "--initial-cluster-token", f"basalt-test-{os.getpid()}",
            "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
        ], self.log_path)

    def kill(self) -> None:
        kill_process(self.proc)

    def healthy(self) -> bool:
        """Serving, with a leader (etcd's /health checks both)."""
        body = http_json(self.client_url + "/health")
        return bool(body) and body.get("health") == "true"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class EtcdCluster:
    """``size`` etcd members on 127.0.0.1, each with its own data dir under ``base``."""

    def __init__(self, base: Path, size: int = 3, binary: str | None = None):
        self.base = Path(base)
        self.size = size
        self.binary = binary or require_etcd()
        self.members: list[EtcdMember] = []

    @property
    def endpoints(self) -> str:
        """The ``etcd://H:P,H:P,...`` URL of every member, member 0 first."""
        return "etcd://" + ",".join(f"127.0.0.1:{m.client_port}" for m in self.members)

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def index_of(self, endpoint: str) -> int:
        """The member serving client URL ``endpoint`` (``http://127.0.0.1:P``)."""
        port = int(endpoint.rstrip("/").rsplit(":", 1)[1])
        return next(i for i, m in enumerate(self.members) if m.client_port == port)

    def start(self, index: int | None = None, timeout: float = 20.0) -> EtcdCluster:
        """Without ``index``: bootstrap the whole cluster (new data dirs) and wait
        until every member is healthy; ports taken meanwhile by someone else are
        retried with fresh ones. With ``index``: restart that member on its data dir
        (``--initial-cluster-state existing``) without waiting."""
        if index is not None:
            self.members[index].start(self.binary, self.initial_cluster, "existing")
            return self
        for attempt in range(3):
            ports = free_ports(2 * self.size)
            self.members = [EtcdMember(f"m{i}", self.base / f"try{attempt}", ports[2 * i],
                                       ports[2 * i + 1]) for i in range(self.size)]
            for member in self.members:
                member.start(self.binary, self.initial_cluster, "new")
            try:
                self.wait_healthy(timeout=timeout)
                return self
            except RuntimeError:
                crashed = [m for m in self.members if not m.running]
                self.stop()
                if not crashed or attempt == 2:   # hung rather than a port clash: give up
                    raise
        raise AssertionError("unreachable")

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` (its data dir stays for ``start(index)``)."""
        self.members[index].kill()

    def wait_healthy(self, indexes: list[int] | None = None, timeout: float = 20.0) -> None:
        """Until the members (default: all) are running and report a leader."""
        chosen = [self.members[i] for i in (range(self.size) if indexes is None else indexes)]
        deadline = time.monotonic() + timeout
        while True:
            dead = [m for m in chosen if not m.running]
            if dead:
                raise RuntimeError(f"etcd member {dead[0].name} exited:\n{dead[0].log_tail()}")
            if all(m.healthy() for m in chosen):
                return
            if time.monotonic() > deadline:
                sick = next(m for m in chosen if not m.healthy())
                raise RuntimeError(f"etcd member {sick.name} not healthy in {timeout} s:\n"
                                   f"{sick.log_tail()}")
            time.sleep(0.05)

    def clear(self) -> None:
        """Delete every key and revoke every lease, as if the cluster were new (its
        revisions go on): for a cluster shared by tests that never stop a member."""
        url = self.members[0].client_url
        post_json(url + "/v3/kv/deleterange", {"key": "AA==", "range_end": "AA=="})  # all keys
        for lease in post_json(url + "/v3/lease/leases", {}).get("leases", []):
            post_json(url + "/v3/lease/revoke", {"ID": lease["ID"]})

    def stop(self) -> None:
        """SIGKILL and reap every member, remove every data dir."""
        for member in self.members:
            member.kill()
        shutil.rmtree(self.base, ignore_errors=True)
