"""In-process volume managers on temporary disks, for the volume tests."""

from __future__ import annotations

from blockd import VolumeManager
from storaged import ObjectStore
from storaged.kms import KeyService


async def open_manager(dirs, master: bytes | None = None):
    """A started store and volume manager on ``dirs`` (close with :func:`close`);
    with ``master``, a key service for encrypted volumes under that master key."""
    store = ObjectStore.open(dirs, sync=True)
    await store.start(heal=False)
    manager = VolumeManager(store, KeyService(store, master) if master else None)
    await manager.start()
    return store, manager


def count_cipher_calls(cipher, counter) -> None:
    """Count in ``counter`` (a Counter) each call of ``cipher``'s (a
    blockd.volume_cipher.VolumeCipher) ``encrypt`` and ``decrypt_into``."""
    for side in ("encrypt", "decrypt_into"):
        run = getattr(cipher, side)

        def counted(*args, _run=run, _side=side):
            counter[_side] += 1
            return _run(*args)

        setattr(cipher, side, counted)


async def close(store, manager):
    await manager.close()
    await store.close()
