"""What a VM is made of: validated specs and the records Basalt keeps.

Pure rules (names, sizes, paths), no libvirt and no kernel, so all of them are
unit-tested without a hypervisor. Records are frozen dataclasses stored as
JSON; a record written by one version stays readable by the next (unknown keys
are ignored on load, missing ones take their defaults).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidVMError

# Hostname-safe, so the name can also be the guest's hostname (cloud-init).
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,47}")
DOMAIN_PREFIX = "basalt-"
OWNER_PREFIX = "vm."
MIN_MEMORY_MIB = 32
MAX_MEMORY_MIB = 1 << 20  # 1 TiB
MAX_CPUS = 64
DEFAULT_MEMORY_MIB = 256
_UNITS = {"": 1 << 20, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"\s*(\d+)\s*(?:([kmgt])(?:i?b)?|(b))?\s*", re.IGNORECASE)


def validate_name(name: str) -> str:
    """Return `name` if it is a valid VM name (1-48 of a-z, 0-9, '-', no leading '-')."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidVMError(
            f"invalid VM name {name!r}: use 1-48 characters from a-z, 0-9 and '-',"
            " not starting with '-'"
        )
    return name


def domain_name(name: str) -> str:
    """The libvirt domain name of VM `name` (prefixed, so a shared libvirtd's
    other domains can never clash with Basalt's)."""
    return DOMAIN_PREFIX + name


def owner(name: str) -> str:
    """The owner string of VM `name` in the network IPAM (reservations, taps)."""
    return OWNER_PREFIX + name


def parse_memory(value: int | str) -> int:
    """Memory in MiB from an int (MiB) or a string such as "256M", "1G", "512MiB"."""
    if isinstance(value, bool):
        raise InvalidVMError(f"invalid memory size {value!r}")
    if isinstance(value, int):
        mib = value
    elif isinstance(value, str):
        match = _SIZE_RE.fullmatch(value)
        if not match:
            raise InvalidVMError(f"invalid memory size {value!r}: use e.g. 256M or 1G")
        unit = (match.group(2) or match.group(3) or "").lower()
        size = int(match.group(1)) * _UNITS[unit]
        if size % (1 << 20):
            raise InvalidVMError(f"memory size {value!r} is not a whole number of MiB")
        mib = size >> 20
    else:
        raise InvalidVMError(f"invalid memory size {value!r}")
    if not MIN_MEMORY_MIB <= mib <= MAX_MEMORY_MIB:
        raise InvalidVMError(
            f"memory {mib} MiB is out of range ({MIN_MEMORY_MIB} MiB to {MAX_MEMORY_MIB >> 10} GiB)"
        )
    return mib


def parse_cpus(value: int | str) -> int:
    """Number of virtual CPUs, 1 to MAX_CPUS."""
    try:
        if isinstance(value, bool) or isinstance(value, float):
            raise ValueError
        cpus = int(value)
    except (TypeError, ValueError):
        raise InvalidVMError(f"invalid CPU count {value!r}") from None
    if not 1 <= cpus <= MAX_CPUS:
        raise InvalidVMError(f"CPU count {cpus} is out of range (1 to {MAX_CPUS})")
    return cpus


def _boot_file(label: str, path: str | None) -> str | None:
    if path is None or path == "":
        return None
    if not isinstance(path, str) or not os.path.isabs(path):
        raise InvalidVMError(f"{label} must be an absolute path, got {path!r}")
    if not os.path.isfile(path):
        raise InvalidVMError(f"{label} {path} does not exist or is not a file")
    return path


@dataclass(frozen=True)
class VMSpec:
    """What the caller asks for; `validated()` checks and normalises it."""

    name: str
    volume: str
    network: str
    memory: int | str = DEFAULT_MEMORY_MIB
    cpus: int | str = 1
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    user_data: str | None = None

    def validated(self) -> VMSpec:
        """A copy with memory in MiB and cpus as int; raises InvalidVMError."""
        validate_name(self.name)
        if not isinstance(self.volume, str) or not self.volume:
            raise InvalidVMError("a volume is required")
        if not isinstance(self.network, str) or not self.network:
            raise InvalidVMError("a network is required")
        kernel = _boot_file("kernel", self.kernel)
        initrd = _boot_file("initrd", self.initrd)
        if (initrd or self.cmdline) and not kernel:
            raise InvalidVMError("initrd and cmdline need a kernel (direct kernel boot)")
        if self.cmdline is not None and not isinstance(self.cmdline, str):
            raise InvalidVMError("cmdline must be a string")
        if self.user_data is not None and not isinstance(self.user_data, str):
            raise InvalidVMError("user_data must be a string")
        return dataclasses.replace(
            self,
            memory=parse_memory(self.memory),
            cpus=parse_cpus(self.cpus),
            kernel=kernel,
            initrd=initrd,
            cmdline=self.cmdline or None,
        )


@dataclass(frozen=True)
class VMRecord:
    """What Basalt remembers about a VM; libvirt's persistent domain is derived from it."""

    name: str
    uuid: str
    volume: str
    network: str
    memory_mib: int
    cpus: int
    mac: str
    ip: str
    tap: str
    console_log: str
    domain_type: str  # "kvm", "qemu" (TCG) or "test"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    seed: str | None = None
    # Set by start(), cleared by stop() and by a guest that powers itself off;
    # restore() starts a VM that wants to run but is off for another reason.
    want_running: bool = False
    created_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return domain_name(self.name)

    @property
    def owner(self) -> str:
        return owner(self.name)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["domain"] = self.domain
        return data

    def dumps(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def loads(cls, raw: bytes) -> VMRecord:
        data = json.loads(raw)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
