"""Disk identity: ``format.json`` and assembling disks into an erasure set.

Each disk directory holds a ``format.json`` naming the deployment, the disk's
own id and the ids of every disk of the set in position order. On start-up the
given directories are matched against each other: a directory without a format
(new, wiped or replaced) takes a free position and is marked for healing; a
directory formatted for another deployment is refused.

Every ``format.json`` also records the mount facts of every disk of the set by
path (see mounts.py), so a disk whose own format is gone (wiped, or hidden by a
failed mount) is still judged: a disk that was a mount point and is not one now
is left offline, never formatted or written. A root that does not exist is only
created on a new set's first format or when ``create`` allows it (directories
inside the data dir).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from .errors import FormatError
from .layout import aligned_block_size
from .mounts import MountFacts, offline_reason

FORMAT_FILE = "format.json"
FORMAT_VERSION = 1
HEALING_FILE = ".healing"  # present while the disk needs a full heal
OWN_ENTRIES = {"meta", "data", "tmp", "files", FORMAT_FILE, FORMAT_FILE + ".tmp", HEALING_FILE}
# An owner-less process (an S3 worker) never formats: it waits for the owner.
NOT_FORMATTED = "not formatted yet (the server formats it)"


@dataclasses.dataclass(frozen=True)
class DiskFormat:
    deployment_id: str
    disk_id: str
    disks: tuple[str, ...]
    k: int
    m: int
    block_size: int
    # path → facts of every disk of the set when it was formatted (not identity)
    mounts: Mapping[str, MountFacts] = dataclasses.field(default_factory=dict, compare=False)
    # paths that must not be recreated when missing (disks outside the data dir)
    fixed: frozenset[str] = dataclasses.field(default_factory=frozenset, compare=False)

    @property
    def position(self) -> int:
        return self.disks.index(self.disk_id)

    def for_position(self, position: int) -> DiskFormat:
        return dataclasses.replace(self, disk_id=self.disks[position])

    def with_mounts(self, mounts: Mapping[str, MountFacts],
                    fixed: frozenset[str] | None = None) -> DiskFormat:
        return dataclasses.replace(self, mounts=dict(mounts),
                                   fixed=self.fixed if fixed is None else frozenset(fixed))

    def same_set(self, other: DiskFormat) -> bool:
        return (self.deployment_id, self.disks, self.k, self.m, self.block_size) == (
            other.deployment_id, other.disks, other.k, other.m, other.block_size)

    def to_json(self) -> str:
        return json.dumps({
            "format": "basalt", "version": FORMAT_VERSION, "deployment_id": self.deployment_id,
            "disk_id": self.disk_id, "set": {"disks": list(self.disks), "k": self.k, "m": self.m,
                                             "block_size": self.block_size},
            "mounts": {path: f.to_dict() for path, f in sorted(self.mounts.items())},
            "fixed": sorted(self.fixed),
        }, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DiskFormat:
        d = json.loads(text)
        if d.get("format") != "basalt" or d.get("version") != FORMAT_VERSION:
            raise ValueError("not a Basalt disk format")
        s = d["set"]
        mounts = {p: f for p, f in ((p, MountFacts.from_dict(v)) for p, v in
                                    (d.get("mounts") or {}).items()) if f is not None}
        fmt = cls(d["deployment_id"], d["disk_id"], tuple(s["disks"]), s["k"], s["m"],
                  s["block_size"], mounts, frozenset(d.get("fixed") or ()))
        fmt.position  # noqa: B018 - raises ValueError when the disk is not in its own set
        return fmt


def read_format(root: str) -> DiskFormat | None:
    """The format of ``root``, or None when it has none (new or wiped)."""
    path = os.path.join(root, FORMAT_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
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
        elif name != HEALING_FILE:
            os.unlink(path)


@dataclasses.dataclass
class Slot:
    """A disk directory with its position in the set."""

    root: str
    format: DiskFormat
    fresh: bool  # newly (re)formatted into an existing set: needs healing
    offline: str | None = None  # why it must not be opened (nothing was written)
    create: bool = True  # the root may be recreated when missing


def _merged_mounts(formats: Sequence[DiskFormat]) -> dict[str, MountFacts]:
    """The facts most of the disks' formats agree on, per path."""
    votes = Counter((path, facts) for f in formats for path, facts in f.mounts.items())
    merged: dict[str, MountFacts] = {}
    for (path, facts), _ in votes.most_common():
        merged.setdefault(path, facts)
    return merged


def assemble(roots: Sequence[str], k: int | None, m: int | None, block_size: int, *,
             format: bool = True, create: Callable[[str], bool] | None = None) -> list[Slot]:
    """Match disk directories to set positions, formatting new ones.

    ``k``/``m`` given explicitly must match an existing deployment; when None,
    the existing deployment's values (or the caller's defaults for a new one,
    which must then be given) are used. ``format`` False (a process that does
    not own the disks) never writes: unformatted disks come back offline.
    ``create(root)`` says whether a missing root of an existing set may be
    recreated; the answer is recorded in the formats (``fixed``), and when
    ``create`` is None (an S3 worker) the recorded one is used (default: yes),
    so every process judges a missing disk alike. A disk the mount facts rule
    out is returned offline with the reason, untouched.
    """
    if len(set(map(os.path.realpath, roots))) != len(roots):
        raise FormatError("the same disk directory is given twice")
    formats = [read_format(r) for r in roots]
    known = [(r, f) for r, f in zip(roots, formats) if f is not None]
    if create is None:
        recorded = frozenset().union(*(f.fixed for _, f in known))
        create = lambda root: root not in recorded  # noqa: E731
    fixed = frozenset(r for r in roots if not create(r))
    if not known:
        if not format:
            raise FormatError("no disk is formatted yet")
        if k is None or m is None:
            raise FormatError("a new deployment needs its erasure coding (k+m)")
        if k + m != len(roots):
            raise FormatError(f"erasure coding {k}+{m} needs {k + m} disks, {len(roots)} given")
        block_size = aligned_block_size(block_size, k)
        dep, ids = str(uuid.uuid4()), tuple(str(uuid.uuid4()) for _ in roots)
        for root in roots:
            clear_unformatted(root)
        mounts = {root: MountFacts.of(root) for root in roots}
        slots = []
        for pos, root in enumerate(roots):
            fmt = DiskFormat(dep, ids[pos], ids, k, m, block_size, mounts, fixed)
            write_format(root, fmt)
            slots.append(Slot(root, fmt, fresh=False, create=create(root)))
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
    then = _merged_mounts([f for _, f in known])
    free = [p for p in range(len(roots)) if p not in taken]
    slots: list[Slot | None] = [None] * len(roots)
    for root, f in zip(roots, formats):
        if f is not None:
            reason = offline_reason(root, then.get(root), formatted=True, create=True)
            slots[f.position] = Slot(root, f, fresh=needs_healing(root),
                                     offline=reason, create=create(root))
            continue
        pos = free.pop(0)
        fmt = reference.for_position(pos)
        reason = offline_reason(root, then.get(root), formatted=False, create=create(root))
        if reason is None and not format:
            reason = NOT_FORMATTED
        if reason is not None:
            slots[pos] = Slot(root, fmt, fresh=False, offline=reason, create=create(root))
            continue
        clear_unformatted(root)
        mark_healing(root)
        slots[pos] = Slot(root, fmt, fresh=True, create=create(root))
    done = [s for s in slots if s is not None]
    if format:
        _record_mounts(done, then, fixed)
    return done


def member_slot(root: str, fmt: DiskFormat, *, create: bool = True) -> Slot:
    """A cluster disk's slot in its pool's set (``fmt`` as the pool layout says):
    formatted now when new or wiped (and then healing: it may be joining a set
    that holds data), kept when already formatted for that set, refused when
    formatted for another. A disk its mount facts rule out stays offline."""
    current = read_format(root)
    if current is not None:
        if current.disk_id != fmt.disk_id or not current.same_set(fmt):
            raise FormatError(f"{root} is formatted for another set "
                              f"({current.deployment_id}); wipe it to reuse it")
        reason = offline_reason(root, current.mounts.get(root), formatted=True, create=create)
        return Slot(root, current, fresh=needs_healing(root), offline=reason, create=create)
    reason = offline_reason(root, fmt.mounts.get(root), formatted=False, create=create)
    if reason is not None:
        return Slot(root, fmt, fresh=False, offline=reason, create=create)
    clear_unformatted(root)
    mark_healing(root)
    fmt = fmt.with_mounts({root: MountFacts.of(root)},
                          frozenset() if create else frozenset({root}))
    write_format(root, fmt)
    return Slot(root, fmt, fresh=True, create=create)


def _record_mounts(slots: list[Slot], then: Mapping[str, MountFacts],
                   fixed: frozenset[str]) -> None:
    """Write today's facts of the usable disks into their formats, where they
    changed (a disk reformatted, moved to another path, or the set's first start
    after an upgrade): one atomic format write per disk, none on a plain restart."""
    now = dict(then)
    for slot in slots:
        if slot.offline is None:
            now[slot.root] = MountFacts.of(slot.root)
    now = {s.root: now[s.root] for s in slots if s.root in now}
    for slot in slots:
        if slot.offline is None and (slot.fresh and read_format(slot.root) is None
                                     or dict(slot.format.mounts) != now
                                     or slot.format.fixed != fixed):
            slot.format = slot.format.with_mounts(now, fixed)
            write_format(slot.root, slot.format)


def mark_healing(root: str) -> None:
    """Record that ``root`` needs a full heal (survives restarts until done)."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, HEALING_FILE), "w") as f:
        f.flush()
        os.fsync(f.fileno())


def needs_healing(root: str) -> bool:
    """Whether ``root`` carries the mark :func:`mark_healing` leaves."""
    return os.path.exists(os.path.join(root, HEALING_FILE))


def clear_healing(root: str) -> None:
    try:
        os.unlink(os.path.join(root, HEALING_FILE))
    except FileNotFoundError:
        pass
