"""KVM-or-TCG verdicts: override, cache, and the probes themselves."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from compute import accel


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv(accel.ENV_OVERRIDE, raising=False)
    accel.forget()
    yield
    accel.forget()


def test_override(monkeypatch):
    monkeypatch.setenv(accel.ENV_OVERRIDE, "tcg")
    verdict = accel.detect()
    assert (verdict.accel, verdict.domain_type) == ("tcg", "qemu")
    monkeypatch.setenv(accel.ENV_OVERRIDE, "kvm")
    assert accel.detect().domain_type == "kvm"


def test_verdict_is_cached_in_memory_and_on_disk(tmp_path, monkeypatch):
    calls = []

    def probe(qemu, kernel, boot_timeout):
        calls.append(1)
        return accel.Verdict("tcg", "test says so", 1.0)

    monkeypatch.setattr(accel, "probe", probe)
    cache = str(tmp_path / "accel.json")
    assert accel.detect(cache).reason == "test says so"
    assert accel.detect(cache).reason == "test says so"
    assert len(calls) == 1
    accel.forget()
    assert accel.detect(cache).accel == "tcg"
    assert len(calls) == 1, "the on-disk verdict was not reused"
    with open(cache) as f:
        data = json.load(f)
    data["key"]["boot_id"] = "another-boot"
    with open(cache, "w") as f:
        json.dump(data, f)
    accel.forget()
    accel.detect(cache)
    assert len(calls) == 2, "a verdict from another boot was reused"


def test_missing_device_means_tcg(monkeypatch, tmp_path):
    assert accel.kvm_device_usable(str(tmp_path / "kvm")) is not None
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: "no /dev/kvm")
    verdict = accel.probe()
    assert verdict.accel == "tcg" and "no /dev/kvm" in verdict.reason


def test_no_kernel_to_verify_with_means_tcg(monkeypatch):
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: None)
    monkeypatch.setattr(accel, "kvm_runs_guest_code", lambda: None)
    monkeypatch.setattr(accel, "find_kernel", lambda: None)
    verdict = accel.probe()
    assert verdict.accel == "tcg" and "no kernel" in verdict.reason


@pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="no usable /dev/kvm")
def test_guest_code_probe_runs():
    # Passing here does not mean real guests run (see the module docstring);
    # it must just answer without hanging or crashing.
    result = accel.kvm_runs_guest_code()
    assert result is None or isinstance(result, str)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None or accel.find_kernel() is None,
                    reason="needs qemu-system-x86 and a kernel in /boot")
def test_boot_probe_succeeds_under_tcg():
    """The probe's success path: the kernel boots to its panic and QEMU exits."""
    assert accel.qemu_boots_kernel(accel.find_kernel(), accel="tcg", timeout=120) is None
