"""Why a volume operation was refused, as domain errors.

Every refusal carries a short ``code`` (``NoSuchVolume``, ``VolumeInUse``, ...)
and a message a user can act on; the CLI and the admin API print both, so
the code strings are a contract. The engine knows nothing of HTTP: the admin
API (blockd/api.py) is the one place that maps a code to a status.
"""

from __future__ import annotations

NAME_RULE = "1-63 letters, digits, '.', '_' or '-'"


class VolumeError(Exception):
    """A refused volume operation."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class InvalidArgument(VolumeError):
    """A request the operation cannot take: a bad size, note, source or body."""


class InvalidVolumeName(InvalidArgument):
    """A volume (or, with ``snapshot``, snapshot) name outside the naming rule."""

    def __init__(self, snapshot: bool = False, message: str | None = None) -> None:
        what = "snapshot" if snapshot else "volume"
        super().__init__("InvalidSnapshotName" if snapshot else "InvalidVolumeName",
                         message or f"{what} names are {NAME_RULE}")


class NoSuchVolume(VolumeError):
    def __init__(self, name: str) -> None:
        super().__init__("NoSuchVolume", f"volume {name} does not exist")


class NoSuchImage(VolumeError):
    def __init__(self, image: str) -> None:
        super().__init__("NoSuchImage", f"image {image} does not exist")


class VolumeExists(VolumeError):
    """The name is taken (``NAME@SNAP``: by a snapshot)."""

    def __init__(self, name: str) -> None:
        if "@" in name:
            super().__init__("SnapshotExists", f"snapshot {name} already exists")
        else:
            super().__init__("VolumeExists", f"volume {name} already exists")


class VolumeInUse(VolumeError):
    """The operation needs a volume no NBD client has open."""

    def __init__(self, name: str, connections: int) -> None:
        super().__init__("VolumeInUse", f"volume {name} has {connections} NBD connections")


class ShrinkRefused(VolumeError):
    """Shrinking drops data: only with ``force``."""

    def __init__(self, name: str, size: int, new_size: int) -> None:
        super().__init__("ShrinkRefused", f"shrinking {name} from {size} to {new_size} bytes "
                         "loses data; use --force")


class InternalVolume(VolumeError):
    """A user asked to change a volume that belongs to an image."""

    def __init__(self, name: str, image: str) -> None:
        super().__init__("InternalVolume",
                         f"volume {name} is internal to image {image}; use basalt image delete")


class VolumeHasSnapshots(VolumeError):
    """A volume cannot be deleted while snapshots of it exist; the message names them.

    ``snapshots``: every snapshot, oldest first; ``backups``: those a backup chain
    keeps as its next base, with the chain's target ("" when unknown).
    """

    def __init__(self, name: str, snapshots: list[str], backups: dict[str, str]) -> None:
        plain = [s for s in snapshots if s not in backups]
        parts = [f"{', '.join(plain)} (delete {'them' if len(plain) > 1 else 'it'} first)"] \
            if plain else []
        for snap in snapshots:
            if snap in backups:
                target = backups[snap]
                kept = f"backups to {target}" if target else "a backup chain"
                parts.append(f"{snap} (kept by {kept} as the next backup's base; delete it with "
                             f"basalt volume delete {snap}, the next backup is then a full one)")
        super().__init__("VolumeHasSnapshots", f"volume {name} has snapshots: {', '.join(parts)}")
        self.snapshots = list(snapshots)


class ServiceUnavailable(VolumeError):
    """The disks could not take the change (no write quorum, a failed flush)."""

    def __init__(self, message: str) -> None:
        super().__init__("ServiceUnavailable", message)


class VolumeKeyError(VolumeError):
    """An encrypted volume's key cannot be made or opened: its KMS key is missing
    or disabled (the KMS exception name is the code), or this server has no key
    service (``EncryptionUnavailable``). Never carries key material."""
