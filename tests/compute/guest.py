"""A tiny Linux guest for the compute tests: Debian's kernel + a busybox initramfs.

The initramfs is built here, in Python (cpio "newc" + gzip): busybox-static
as every tool, the virtio modules the Debian kernel does not build in (taken
with their dependencies from modules.dep, loaded with insmod), a udhcpc
script, and an /init the test writes. Nothing is downloaded.
"""

from __future__ import annotations

import glob
import gzip
import lzma
import os
import re
import shutil
import stat
import subprocess

BUSYBOX = "/bin/busybox"
# What the guest needs from virtio (PCI transport, NIC, disk), and for the ACPI
# power button to reach busybox's acpid (button driver, input events).
VIRTIO_MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "evdev", "button")

UDHCPC_SCRIPT = """#!/bin/sh
# busybox udhcpc hook: configure what the DHCP server handed out.
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$subnet" dev "$interface"
    gw="${router%% *}"
    [ -n "$gw" ] && ip route replace default via "$gw" dev "$interface"
    echo "ip=$ip" > /tmp/lease
    echo "router=$gw" >> /tmp/lease
    ;;
esac
exit 0
"""


def find_kernel() -> tuple[str, str] | None:
    """(vmlinuz path, release) of the newest Debian kernel with its modules, or None."""
    found = []
    for path in glob.glob("/boot/vmlinuz-*"):
        release = path[len("/boot/vmlinuz-"):]
        if os.path.isfile(f"/lib/modules/{release}/modules.dep") and os.access(path, os.R_OK):
            found.append((os.path.getmtime(path), path, release))
    if not found:
        return None
    _, path, release = max(found)
    return path, release


def module_files(release: str, names=VIRTIO_MODULES) -> list[str]:
    """Paths (relative to /lib/modules/RELEASE) of `names` and their dependencies,
    dependencies first. Modules built into the kernel are simply not listed."""
    base = f"/lib/modules/{release}"
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    with open(f"{base}/modules.dep") as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
            name = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", os.path.basename(path)).replace("-", "_")
            by_name[name] = path
    builtin = set()
    try:
        with open(f"{base}/modules.builtin") as f:
            builtin = {re.sub(r"\.ko$", "", os.path.basename(x.strip())).replace("-", "_")
                       for x in f}
    except FileNotFoundError:
        pass
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in names:
        if name in by_name:
            visit(by_name[name])
        elif name not in builtin:
            raise FileNotFoundError(f"kernel module {name} not found for {release}")
    return order


def _module_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        raise RuntimeError(f"{path}: zstd-compressed modules are not supported by this helper")
    return data


class _Cpio:
    """A minimal cpio "newc" archive writer (what the kernel unpacks as initramfs)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        raw = name.encode() + b"\0"
        header = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0))
        self.ino += 1
        blob = header.encode() + raw
        blob += b"\0" * (-len(blob) % 4)
        blob += data + b"\0" * (-len(data) % 4)
        self.parts.append(blob)

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def bytes(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self.parts)


def shared_libraries(binary: str) -> list[str]:
    """Absolute paths of the shared libraries (and ELF interpreter) `binary` needs;
    empty for a static binary. Debian's busybox-static is static; its `busybox`
    package (which replaces busybox-static when installed) is not."""
    result = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if result.returncode != 0:
        return []  # "not a dynamic executable"
    found = []
    for line in result.stdout.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            found.append(m.group(1))
    return found


def build_initramfs(out: str, init: str, release: str) -> None:
    """Write a gzip'd initramfs with busybox, the virtio modules, udhcpc's script and `init`."""
    busybox = BUSYBOX if os.path.exists(BUSYBOX) else shutil.which("busybox")
    if not busybox:
        raise FileNotFoundError(BUSYBOX)
    archive = _Cpio()
    dirs = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "etc/udhcpc", "proc", "sys",
            "dev", "tmp", "lib", "lib/modules"]
    libs = shared_libraries(busybox)
    for lib in libs:
        parts = os.path.dirname(lib).strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.append(d)
    for d in dirs:
        archive.dir(d)
    with open(busybox, "rb") as f:
        archive.file("bin/busybox", f.read(), 0o755)
    for lib in libs:
        with open(os.path.realpath(lib), "rb") as f:
            archive.file(lib.lstrip("/"), f.read(), 0o755)
    archive.symlink("bin/sh", "busybox")
    archive.file("etc/udhcpc/default.script", UDHCPC_SCRIPT.encode(), 0o755)
    names = []
    for rel in module_files(release):
        name = re.sub(r"\.(xz|gz)$", "", os.path.basename(rel))
        archive.file(f"lib/modules/{name}", _module_bytes(f"/lib/modules/{release}/{rel}"))
        names.append(name)
    archive.file("modules.order", ("\n".join(names) + "\n").encode())
    archive.file("init", init.encode(), 0o755)
    with open(out, "wb") as f:
        f.write(gzip.compress(archive.bytes(), compresslevel=1))


def init_script(pattern: str, port: int = 5555, wait: int = 300) -> str:
    """An /init that boots, takes a DHCP lease, pings its gateway, writes
    "`pattern` boot=ID" (ID: this boot's id) to the start of /dev/vda, then
    waits (up to `wait` s) for a TCP connection on
    `port` before powering off. Each step prints a BASALT-* marker on ttyS0.

    With ``basalt.acpid=1`` on the kernel command line it also runs busybox's
    acpid, which powers the guest off when the ACPI power button is pressed
    (without it, the guest ignores the button, as a hung guest would). With
    ``basalt.echo=1`` it opens ttyS0, prints "BASALT-ECHO-READY", reads one
    line typed into the serial console and answers "BASALT-ECHO <line>"
    before going on (the console input tests)."""
    return f"""#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in $(cat /modules.order); do
  insmod /lib/modules/$m || echo "BASALT-INSMOD-FAILED $m"
done
echo "BASALT-GUEST-UP"
if grep -q 'basalt.acpid=1' /proc/cmdline; then
  mkdir -p /etc/acpi/PWRF /var/log
  printf '#!/bin/sh\necho BASALT-ACPI-POWER-BUTTON > /dev/console\npoweroff -f\n' \
    > /etc/acpi/PWRF/00000080
  chmod +x /etc/acpi/PWRF/00000080
  # In the foreground (backgrounded by the shell): daemonised, busybox's
  # acpid here never ran the action.
  acpid -f -c /etc/acpi > /dev/console 2>&1 &
  echo "BASALT-ACPID-UP"
fi
if grep -q 'basalt.echo=1' /proc/cmdline; then
  # Open the port before saying so: what arrives before an open is dropped.
  exec 3< /dev/ttyS0
  echo "BASALT-ECHO-READY"
  if read -r -t {wait} line <&3; then echo "BASALT-ECHO $line"; else echo "BASALT-ECHO-TIMEOUT"; fi
  exec 3<&-
fi
ip link set lo up
for i in $(seq 100); do [ -e /sys/class/net/eth0 ] && [ -e /dev/vda ] && break; sleep 0.1; done
ip link set eth0 up
if udhcpc -i eth0 -f -q -n -t 10 -T 2 -s /etc/udhcpc/default.script; then
  . /tmp/lease
  echo "BASALT-LEASE ip=$ip router=$router"
  if ping -c 3 -W 3 "$router" >/dev/null 2>&1; then
    echo "BASALT-PING-GATEWAY-OK $router"
  else
    echo "BASALT-PING-GATEWAY-FAILED $router"
  fi
else
  echo "BASALT-DHCP-FAILED"
fi
boot=$(cut -c1-8 /proc/sys/kernel/random/boot_id)
printf '%s boot=%s\n' '{pattern}' "$boot" > /tmp/pattern
if dd if=/tmp/pattern of=/dev/vda bs=4096 conv=fsync,notrunc 2>/dev/null; then
  sync
  echo "BASALT-DISK-WRITTEN boot=$boot"
else
  echo "BASALT-DISK-FAILED"
fi
echo "BASALT-WAITING port={port}"
timeout {wait} nc -l -p {port} > /dev/null 2>&1
echo "BASALT-POWEROFF"
poweroff -f
"""
