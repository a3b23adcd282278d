"""The libvirt domain XML of a VM: what the guest gets, and that libvirt accepts it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from compute.domain import METADATA_NS, render
from compute.spec import VMRecord

SOCKET = "/run/basalt/nbd.sock"
CONSOLE_SOCKET = "/var/lib/basalt/console/web.sock"


def record(**kw) -> VMRecord:
    base = dict(name="web", uuid="6f1c4f5e-3b1d-4d43-9c55-2f4a8f0d9a11", volume="web-root",
                network="prod", memory_mib=512, cpus=2, mac="52:54:00:12:34:56", ip="10.0.0.2",
                tap="bt-0123456789ab", console_log="/var/lib/basalt/console/web.log",
                domain_type="qemu")
    base.update(kw)
    return VMRecord(**base)


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def test_identity_memory_and_cpus():
    dom = parse(render(record(), SOCKET))
    assert dom.get("type") == "qemu"
    assert dom.findtext("name") == "basalt-web"
    assert dom.findtext("uuid") == "6f1c4f5e-3b1d-4d43-9c55-2f4a8f0d9a11"
    memory = dom.find("memory")
    assert (memory.get("unit"), memory.text) == ("MiB", "512")
    assert dom.findtext("vcpu") == "2"
    meta = dom.find(f"metadata/{{{METADATA_NS}}}vm")
    assert meta.get("name") == "web" and meta.get("volume") == "web-root"


def test_disk_is_the_volume_over_the_nbd_unix_socket():
    dom = parse(render(record(), SOCKET))
    disks = dom.findall("devices/disk")
    assert len(disks) == 1
    disk = disks[0]
    assert (disk.get("type"), disk.get("device")) == ("network", "disk")
    driver = disk.find("driver")
    assert (driver.get("name"), driver.get("type")) == ("qemu", "raw")
    source = disk.find("source")
    assert (source.get("protocol"), source.get("name")) == ("nbd", "web-root")
    host = source.find("host")
    assert (host.get("transport"), host.get("socket")) == ("unix", SOCKET)
    assert host.get("name") is None and host.get("port") is None
    target = disk.find("target")
    assert (target.get("dev"), target.get("bus")) == ("vda", "virtio")


def test_nic_is_basalts_tap_with_the_reserved_mac():
    nic = parse(render(record(), SOCKET)).find("devices/interface")
    assert nic.get("type") == "ethernet"
    assert nic.find("mac").get("address") == "52:54:00:12:34:56"
    target = nic.find("target")
    assert (target.get("dev"), target.get("managed")) == ("bt-0123456789ab", "no")
    assert nic.find("model").get("type") == "virtio"


def test_nic_on_a_bridge():
    nic = parse(render(record(), SOCKET, bridge="bsl-prod")).find("devices/interface")
    assert nic.get("type") == "bridge"
    assert nic.find("source").get("bridge") == "bsl-prod"
    assert nic.find("mac").get("address") == "52:54:00:12:34:56"
    assert nic.find("target") is None
    assert nic.find("model").get("type") == "virtio"


def test_acpi_and_power_events():
    dom = parse(render(record(), SOCKET))
    assert dom.find("features/acpi") is not None
    assert dom.findtext("on_poweroff") == "destroy"
    assert dom.findtext("on_reboot") == "restart"


def test_direct_kernel_boot():
    dom = parse(render(record(kernel="/k/vmlinuz", initrd="/k/initrd", cmdline="console=ttyS0"),
                       SOCKET))
    os_el = dom.find("os")
    assert os_el.findtext("type") == "hvm"
    assert os_el.findtext("kernel") == "/k/vmlinuz"
    assert os_el.findtext("initrd") == "/k/initrd"
    assert os_el.findtext("cmdline") == "console=ttyS0"
    assert os_el.find("boot") is None


def test_disk_boot_without_kernel():
    os_el = parse(render(record(), SOCKET)).find("os")
    assert os_el.find("kernel") is None
    assert os_el.find("boot").get("dev") == "hd"


def test_serial_console_goes_to_the_log_file():
    dom = parse(render(record(), SOCKET))
    serial = dom.find("devices/serial")
    assert serial.get("type") == "file"
    source = serial.find("source")
    assert (source.get("path"), source.get("append")) == ("/var/lib/basalt/console/web.log", "on")
    console = dom.find("devices/console")
    assert console.find("target").get("type") == "serial"


def test_serial_console_takes_input_on_a_socket_and_keeps_the_log():
    dom = parse(render(record(), SOCKET, console_socket=CONSOLE_SOCKET))
    for el in (dom.find("devices/serial"), dom.find("devices/console")):
        assert el.get("type") == "unix"
        source = el.find("source")
        assert (source.get("mode"), source.get("path")) == ("bind", CONSOLE_SOCKET)
        log = el.find("log")
        assert (log.get("file"), log.get("append")) == ("/var/lib/basalt/console/web.log", "on")
    assert dom.find("devices/serial/target").get("port") == "0"
    assert dom.find("devices/console/target").get("type") == "serial"


def test_kvm_gets_host_cpu_and_tcg_does_not():
    assert parse(render(record(domain_type="kvm"), SOCKET)).find("cpu").get("mode") == \
        "host-passthrough"
    assert parse(render(record(domain_type="qemu"), SOCKET)).find("cpu") is None


def test_seed_disk_is_read_only_second_disk():
    dom = parse(render(record(seed="/var/lib/basalt/seed/web.img"), SOCKET))
    seed = dom.findall("devices/disk")[1]
    assert seed.get("type") == "file"
    assert seed.find("source").get("file") == "/var/lib/basalt/seed/web.img"
    assert seed.find("target").get("dev") == "vdb"
    assert seed.find("readonly") is not None


@pytest.mark.parametrize("bridge", [None, "bsl-prod"])
def test_libvirt_accepts_and_keeps_it(hypervisor, bridge):
    xml = render(record(domain_type="test", kernel="/k/vmlinuz", initrd="/k/initrd",
                        cmdline="console=ttyS0"), SOCKET, bridge=bridge,
                 console_socket=CONSOLE_SOCKET)
    dom = hypervisor.defineXML(xml)
    back = parse(dom.XMLDesc())
    host = back.find("devices/disk/source/host")
    assert (host.get("transport"), host.get("socket")) == ("unix", SOCKET)
    assert back.find("devices/disk/source").get("name") == "web-root"
    assert back.find("devices/interface/mac").get("address") == "52:54:00:12:34:56"
    assert back.find("features/acpi") is not None
    assert back.findtext("os/cmdline") == "console=ttyS0"
    assert int(back.findtext("memory")) == 512 * 1024  # libvirt reports KiB
    serial = back.find("devices/serial")
    assert serial.get("type") == "unix"
    assert serial.find("source").get("path") == CONSOLE_SOCKET
    assert serial.find("log").get("file") == "/var/lib/basalt/console/web.log"
