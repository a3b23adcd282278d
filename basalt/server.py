"""The all-in-one process behind `basalt serve`: it wires the daemons together.

Start-up order: open and check the disks (formatting new ones), settle writes a
crash interrupted, then start background healing and the network services.
SIGINT/SIGTERM stop everything cleanly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal

from storaged import ObjectStore

from .config import disk_paths, save_settings

log = logging.getLogger("basalt.server")


@dataclasses.dataclass
class ServeOptions:
    data_dir: str
    disks: list[str] | None = None
    ec: tuple[int, int] | None = None
    s3_address: tuple[str, int] = ("127.0.0.1", 9000)
    nbd_address: tuple[str, int] = ("127.0.0.1", 10809)
    sync: bool = True


async def serve(opts: ServeOptions, ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM."""
    data_dir = os.path.abspath(opts.data_dir)
    disks = disk_paths(data_dir, opts.disks)
    store = ObjectStore.open(disks, ec=opts.ec, sync=opts.sync)
    save_settings(data_dir, {"disks": disks})
    try:
        await store.start()
        log.info("storage ready", extra={"fields": {
            "data_dir": data_dir, "ec": f"{store.k}+{store.m}", "disks": len(disks),
            "block_size": store.geometry.block_size, "write_quorum": store.write_quorum}})
        for state in store.disk_states():
            log.info("disk", extra={"fields": state})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready.set()
        print(f"Basalt is serving {len(disks)} disks ({store.k}+{store.m}) from {data_dir}",
              flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        await store.close()
