"""Compute: KVM/QEMU guests through libvirt, on Basalt volumes and networks.

``ComputeManager(state_dir, libvirt_uri, network_manager, nbd_socket)`` keeps
VM records in LMDB and one persistent libvirt domain per VM: the disk is a
Basalt volume over NBD (Unix socket), the NIC a virtio NIC on a Basalt network
with its IPAM-reserved MAC/IP, the serial console a log file plus a socket for
input. Its methods
block; call them from asyncio through ``asyncio.to_thread``.
``compute.api.routes(compute_manager, network_manager)`` is the admin API.
``compute.accel.detect()`` decides KVM or TCG; ``compute.libvirtd.PrivateLibvirtd``
runs a libvirtd of Basalt's own (in a network namespace if asked) where the
host has none.
"""

from .errors import (
    ComputeError,
    HypervisorError,
    InvalidVMError,
    VMExistsError,
    VMNotFoundError,
    VMStateError,
    VolumeUnavailableError,
)
from .spec import VMRecord, VMSpec

__all__ = [
    "ComputeManager", "ComputeError", "HypervisorError", "InvalidVMError", "VMExistsError",
    "VMNotFoundError", "VMStateError", "VolumeUnavailableError", "VMRecord", "VMSpec",
    "unavailable_reason",
]


def __getattr__(name: str):
    # libvirt-python is optional: `import compute` works without it, and
    # `compute.unavailable_reason()` says why compute is off.
    if name == "ComputeManager":
        from .manager import ComputeManager

        return ComputeManager
    raise AttributeError(name)


SYSTEM_URI = "qemu:///system"
SYSTEM_SOCKET = "/run/libvirt/libvirt-sock"


def unavailable_reason(libvirt_uri: str | None = None) -> str | None:
    """Why compute cannot run here (no libvirt-python, no QEMU, libvirtd unreachable), or None.

    With `libvirt_uri`, also opens (and closes) a connection to it.
    """
    import importlib.util
    import os
    import shutil

    if importlib.util.find_spec("libvirt") is None:
        return "libvirt-python is not installed (pip install libvirt-python)"
    if libvirt_uri is None or not libvirt_uri.startswith("test:"):
        if shutil.which("qemu-system-x86_64") is None:
            return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
    # Without a daemon there is nothing to connect to, and libvirt-python
    # (~17 MiB resident) need not be loaded into the server just to learn that.
    if libvirt_uri == SYSTEM_URI and not os.path.exists(SYSTEM_SOCKET):
        return f"no libvirtd at {SYSTEM_URI} ({SYSTEM_SOCKET} does not exist)"
    if libvirt_uri is not None:
        import libvirt

        from .manager import _quiet  # noqa: F401  (silences libvirt's stderr printing)

        try:
            libvirt.open(libvirt_uri).close()
        except libvirt.libvirtError as exc:
            return f"cannot connect to libvirt at {libvirt_uri}: {exc.get_error_message()}"
    return None
