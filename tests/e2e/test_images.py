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


def _names(server) -> set[str]:
    return {v["name"] for v in json.loads(server.cli("volume", "list", "--json").stdout)}


def _refused(out, text: str) -> None:
    assert out.returncode != 0, out.stdout
    assert text in out.stderr and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.rstrip().splitlines()  # the error, maybe what to do next
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  ")), out.stderr


def test_imports_are_checked_and_never_replace_silently(basalt_http, tmp_path):
    server = basalt_http
    text = tmp_path / "x.txt"
    text.write_bytes(b"hello world!\n")
    _refused(server.cli("image", "import", str(text), "t", check=False),
             f"{text} is not a disk image: 13 bytes is not a multiple of 512 and no qcow2 header")
    _refused(server.cli("image", "import", str(tmp_path / "none.raw"), "t", check=False),
             "no such image file")
    _refused(server.cli("image", "import", "s3://no-such-bucket/k.raw", "t", check=False),
             "s3://no-such-bucket/k.raw: no such object")
    s3 = server.client()
    s3.create_bucket(Bucket="img-src")
    _refused(server.cli("image", "import", "s3://img-src/missing.raw", "t", check=False),
             "s3://img-src/missing.raw: no such object")
    s3.put_object(Bucket="img-src", Key="odd.raw", Body=b"x" * 1000)
    _refused(server.cli("image", "import", "s3://img-src/odd.raw", "t", check=False),
             "s3://img-src/odd.raw is not a disk image: 1000 bytes is not a multiple of 512")
    bad = json.loads(server.cli("image", "import", str(text), "t", "--json",
                                check=False).stdout)
    assert bad["error"] == "InvalidImage"
    assert "t" not in {i["name"] for i in json.loads(server.cli("image", "list",
                                                                "--json").stdout)}
    # an object source with the same bytes as a file: the same image
    data = os.urandom(1 << 20)
    s3.put_object(Bucket="img-src", Key="good.raw", Body=data)
    got = json.loads(server.cli("image", "import", "s3://img-src/good.raw", "from-s3",
                                "--json").stdout)
    assert got["size"] == 1 << 20 and got["format"] == "raw"
    # an existing name is refused unless --replace
    _refused(server.cli("image", "import", "s3://img-src/good.raw", "from-s3", check=False),
             "image from-s3 exists; use --replace")
    server.cli("volume", "create", "s3-user", "--from-image", "from-s3")
    _refused(server.cli("image", "import", "s3://img-src/good.raw", "from-s3", "--replace",
                        check=False), "image from-s3 is used by volumes s3-user")
    # replacing an unused image drops the old version's base volume
    old_base = json.loads(server.cli("volume", "info", "s3-user", "--json").stdout)["origin"]
    server.cli("volume", "delete", "s3-user")
    raw = tmp_path / "new.raw"
    raw.write_bytes(os.urandom(2 << 20))
    server.cli("image", "import", str(raw), "from-s3", "--replace")
    gone = server.cli("volume", "info", old_base.partition("@")[0], check=False)
    assert gone.returncode != 0 and "does not exist" in gone.stderr
    server.cli("volume", "create", "s3-user2", "--from-image", "from-s3")
    import hashlib
    assert export_sha256(server, "s3-user2", tmp_path) == hashlib.sha256(
        raw.read_bytes()).hexdigest()
    server.cli("volume", "delete", "s3-user2")
    server.cli("image", "delete", "from-s3")


def test_internal_volumes_are_hidden_and_protected_until_the_image_is_deleted(basalt_http,
                                                                             tmp_path):
    server = basalt_http
    raw = tmp_path / "deb.raw"
    raw.write_bytes(os.urandom(1 << 20) + bytes(1 << 20))
    server.cli("image", "import", str(raw), "deb")
    server.cli("volume", "create", "deb-vm", "--from-image", "deb")
    base_snap = json.loads(server.cli("volume", "info", "deb-vm", "--json").stdout)["origin"]
    base = base_snap.partition("@")[0]
    assert base.startswith("image.deb.") and base_snap.endswith("@base")
    # hidden: volume list and the NBD export list show the user's volume only
    assert "deb-vm" in _names(server) and not any(n.startswith("image.") for n in _names(server))
    listed = subprocess.run(["nbdinfo", "--list", f"nbd://127.0.0.1:{server.nbd_port}"],
                            capture_output=True, text=True, timeout=60)
    assert "deb-vm" in listed.stdout and "image." not in listed.stdout, listed.stdout
    # protected from users, over the admin API and NBD
    for args in (("volume", "delete", base), ("volume", "delete", base_snap),
                 ("volume", "resize", base, "--size", "64M"),
                 ("volume", "snapshot", base, "mine"), ("volume", "rollback", base_snap)):
        _refused(server.cli(*args, check=False),
                 "is internal to image deb; use basalt image delete")
    write = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x55 0 4k",
                            f"nbd://127.0.0.1:{server.nbd_port}/{base}"],
                           capture_output=True, text=True, timeout=60)
    assert write.returncode != 0 and "Permission denied" in write.stdout + write.stderr, \
        write.stdout + write.stderr  # exported read-only
    # the image lists the volume using it, and cannot be deleted while it does
    images = {i["name"]: i for i in json.loads(server.cli("image", "list", "--json").stdout)}
    assert images["deb"]["volumes"] == ["deb-vm"]
    _refused(server.cli("image", "delete", "deb", check=False),
             "image deb is used by volumes deb-vm; delete it first")
    server.cli("volume", "delete", "deb-vm")
    deleted = json.loads(server.cli("image", "delete", "deb", "--json").stdout)
    assert deleted["deleted"] and deleted["bases_deleted"] == [base]
    assert "deb" not in {i["name"] for i in json.loads(server.cli("image", "list",
                                                                  "--json").stdout)}
    gone = server.cli("volume", "info", base, check=False)
    assert gone.returncode != 0 and "does not exist" in gone.stderr
    _refused(server.cli("image", "delete", "deb", check=False), "image deb does not exist")
