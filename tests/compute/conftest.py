"""Fixtures for the compute unit tests: libvirt's test driver, fake networks and volumes.

``test:///default`` is libvirt's in-process mock hypervisor: no daemon, no
QEMU. Its state is shared by every connection of the process while one is
open, so the fixture holds a guard connection and undefines every Basalt
domain afterwards.
"""

from __future__ import annotations

import pytest

from .fakes import FakeNetworks, FakeVolumes

try:
    import libvirt
except ImportError:  # the pure tests (specs, XML, console, seed) still run
    libvirt = None

TEST_URI = "test:///default"
GiB = 1 << 30


@pytest.fixture
def hypervisor():
    """A connection to the test driver; Basalt's domains are removed afterwards."""
    if libvirt is None:
        pytest.skip("libvirt-python is not installed (pip install libvirt-python)")
    conn = libvirt.open(TEST_URI)
    yield conn
    for dom in conn.listAllDomains():
        if dom.name().startswith("basalt-"):
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
    conn.close()


@pytest.fixture
def networks() -> FakeNetworks:
    nets = FakeNetworks()
    nets.create("net1", "10.77.0.0/24")
    nets.create("net2", "10.78.0.0/24")
    return nets


@pytest.fixture
def volumes() -> FakeVolumes:
    return FakeVolumes(vol1=(GiB, False), vol2=(GiB, False), snap=(GiB, True))


@pytest.fixture
def state_dir(tmp_path) -> str:
    return str(tmp_path / "compute")


@pytest.fixture
def make_manager(hypervisor, networks, volumes, state_dir, tmp_path):
    from compute.manager import ComputeManager

    made = []

    def make(**kw):
        kw.setdefault("volume_lookup", volumes)
        mgr = ComputeManager(kw.pop("state_dir", state_dir), TEST_URI, networks,
                             str(tmp_path / "nbd.sock"), **kw)
        made.append(mgr)
        return mgr

    yield make
    for mgr in made:
        mgr.close()


@pytest.fixture
def manager(make_manager):
    return make_manager()


@pytest.fixture
def kernel(tmp_path) -> str:
    """A file that stands in for a kernel image (the test driver never boots it)."""
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"\x00" * 64)
    return str(path)


@pytest.fixture
def initrd(tmp_path) -> str:
    path = tmp_path / "initrd.gz"
    path.write_bytes(b"\x1f\x8b" + b"\x00" * 30)
    return str(path)
