"""Traffic between namespaces: networks are isolated from each other, and a
NAT network reaches an "outside" namespace that has no route back to it."""

import pytest

from network import firewall

OUTSIDE = "198.18.0.2"  # benchmarking range: only ever inside these namespaces


@pytest.fixture
def topology(manager, netns, make_netns, clients):
    """Two networks with one client each, and an outside namespace on an uplink."""
    outside = make_netns("out")
    run = clients.run
    run("ip", "-n", netns, "link", "add", "uplink0", "type", "veth", "peer", "name", "eth0",
        "netns", outside)
    run("ip", "-n", netns, "addr", "add", "198.18.0.1/24", "dev", "uplink0")
    run("ip", "-n", netns, "link", "set", "uplink0", "up")
    run("ip", "-n", outside, "addr", "add", f"{OUTSIDE}/24", "dev", "eth0")
    run("ip", "-n", outside, "link", "set", "eth0", "up")

    red = manager.create("red", "10.80.0.0/24", nat=True)
    blue = manager.create("blue", "10.81.0.0/24")
    red_client = clients.attach(netns, red.bridge)
    blue_client = clients.attach(netns, blue.bridge)
    return {
        "red": red, "blue": blue, "outside": outside,
        "red_client": red_client, "red_ip": clients.dhcp(red_client),
        "blue_client": blue_client, "blue_ip": clients.dhcp(blue_client),
    }


def test_networks_are_isolated_even_with_forwarding_on(manager, netns, clients, topology):
    t = topology
    assert manager.namespace.read_sysctl("net.ipv4.ip_forward") == "1"
    assert clients.ping(t["red_client"], t["red"].gateway)
    assert clients.ping(t["blue_client"], t["blue"].gateway)
    assert not clients.ping(t["red_client"], t["blue_ip"], tries=2)
    assert not clients.ping(t["blue_client"], t["red_ip"], tries=2)
    # Nor can a guest reach the other network's gateway address on the host.
    assert not clients.ping(t["red_client"], t["blue"].gateway, tries=2)

    # The table is what blocks it: without it the two clients can talk...
    firewall.remove(manager.namespace)
    assert clients.ping(t["red_client"], t["blue_ip"])
    # ...and ensure() puts it back.
    manager.ensure()
    assert not clients.ping(t["red_client"], t["blue_ip"], tries=2)


def test_nat_network_reaches_the_outside_and_others_do_not_then_forwarding_ends_with_it(
        manager, clients, topology):
    """NAT, then its end: deleting the last NAT network switches forwarding off.
    (One test: each topology takes ~7 s to set up, two DHCP leases most of it.)"""
    t = topology
    table = firewall.current(manager.namespace)
    assert "ip saddr 10.80.0.0/24" in table and "masquerade" in table
    assert "ip saddr 10.81.0.0/24" not in table

    # The outside has no route to 10.80.0.0/24: replies only come back through NAT.
    before = firewall.nat_bytes(manager.namespace).get("red", 0)
    assert clients.ping(t["red_client"], OUTSIDE)
    assert not clients.ping(t["blue_client"], OUTSIDE, tries=2)
    # Metered: the pings and their replies went through NAT (84 bytes each way at least).
    counted = firewall.nat_bytes(manager.namespace)
    assert counted["red"] >= before + 2 * 84 and "blue" not in counted
    # Nothing from outside gets in, even with a route pointing at the host.
    clients.run("ip", "-n", t["outside"], "route", "add", "10.80.0.0/24", "via", "198.18.0.1")
    assert not clients.ping(t["outside"], t["red_ip"], tries=2)

    assert manager.namespace.read_sysctl("net.ipv4.ip_forward") == "1"
    manager.delete("red", force=True)
    assert manager.namespace.read_sysctl("net.ipv4.ip_forward") == "0"
    assert "masquerade" not in firewall.current(manager.namespace)
    manager.delete("blue", force=True)
    assert firewall.current(manager.namespace) is None
