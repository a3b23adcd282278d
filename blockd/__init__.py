"""Block volumes: thin-provisioned, replicated, served over NBD.

``VolumeManager(store)`` keeps volumes in the storage engine's disks and is the
export registry of ``NBDServer``; ``owner_app(manager)`` is its admin API.
"""

from .api import owner_app
from .export import Export, ExportRegistry, FastZeroUnsupported, NBDError, StaticRegistry
from .manager import VolumeError, VolumeInfo, VolumeManager
from .nbd_server import NBDServer

__all__ = ["NBDServer", "VolumeManager", "VolumeInfo", "VolumeError", "owner_app", "Export",
           "ExportRegistry", "StaticRegistry", "NBDError", "FastZeroUnsupported"]
