"""The optional layers of `basalt serve`: virtual networks and VMs.

Networking comes up where the process may administer the network (root or
CAP_NET_ADMIN, plus ip/dnsmasq/nft); compute where networking is up and a
libvirtd answers. Either layer being off never stops the storage services:
start-up logs which layers are on and why any is off, and their admin routes
answer 503 with that reason.

libvirt: ``qemu:///system`` by default (the distribution's daemon); with
``--libvirt-uri private`` Basalt runs a libvirtd of its own under
``DATA_DIR/run/libvirt`` (inside ``--netns`` if given). Stopping the server
stops that daemon but not the guests; both are re-attached at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web

from compute import SYSTEM_URI

log = logging.getLogger("basalt.layers")

PRIVATE = "private"


class Layers:
    """The network and compute managers of one server (each None when off)."""

    def __init__(self, data_dir: str, netns: str | None, libvirt_uri: str | None,
                 nbd_socket: str) -> None:
        self.data_dir, self.netns, self.nbd_socket = data_dir, netns, nbd_socket
        self.libvirt_uri = libvirt_uri or SYSTEM_URI
        self.networks = None
        self.compute = None
        self.libvirtd = None
        self.network_off: str | None = None
        self.compute_off: str | None = None
        self._probe: asyncio.Task | None = None

    async def start(self) -> None:
        """Bring up what this host allows; never raises for a layer that cannot run."""
        await asyncio.to_thread(self._start_network)
        if self.networks is None:
            self.compute_off = f"needs networking ({self.network_off})"
        else:
            await asyncio.to_thread(self._start_compute)
        log.info("layers", extra={"fields": {
            "network": "on" if self.networks else f"off: {self.network_off}",
            "compute": "on" if self.compute else f"off: {self.compute_off}"}})
        if self.compute is not None:
            # The KVM-or-TCG probe boots a kernel (up to ~15 s, cached per host
            # boot); it runs beside serving instead of delaying start-up.
            self._probe = asyncio.ensure_future(self._log_accelerator())

    def _start_network(self) -> None:
        import network
        reason = network.unavailable_reason()
        if reason is None and self.netns and not os.path.exists(f"/run/netns/{self.netns}"):
            reason = f"network namespace {self.netns} does not exist"
        if reason is not None:
            self.network_off = reason
            return
        manager = network.NetworkManager(os.path.join(self.data_dir, "network"),
                                         netns=self.netns)
        # Only with networks of its own: `ensure()` also rewrites the one nft
        # table, which must stay untouched by a server that has no networks.
        if manager.list():
            for line in manager.ensure():
                log.info("network restored", extra={"fields": {"what": line}})
        self.networks = manager

    def _start_compute(self) -> None:
        import compute
        reason = compute.unavailable_reason()
        if reason is None and self.libvirt_uri == PRIVATE:
            from compute.libvirtd import PrivateLibvirtd
            try:
                daemon = PrivateLibvirtd(os.path.join(self.data_dir, "run", "libvirt"),
                                         netns=self.netns)
                daemon.start()
            except (compute.ComputeError, ValueError) as exc:
                reason = f"private libvirtd: {exc}"
            else:
                self.libvirtd = daemon
        uri = self.libvirtd.uri if self.libvirtd else self.libvirt_uri
        reason = reason or compute.unavailable_reason(uri)
        if reason is not None:
            if self.libvirt_uri == SYSTEM_URI:
                reason += " (or run `basalt serve --libvirt-uri private`)"
            self.compute_off = reason
            return
        manager = compute.ComputeManager(os.path.join(self.data_dir, "compute"), uri,
                                         self.networks, self.nbd_socket)
        for line in manager.restore():
            log.info("vm restored", extra={"fields": {"what": line}})
        self.compute = manager

    async def _log_accelerator(self) -> None:
        verdict = await asyncio.to_thread(self.compute.accelerator)
        log.info("compute accelerator", extra={"fields": {"accel": verdict.accel,
                                                          "reason": verdict.reason}})

    def routes(self) -> web.RouteTableDef:
        """The /_basalt/v1/vms and /_basalt/v1/networks admin routes."""
        from compute.api import routes
        return routes(self.compute, self.networks, compute_off_reason=self.compute_off,
                      network_off_reason=self.network_off)

    async def close(self) -> None:
        """Release the managers; networks and guests keep running."""
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
        if self.compute is not None:
            await asyncio.to_thread(self.compute.close)
        if self.libvirtd is not None:
            await asyncio.to_thread(self.libvirtd.stop)
        if self.networks is not None:
            self.networks.close()
