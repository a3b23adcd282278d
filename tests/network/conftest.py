"""Fixtures for the network tests: throw-away namespaces, managers and clients.

Every kernel object a test makes lives in a network namespace the test
created; removing the namespace (after killing the processes inside it)
removes every bridge, tap, veth and nft table in it, even when the test failed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from network.manager import NetworkManager, unavailable_reason

_reason = unavailable_reason()
if _reason is None and shutil.which("busybox") is None:
    _reason = "missing tools: busybox (udhcpc)"

UDHCPC_SCRIPT = """#!/bin/sh
# busybox udhcpc hook: configure what the server handed out.
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$subnet" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    ;;
esac
exit 0
"""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def _kill_namespace_processes(name: str) -> None:
    # Only processes inside a namespace this test created: dnsmasq, udhcpc.
    result = run("ip", "netns", "pids", name, check=False)
    for pid in (int(p) for p in result.stdout.split()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while run("ip", "netns", "pids", name, check=False).stdout.strip():
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)


@pytest.fixture
def make_netns():
    """Factory of uniquely named namespaces, all deleted at teardown.

    Every test that touches the kernel goes through here, so this is where
    such tests are skipped on a host without root or the tools.
    """
    if _reason is not None:
        pytest.skip(f"needs a host that can run networking: {_reason}")
    created: list[str] = []

    def make(role: str = "host") -> str:
        name = f"bslt-{role[:4]}-{uuid.uuid4().hex[:8]}"
        run("ip", "netns", "add", name)
        created.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    yield make
    for name in reversed(created):
        _kill_namespace_processes(name)
        run("ip", "netns", "del", name, check=False)


@pytest.fixture
def netns(make_netns) -> str:
    """The namespace standing in for the host."""
    return make_netns("host")


@pytest.fixture
def state_dir(tmp_path) -> str:
    return str(tmp_path / "state")


@pytest.fixture
def manager(netns, state_dir):
    """A NetworkManager confined to `netns`; its kernel state is torn down afterwards."""
    mgr = NetworkManager(state_dir, netns=netns)
    yield mgr
    try:
        mgr.teardown()
    finally:
        mgr.close()


class Clients:
    """Guest stand-ins: a namespace whose eth0 is a veth port on a Basalt bridge."""

    def __init__(self, make_netns, tmp_path):
        self._make_netns = make_netns
        self._script = tmp_path / "udhcpc.sh"
        self._script.write_text(UDHCPC_SCRIPT)
        self._script.chmod(0o755)

    def attach(self, host_ns: str, bridge: str, mac: str | None = None) -> str:
        """New client namespace plugged into `bridge` of `host_ns`; returns its name."""
        client = self._make_netns("cli")
        port = "vc-" + uuid.uuid4().hex[:8]
        run("ip", "-n", host_ns, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", client)
        run("ip", "-n", host_ns, "link", "set", port, "master", bridge, "up")
        if mac:
            run("ip", "-n", client, "link", "set", "eth0", "address", mac)
        run("ip", "-n", client, "link", "set", "eth0", "up")
        return client

    def dhcp(self, client: str) -> str:
        """Run a DHCP exchange in `client`; returns the IPv4 address eth0 got."""
        result = run(
            "ip", "netns", "exec", client, "busybox", "udhcpc", "-f", "-q", "-n",
            "-i", "eth0", "-t", "10", "-T", "1", "-s", str(self._script), check=False,
        )
        assert result.returncode == 0, f"udhcpc failed: {result.stdout}{result.stderr}"
        return self.address_of(client, "eth0")

    @staticmethod
    def address_of(ns: str, ifname: str) -> str:
        out = run("ip", "-n", ns, "-4", "-o", "addr", "show", "dev", ifname).stdout.split()
        return out[out.index("inet") + 1].split("/")[0]

    @staticmethod
    def ping(ns: str, address: str, tries: int = 3) -> bool:
        """True if `address` answers a ping from inside `ns`."""
        result = run("ip", "netns", "exec", ns, "ping", "-n", "-c", str(tries),
                     "-i", "0.2", "-W", "1", address, check=False)
        return result.returncode == 0

    run = staticmethod(run)


@pytest.fixture
def clients(make_netns, tmp_path) -> Clients:
    return Clients(make_netns, tmp_path)
