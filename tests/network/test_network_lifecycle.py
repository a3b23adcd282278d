"""NetworkManager against a real kernel, confined to throw-away namespaces:
create/list/delete, validation, taps, supervision and restore."""

import json
import multiprocessing
import os
import signal
import time

import pytest

from network.errors import (
    InvalidNetworkError,
    NetworkConflictError,
    NetworkNotFoundError,
)
from network.manager import NetworkManager


def links_in(clients, ns: str) -> list[str]:
    out = clients.run("ip", "-j", "-n", ns, "link", "show").stdout
    return sorted(link["ifname"] for link in json.loads(out))


def alive(pid: int) -> bool:
    # A killed daemon may linger as a zombie until init reaps it.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def nft_tables(clients, ns: str) -> str:
    return clients.run("ip", "netns", "exec", ns, "nft", "list", "tables").stdout


def test_create_list_get_delete(manager, netns, clients):
    net = manager.create("prod", "10.60.0.0/24")
    assert (net.bridge, net.gateway, net.dhcp_start, net.dhcp_end, net.nat) == (
        "bsl-prod", "10.60.0.1", "10.60.0.2", "10.60.0.254", False,
    )
    assert manager.get("prod") == net and manager.list() == [net]
    addr = clients.run("ip", "-n", netns, "-4", "-o", "addr", "show", "dev", "bsl-prod").stdout
    assert "10.60.0.1/24" in addr
    assert "UP" in clients.run("ip", "-n", netns, "link", "show", "bsl-prod").stdout
    assert manager.check() == {"prod": []}
    assert "table inet basalt" in nft_tables(clients, netns)

    assert manager.delete("prod") is True
    assert manager.list() == []
    with pytest.raises(NetworkNotFoundError):
        manager.get("prod")
    assert manager.delete("prod") is False  # idempotent


def test_validation_errors_are_clear(manager, netns, clients):
    manager.create("prod", "10.60.0.0/24")
    with pytest.raises(InvalidNetworkError, match="invalid network name"):
        manager.create("Bad_Name", "10.61.0.0/24")
    with pytest.raises(InvalidNetworkError, match="host bits set"):
        manager.create("other", "10.61.0.1/24")
    with pytest.raises(InvalidNetworkError, match="too small"):
        manager.create("other", "10.61.0.0/31")
    with pytest.raises(NetworkConflictError, match="already exists"):
        manager.create("prod", "10.62.0.0/24")
    with pytest.raises(NetworkConflictError, match="overlaps 10.60.0.0/24 of network 'prod'"):
        manager.create("other", "10.60.0.0/16")
    # An address the host already uses elsewhere is refused as well.
    clients.run("ip", "-n", netns, "link", "add", "uplink0", "type", "veth", "peer", "uplink1")
    clients.run("ip", "-n", netns, "addr", "add", "192.0.2.10/24", "dev", "uplink0")
    with pytest.raises(NetworkConflictError, match="on interface uplink0"):
        manager.create("other", "192.0.2.0/25")
    # None of the refusals left anything behind.
    assert [n.name for n in manager.list()] == ["prod"]
    assert links_in(clients, netns) == ["bsl-prod", "lo", "uplink0", "uplink1"]


def test_long_names_get_short_bridges(manager, netns, clients):
    net = manager.create("a-network-with-a-long-name", "10.63.0.0/24")
    assert len(net.bridge) <= 15
    assert net.bridge in links_in(clients, netns)


def test_taps_attach_to_the_bridge_and_block_delete(manager, netns, clients):
    manager.create("prod", "10.60.0.0/24")
    tap = manager.create_tap("prod", "vm1")
    assert manager.create_tap("prod", "vm1") == tap  # idempotent
    shown = clients.run("ip", "-n", netns, "-d", "link", "show", tap).stdout
    assert "master bsl-prod" in shown and "tun type tap" in shown and ",UP" in shown
    assert [t.owner for t in manager.taps("prod")] == ["vm1"]

    with pytest.raises(NetworkConflictError, match=f"still has taps: {tap}"):
        manager.delete("prod")
    assert manager.delete_tap("prod", "vm1") is True
    assert manager.delete_tap("prod", "vm1") is False
    assert tap not in links_in(clients, netns)
    assert manager.delete("prod") is True


def test_force_delete_leaves_no_trace(manager, netns, clients, state_dir):
    manager.create("prod", "10.60.0.0/24", nat=True)
    manager.create("dev", "10.61.0.0/24")
    manager.create_tap("prod", "vm1")
    manager.allocate("prod", "vm1")
    clients.attach(netns, "bsl-prod")  # a foreign port also counts as "in use"
    pid = manager._dhcp("prod").pid()
    assert pid is not None

    with pytest.raises(NetworkConflictError, match="still has taps"):
        manager.delete("prod")
    assert manager.delete("prod", force=True)
    assert manager.delete("dev")

    assert [name for name in links_in(clients, netns) if not name.startswith("vc-")] == ["lo"]
    assert nft_tables(clients, netns).strip() == ""
    assert not alive(pid)
    assert os.listdir(os.path.join(state_dir, "dnsmasq")) == []
    ns = manager.namespace
    assert ns.read_sysctl("net.ipv4.ip_forward") == "0"


def test_delete_is_safe_when_parts_are_already_gone(manager, netns, clients):
    manager.create("prod", "10.60.0.0/24")
    manager.create_tap("prod", "vm1")
    os.kill(manager._dhcp("prod").pid(), signal.SIGKILL)
    clients.run("ip", "-n", netns, "link", "del", "bsl-prod")
    clients.run("ip", "netns", "exec", netns, "nft", "delete", "table", "inet", "basalt")
    assert manager.delete("prod", force=True)
    assert links_in(clients, netns) == ["lo"]


def test_ensure_restarts_a_dead_dnsmasq(manager):
    manager.create("prod", "10.60.0.0/24")
    dhcp = manager._dhcp("prod")
    old = dhcp.pid()
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while dhcp.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert manager.check() == {"prod": ["dnsmasq is not running"]}
    assert manager.ensure() == ["started dnsmasq for prod"]
    assert dhcp.pid() not in (None, old)
    assert manager.ensure() == []  # idempotent
    assert manager.check() == {"prod": []}


def test_restore_rebuilds_everything_after_a_reboot(make_netns, state_dir, clients):
    """A fresh, empty namespace under the same name stands in for a rebooted host."""
    netns = make_netns("host")
    with NetworkManager(state_dir, netns=netns) as mgr:
        mgr.create("prod", "10.60.0.0/24", nat=True)
        tap = mgr.create_tap("prod", "vm1")
        mac, ip = mgr.allocate("prod", "vm1")
        pid = mgr._dhcp("prod").pid()
    os.kill(pid, signal.SIGKILL)
    clients.run("ip", "netns", "del", netns)
    clients.run("ip", "netns", "add", netns)

    with NetworkManager(state_dir, netns=netns) as mgr:
        try:
            problems = mgr.check()["prod"]
            assert "bridge bsl-prod is missing" in problems
            done = mgr.restore()
            assert "created bridge bsl-prod for prod" in done
            assert "started dnsmasq for prod" in done
            assert mgr.check() == {"prod": []}
            assert tap in links_in(clients, netns)
            assert "masquerade" in clients.run(
                "ip", "netns", "exec", netns, "nft", "list", "table", "inet", "basalt").stdout
            assert mgr.namespace.read_sysctl("net.ipv4.ip_forward") == "1"
            assert mgr.allocate("prod", "vm1") == (mac, ip)  # IPAM survived
            with open(mgr._dhcp("prod").hosts_path) as f:
                assert f"{mac},{ip}" in f.read()
            assert mgr.restore() == []
        finally:
            mgr.teardown()


def test_teardown_keeps_records_and_ensure_brings_state_back(manager, netns, clients):
    manager.create("prod", "10.60.0.0/24", nat=True)
    manager.create_tap("prod", "vm1")
    manager.teardown()
    assert links_in(clients, netns) == ["lo"]
    assert nft_tables(clients, netns).strip() == ""
    assert [n.name for n in manager.list()] == ["prod"]
    manager.ensure()
    assert manager.check() == {"prod": []}


def test_allocations_reach_dnsmasq_and_persist(manager, state_dir, netns):
    manager.create("prod", "10.60.0.0/24")
    mac, ip = manager.allocate("prod", "vm1")
    assert ip == "10.60.0.2" and mac.startswith("52:54:00:")
    assert manager.allocate("prod", "vm2", mac="52:54:00:12:34:56", ip="10.60.0.99") == (
        "52:54:00:12:34:56", "10.60.0.99",
    )
    with pytest.raises(NetworkConflictError):
        manager.allocate("prod", "vm3", ip="10.60.0.99")
    with open(manager._dhcp("prod").hosts_path) as f:
        assert f.read().splitlines() == [f"{mac},{ip}", "52:54:00:12:34:56,10.60.0.99"]
    assert manager.release("prod", "vm1") and not manager.release("prod", "vm1")
    with NetworkManager(state_dir, netns=netns) as again:
        assert [r.owner for r in again.reservations("prod")] == ["vm2"]
        assert again.allocate("prod", "vm4")[1] == "10.60.0.2"


def _allocate_in_process(state_dir: str, netns: str, tag: str, count: int, start) -> list[str]:
    start.wait()
    with NetworkManager(state_dir, netns=netns) as mgr:
        return [mgr.allocate("prod", f"{tag}-{i}")[1] for i in range(count)]


def test_two_managers_in_two_processes_never_share_an_address(manager, state_dir, netns):
    manager.create("prod", "10.60.0.0/24")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as sync, ctx.Pool(2) as pool:
        start = sync.Event()
        jobs = [
            pool.apply_async(_allocate_in_process, (state_dir, netns, tag, 40, start))
            for tag in "ab"
        ]
        start.set()
        results = [job.get(timeout=300) for job in jobs]
    everything = results[0] + results[1]
    assert len(set(everything)) == 80
    with open(manager._dhcp("prod").hosts_path) as f:
        assert len(f.read().splitlines()) == 80  # the hosts file saw every reservation


def test_leftover_bridges_are_adopted_or_cleaned(manager, netns, clients):
    # A bridge from a crashed run with another subnet is adopted and fixed...
    clients.run("ip", "-n", netns, "link", "add", "bsl-prod", "type", "bridge")
    clients.run("ip", "-n", netns, "addr", "add", "10.99.0.1/24", "dev", "bsl-prod")
    manager.create("prod", "10.60.0.0/24")
    addrs = clients.run("ip", "-n", netns, "-4", "-o", "addr", "show", "dev", "bsl-prod").stdout
    assert "10.60.0.1/24" in addrs and "10.99.0.1" not in addrs
    # ...and one without any record is removed by delete, which reports False.
    clients.run("ip", "-n", netns, "link", "add", "bsl-ghost", "type", "bridge")
    assert manager.delete("ghost") is False
    assert "bsl-ghost" not in links_in(clients, netns)


def test_a_failed_create_rolls_back_and_spares_foreign_interfaces(manager, netns, clients):
    clients.run("ip", "-n", netns, "link", "add", "bsl-prod", "type", "veth", "peer", "other0")
    with pytest.raises(NetworkConflictError, match="exists and is not a bridge"):
        manager.create("prod", "10.60.0.0/24")
    assert manager.list() == []
    assert links_in(clients, netns) == ["bsl-prod", "lo", "other0"]
    assert nft_tables(clients, netns).strip() == ""
    assert manager.delete("prod") is False
    assert "bsl-prod" in links_in(clients, netns)
