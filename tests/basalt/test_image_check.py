"""`basalt image import` recognises disk images before uploading anything."""

import shutil
import struct
import subprocess

import pytest

from basalt.images import ImageError, check_image, import_image


def qcow2_header(version=3, backing=0, cluster_bits=16, size=1 << 30) -> bytes:
    return (b"QFI\xfb" + struct.pack(">IQII", version, backing, 0, cluster_bits)
            + struct.pack(">Q", size) + bytes(480))


def test_raw_images_are_non_empty_multiples_of_512():
    assert check_image(b"\x00" * 512, 512, "a.raw") == "raw"
    assert check_image(b"\xeb\x63\x90", 20 << 20, "a.raw") == "raw"
    with pytest.raises(ImageError, match=r"^x.txt is not a disk image: 13 bytes is not a "
                       r"multiple of 512 and no qcow2 header$"):
        check_image(b"hello world!\n", 13, "x.txt")
    with pytest.raises(ImageError, match="is not a disk image: it is empty"):
        check_image(b"", 0, "empty")


def test_qcow2_by_its_header():
    # the size of the file does not matter for qcow2 (qemu-img writes odd sizes)
    assert check_image(qcow2_header(), 196_624, "d.qcow2") == "qcow2"
    assert check_image(qcow2_header(version=2), 1000, "d.qcow2") == "qcow2"
    for header, reason in ((qcow2_header(version=4), "qcow2 version 4 is not supported"),
                           (qcow2_header(cluster_bits=40), "damaged qcow2 header"),
                           (qcow2_header(size=0), "qcow2 disk size 0 bytes"),
                           (qcow2_header(size=1 << 60), "is not between 1 byte"),
                           (qcow2_header(backing=512), "backing file"),
                           (qcow2_header()[:20], "cut short")):
        with pytest.raises(ImageError, match=reason):
            check_image(header, len(header), "d.qcow2")


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")
def test_a_real_qcow2_file_passes(tmp_path):
    path = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "10M"], check=True,
                   capture_output=True)
    data = path.read_bytes()
    assert check_image(data[:512], len(data), str(path)) == "qcow2"


class NoServer:
    """An admin client no request may reach: a bad file is refused before any."""

    endpoint = "http://127.0.0.1:9"

    def __getattr__(self, name):
        raise AssertionError(f"the server was used ({name})")


class Progress:
    def update(self, text: str) -> None:
        raise AssertionError("nothing may be uploaded")

    def done(self) -> None:
        pass


def test_import_refuses_before_contacting_the_server(tmp_path):
    text = tmp_path / "x.txt"
    text.write_bytes(b"hello world!\n")
    with pytest.raises(ImageError, match="13 bytes is not a multiple of 512"):
        import_image(NoServer(), str(text), "x", Progress())
    with pytest.raises(ImageError, match="no such image file"):
        import_image(NoServer(), str(tmp_path / "missing.raw"), "x", Progress())
    with pytest.raises(ImageError, match="image names are"):
        import_image(NoServer(), str(text), "bad/name", Progress())
