"""In-process volume managers on temporary disks, for the volume tests."""

from __future__ import annotations

from blockd import VolumeManager
from storaged import ObjectStore


async def open_manager(dirs):
    """A started store and volume manager on ``dirs`` (close with :func:`close`)."""
    store = ObjectStore.open(dirs, sync=True)
    await store.start(heal=False)
    manager = VolumeManager(store)
    await manager.start()
    return store, manager


async def close(store, manager):
    await manager.close()
    await store.close()
