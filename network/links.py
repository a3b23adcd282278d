"""Kernel links through pyroute2: the bridges and taps of Basalt networks.

Every function takes an open `IPRoute` (already inside the right namespace)
and is idempotent: "ensure" creates what is missing and fixes what drifted,
"remove" succeeds when the link is already gone.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import TYPE_CHECKING

from .addressing import bridge_mac
from .errors import NetworkConflictError
from .records import Network

if TYPE_CHECKING:  # pyroute2 costs ~20 MiB: imported when a netlink socket is opened
    from pyroute2 import IPRoute


def _netlink_error() -> type[Exception]:
    from pyroute2.netlink.exceptions import NetlinkError
    return NetlinkError


def _index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _kind(ipr: IPRoute, index: int) -> str | None:
    link = ipr.get_links(index)[0]
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def link_exists(ipr: IPRoute, ifname: str) -> bool:
    """True if an interface called `ifname` exists."""
    return _index(ipr, ifname) is not None


def ensure_bridge(ipr: IPRoute, network: Network) -> bool:
    """Make `network`'s bridge exist, carry its gateway address, and be up.

    Returns True when the bridge had to be created (anything bound to the old
    interface, such as dnsmasq's DHCP socket, must then be restarted).
    """
    created = False
    index = _index(ipr, network.bridge)
    if index is None:
        ipr.link(
            "add",
            ifname=network.bridge,
            kind="bridge",
            address=bridge_mac(network.name),
            br_stp_state=0,
        )
        index = _index(ipr, network.bridge)
        created = True
    elif _kind(ipr, index) != "bridge":
        raise NetworkConflictError(
            f"interface {network.bridge} exists and is not a bridge; remove it first"
        )
    # A bridge left over from an earlier network of the same name may carry
    # another subnet; the gateway must be its only IPv4 address.
    for addr in ipr.get_addr(index=index, family=socket.AF_INET):
        local = addr.get("local") or addr.get("address")
        if (local, addr["prefixlen"]) != (network.gateway, network.prefixlen):
            ipr.addr("del", index=index, address=local, prefixlen=addr["prefixlen"])
    try:
        ipr.addr("add", index=index, address=network.gateway, prefixlen=network.prefixlen)
    except _netlink_error() as exc:
        if exc.code != errno.EEXIST:
            raise
    ipr.link("set", index=index, state="up")
    return created


def ensure_tap(ipr: IPRoute, ifname: str, bridge: str) -> bool:
    """Make a persistent tap `ifname` exist, enslaved to `bridge`, and up.

    Returns True when the tap had to be created. The tap is created the way
    QEMU opens it (no packet-info header, virtio-net header), so libvirt can
    use it as `<interface type='ethernet'><target dev=... managed='no'/>`.
    """
    bridge_index = _index(ipr, bridge)
    if bridge_index is None:
        raise NetworkConflictError(f"bridge {bridge} does not exist")
    created = False
    index = _index(ipr, ifname)
    if index is None:
        ipr.link("add", ifname=ifname, kind="tuntap", mode="tap", ifr={"no_pi": 1, "vnet_hdr": 1})
        index = _index(ipr, ifname)
        created = True
    elif _kind(ipr, index) != "tun":
        raise NetworkConflictError(f"interface {ifname} exists and is not a tap; remove it first")
    ipr.link("set", index=index, master=bridge_index, state="up")
    return created


def remove_link(ipr: IPRoute, ifname: str, kind: str) -> bool:
    """Delete interface `ifname` if it is of `kind` ("bridge", "tun").

    Returns False if it was already gone. An interface of another kind that
    merely has the name is someone else's, and is left alone.
    """
    index = _index(ipr, ifname)
    if index is None or _kind(ipr, index) != kind:
        return False
    try:
        ipr.link("del", index=index)
    except _netlink_error() as exc:
        if exc.code != errno.ENODEV:
            raise
        return False
    return True


def bridge_ports(ipr: IPRoute, bridge: str) -> list[str]:
    """Names of the interfaces enslaved to `bridge` (empty if it does not exist)."""
    index = _index(ipr, bridge)
    if index is None:
        return []
    return sorted(link.get("ifname") for link in ipr.get_links() if link.get("master") == index)


def ipv4_networks(ipr: IPRoute, exclude: set[str]) -> list[tuple[str, ipaddress.IPv4Network]]:
    """(interface, subnet) of every IPv4 address not on an interface in `exclude`.

    Used to refuse a Basalt subnet that would shadow a route the host relies on.
    """
    names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
    found = []
    for addr in ipr.get_addr(family=socket.AF_INET):
        ifname = names.get(addr["index"])
        if ifname in exclude:
            continue
        local = addr.get("local") or addr.get("address")
        found.append((ifname, ipaddress.ip_network(f"{local}/{addr['prefixlen']}", strict=False)))
    return found
