"""ComputeManager against libvirt's test driver: lifecycle, records, errors, cleanup."""

from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

from compute.errors import (  # noqa: E402
    ComputeError,
    HypervisorError,
    InvalidVMError,
    VMExistsError,
    VMNotFoundError,
    VMStateError,
    VolumeUnavailableError,
)


def create(manager, name="vm1", volume="vol1", network="net1", **kw):
    return manager.create(name, volume, network, **kw)


def test_create_defines_a_stopped_domain(manager, hypervisor, networks, kernel, initrd):
    record = create(manager, memory="128M", cpus=2, kernel=kernel, initrd=initrd,
                    cmdline="console=ttyS0")
    assert (record.memory_mib, record.cpus, record.domain_type) == (128, 2, "test")
    assert networks.reserved[("net1", "vm.vm1")].mac == record.mac
    assert networks.reserved[("net1", "vm.vm1")].ip == record.ip
    assert record.tap == networks.tap_records[("net1", "vm.vm1")].name
    dom = hypervisor.lookupByName("basalt-vm1")
    assert dom.isPersistent() and not dom.isActive()
    xml = ET.fromstring(dom.XMLDesc())
    assert xml.find("devices/interface/mac").get("address") == record.mac
    assert xml.find("devices/disk/source/host").get("socket") == manager.nbd_socket
    assert xml.findtext("os/kernel") == kernel
    info = manager.info("vm1")
    assert (info["state"], info["ip"], info["domain"]) == ("shutoff", record.ip, "basalt-vm1")


def test_lifecycle(manager, hypervisor):
    create(manager)
    assert manager.start("vm1")["state"] == "running"
    assert manager.start("vm1")["state"] == "running"  # idempotent
    assert manager.get("vm1").want_running
    assert manager.reboot("vm1")["state"] == "running"
    assert manager.reboot("vm1", hard=True)["state"] == "running"
    stopped = manager.stop("vm1", timeout=5)
    assert stopped["state"] == "shutoff" and stopped["stopped_by"] == "acpi"
    assert not manager.get("vm1").want_running
    assert manager.stop("vm1")["stopped_by"] == ""  # already stopped
    with pytest.raises(VMStateError):
        manager.reboot("vm1")


def test_stop_destroys_when_the_guest_ignores_the_power_button(manager, hypervisor,
                                                               monkeypatch):
    create(manager)
    manager.start("vm1")
    monkeypatch.setattr(type(manager), "_acpi", lambda self, dom, action: None)
    result = manager.stop("vm1", timeout=0.3)
    assert result["stopped_by"] == "destroy"
    assert (result["state"], result["state_reason"]) == ("shutoff", "destroyed")


def test_list_is_sorted_with_live_state(manager):
    create(manager, "b", volume="vol1")
    create(manager, "a", volume="vol2")
    manager.start("b")
    assert [(v["name"], v["state"]) for v in manager.list()] == [("a", "shutoff"),
                                                                 ("b", "running")]


def test_delete_removes_domain_address_tap_and_files(manager, hypervisor, networks, state_dir):
    record = create(manager)
    manager.start("vm1")
    with open(record.console_log, "w") as f:
        f.write("boot\n")
    manager.delete("vm1")
    assert "basalt-vm1" not in [d.name() for d in hypervisor.listAllDomains()]
    assert ("net1", "vm.vm1") not in networks.reserved
    assert ("net1", "vm.vm1") not in networks.tap_records
    assert not os.path.exists(record.console_log)
    assert manager.list() == []
    with pytest.raises(VMNotFoundError):
        manager.delete("vm1")
    # The name is free again.
    create(manager)


def test_records_survive_a_new_manager(make_manager, hypervisor):
    first = make_manager()
    record = create(first)
    first.start("vm1")
    first.close()
    second = make_manager()
    assert second.get("vm1") == dataclasses.replace(record, want_running=True)
    info = second.info("vm1")
    assert (info["uuid"], info["mac"], info["ip"], info["state"]) == \
        (record.uuid, record.mac, record.ip, "running")
    assert second.restore() == ["vm1: running"]


def test_restore_redefines_a_lost_domain_and_restarts_what_should_run(make_manager, hypervisor,
                                                                      networks):
    manager = make_manager()
    create(manager, "keep", volume="vol1")
    create(manager, "run", volume="vol2")
    manager.start("run")
    # The host rebooted: libvirt lost everything, the network lost its taps.
    for name in ("basalt-keep", "basalt-run"):
        dom = hypervisor.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    networks.tap_records.clear()
    report = make_manager().restore()
    assert "keep: redefined the domain libvirt had lost" in report
    assert "keep: off" in report
    assert any(line.startswith("run: restarted") for line in report), report
    assert hypervisor.lookupByName("basalt-run").isActive()
    assert not hypervisor.lookupByName("basalt-keep").isActive()
    assert ("net1", "vm.keep") in networks.tap_records and ("net1", "vm.run") in \
        networks.tap_records


def test_restore_leaves_a_guest_that_shut_itself_down(manager, hypervisor):
    create(manager)
    manager.start("vm1")
    hypervisor.lookupByName("basalt-vm1").shutdown()  # as the guest's own poweroff
    assert manager.restore() == ["vm1: off (the guest shut itself down)"]
    assert not manager.get("vm1").want_running
    assert not hypervisor.lookupByName("basalt-vm1").isActive()


def test_start_redefines_from_the_record(manager, hypervisor):
    create(manager)
    hypervisor.lookupByName("basalt-vm1").undefine()
    assert manager.info("vm1")["state"] == "undefined"
    assert manager.start("vm1")["state"] == "running"


# -- errors --------------------------------------------------------------------------


def test_unknown_volume(manager, networks):
    with pytest.raises(VolumeUnavailableError) as err:
        create(manager, volume="nope")
    assert (err.value.status, err.value.code) == (404, "NoSuchVolume")
    assert "nope" in err.value.message
    assert networks.reserved == {} and networks.tap_records == {}


def test_read_only_volume(manager):
    with pytest.raises(VolumeUnavailableError) as err:
        create(manager, volume="snap")
    assert (err.value.status, err.value.code) == (409, "VolumeReadOnly")


def test_volume_already_used_by_another_vm(manager):
    create(manager, "a")
    with pytest.raises(VolumeUnavailableError) as err:
        create(manager, "b")
    assert (err.value.status, err.value.code) == (409, "VolumeInUse")


def test_unknown_network(manager, hypervisor):
    with pytest.raises(ComputeError) as err:
        create(manager, network="nonet")
    assert (err.value.status, err.value.code) == (404, "NoSuchNetwork")
    assert "basalt-vm1" not in [d.name() for d in hypervisor.listAllDomains()]


def test_duplicate_name(manager):
    create(manager)
    with pytest.raises(VMExistsError) as err:
        create(manager, volume="vol2")
    assert err.value.status == 409


def test_foreign_domain_with_the_same_name(manager, hypervisor):
    hypervisor.defineXML("<domain type='test'><name>basalt-vm1</name><memory>65536</memory>"
                         "<os><type>hvm</type></os></domain>")
    with pytest.raises(VMExistsError, match="libvirt domain"):
        create(manager)


def test_leftover_of_a_failed_create_is_replaced(manager, hypervisor, networks):
    record = create(manager)
    manager.store.remove("vm1")  # as if the process died before writing the record
    again = create(manager)
    assert again.uuid != record.uuid
    assert hypervisor.lookupByName("basalt-vm1").UUIDString() == again.uuid


@pytest.mark.parametrize("kw,match", [
    ({"name": "Bad_Name"}, "invalid VM name"),
    ({"memory": "1K"}, "memory"),
    ({"cpus": 0}, "CPU count"),
    ({"kernel": "relative/vmlinuz"}, "absolute"),
    ({"cmdline": "console=ttyS0"}, "need a kernel"),
])
def test_invalid_specs(manager, networks, kw, match):
    kw.setdefault("name", "vm1")
    with pytest.raises(InvalidVMError, match=match) as err:
        manager.create(kw.pop("name"), "vol1", "net1", **kw)
    assert err.value.status == 400
    assert networks.reserved == {}


def test_a_failed_define_leaves_nothing_behind(manager, hypervisor, networks, monkeypatch):
    import compute.manager as mod

    monkeypatch.setattr(mod, "render", lambda *a, **k: "<domain type='test'><name>x")
    with pytest.raises(HypervisorError):
        create(manager)
    assert manager.list() == []
    assert networks.reserved == {} and networks.tap_records == {}
    assert "basalt-vm1" not in [d.name() for d in hypervisor.listAllDomains()]


def test_unknown_vm(manager):
    for call in (manager.info, manager.start, manager.stop, manager.reboot, manager.delete,
                 manager.console):
        with pytest.raises(VMNotFoundError) as err:
            call("ghost")
        assert (err.value.status, err.value.code) == (404, "NoSuchVM")


def test_unreachable_libvirt(networks, volumes, tmp_path):
    from compute.manager import ComputeManager

    mgr = ComputeManager(str(tmp_path / "c"), "qemu:///system?socket=/nonexistent/sock",
                         networks, str(tmp_path / "nbd.sock"), volume_lookup=volumes,
                         accel="tcg")
    try:
        with pytest.raises(HypervisorError) as err:
            mgr.create("vm1", "vol1", "net1")
        assert (err.value.status, err.value.code) == (503, "HypervisorUnavailable")
        assert networks.reserved == {}
    finally:
        mgr.close()


def test_bridge_nic_mode(make_manager, hypervisor, networks):
    manager = make_manager(nic="bridge")
    record = create(manager)
    assert record.tap == "" and networks.tap_records == {}
    nic = ET.fromstring(hypervisor.lookupByName("basalt-vm1").XMLDesc()).find("devices/interface")
    assert nic.get("type") == "bridge"
    assert nic.find("source").get("bridge") == networks.get("net1").bridge


def test_console_reads_the_log(manager):
    record = create(manager)
    assert manager.console("vm1") == (b"", 0)
    with open(record.console_log, "wb") as f:
        f.write(b"hello\nworld\n")
    assert manager.console("vm1") == (b"hello\nworld\n", 12)
    assert manager.console("vm1", 6) == (b"world\n", 12)
    assert manager.console("vm1", -6) == (b"world\n", 12)


def test_user_data_builds_a_seed_disk(manager, hypervisor):
    from compute import seed

    if seed.available_tool() is None:
        pytest.skip("no genisoimage/xorriso/mtools")
    record = create(manager, user_data="#cloud-config\nhostname: vm1\n")
    assert record.seed and os.path.getsize(record.seed) > 0
    disks = ET.fromstring(hypervisor.lookupByName("basalt-vm1").XMLDesc()).findall("devices/disk")
    assert disks[1].find("source").get("file") == record.seed
    manager.delete("vm1")
    assert not os.path.exists(record.seed)


def test_hypervisor_errors_carry_libvirts_message(manager, hypervisor, monkeypatch):
    create(manager)

    def broken(self):
        raise libvirt.libvirtError("boom")

    monkeypatch.setattr(libvirt.virDomain, "create", broken)
    with pytest.raises(HypervisorError, match="starting VM vm1"):
        manager.start("vm1")


def test_unavailable_reason():
    import compute

    assert compute.unavailable_reason("test:///default") is None
    reason = compute.unavailable_reason("qemu:///system?socket=/nonexistent/sock")
    assert reason and "cannot connect to libvirt" in reason


def test_console_input_goes_to_the_vms_console_socket(manager, hypervisor):
    from compute import console

    from .fakes import FakeConsoleSocket

    record = create(manager)
    path = console.socket_path(record.console_log)
    serial = ET.fromstring(hypervisor.lookupByName("basalt-vm1").XMLDesc()).find("devices/serial")
    assert (serial.get("type"), serial.find("source").get("path")) == ("unix", path)
    with pytest.raises(VMStateError, match="not running"):
        manager.console_input("vm1", b"root\r")
    manager.start("vm1")
    # Running without a socket: a VM an older Basalt started with an output-only port.
    with pytest.raises(ComputeError, match="stop and start it") as caught:
        manager.console_input("vm1", b"root\r")
    assert (caught.value.status, caught.value.code) == (409, "ConsoleOutputOnly")
    qemu = FakeConsoleSocket(path)
    try:
        manager.console_input("vm1", b"root\r")
        manager.console_input("vm1", b"")  # nothing to type: no connection
    finally:
        qemu.close()
    assert qemu.received == [b"root\r"]
    qemu = FakeConsoleSocket(path, reads=False)
    try:
        with pytest.raises(ComputeError) as caught:
            manager.console_input("vm1", b"z" * (4 << 20), timeout=0.2)
        assert (caught.value.status, caught.value.code) == (504, "ConsoleNotReading")
    finally:
        qemu.close()
    with pytest.raises(VMNotFoundError):
        manager.console_input("ghost", b"x")
    open(path, "w").close()
    manager.delete("vm1")
    assert not os.path.exists(path)
