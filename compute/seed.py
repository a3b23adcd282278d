"""cloud-init NoCloud seed disks: user-data, meta-data and network-config.

cloud-init's NoCloud datasource reads these three files from any block device
whose filesystem label is ``cidata`` (ISO 9660 with Joliet/Rock Ridge, or
VFAT). Basalt attaches the seed as a read-only virtio disk, which works on any
machine type, so guests that run cloud-init (cloud images) get their
hostname, network and user-data; guests that do not simply ignore the disk.

Tools, tried in this order (all from Debian):

- ``genisoimage`` (package genisoimage) — what Debian's own ``cloud-localds``
  uses; ``mkisofs`` is the same tool under its old name;
- ``xorriso -as mkisofs`` (package xorriso), same image;
- a VFAT image: ``mkfs.vfat`` (dosfstools) or ``busybox mkdosfs`` to format,
  ``mcopy`` (mtools) to put the files in without mounting anything.

An ISO is preferred: it is what cloud images are tested with, and it is
read-only by nature. The first available tool wins; none → `SeedToolError`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from .errors import ComputeError

LABEL = "cidata"
VFAT_SIZE = 1 << 20
_TIMEOUT = 60


class SeedToolError(ComputeError):
    """No tool to build a seed image, or the tool failed."""

    status, code = 501, "SeedUnavailable"


def meta_data(instance_id: str, hostname: str) -> str:
    """NoCloud meta-data: a new instance-id makes cloud-init run its first-boot modules."""
    return f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"


def network_config(mac: str) -> str:
    """Network config v2: the NIC with `mac` takes its address by DHCP (dnsmasq's reservation)."""
    return (
        "version: 2\n"
        "ethernets:\n"
        "  primary:\n"
        "    match:\n"
        f'      macaddress: "{mac}"\n'
        "    dhcp4: true\n"
    )


def default_user_data() -> str:
    return "#cloud-config\n{}\n"


def available_tool() -> str | None:
    """Name of the tool `build` would use, or None."""
    for tool in ("genisoimage", "mkisofs", "xorriso"):
        if shutil.which(tool):
            return tool
    if shutil.which("mcopy") and (shutil.which("mkfs.vfat") or shutil.which("busybox")):
        return "mcopy"
    return None


def _run(argv: list[str]) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SeedToolError(f"{argv[0]} failed: {exc}") from None
    if result.returncode != 0:
        raise SeedToolError(f"{' '.join(argv[:2])} failed: {(result.stderr or result.stdout).strip()}")


def _iso(tool: str, out: str, files: list[str]) -> None:
    prefix = ["xorriso", "-as", "mkisofs"] if tool == "xorriso" else [tool]
    _run(prefix + ["-quiet", "-output", out, "-volid", LABEL, "-joliet", "-rock", *files])


def _vfat(out: str, files: list[str]) -> None:
    with open(out, "wb") as f:
        f.truncate(VFAT_SIZE)
    if shutil.which("mkfs.vfat"):
        _run(["mkfs.vfat", "-n", LABEL.upper(), out])
    else:
        _run(["busybox", "mkdosfs", "-n", LABEL.upper(), out])
    _run(["mcopy", "-o", "-i", out, *files, "::"])


def build(path: str, *, instance_id: str, hostname: str, mac: str,
          user_data: str | None = None, network: str | None = None) -> str:
    """Write a NoCloud seed image to `path` (atomically) and return the tool used.

    `network` overrides the generated network-config (v2, DHCP on `mac`).
    """
    tool = available_tool()
    if tool is None:
        raise SeedToolError(
            "cannot build a cloud-init seed: install genisoimage (or xorriso, or mtools)"
        )
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".seed-", dir=directory) as tmp:
        contents = {
            "user-data": user_data if user_data is not None else default_user_data(),
            "meta-data": meta_data(instance_id, hostname),
            "network-config": network if network is not None else network_config(mac),
        }
        files = []
        for name, text in contents.items():
            file = os.path.join(tmp, name)
            with open(file, "w") as f:
                f.write(text)
            files.append(file)
        out = os.path.join(tmp, "seed.img")
        if tool == "mcopy":
            _vfat(out, files)
        else:
            _iso(tool, out, files)
        os.chmod(out, 0o644)
        os.replace(out, path)
    return tool
