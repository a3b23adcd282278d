"""Virtual networks for guests: Linux bridges, IPAM, DHCP, NAT and isolation.

``NetworkManager(state_dir, netns=None)`` keeps network records in LMDB and the
kernel (bridges, taps, dnsmasq, one nftables table) in step with them. Its
methods block; call them from asyncio through ``asyncio.to_thread``.
"""

from .errors import (
                     AddressPoolExhaustedError,
                     HostToolError,
                     InvalidNetworkError,
                     NetworkConflictError,
                     NetworkError,
                     NetworkNotFoundError,
)
from .manager import NetworkManager, unavailable_reason
from .records import Network, Reservation, Tap

__all__ = [
    "NetworkManager", "unavailable_reason", "Network", "Reservation", "Tap", "NetworkError",
    "InvalidNetworkError", "NetworkNotFoundError", "NetworkConflictError",
    "AddressPoolExhaustedError", "HostToolError",
]
