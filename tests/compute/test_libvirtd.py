"""compute.libvirtd.PrivateLibvirtd: a libvirtd of Basalt's own, leaving no trace on the host."""

from __future__ import annotations

import os
import shutil

import pytest

from compute.libvirtd import PrivateLibvirtd

from .lab import short_tmpdir

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("libvirtd", "unshare",
                                                          "qemu-system-x86_64")),
    reason="needs root, libvirtd, unshare and qemu-system-x86_64")

HOST_PATHS = ("/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")


@pytest.fixture
def root():
    path = short_tmpdir("bslt-lv-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_start_adopt_stop(root):
    before = {p: os.path.exists(p) for p in HOST_PATHS}
    daemon = PrivateLibvirtd(root)
    try:
        daemon.start()
        pid = daemon.pid()
        assert pid
        conn = libvirt.open(daemon.uri)
        try:
            assert conn.getType() == "QEMU"
            assert conn.listAllDomains() == []
        finally:
            conn.close()
        # A second handle on the same root adopts the running daemon.
        again = PrivateLibvirtd(root)
        again.start()
        assert again.pid() == pid
    finally:
        daemon.stop(destroy_domains=True)
    assert daemon.pid() is None
    assert {p: os.path.exists(p) for p in HOST_PATHS} == before, "libvirtd wrote to the host"
    assert os.path.exists(os.path.join(root, "etc", "qemu.conf"))


def test_socket_path_must_fit(tmp_path):
    with pytest.raises(ValueError, match="too long"):
        PrivateLibvirtd(str(tmp_path / ("x" * 120)))
