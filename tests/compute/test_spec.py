"""Names, sizes and boot options of a VM spec: pure rules, no hypervisor."""

from __future__ import annotations

import pytest

from compute.errors import InvalidVMError
from compute.spec import VMRecord, VMSpec, domain_name, owner, parse_cpus, parse_memory, validate_name


@pytest.mark.parametrize("name", ["a", "web-1", "x" * 48, "0vm"])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "Web", "a_b", "a.b", "x" * 49, "a b", None, 7])
def test_invalid_names(name):
    with pytest.raises(InvalidVMError):
        validate_name(name)


def test_domain_and_owner_names_are_prefixed():
    assert domain_name("web") == "basalt-web"
    assert owner("web") == "vm.web"


@pytest.mark.parametrize("value,mib", [
    (256, 256), ("256", 256), ("256M", 256), ("256MiB", 256), ("256mb", 256), ("1G", 1024),
    ("2GiB", 2048), ("65536K", 64), (str(64 << 20) + "B", 64), ("1T", 1 << 20),
])
def test_memory_sizes(value, mib):
    assert parse_memory(value) == mib


@pytest.mark.parametrize("value", [16, "16M", "0", "2T", "1.5G", "lots", "100000K", True, 1.5,
                                   None])
def test_bad_memory_sizes(value):
    with pytest.raises(InvalidVMError):
        parse_memory(value)


@pytest.mark.parametrize("value,cpus", [(1, 1), ("4", 4), (64, 64)])
def test_cpus(value, cpus):
    assert parse_cpus(value) == cpus


@pytest.mark.parametrize("value", [0, 65, -1, "two", None, True, 1.5])
def test_bad_cpus(value):
    with pytest.raises(InvalidVMError):
        parse_cpus(value)


def test_spec_validation_normalises(kernel, initrd):
    spec = VMSpec("vm", "vol", "net", "1G", "2", kernel, initrd, "console=ttyS0").validated()
    assert (spec.memory, spec.cpus, spec.kernel, spec.initrd) == (1024, 2, kernel, initrd)


def test_spec_needs_existing_absolute_kernel(tmp_path, kernel):
    with pytest.raises(InvalidVMError, match="absolute"):
        VMSpec("vm", "vol", "net", kernel="vmlinuz").validated()
    with pytest.raises(InvalidVMError, match="does not exist"):
        VMSpec("vm", "vol", "net", kernel=str(tmp_path / "missing")).validated()


def test_initrd_or_cmdline_without_kernel_is_refused(initrd):
    with pytest.raises(InvalidVMError, match="need a kernel"):
        VMSpec("vm", "vol", "net", initrd=initrd).validated()
    with pytest.raises(InvalidVMError, match="need a kernel"):
        VMSpec("vm", "vol", "net", cmdline="console=ttyS0").validated()


def test_spec_requires_volume_and_network():
    with pytest.raises(InvalidVMError, match="volume"):
        VMSpec("vm", "", "net").validated()
    with pytest.raises(InvalidVMError, match="network"):
        VMSpec("vm", "vol", "").validated()


def test_record_roundtrip_ignores_unknown_keys():
    record = VMRecord("vm", "u", "vol", "net", 256, 1, "52:54:00:00:00:01", "10.0.0.2", "bt-x",
                      "/log", "qemu")
    raw = record.dumps().replace(b"{", b'{"from_the_future": 1, ', 1)
    assert VMRecord.loads(raw) == record
    assert record.as_dict()["domain"] == "basalt-vm"
