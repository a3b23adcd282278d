"""Mount facts of a disk directory, and the verdict on a disk that moved under us.

When a disk is formatted its facts are recorded (whether its root was a mount
point, and its filesystem: ``statvfs`` fsid and ``st_dev``). Later, before a disk
is formatted, written or created again, :func:`offline_reason` compares:

* a root that was a mount point and is not one now is the empty directory a
  failed mount leaves behind: offline, never formatted (the set's shards would
  land on the root filesystem);
* a root that was a plain directory and now has no format and sits on another
  filesystem (the mount above it vanished) is offline too;
* a root that is a mount point now and has no format is a new disk put there:
  it is formatted into the set and healed, as a wiped directory is.

``ismount`` and ``fs_ids`` are module attributes so tests can fake them.
"""

from __future__ import annotations

import dataclasses
import os

NOT_MOUNTED = "not mounted (was a mount point when formatted)"
OTHER_FS = "on another filesystem than when formatted"

ismount = os.path.ismount


def fs_ids(path: str) -> tuple[int, int]:
    """(fsid from statvfs, st_dev) of the filesystem holding ``path``."""
    return os.statvfs(path).f_fsid, os.stat(path).st_dev


@dataclasses.dataclass(frozen=True)
class MountFacts:
    mount_point: bool
    fsid: int
    dev: int

    @classmethod
    def of(cls, root: str) -> MountFacts:
        fsid, dev = fs_ids(root)
        return cls(bool(ismount(root)), fsid, dev)

    def same_fs(self, other: MountFacts) -> bool:
        # fsid is stable across reboots (derived from the filesystem's UUID);
        # st_dev is not always (device-mapper, btrfs), so it is only the fallback.
        if self.fsid and other.fsid:
            return self.fsid == other.fsid
        return self.dev == other.dev

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> MountFacts | None:
        if not isinstance(d, dict):
            return None
        return cls(bool(d["mount_point"]), int(d.get("fsid", 0)), int(d.get("dev", 0)))


def offline_reason(root: str, then: MountFacts | None, *, formatted: bool,
                   create: bool) -> str | None:
    """Why ``root`` must stay offline (never formatted, written or created), or None.

    ``then``: its facts when formatted (None: unknown, an older format);
    ``formatted``: it has its ``format.json`` now; ``create``: a missing root may
    be (re)created (directories inside the data dir).
    """
    if not os.path.isdir(root):
        if then is not None and then.mount_point:
            return NOT_MOUNTED
        return None if create else f"missing ({root} does not exist)"
    if then is None:
        return None
    if then.mount_point and not ismount(root):
        return NOT_MOUNTED
    if not formatted and not then.mount_point and not ismount(root) \
            and not MountFacts.of(root).same_fs(then):
        return OTHER_FS
    return None
