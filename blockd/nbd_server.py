"""The NBD server: listening sockets and the set of live connections.

``NBDServer`` serves exports found in an :class:`~blockd.export.ExportRegistry`
over TCP and/or Unix sockets to any number of clients (Linux ``nbd``, QEMU,
libnbd tools). The protocol itself lives beside it: the handshake in
:mod:`blockd.nbd_handshake`, request handling in :mod:`blockd.nbd_commands`,
socket buffering and flow control in :mod:`blockd.nbd_connection`.

Typical use::

    server = NBDServer(registry)
    await server.start("127.0.0.1", 10809)
    ...
    await server.close()
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat

from .export import ExportRegistry
from .nbd_buffers import Buffers
from .nbd_connection import NBDConnection

__all__ = ["NBDServer"]

log = logging.getLogger("blockd.nbd")


class NBDServer:
    """An asyncio NBD server (fixed newstyle handshake, structured replies, base:allocation).

    ``max_inflight_requests`` and ``max_inflight_bytes`` bound the work one
    connection may have queued (READ and WRITE lengths count as bytes); past
    them the connection stops reading its socket until requests complete.
    ``shutdown_timeout`` is how long :meth:`close` lets in-flight requests
    finish before dropping connections.
    """

    def __init__(
        self,
        registry: ExportRegistry,
        *,
        max_inflight_requests: int = 256,
        max_inflight_bytes: int = 64 * 1024 * 1024,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self.registry = registry
        self.max_inflight_requests = max_inflight_requests
        self.max_inflight_bytes = max_inflight_bytes
        self.shutdown_timeout = shutdown_timeout
        self._servers: list[asyncio.AbstractServer] = []
        self._unix_paths: list[str] = []
        self._connections: set[NBDConnection] = set()
        self.buffers = Buffers()  # large payload buffers, reused across connections

    async def start(self, host: str = "127.0.0.1", port: int = 10809) -> None:
        """Listen on TCP ``host:port`` (port 0 picks a free one; see :attr:`addresses`)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self._connection, host, port, reuse_address=True)
        self._servers.append(server)
        for sock in server.sockets:
            log.info("nbd listening", extra={"fields": {"address": _format(sock.getsockname())}})

    async def start_unix(self, path: str) -> None:
        """Listen on the Unix socket ``path`` (a stale socket file there is replaced)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(self._connection, path)
        self._servers.append(server)
        self._unix_paths.append(path)
        log.info("nbd listening", extra={"fields": {"address": f"unix:{path}"}})

    @property
    def addresses(self) -> list:
        """Bound addresses: ``(host, port, ...)`` tuples for TCP, paths for Unix sockets."""
        return [s.getsockname() for srv in self._servers for s in srv.sockets]

    @property
    def port(self) -> int:
        """The first TCP port listened on."""
        for address in self.addresses:
            if isinstance(address, tuple):
                return address[1]
        raise RuntimeError("not listening on TCP")

    @property
    def connections(self) -> int:
        """Number of open client connections."""
        return len(self._connections)

    async def close(self, timeout: float | None = None) -> None:
        """Stop listening, let in-flight requests finish, then close every connection.

        ``timeout`` (default :attr:`shutdown_timeout`) bounds the wait; requests
        still running then are cancelled and their connections dropped. The
        caller flushes the volumes afterwards, so everything acknowledged is kept.
        """
        timeout = self.shutdown_timeout if timeout is None else timeout
        for server in self._servers:
            server.close()
        conns = list(self._connections)
        for conn in conns:
            conn.shutdown()
        tasks = [c.task for c in conns if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                log.warning("nbd shutdown dropping connections with requests still running",
                            extra={"fields": {"connections": len(pending)}})
                for conn in conns:
                    if conn.task in pending:
                        conn.abort()
                await asyncio.wait(pending, timeout=1.0)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for path in self._unix_paths:
            try:
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass
        self._unix_paths.clear()

    async def __aenter__(self) -> NBDServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def connection_closed(self, conn: NBDConnection) -> None:
        """Called by a connection when it is done."""
        self._connections.discard(conn)

    def _connection(self) -> NBDConnection:
        conn = NBDConnection(self)
        self._connections.add(conn)
        return conn


def _format(address: object) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)
