"""Errors raised by the compute package.

Every refusal is a `ComputeError` carrying the HTTP status and the short code
the admin API returns as JSON (``{"code": ..., "message": ...}``), the same
shape as blockd's `VolumeError`, so the CLI prints one clear line for each.
"""

from __future__ import annotations


class ComputeError(Exception):
    """A refused or failed compute operation; ``status`` is the admin API's HTTP status."""

    status = 400
    code = "InvalidRequest"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class InvalidVMError(ComputeError, ValueError):
    """A malformed name, size, CPU count, path or option."""

    status, code = 400, "InvalidVMSpec"


class VMNotFoundError(ComputeError, LookupError):
    """No VM of that name."""

    status, code = 404, "NoSuchVM"


class VMExistsError(ComputeError):
    """A VM (or a foreign libvirt domain) already has that name."""

    status, code = 409, "VMAlreadyExists"


class VMStateError(ComputeError):
    """The VM is not in a state that allows the request (e.g. reboot while stopped)."""

    status, code = 409, "InvalidVMState"


class VolumeUnavailableError(ComputeError):
    """The volume does not exist, is read-only, is in use, or cannot be checked."""

    status, code = 404, "NoSuchVolume"


class HypervisorError(ComputeError):
    """libvirt or QEMU failed; the message carries libvirt's own text."""

    status, code = 502, "HypervisorError"


def from_network_error(exc: Exception) -> ComputeError:
    """The admin API's view of an error from the network package."""
    import network  # late: keeps `compute.errors` importable without pyroute2

    for cls, status, code in (
        (network.InvalidNetworkError, 400, "InvalidNetwork"),
        (network.NetworkNotFoundError, 404, "NoSuchNetwork"),
        (network.AddressPoolExhaustedError, 409, "AddressPoolExhausted"),
        (network.NetworkConflictError, 409, "NetworkConflict"),
        (network.HostToolError, 500, "HostToolError"),
    ):
        if isinstance(exc, cls):
            return ComputeError(str(exc), status=status, code=code)
    return ComputeError(str(exc), status=500, code="NetworkError")
