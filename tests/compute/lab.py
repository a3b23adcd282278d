"""The compute end-to-end lab: a namespace with libvirtd, Basalt networks and a Basalt server.

Everything lives in one network namespace the lab creates (bridges, taps,
dnsmasq, nft table, libvirtd and its QEMUs) plus one temporary directory
(libvirtd's private state, the Basalt data dir, the NBD socket, the guest's
initramfs). `close()` undoes all of it in reverse order, and every step of the
teardown runs even when an earlier one fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid


def run(*argv: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def kill_namespace(name: str) -> None:
    """SIGKILL every process in network namespace `name` (one the test made), then delete it."""
    deadline = time.monotonic() + 10
    while True:
        pids = run("ip", "netns", "pids", name, check=False).stdout.split()
        if not pids or time.monotonic() > deadline:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.05)
    run("ip", "netns", "del", name, check=False)


def missing_tools() -> list[str]:
    tools = ("ip", "libvirtd", "unshare", "qemu-system-x86_64", "qemu-io", "dnsmasq", "nft",
             "busybox", "sysctl")
    return [t for t in tools if shutil.which(t) is None]


class Namespaces:
    """Uniquely named network namespaces, all removed by `close()`."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def make(self, role: str) -> str:
        name = f"bslt-{role[:4]}-{uuid.uuid4().hex[:8]}"
        run("ip", "netns", "add", name)
        self.created.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def close(self) -> None:
        for name in reversed(self.created):
            kill_namespace(name)
        self.created.clear()


class VethClient:
    """A guest stand-in: its own namespace whose eth0 is a veth port on a bridge."""

    def __init__(self, namespaces: Namespaces, host_ns: str, bridge: str, script_dir: str):
        from .guest import UDHCPC_SCRIPT

        self.ns = namespaces.make("cli")
        self.host_ns = host_ns
        self.port = port = "vc-" + uuid.uuid4().hex[:8]
        run("ip", "-n", host_ns, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", self.ns)
        run("ip", "-n", host_ns, "link", "set", port, "master", bridge, "up")
        run("ip", "-n", self.ns, "link", "set", "eth0", "up")
        self.script = os.path.join(script_dir, "udhcpc.sh")
        with open(self.script, "w") as f:
            f.write(UDHCPC_SCRIPT.replace("/tmp/lease", os.path.join(script_dir, "lease")))
        os.chmod(self.script, 0o755)

    def dhcp(self) -> str:
        result = run("ip", "netns", "exec", self.ns, "busybox", "udhcpc", "-f", "-q", "-n",
                     "-i", "eth0", "-t", "10", "-T", "1", "-s", self.script, check=False)
        assert result.returncode == 0, f"udhcpc failed: {result.stdout}{result.stderr}"
        out = run("ip", "-n", self.ns, "-4", "-o", "addr", "show", "dev", "eth0").stdout.split()
        return out[out.index("inet") + 1].split("/")[0]

    def ping(self, address: str, tries: int = 2) -> bool:
        return ping(self.ns, address, tries)

    def unplug(self) -> None:
        """Take the client's port off the bridge (the veth pair goes with it)."""
        run("ip", "-n", self.host_ns, "link", "del", self.port, check=False)


def ping(ns: str, address: str, tries: int = 2) -> bool:
    result = run("ip", "netns", "exec", ns, "ping", "-n", "-c", str(tries), "-i", "0.2",
                 "-W", "1", address, check=False)
    return result.returncode == 0


def short_tmpdir(prefix: str) -> str:
    """A temp dir under /tmp: Unix socket paths inside it must stay under 108 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")
