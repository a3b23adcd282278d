"""cloud-init NoCloud seed images."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from compute import seed


def test_contents():
    assert seed.meta_data("id-1", "web") == "instance-id: id-1\nlocal-hostname: web\n"
    config = seed.network_config("52:54:00:aa:bb:cc")
    assert "version: 2" in config and '"52:54:00:aa:bb:cc"' in config and "dhcp4: true" in config


@pytest.mark.skipif(shutil.which("genisoimage") is None or shutil.which("isoinfo") is None,
                    reason="needs genisoimage (and its isoinfo)")
def test_iso_has_label_and_files(tmp_path):
    path = str(tmp_path / "seed.img")
    tool = seed.build(path, instance_id="id-1", hostname="web", mac="52:54:00:aa:bb:cc",
                      user_data="#cloud-config\npackages: [htop]\n")
    assert tool == "genisoimage"
    pvd = subprocess.run(["isoinfo", "-d", "-i", path], capture_output=True, text=True).stdout
    assert "Volume id: cidata" in pvd
    files = subprocess.run(["isoinfo", "-R", "-f", "-i", path], capture_output=True,
                           text=True).stdout.split()
    assert sorted(files) == ["/meta-data", "/network-config", "/user-data"]

    def extract(name):
        return subprocess.run(["isoinfo", "-R", "-x", name, "-i", path], capture_output=True,
                              text=True).stdout

    assert extract("/user-data") == "#cloud-config\npackages: [htop]\n"
    assert "local-hostname: web" in extract("/meta-data")
    assert "52:54:00:aa:bb:cc" in extract("/network-config")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".seed-")]


def test_no_tool_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(seed.shutil, "which", lambda name: None)
    with pytest.raises(seed.SeedToolError, match="genisoimage"):
        seed.build(str(tmp_path / "s.img"), instance_id="i", hostname="h", mac="52:54:00:00:00:01")
