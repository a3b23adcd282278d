"""Block volumes in a cluster: one owner, NBD on every node.

A volume's chunk maps live in the owner's memory and only the owner writes
volume metadata (see blockd/manager.py), so a cluster has one volume owner at a
time: the node leading the ``background`` election. It serves NBD on its
``--nbd-address`` itself; every other node listens on its own address too and
relays each connection, byte for byte, to the owner's. The volumes' data and
metadata are on the pool's disks, reachable from every node, so when the owner
dies its lease ends, another node is elected, loads the volumes from the disks
and serves them; clients reconnect (QEMU's ``reconnect-delay``) through any
node. Everything a client had flushed is on the disks: nothing acknowledged is
lost. A node that loses its lease stops serving volumes at once, before etcd
can elect another owner (the lease counts from the last keepalive sent).

The volume admin API goes to the owner too: on the owner its owner socket
serves blockd's routes; elsewhere they are forwarded, signed with the root
credentials every node shares, to the owner's S3 address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import urllib.error
import urllib.request
from typing import Any

from aiohttp import web

from blockd import NBDServer, VolumeManager, owner_app

from .admin_client import AdminClient
from .cluster_node import ClusterNode
from .credentials import Credentials

log = logging.getLogger("basalt.cluster.volumes")

SERVICES = "/basalt/services/"  # NODE → {"s3": URL, "nbd": "H:P"}, on the node's lease
RELAY_CHUNK = 1 << 20


class ClusterVolumes:
    """This node's part in serving block volumes: owner or relay."""

    def __init__(self, node: ClusterNode, store: Any, nbd_address: tuple[str, int],
                 s3_url: str, creds: Credentials, owner_socket: str, keys: Any = None) -> None:
        self.node, self.store = node, store
        self.keys = keys  # storaged.kms.KeyService: encrypted volumes' data keys
        self.nbd_address, self.s3_url, self.creds = nbd_address, s3_url, creds
        self.owner_socket = owner_socket  # blockd's routes, while this node owns volumes
        self.manager: VolumeManager | None = None
        self.nbd: NBDServer | None = None
        self._owner_runner: web.AppRunner | None = None
        self._relay: asyncio.AbstractServer | None = None
        self._relayed: set[asyncio.StreamWriter] = set()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self._publish()
        await self._start_relay()
        self._task = asyncio.ensure_future(self._follow_leadership())

    async def _publish(self) -> None:
        host, port = self.nbd_address
        record = json.dumps({"s3": self.s3_url, "nbd": f"{host}:{port}"}).encode()
        assert self.node.lease is not None
        await self.node.etcd.put(SERVICES + self.node.opts.node, record, lease=self.node.lease.id)

    async def _follow_leadership(self) -> None:
        election = self.node.election
        while True:
            await election.wait_elected()
            await self._stop_relay()
            while election.is_leader and self.manager is None:
                try:
                    await self._become_owner()
                except Exception as exc:  # e.g. the disks are still being healed
                    log.warning("cannot take the volumes over yet: %s", exc)
                    await self._stop_owner()
                    await asyncio.sleep(1)
            await election.wait_not_leader()
            log.warning("no longer the volume owner: stopping NBD")
            await self._stop_owner()
            await self._start_relay()
            with contextlib.suppress(Exception):
                await self._publish()  # a new lease after an etcd outage

    async def _become_owner(self) -> None:
        manager = VolumeManager(self.store, self.keys)
        await manager.start()
        manager.watch()
        self.manager = manager
        self.nbd = nbd = NBDServer(manager)
        await nbd.start(*self.nbd_address)
        self._owner_runner = runner = web.AppRunner(owner_app(manager), access_log=None,
                                                    shutdown_timeout=0.5)
        await runner.setup()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.owner_socket)
        await web.UnixSite(runner, self.owner_socket).start()
        log.info("volume owner: serving NBD", extra={"fields": {
            "address": "{}:{}".format(*self.nbd_address)}})

    async def _stop_owner(self) -> None:
        nbd, manager, runner = self.nbd, self.manager, self._owner_runner
        self.nbd = self.manager = self._owner_runner = None
        if nbd is not None:
            await nbd.close(timeout=2.0)
        if runner is not None:
            await runner.cleanup()
        if manager is not None:
            await manager.close()  # the last flush

    # relaying to the owner -------------------------------------------------------

    async def _start_relay(self) -> None:
        host, port = self.nbd_address
        for _ in range(50):  # the owner's listener may still be closing
            try:
                self._relay = await asyncio.start_server(self._relay_one, host, port,
                                                         reuse_address=True)
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise OSError(f"cannot listen on {host}:{port} for NBD")

    async def _stop_relay(self) -> None:
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.close()
            await relay.wait_closed()
        for writer in list(self._relayed):  # clients reconnect to the owner
            writer.close()

    async def owner_services(self, leader: str | None = None) -> dict[str, str] | None:
        """The volume owner's addresses (of ``leader``, default: the elected one)."""
        leader = leader or await self.node.election.leader()
        if leader is None:
            return None
        found = await self.node.etcd.get(SERVICES + leader)
        return json.loads(found[0]) if found else None

    async def _relay_one(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self._relayed.add(writer)
        upstream_writer = None
        try:
            services = await self.owner_services()
            if services is None:
                return  # no owner yet: the client retries
            host, _, port = services["nbd"].rpartition(":")
            up_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.debug("nbd relay ended: %s", exc)
        finally:
            self._relayed.discard(writer)
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()

    # the volume admin API ----------------------------------------------------------

    def routes(self) -> web.RouteTableDef:
        """Owner-socket routes: volumes to the owner (here or elsewhere)."""
        routes = web.RouteTableDef()

        @routes.route("*", "/_basalt/v1/{tail:volume.*}")
        async def volumes(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            if self.manager is not None:
                return await _over_unix(self.owner_socket, request, body)
            leader = await self.node.election.leader()
            if leader == self.node.opts.node:
                # Elected but still loading the volumes: forwarding would come
                # back here, each hop holding a thread of the default executor
                # until none was left (a deadlock until the 300 s timeout).
                return web.json_response({"code": "ServiceUnavailable",
                                          "message": "the volume owner is starting"}, status=503)
            services = await self.owner_services(leader)
            if services is None:
                return web.json_response({"code": "ServiceUnavailable",
                                          "message": "no volume owner elected yet"}, status=503)
            client = AdminClient(services["s3"], self.creds)
            req = client._signed(request.method, request.path, dict(request.query), body)
            if body:
                req.add_header("Content-Type", request.content_type)
            status, payload, ctype = await asyncio.to_thread(_send, req)
            return web.Response(status=status, body=payload, content_type=ctype)

        return routes

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._stop_relay()
        await self._stop_owner()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
    finally:
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()


def _send(req: urllib.request.Request) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, resp.read(), resp.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get_content_type()
    except OSError as exc:
        return 503, json.dumps({"code": "ServiceUnavailable",
                                "message": f"volume owner unreachable: {exc}"}).encode(), \
            "application/json"


async def _over_unix(path: str, request: web.Request, body: bytes) -> web.Response:
    import aiohttp
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as session:
        async with session.request(request.method, "http://owner" + request.path_qs,
                                   data=body or None,
                                   headers={"Content-Type": request.content_type}) as r:
            return web.Response(status=r.status, body=await r.read(),
                                content_type=r.content_type)
