"""`basalt image import` and volumes made from images (thin copy-on-write clones)."""

from __future__ import annotations

import json
import os
import subprocess

from .test_volume_backup import export_sha256, qemu_io


def test_raw_and_qcow2_images_become_thin_volumes(basalt_http, tmp_path):
    server = basalt_http
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(3 << 20))
        f.truncate(20 << 20)
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
                   check=True)
    server.cli("image", "import", str(raw), "raw-img")
    server.cli("image", "import", str(qcow2), "q-img")
    images = {i["name"]: i for i in json.loads(server.cli("image", "list", "--json").stdout)}
    assert images["raw-img"]["format"] == "raw" and images["q-img"]["format"] == "qcow2"
    server.cli("volume", "create", "from-raw", "--from-image", "raw-img")
    server.cli("volume", "create", "from-q", "--from-image", "q-img", "--size", "64M")
    server.cli("volume", "create", "from-q2", "--from-image", "q-img")
    import hashlib
    expected = hashlib.sha256(raw.read_bytes()).hexdigest()
    assert export_sha256(server, "from-raw", tmp_path) == expected
    info = json.loads(server.cli("volume", "info", "from-q", "--json").stdout)
    assert info["size"] == 64 << 20 and info["allocated"] == 3 << 20  # only the data, shared
    # clones are independent: writing one leaves the image and the other intact
    qemu_io(server, "from-q", "write -P 0x5a 0 1M", "flush")
    assert export_sha256(server, "from-q2", tmp_path) == expected
    missing = server.cli("volume", "create", "x", "--from-image", "nope", check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
