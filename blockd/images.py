"""Volumes from images: an image is an object, a volume made from it a thin clone.

``basalt image import`` stores a raw or qcow2 disk image as an object in the
``basalt-images`` bucket. The first volume made from an image materialises it
once into a hidden base volume (``image.<name>.<etag>``, chunks that are all
zeros left as holes) and snapshots it; every volume made from the image is
then an instant copy-on-write clone of that snapshot. Re-importing an image
under the same name gives it a new ETag, hence a new base.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile

from storaged import NoSuchKey, ObjectStore

from .manager import VolumeError, VolumeInfo, VolumeManager
from .pool import CHUNK

BUCKET = "basalt-images"
QCOW2_MAGIC = b"QFI\xfb"


def base_name(image: str, etag: str) -> str:
    return f"image.{image}.{etag[:12]}"


async def volume_from_image(manager: VolumeManager, store: ObjectStore, image: str,
                            name: str, size: int | None = None) -> VolumeInfo:
    """A new volume ``name`` with the image's content (grown to ``size`` if larger)."""
    try:
        info = store.head_object(BUCKET, image)
    except (NoSuchKey, Exception) as exc:
        if isinstance(exc, VolumeError):
            raise
        raise VolumeError(404, "NoSuchImage", f"image {image} does not exist") from None
    base = base_name(image, info.etag.replace("-", ""))
    if f"{base}@base" not in manager.records:
        await _materialise(manager, store, image, base)
    volume = await manager.clone(f"{base}@base", name)
    if size is not None and size > volume.size:
        volume = await manager.resize(name, size)
    return volume


async def _materialise(manager: VolumeManager, store: ObjectStore, image: str,
                       base: str) -> None:
    workdir = tempfile.mkdtemp(prefix="basalt-image-")
    try:
        raw_path = await _raw_copy(store, image, workdir)
        size = os.path.getsize(raw_path)
        if base in manager.records:  # an earlier attempt died half-way
            await manager.delete(base)
        await manager.create(base, max(size, 512))
        await _fill(raw_path, size, manager, base)
        await manager.flush()
        await manager.snapshot(base, "base")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _raw_copy(store: ObjectStore, image: str, workdir: str) -> str:
    """The image as a sparse raw file (qcow2 converted with qemu-img)."""
    path = os.path.join(workdir, "image")
    reader = await store.get_object(BUCKET, image)
    head = b""
    with open(path, "wb") as f:
        async for chunk in reader:
            data = bytes(chunk)
            head = head or data[:4]
            if data.count(0) == len(data):
                f.seek(len(data), os.SEEK_CUR)  # keep zeros as holes
            else:
                f.write(data)
        f.truncate(f.tell())
    if head != QCOW2_MAGIC:
        return path
    raw = os.path.join(workdir, "image.raw")
    if shutil.which("qemu-img") is None:
        raise VolumeError(501, "QemuImgMissing",
                          "qcow2 images need qemu-img (Debian package qemu-utils)")
    out = await asyncio.to_thread(subprocess.run,
                                  ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, raw],
                                  capture_output=True, text=True)
    if out.returncode != 0:
        raise VolumeError(400, "InvalidImage", f"image {image}: {out.stderr.strip()}")
    return raw


def _read_data(f, offset: int, size: int) -> tuple[int, bytes]:
    """The next run of up to 4 MiB that holds data (holes skipped), from ``offset``."""
    try:
        offset = os.lseek(f.fileno(), offset, os.SEEK_DATA)
    except OSError:  # ENXIO: only a hole is left
        return size, b""
    offset -= offset % CHUNK
    f.seek(offset)
    return offset, f.read(min(4 << 20, size - offset))


async def _fill(path: str, size: int, manager: VolumeManager, name: str) -> None:
    """Copy the non-zero chunks of a raw file into a fresh volume. Slots are taken
    on the event loop (the manager's state is not thread-safe); reads and writes
    of the data run in threads."""
    zero = bytes(CHUNK)
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            offset, data = await asyncio.to_thread(_read_data, f, offset, size)
            if not data:
                break
            jobs = []
            for at in range(0, len(data), CHUNK):
                piece = data[at:at + CHUNK]
                if piece != zero[:len(piece)]:
                    jobs.append((manager.own_chunk(name, (offset + at) // CHUNK), piece))
            await manager.store.run(_write_slots, manager.pool, jobs)
            offset += len(data)


def _write_slots(pool, jobs) -> None:
    for slot, piece in jobs:
        pool.write(slot, 0, piece)
