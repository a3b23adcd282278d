"""Block volumes: thin-provisioned, replicated, served over NBD.

``VolumeManager(store)`` keeps volumes in the storage engine's disks and is the
export registry of ``NBDServer``; ``owner_app(manager)`` is its admin API. A refused
volume operation raises a ``VolumeError`` subclass (blockd/errors.py) with a code.
"""

from .api import owner_app
from .errors import (
    InternalVolume,
    InvalidArgument,
    InvalidVolumeName,
    NoSuchImage,
    NoSuchVolume,
    ServiceUnavailable,
    ShrinkRefused,
    VolumeError,
    VolumeExists,
    VolumeHasSnapshots,
    VolumeInUse,
)
from .export import Export, ExportRegistry, FastZeroUnsupported, NBDError, StaticRegistry
from .manager import VolumeInfo, VolumeManager
from .nbd_server import NBDServer

__all__ = ["NBDServer", "VolumeManager", "VolumeInfo", "owner_app", "Export",
           "ExportRegistry", "StaticRegistry", "NBDError", "FastZeroUnsupported",
           "VolumeError", "InvalidArgument", "InvalidVolumeName", "NoSuchVolume", "NoSuchImage",
           "VolumeExists", "VolumeInUse", "ShrinkRefused", "InternalVolume", "VolumeHasSnapshots",
           "ServiceUnavailable"]
