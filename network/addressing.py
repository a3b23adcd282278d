"""Pure rules for names, subnets, interface names and MAC addresses.

Nothing here touches the kernel or the disk, so every rule can be unit-tested
without root.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from dataclasses import dataclass

from .errors import InvalidNetworkError

# IFNAMSIZ is 16 bytes including the trailing NUL.
IFNAME_MAX = 15
BRIDGE_PREFIX = "bsl-"
TAP_PREFIX = "bt-"
# QEMU/libvirt's locally administered prefix: guests and tools recognise it.
GUEST_MAC_PREFIX = "52:54:00"
# Prefixes of /31 and /32 leave no room for a gateway plus one guest.
MAX_PREFIXLEN = 30
MIN_PREFIXLEN = 8

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def validate_name(name: str) -> str:
    """Return `name` if it is a valid network name ([a-z0-9-], 1-32, no leading '-')."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidNetworkError(
            f"invalid network name {name!r}: use 1-32 characters from a-z, 0-9 and '-',"
            " not starting with '-'"
        )
    return name


def validate_owner(owner: str) -> str:
    """Return `owner` (a VM name or similar) if it is 1-64 of [A-Za-z0-9_.-]."""
    if not isinstance(owner, str) or not _OWNER_RE.fullmatch(owner):
        raise InvalidNetworkError(
            f"invalid owner {owner!r}: use 1-64 characters from A-Z, a-z, 0-9, '_', '.', '-'"
        )
    return owner


@dataclass(frozen=True)
class SubnetLayout:
    """How a subnet is used: the gateway on the bridge, the rest for guests."""

    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    first: ipaddress.IPv4Address  # first guest address (DHCP range start)
    last: ipaddress.IPv4Address  # last guest address (DHCP range end)

    @property
    def size(self) -> int:
        """Number of guest addresses."""
        return int(self.last) - int(self.first) + 1


def parse_subnet(cidr: str) -> SubnetLayout:
    """Validate an IPv4 CIDR and lay it out: gateway = first host, guests = the rest."""
    try:
        subnet = ipaddress.ip_network(cidr, strict=True)
    except (TypeError, ValueError) as exc:
        raise InvalidNetworkError(f"invalid subnet {cidr!r}: {exc}") from None
    if subnet.version != 4:
        raise InvalidNetworkError(f"subnet {cidr}: only IPv4 subnets are supported")
    if subnet.prefixlen > MAX_PREFIXLEN:
        raise InvalidNetworkError(
            f"subnet {cidr} is too small: need at least /{MAX_PREFIXLEN}"
            " (a gateway and one guest)"
        )
    if subnet.prefixlen < MIN_PREFIXLEN:
        raise InvalidNetworkError(f"subnet {cidr} is too large: at most /{MIN_PREFIXLEN}")
    for label, special in (
        ("loopback", subnet.is_loopback),
        ("multicast", subnet.is_multicast),
        ("link-local", subnet.is_link_local),
        ("reserved", subnet.is_reserved),
        ("unspecified", subnet.network_address == ipaddress.IPv4Address(0)),
    ):
        if special:
            raise InvalidNetworkError(f"subnet {cidr} is {label} and cannot carry guests")
    gateway = subnet.network_address + 1
    return SubnetLayout(
        subnet=subnet,
        gateway=gateway,
        first=gateway + 1,
        last=subnet.broadcast_address - 1,
    )


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def bridge_name(name: str) -> str:
    """Deterministic bridge name for a network, at most IFNAMSIZ-1 characters.

    Short names stay readable ("bsl-prod"); longer ones are cut and suffixed
    with a hash after '_', a character network names cannot contain, so the
    two forms never collide with each other.
    """
    validate_name(name)
    readable = BRIDGE_PREFIX + name
    if len(readable) <= IFNAME_MAX:
        return readable
    return f"{BRIDGE_PREFIX}{name[:3]}_{_digest('bridge', name)[:7]}"


def tap_name(network: str, owner: str) -> str:
    """Deterministic tap name for (network, owner): 'bt-' + 12 hex digits."""
    return TAP_PREFIX + _digest("tap", network, owner)[: IFNAME_MAX - len(TAP_PREFIX)]


def bridge_mac(name: str) -> str:
    """Stable locally administered MAC for a network's bridge.

    A bridge otherwise takes the lowest MAC of its ports, so the gateway's
    MAC would change as taps come and go and guests' ARP caches go stale.
    """
    raw = bytes.fromhex(_digest("bridge-mac", name)[:10])
    return ":".join(f"{b:02x}" for b in b"\x02" + raw)


def normalize_mac(mac: str) -> str:
    """Return `mac` in lower-case colon form if it is a unicast Ethernet address."""
    if not isinstance(mac, str):
        raise InvalidNetworkError(f"invalid MAC address {mac!r}")
    value = mac.strip().lower().replace("-", ":")
    if not _MAC_RE.fullmatch(value):
        raise InvalidNetworkError(f"invalid MAC address {mac!r}")
    if int(value[:2], 16) & 1:
        raise InvalidNetworkError(f"MAC address {mac} is multicast, a NIC needs a unicast one")
    if value == "00:00:00:00:00:00":
        raise InvalidNetworkError("MAC address 00:00:00:00:00:00 is not usable")
    return value


def random_guest_mac() -> str:
    """A random MAC under the QEMU/libvirt prefix (52:54:00:xx:xx:xx)."""
    tail = secrets.token_bytes(3)
    return GUEST_MAC_PREFIX + "".join(f":{b:02x}" for b in tail)


def guest_address(layout: SubnetLayout, ip: str) -> ipaddress.IPv4Address:
    """Parse `ip` and check it is a guest address of `layout` (not gateway/network/broadcast)."""
    try:
        address = ipaddress.IPv4Address(ip)
    except (TypeError, ValueError):
        raise InvalidNetworkError(f"invalid IPv4 address {ip!r}") from None
    if not layout.first <= address <= layout.last:
        raise InvalidNetworkError(
            f"address {address} is not a guest address of {layout.subnet}"
            f" ({layout.first}-{layout.last})"
        )
    return address
