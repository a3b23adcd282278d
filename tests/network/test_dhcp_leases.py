"""dnsmasq really hands out leases: a busybox udhcpc client in its own
namespace, plugged into the Basalt bridge through a veth pair."""

import ipaddress


def test_a_dynamic_client_gets_an_address_and_reaches_the_gateway(manager, netns, clients):
    net = manager.create("prod", "10.70.0.0/24")
    client = clients.attach(netns, net.bridge)
    ip = clients.dhcp(client)
    assert ipaddress.IPv4Address(ip) in ipaddress.ip_network(net.subnet)
    assert ip != net.gateway
    assert clients.ping(client, net.gateway)
    # dnsmasq recorded the lease where IPAM looks for it.
    assert ip in manager._dhcp("prod").leases()


def test_a_reserved_mac_gets_its_reserved_address(manager, netns, clients):
    net = manager.create("prod", "10.70.0.0/24")
    mac, ip = manager.allocate("prod", "vm1", ip="10.70.0.200")
    client = clients.attach(netns, net.bridge, mac=mac)
    assert clients.dhcp(client) == ip == "10.70.0.200"
    assert clients.ping(client, net.gateway)


def test_a_reservation_made_while_dnsmasq_runs_is_honoured(manager, netns, clients):
    net = manager.create("prod", "10.70.0.0/24")
    pid = manager._dhcp("prod").pid()
    mac, ip = manager.allocate("prod", "vm1", mac="52:54:00:70:00:01", ip="10.70.0.123")
    assert manager._dhcp("prod").pid() == pid  # reloaded, not restarted
    client = clients.attach(netns, net.bridge, mac=mac)
    assert clients.dhcp(client) == ip


def test_leased_addresses_are_not_reserved_for_others(manager, netns, clients):
    net = manager.create("prod", "10.70.0.0/29")  # guests .2-.6
    client = clients.attach(netns, net.bridge)
    leased = clients.dhcp(client)
    taken = {manager.allocate("prod", f"vm{i}")[1] for i in range(4)}
    assert leased not in taken and len(taken) == 4
