"""Names, subnets, interface names and MACs: the pure rules, no kernel."""

import ipaddress

import pytest

from network.addressing import (
    IFNAME_MAX,
    bridge_mac,
    bridge_name,
    guest_address,
    normalize_mac,
    parse_subnet,
    random_guest_mac,
    tap_name,
    validate_name,
    validate_owner,
)
from network.errors import InvalidNetworkError, NetworkError


@pytest.mark.parametrize("name", ["a", "prod", "net-1", "0net", "x" * 32])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Prod", "net_1", "net.1", "-net", "x" * 33, "ünï", None])
def test_invalid_names(name):
    with pytest.raises(InvalidNetworkError, match="invalid network name"):
        validate_name(name)


def test_errors_share_one_base_class():
    with pytest.raises(NetworkError):
        validate_name("BAD")


@pytest.mark.parametrize("owner", ["vm1", "VM_1.a-b", "x" * 64])
def test_valid_owners(owner):
    assert validate_owner(owner) == owner


@pytest.mark.parametrize("owner", ["", "a b", "a/b", "x" * 65, "-vm"])
def test_invalid_owners(owner):
    with pytest.raises(InvalidNetworkError):
        validate_owner(owner)


def test_layout_gateway_is_first_host_and_guests_the_rest():
    layout = parse_subnet("10.20.0.0/24")
    assert str(layout.gateway) == "10.20.0.1"
    assert (str(layout.first), str(layout.last)) == ("10.20.0.2", "10.20.0.254")
    assert layout.size == 253


def test_smallest_subnet_has_one_guest():
    layout = parse_subnet("10.20.0.0/30")
    assert (str(layout.gateway), str(layout.first), str(layout.last)) == (
        "10.20.0.1", "10.20.0.2", "10.20.0.2",
    )


@pytest.mark.parametrize(
    "cidr, message",
    [
        ("banana", "invalid subnet"),
        ("10.0.0.1/24", "host bits set"),
        ("10.0.0.0/33", "invalid subnet"),
        ("10.0.0.0/31", "too small"),
        ("10.0.0.4/32", "too small"),
        ("10.0.0.0/7", "too large"),
        ("fd00::/64", "only IPv4"),
        ("127.0.0.0/24", "loopback"),
        ("224.0.0.0/24", "multicast"),
        ("169.254.0.0/24", "link-local"),
        ("240.0.0.0/24", "reserved"),
    ],
)
def test_bad_subnets_are_refused_clearly(cidr, message):
    with pytest.raises(InvalidNetworkError, match=message):
        parse_subnet(cidr)


def test_bridge_names_fit_ifnamsiz_and_are_deterministic():
    assert bridge_name("prod") == "bsl-prod"
    assert bridge_name("abcdefghijk") == "bsl-abcdefghijk"
    long = bridge_name("a-rather-long-network-name")
    assert len(long) <= IFNAME_MAX and long.startswith("bsl-a-r_")
    assert long == bridge_name("a-rather-long-network-name")
    assert bridge_name("a-rather-long-network-namf") != long


def test_bridge_name_forms_never_collide():
    # The hashed form has '_', which names cannot contain.
    names = ["x" * n for n in range(1, 33)] + [f"net-{i}-long-enough" for i in range(500)]
    bridges = [bridge_name(n) for n in names]
    assert len(set(bridges)) == len(bridges)
    assert all(len(b) <= IFNAME_MAX for b in bridges)


def test_tap_names_fit_and_depend_on_network_and_owner():
    tap = tap_name("prod", "vm1")
    assert len(tap) == IFNAME_MAX and tap.startswith("bt-")
    assert tap == tap_name("prod", "vm1")
    assert tap != tap_name("prod", "vm2") != tap_name("test", "vm1")


def test_bridge_mac_is_stable_unicast_and_local():
    mac = bridge_mac("prod")
    assert mac == bridge_mac("prod") != bridge_mac("test")
    first = int(mac[:2], 16)
    assert first & 1 == 0 and first & 2 == 2


def test_macs_are_normalised_and_checked():
    assert normalize_mac("52-54-00-AA-bb-CC") == "52:54:00:aa:bb:cc"
    for bad in ["52:54:00:aa:bb", "zz:54:00:aa:bb:cc", "01:00:5e:00:00:01", "00:00:00:00:00:00"]:
        with pytest.raises(InvalidNetworkError):
            normalize_mac(bad)
    mac = random_guest_mac()
    assert mac.startswith("52:54:00:") and normalize_mac(mac) == mac


def test_guest_address_must_be_inside_the_guest_range():
    layout = parse_subnet("10.20.0.0/24")
    assert guest_address(layout, "10.20.0.9") == ipaddress.IPv4Address("10.20.0.9")
    for bad in ["10.20.0.0", "10.20.0.1", "10.20.0.255", "10.21.0.9", "nope"]:
        with pytest.raises(InvalidNetworkError):
            guest_address(layout, bad)
