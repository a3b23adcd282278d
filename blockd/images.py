"""Volumes from images: an image is an object, a volume made from it a thin clone.

``basalt image import`` stores a raw or qcow2 disk image as an object in the
``basalt-images`` bucket. The first volume made from an image materialises it
once into a hidden base volume (``image.<name>.<etag>``, chunks that are all
zeros left as holes) and snapshots it; every volume made from the image is
then an instant copy-on-write clone of that snapshot. Re-importing an image
under the same name gives it a new ETag, hence a new base.

The base volumes are internal (see ``manager.INTERNAL``): hidden from listings,
changed only here. Deleting an image is refused while volumes cloned from its
bases exist; otherwise it removes the bases and the object.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile

from storaged import NoSuchBucket, NoSuchKey, ObjectStore

from .errors import NoSuchImage, VolumeError
from .manager import VolumeInfo, VolumeManager, internal_image
from .pool import CHUNK

BUCKET = "basalt-images"
QCOW2_MAGIC = b"QFI\xfb"


def base_name(image: str, etag: str) -> str:
    return f"image.{image}.{etag[:12]}"


class ImageInUse(VolumeError):
    def __init__(self, image: str, volumes: list[str]) -> None:
        them = "them" if len(volumes) > 1 else "it"
        super().__init__("ImageInUse", f"image {image} is used by volumes "
                         f"{', '.join(volumes)}; delete {them} first")
        self.volumes = volumes


async def _etag(store: ObjectStore, image: str) -> str | None:
    """The image object's ETag (dashes dropped), None when there is no such image."""
    try:
        return (await store.head_object(BUCKET, image)).etag.replace("-", "")
    except (NoSuchKey, NoSuchBucket):
        return None


def usage(manager: VolumeManager) -> dict[str, dict[str, list[str]]]:
    """Per image with a base volume: its bases and the user volumes cloned from them."""
    found: dict[str, dict[str, list[str]]] = {}
    for name, record in sorted(manager.records.items()):
        image = internal_image(name)
        if image is not None and not record.snapshot:
            found.setdefault(image, {"bases": [], "volumes": []})["bases"].append(name)
        image = internal_image(record.origin)
        if image is not None and internal_image(name) is None:
            found.setdefault(image, {"bases": [], "volumes": []})["volumes"].append(name)
    return found


def _users(manager: VolumeManager, base: str) -> list[str]:
    return sorted(n for n, r in manager.records.items()
                  if r.origin.startswith(base + "@") and internal_image(n) is None)


async def _drop_base(manager: VolumeManager, base: str) -> None:
    """Delete a base volume and its snapshots (their clones keep their own slots)."""
    for snap in [n for n in manager.records if n.startswith(base + "@")]:
        await manager.delete(snap, internal=True)
    if base in manager.records:
        await manager.delete(base, internal=True)


async def delete_image(manager: VolumeManager, store: ObjectStore, image: str,
                       stale_only: bool = False) -> dict:
    """Delete an image: the object and its base volumes; refused while volumes made
    from it exist. ``stale_only``: only the unused bases of earlier versions of the
    image (after it was replaced), keeping the object."""
    async with manager.image_lock:
        etag = await _etag(store, image)
        bases = usage(manager).get(image, {}).get("bases", [])
        if stale_only:
            current = base_name(image, etag) if etag else None
            dropped = [b for b in bases if b != current and not _users(manager, b)]
            for base in dropped:
                await _drop_base(manager, base)
            return {"name": image, "bases_deleted": dropped, "object_deleted": False}
        if etag is None and not bases:
            raise NoSuchImage(image)
        users = sorted({u for b in bases for u in _users(manager, b)})
        if users:
            raise ImageInUse(image, users)
        if etag is not None:
            # The object first: a retry after a failure below finds the bases alone.
            try:
                await store.delete_object(BUCKET, image)
            except (NoSuchKey, NoSuchBucket):
                pass
        for base in bases:
            await _drop_base(manager, base)
        return {"name": image, "bases_deleted": bases, "object_deleted": etag is not None}


async def volume_from_image(manager: VolumeManager, store: ObjectStore, image: str,
                            name: str, size: int | None = None) -> VolumeInfo:
    """A new volume ``name`` with the image's content (grown to ``size`` if larger)."""
    async with manager.image_lock:  # no delete_image between materialising and cloning
        etag = await _etag(store, image)
        if etag is None:
            raise NoSuchImage(image)
        base = base_name(image, etag)
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
            await manager.delete(base, internal=True)
        await manager.create(base, max(size, 512), internal=True)
        await _fill(raw_path, size, manager, base)
        await manager.flush()
        await manager.snapshot(base, "base", internal=True)
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
        raise VolumeError("QemuImgMissing",
                          "qcow2 images need qemu-img (Debian package qemu-utils)")
    out = await asyncio.to_thread(subprocess.run,
                                  ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, raw],
                                  capture_output=True, text=True)
    if out.returncode != 0:
        raise VolumeError("InvalidImage", f"image {image}: {out.stderr.strip()}")
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
