"""Block volumes: thin-provisioned, replicated, served over NBD.

``VolumeManager(store)`` keeps volumes in the storage engine's disks and is the
export registry of ``NBDServer``; ``owner_app(manager)`` is its admin API. A refused
volume operation raises a ``VolumeError`` subclass (blockd/errors.py) with a code.

The names below are imported on first use, so a CLI that needs only the NBD
client or the backup cipher does not load the server (aiohttp, the engine).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "owner_app": ".api",
    "Export": ".export", "ExportRegistry": ".export", "FastZeroUnsupported": ".export",
    "NBDError": ".export", "StaticRegistry": ".export",
    "VolumeInfo": ".manager", "VolumeManager": ".manager",
    "NBDServer": ".nbd_server",
    **{name: ".errors" for name in (
        "InternalVolume", "InvalidArgument", "InvalidVolumeName", "NoSuchImage",
        "NoSuchVolume", "ServiceUnavailable", "ShrinkRefused", "VolumeError", "VolumeExists",
        "VolumeHasSnapshots", "VolumeInUse")},
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
