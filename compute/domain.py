"""libvirt domain XML for a Basalt VM.

One function, `render`, turns a `VMRecord` into the persistent domain
definition; everything the guest sees is decided here:

- the disk is the Basalt volume over NBD through a Unix socket
  (``<disk type='network'><source protocol='nbd'><host transport='unix'>``):
  QEMU may run in another network namespace than Basalt, where Basalt's
  127.0.0.1 is a different loopback, but a socket path works across namespaces;
- the NIC is a virtio NIC with the MAC of the network's IPAM reservation, so
  the network's dnsmasq hands the guest its reserved address. By default it
  uses the tap Basalt's NetworkManager created and enslaved to the bridge
  (``<interface type='ethernet'><target dev=TAP managed='no'/>``): the tap is
  Basalt's record, survives guest restarts and is recreated by
  ``NetworkManager.ensure()``; with `bridge=` libvirt makes its own vnetN tap
  on that bridge instead (``<interface type='bridge'>``);
- ``<features><acpi/>`` so the ACPI power button (graceful stop) and the
  guest's own ACPI power-off (``poweroff -f``) work, and ``on_poweroff=destroy``
  so a powered-off guest leaves a stopped domain behind;
- the first serial port is a Unix socket QEMU listens on, for typing into
  the console, and logs everything the guest prints to a file Basalt reads
  (console.py); without a socket path (too long for a Unix socket) it only
  writes the log, as ``<serial type='file'>``;
- direct kernel boot when the record has a kernel (initrd and cmdline too),
  else the volume's boot loader.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .spec import VMRecord

METADATA_NS = "https://basalt.invalid/xmlns/compute/1"
METADATA_PREFIX = "basalt"
DISK_TARGET = "vda"
SEED_TARGET = "vdb"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = text
    return el


def metadata_element(record: VMRecord) -> ET.Element:
    """The ``<basalt:vm>`` element that marks a domain as Basalt's."""
    el = ET.Element(f"{{{METADATA_NS}}}vm")
    el.set("name", record.name)
    el.set("volume", record.volume)
    el.set("network", record.network)
    return el


def _serial(devices: ET.Element, tag: str, log: str, socket: str | None) -> ET.Element:
    if socket is None:
        el = _sub(devices, tag, type="file")
        _sub(el, "source", path=log, append="on")
    else:
        el = _sub(devices, tag, type="unix")
        _sub(el, "source", mode="bind", path=socket)
        _sub(el, "log", file=log, append="on")
    return el


def render(record: VMRecord, nbd_socket: str, bridge: str | None = None,
           console_socket: str | None = None) -> str:
    """The domain XML of `record`, its disk served from the NBD Unix socket `nbd_socket`.

    With `bridge`, the NIC is ``type='bridge'`` on that bridge (libvirt makes
    the tap); otherwise it is Basalt's own tap ``record.tap`` (managed='no').
    With `console_socket`, the serial console also takes input on that socket.
    """
    ET.register_namespace(METADATA_PREFIX, METADATA_NS)
    dom = ET.Element("domain", type=record.domain_type)
    _sub(dom, "name", record.domain)
    _sub(dom, "uuid", record.uuid)
    _sub(dom, "title", f"Basalt VM {record.name}")
    meta = _sub(dom, "metadata")
    meta.append(metadata_element(record))
    _sub(dom, "memory", str(record.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(record.cpus))

    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64")
    if record.kernel:
        _sub(os_el, "kernel", record.kernel)
        if record.initrd:
            _sub(os_el, "initrd", record.initrd)
        if record.cmdline:
            _sub(os_el, "cmdline", record.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")

    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if record.domain_type == "kvm":
        # The host's CPU as is: the guest gets every feature KVM can give it.
        _sub(dom, "cpu", mode="host-passthrough")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    disk = _sub(devices, "disk", type="network", device="disk")
    # No cache attribute: QEMU's default shows the guest a write cache, so the
    # guest's flushes become NBD FLUSH requests; discard reaches the thin volume.
    _sub(disk, "driver", name="qemu", type="raw", discard="unmap")
    source = _sub(disk, "source", protocol="nbd", name=record.volume)
    _sub(source, "host", transport="unix", socket=nbd_socket)
    _sub(disk, "target", dev=DISK_TARGET, bus="virtio")

    if record.seed:
        seed = _sub(devices, "disk", type="file", device="disk")
        _sub(seed, "driver", name="qemu", type="raw")
        _sub(seed, "source", file=record.seed)
        _sub(seed, "target", dev=SEED_TARGET, bus="virtio")
        _sub(seed, "readonly")

    if bridge:
        nic = _sub(devices, "interface", type="bridge")
        _sub(nic, "mac", address=record.mac)
        _sub(nic, "source", bridge=bridge)
    else:
        nic = _sub(devices, "interface", type="ethernet")
        _sub(nic, "mac", address=record.mac)
        _sub(nic, "target", dev=record.tap, managed="no")
    _sub(nic, "model", type="virtio")

    serial = _serial(devices, "serial", record.console_log, console_socket)
    _sub(serial, "target", port="0")
    console = _serial(devices, "console", record.console_log, console_socket)
    _sub(console, "target", type="serial", port="0")
    _sub(devices, "memballoon", model="none")

    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")
