"""Errors raised by the network package.

One base class so callers (the admin API, the CLI) can catch everything the
package raises on purpose; subclasses say which HTTP-ish category applies.
"""


class NetworkError(Exception):
    """Base class for every error the network package raises on purpose."""


class InvalidNetworkError(NetworkError, ValueError):
    """A name, CIDR, MAC, address or owner that is malformed or unusable."""


class NetworkNotFoundError(NetworkError, LookupError):
    """The named network does not exist."""


class NetworkConflictError(NetworkError):
    """The request clashes with existing state: duplicate name, overlapping
    subnet, address or MAC already taken, network still in use."""


class AddressPoolExhaustedError(NetworkConflictError):
    """No free address is left in the network's subnet."""


class HostToolError(NetworkError):
    """An external tool (dnsmasq, nft, sysctl, ip) failed; the message holds its stderr."""
