"""Disk identity: ``format.json`` and assembling disks into an erasure set.

Each disk directory holds a ``format.json`` naming the deployment, the disk's
own id and the ids of every disk of the set in position order. On start-up the
given directories are matched against each other: a directory without a format
(new, wiped or replaced) takes a free position and is marked for healing; a
directory formatted for another deployment is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Sequence

from .errors import FormatError
from .layout import aligned_block_size

FORMAT_FILE = "format.json"
FORMAT_VERSION = 1
OWN_ENTRIES = {"meta", "data", "tmp", "files", FORMAT_FILE, FORMAT_FILE + ".tmp", ".healing"}


@dataclasses.dataclass(frozen=True)
class DiskFormat:
    deployment_id: str
    disk_id: str
    disks: tuple[str, ...]
    k: int
    m: int
    block_size: int

    @property
    def position(self) -> int:
        return self.disks.index(self.disk_id)

    def for_position(self, position: int) -> DiskFormat:
        return dataclasses.replace(self, disk_id=self.disks[position])

    def same_set(self, other: DiskFormat) -> bool:
        return (self.deployment_id, self.disks, self.k, self.m, self.block_size) == (
            other.deployment_id, other.disks, other.k, other.m, other.block_size)

    def to_json(self) -> str:
        return json.dumps({
            "format": "basalt", "version": FORMAT_VERSION, "deployment_id": self.deployment_id,
            "disk_id": self.disk_id, "set": {"disks": list(self.disks), "k": self.k, "m": self.m,
                                             "block_size": self.block_size},
        }, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DiskFormat:
        d = json.loads(text)
        if d.get("format") != "basalt" or d.get("version") != FORMAT_VERSION:
            raise ValueError("not a Basalt disk format")
        s = d["set"]
        fmt = cls(d["deployment_id"], d["disk_id"], tuple(s["disks"]), s["k"], s["m"], s["block_size"])
        fmt.position  # noqa: B018 - raises ValueError when the disk is not in its own set
        return fmt


def read_format(root: str) -> DiskFormat | None:
    """The format of ``root``, or None when it has none (new or wiped)."""
    path = os.path.join(root, FORMAT_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        return DiskFormat.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{path} is damaged or not a Basalt format: {exc}") from None


def write_format(root: str, fmt: DiskFormat) -> None:
    """Write ``format.json`` atomically: temp file, fsync, rename, fsync directory."""
    os.makedirs(root, exist_ok=True)
    tmp = os.path.join(root, FORMAT_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(fmt.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(root, FORMAT_FILE))
    fsync_dir(root)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clear_unformatted(root: str) -> None:
    """Empty a disk directory that lost its format (wiped or half-wiped).

    Only Basalt's own entries are removed; anything else means the directory is
    not ours, and it is refused rather than erased.
    """
    os.makedirs(root, exist_ok=True)
    entries = set(os.listdir(root))
    foreign = entries - OWN_ENTRIES
    if foreign:
        raise FormatError(
            f"{root} is not empty and has no {FORMAT_FILE} "
            f"(found {', '.join(sorted(foreign)[:3])}); refusing to use it as a disk")
    for name in entries:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif name != ".healing":
            os.unlink(path)


@dataclasses.dataclass
class Slot:
    """A disk directory with its position in the set."""

    root: str
    format: DiskFormat
    fresh: bool  # newly (re)formatted into an existing set: needs healing


def assemble(roots: Sequence[str], k: int | None, m: int | None, block_size: int) -> list[Slot]:
    """Match disk directories to set positions, formatting new ones.

    ``k``/``m`` given explicitly must match an existing deployment; when None,
    the existing deployment's values (or the caller's defaults for a new one,
    which must then be given) are used.
    """
    if len(set(map(os.path.realpath, roots))) != len(roots):
        raise FormatError("the same disk directory is given twice")
    formats = [read_format(r) for r in roots]
    known = [(r, f) for r, f in zip(roots, formats) if f is not None]
    if not known:
        if k is None or m is None:
            raise FormatError("a new deployment needs its erasure coding (k+m)")
        if k + m != len(roots):
            raise FormatError(f"erasure coding {k}+{m} needs {k + m} disks, {len(roots)} given")
        block_size = aligned_block_size(block_size, k)
        dep, ids = str(uuid.uuid4()), tuple(str(uuid.uuid4()) for _ in roots)
        slots = []
        for pos, root in enumerate(roots):
            clear_unformatted(root)
            fmt = DiskFormat(dep, ids[pos], ids, k, m, block_size)
            write_format(root, fmt)
            slots.append(Slot(root, fmt, fresh=False))
        return slots

    deployments = Counter(f.deployment_id for _, f in known)
    dep = deployments.most_common(1)[0][0]
    reference = next(f for _, f in known if f.deployment_id == dep)
    for root, f in known:
        if f.deployment_id != dep:
            raise FormatError(f"{root} belongs to another deployment ({f.deployment_id}); "
                              "wipe it to add it to this set")
        if not f.same_set(reference):
            raise FormatError(f"{root} disagrees with the other disks about the set layout")
    if len(reference.disks) != len(roots):
        raise FormatError(f"this deployment has {len(reference.disks)} disks, "
                          f"{len(roots)} given")
    if (k is not None and k != reference.k) or (m is not None and m != reference.m):
        raise FormatError(f"the disks are formatted for {reference.k}+{reference.m}, "
                          f"not {k}+{m}")

    taken: dict[int, str] = {}
    for root, f in known:
        if f.position in taken:
            raise FormatError(f"{root} and {taken[f.position]} are the same disk (copied?)")
        taken[f.position] = root
    free = [p for p in range(len(roots)) if p not in taken]
    slots: list[Slot | None] = [None] * len(roots)
    for root, f in zip(roots, formats):
        if f is not None:
            slots[f.position] = Slot(root, f, fresh=os.path.exists(os.path.join(root, ".healing")))
            continue
        pos = free.pop(0)
        clear_unformatted(root)
        fmt = reference.for_position(pos)
        mark_healing(root)
        write_format(root, fmt)
        slots[pos] = Slot(root, fmt, fresh=True)
    return [s for s in slots if s is not None]


def mark_healing(root: str) -> None:
    """Record that ``root`` needs a full heal (survives restarts until done)."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".healing"), "w") as f:
        f.flush()
        os.fsync(f.fileno())


def clear_healing(root: str) -> None:
    try:
        os.unlink(os.path.join(root, ".healing"))
    except FileNotFoundError:
        pass
