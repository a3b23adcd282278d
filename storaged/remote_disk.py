"""A disk on another node: the :class:`~storaged.disk.Disk` interface over the node API.

:class:`RemoteDisk` talks to the :func:`~storaged.disk_server.disk_app` of the
node holding the disk. Metadata reads and commits made from the event loop
(:meth:`RemoteDisk.read`, :meth:`RemoteDisk.commit`) go through one aiohttp
session per event loop; the blocking calls the engine makes from worker threads
(shard files, block files, ``read_now`` and the metadata getters, status,
space, check, reattach) go through a thread-safe ``urllib3`` pool with
keep-alive. The disks of one node share one :class:`NodeClient` (its pools and
its view of whether the node is reachable).

Failures: a node that cannot be reached raises :class:`NodeUnavailable` (an
OSError: the erasure set counts the disk as not answering) and, after a failed
connection, the node's calls fail at once for ``backoff`` seconds instead of each
waiting for the connect timeout, and after a call that got nothing back for
``timeout`` seconds (the node cut off, most likely) for as long again; nothing
else changes — ``online`` is the last known state, only the healer's :meth:`RemoteDisk.check` (which always
tries) takes a disk offline. A node refusing our signature raises
:class:`NodeRefused`; a full disk raises :class:`~storaged.errors.DiskFull`
from metadata commits and ``OSError(ENOSPC)`` from data writes, like a local disk.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import os
import socket
import ssl as ssl_module
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import urllib3
from yarl import URL

from . import data_channel, node_auth, wire
from .block_file import BlockFile
from .buffers import Scratch
from .data_channel import Channel
from .disk import READS, Disk, Iov, ShardWriter
from .disk_server import EPOCH, PREFIX, STATE
from .errors import DiskFull, StorageError
from .format import DiskFormat
from .metadb import Op

log = logging.getLogger("basalt.storaged.remote_disk")

CONNECT_TIMEOUT = 5.0
# A node that sends nothing for this long is taken for gone: over a kept-alive
# connection to a node cut off by the network, a call would otherwise wait for
# TCP to give up (many minutes), holding up every write that included its disks.
TIMEOUT = 15.0
SLOW_TIMEOUT = 120.0  # calls that flush a whole file (shard commit, block file sync)
BACKOFF = 1.0  # seconds a node that refused a connection is not tried again
CHANNEL_KEEP = 60.0  # seconds an idle data channel is kept for reuse
IO_OPS = frozenset({data_channel.OP_READ, data_channel.OP_WRITE})  # errors are OSErrors

_LARGE = 1 << 20
_CONNECT_TIMEOUT_ERROR = getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ClientConnectorError)

Observe = Callable[[Mapping[str, str]], None]


class NodeUnavailable(ConnectionError):
    """The node holding a disk could not be reached (or dropped the connection)."""


class NodeRefused(PermissionError):
    """The node refused the request's authentication (another cluster secret?)."""


class Reply:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def _failure(where: str, status: int, body: bytes | Mapping[str, Any], io: bool) -> Exception:
    """The exception an error answer stands for (``body``: its JSON, or the
    decoded meta of a data channel reply). ``io``: a data path, which raises only
    OSError (the engine's shard and volume code expects nothing else)."""
    try:
        doc = body if isinstance(body, Mapping) else json.loads(body)
        code, message, err = doc["error"], doc["message"], doc.get("errno")
    except (ValueError, KeyError, TypeError):
        return OSError(errno.EIO, f"{where}: HTTP {status}: {bytes(body)[:200]!r}")
    if code == "Unauthorized":
        return NodeRefused(errno.EACCES, message)
    if code == "DiskFull":
        return OSError(errno.ENOSPC, f"{where}: {message}") if io else DiskFull(message)
    if err or code == "OSError":
        return OSError(err or errno.EIO, f"{where}: {message}")
    if io:
        return OSError(errno.EIO, f"{where}: {message}")
    if code == "BadRequest":
        return ValueError(f"{where}: {message}")
    return StorageError(f"{where}: {message}")


def default_caller() -> str:
    return os.uname().nodename or "node"


class NodeClient:
    """Signed requests to one node: a urllib3 pool for worker threads, an aiohttp
    session per event loop, and whether the node was reachable lately."""

    def __init__(self, base_url: str, secret: bytes, caller: str, *,
                 ssl: ssl_module.SSLContext | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT, timeout: float = TIMEOUT,
                 pool_size: int = 64, backoff: float = BACKOFF) -> None:
        node_auth.check_secret(secret)
        self.base = base_url.rstrip("/")
        self._secret = secret
        self.caller = caller
        self.ssl = ssl
        self.connect_timeout, self.timeout, self.backoff = connect_timeout, timeout, backoff
        self.pool_size = pool_size
        self._http = urllib3.PoolManager(
            num_pools=4, maxsize=pool_size, block=False, retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=timeout), ssl_context=ssl)
        self._ping_timeout = urllib3.Timeout(connect=connect_timeout, read=connect_timeout)
        self._slow_timeout = urllib3.Timeout(connect=connect_timeout,
                                             read=max(timeout, SLOW_TIMEOUT))
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                                  aiohttp.ClientSession] = weakref.WeakKeyDictionary()
        self._closing: set[asyncio.Future] = set()
        self._lock = threading.Lock()
        self._users: set[int] = set()
        self._down_until = 0.0
        url = urlsplit(self.base)
        self._address = (url.hostname or "", url.port or 80)
        self._channels: list[tuple[Channel, float]] = []  # idle data channels, since
        self._channel_ok = ssl is None      # no channel over TLS (see data_channel.py)
        self._async_channels: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, list[tuple[data_channel.AsyncChannel, float]]] = \
            weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"NodeClient({self.base!r})"

    # users: the connections close when the last disk using them is closed --------

    def use(self, who: object) -> None:
        self._users.add(id(who))

    def release(self, who: object) -> None:
        with self._lock:
            self._users.discard(id(who))
            if self._users:
                return
            sessions = list(self._sessions.items())
            self._sessions.clear()
            channels, self._channels = self._channels, []
            kept = list(self._async_channels.items())
            self._async_channels.clear()
        for loop, pool in kept:
            for channel, _ in pool:
                self._on_loop(loop, channel.close)
        for loop, session in sessions:
            self._close_session(loop, session)
        for channel, _ in channels:
            channel.close()
        self._http.clear()

    @staticmethod
    def _on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on ``loop``'s thread (now, when that is this one)."""
        if loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop or not loop.is_running():
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    def _close_session(self, loop: asyncio.AbstractEventLoop, session: aiohttp.ClientSession) -> None:
        if loop.is_closed() or session.closed:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        elif loop.is_running():
            asyncio.run_coroutine_threadsafe(session.close(), loop)
        elif running is None:
            loop.run_until_complete(session.close())

    async def wait_closed(self) -> None:
        """Let the sessions closed on this event loop finish closing."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self._closing if t.get_loop() is loop]
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)

    def close(self) -> None:
        self._users.clear()
        self.release(self)

    # signing -----------------------------------------------------------------------

    def prepare(self, method: str, path: str, params: Mapping[str, object] | None,
                body: bytes | bytearray | memoryview | None) -> tuple[str, dict[str, str]]:
        """The URL and the authentication headers of one request (None body: unsigned)."""
        query = node_auth.canonical_query(params or {})
        digest = node_auth.UNSIGNED if body is None else node_auth.body_digest(body)
        headers = node_auth.sign(self._secret, method, path, query, self.caller, digest)
        return self.base + path + ("?" + query if query else ""), headers

    # reachability ------------------------------------------------------------------

    def _gate(self, ping: bool) -> None:
        if not ping and time.monotonic() < self._down_until:
            raise NodeUnavailable(errno.EHOSTUNREACH,
                                  f"node {self.base} unreachable (a connection failed or "
                                  "stalled just now)")

    def _unavailable(self, exc: BaseException) -> NodeUnavailable:
        connect = isinstance(exc, (urllib3.exceptions.NewConnectionError,
                                   urllib3.exceptions.ConnectTimeoutError,
                                   aiohttp.ClientConnectorError, _CONNECT_TIMEOUT_ERROR,
                                   ConnectionRefusedError))
        stalled = not connect and isinstance(exc, (urllib3.exceptions.ReadTimeoutError,
                                                   aiohttp.ServerTimeoutError, TimeoutError))
        if connect:
            self._down_until = time.monotonic() + self.backoff
        elif stalled:
            # Cut off, most likely: the next calls fail at once (only a ping,
            # e.g. the healer's check, tries) instead of each stalling as long.
            self._down_until = time.monotonic() + self.timeout
        if isinstance(exc, urllib3.exceptions.NewConnectionError):
            exc = exc.__cause__ or exc  # the refusal, not urllib3's wrapper text
        detail = str(exc) or ("timed out" if isinstance(exc, TimeoutError)
                              else type(exc).__name__)
        return NodeUnavailable(errno.EHOSTUNREACH, f"node {self.base} unreachable: {detail}")

    # blocking calls (worker threads) -----------------------------------------------

    def call(self, method: str, path: str, params: Mapping[str, object] | None = None,
             body: Any = b"", *, unsigned: bool = False, length: int | None = None,
             retry: bool = False, ping: bool = False, quick: bool = False, io: bool = False,
             observe: Observe | None = None, stream: bool = False,
             slow: bool = False) -> Any:
        """One request; the Reply (or, with ``stream``, the open urllib3 response).

        ``unsigned``: ``body`` is a list of buffers of ``length`` bytes sent as they
        are. ``retry``: idempotent, so tried once more (newly signed) when a kept-alive
        connection turns out to be closed. ``ping``: try even a node that failed lately;
        ``quick``: wait for the answer no longer than for a connection; ``slow``: the
        node flushes a whole file first (see :data:`SLOW_TIMEOUT`).
        """
        self._gate(ping)
        options: dict[str, Any] = {}
        if quick or slow:
            options["timeout"] = self._ping_timeout if quick else self._slow_timeout
        for attempt in (0, 1):
            url, headers = self.prepare(method, path, params, None if unsigned else body)
            if unsigned:
                headers["Content-Length"] = str(length)
            try:
                resp = self._http.request(
                    method, url, body=body if unsigned or body else None, headers=headers,
                    preload_content=not stream, decode_content=False, redirect=False,
                    retries=False, **options)
            except urllib3.exceptions.ProtocolError as exc:
                if retry and attempt == 0:
                    continue
                raise self._unavailable(exc) from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise self._unavailable(exc) from None
            break
        self._down_until = 0.0
        if observe is not None:
            observe(resp.headers)
        if resp.status >= 300:
            try:
                data = resp.read() if stream else resp.data
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise self._unavailable(exc) from None
            finally:
                if stream:
                    resp.release_conn()
            raise _failure(f"{self.base}{path}", resp.status, data, io)
        if stream:
            return resp
        return Reply(resp.status, resp.headers, resp.data)

    def read_into(self, path: str, params: Mapping[str, object], iov: Iov,
                  observe: Observe | None = None) -> int:
        """Stream a GET's body into ``iov``; bytes read (short only when the body is)."""
        resp = self.call("GET", path, params, io=True, observe=observe, stream=True, retry=True)
        clean = False
        try:
            try:
                total = _fill(resp, iov)
                extra = resp.read(1)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise self._unavailable(exc) from None
            if extra:
                raise OSError(errno.EIO, f"{self.base}{path}: node sent more than asked")
            clean = True
            return total
        finally:
            if not clean:
                resp.close()
            resp.release_conn()

    # the data channel (shard bytes: see data_channel.py) -----------------------------

    def _open_channel(self) -> Channel | None:
        """A new channel; None when the node serves none now (busy) or at all."""
        path = PREFIX + data_channel.PATH
        _, headers = self.prepare("GET", path, None, b"")
        try:
            sock = socket.create_connection(self._address, timeout=self.connect_timeout)
        except OSError as exc:
            raise self._unavailable(exc) from None
        try:
            sock.settimeout(self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(data_channel.upgrade_request(path, "{}:{}".format(*self._address), headers))
            status, body = data_channel.read_upgrade_answer(sock)
        except OSError as exc:
            sock.close()
            raise self._unavailable(exc) from None
        if status == 101:
            return Channel(sock, self._secret, headers[node_auth.NONCE])
        sock.close()
        return self._no_channel(status, body)

    def _no_channel(self, status: int, body: bytes) -> None:
        """What a refused channel request means: NodeRefused for a signature it
        refused; a node that serves no channels is used over HTTP from now on."""
        if status == 401:
            raise _failure(f"{self.base}{PREFIX}{data_channel.PATH}", status, body, True)
        if status in (400, 404, 405):
            log.info("node %s serves no data channel (HTTP %d): its disks go over HTTP",
                     self.base, status)
            self._channel_ok = False
        return None

    def channel_call(self, op: int, args: Sequence[Any], *, body: Iov = (), length: int = 0,
                     into: Iov | None = None, observe: Observe | None = None,
                     retry: bool = True) -> tuple[dict[str, Any], Any] | None:
        """One data channel request (``body``: buffers of ``length`` bytes):
        (meta, data), data read into ``into`` (its byte count: short at the end of
        a shard) or returned as bytes; None when the node serves no channel (the
        caller uses HTTP). ``retry``: safe to send again when a kept channel
        turns out to be closed."""
        if not self._channel_ok:
            return None
        self._gate(False)
        now = time.monotonic()
        for attempt in (0, 1):
            with self._lock:
                channel = _kept(self._channels, now)
            reused = channel is not None
            channel = channel or self._open_channel()
            if channel is None:
                return None
            try:
                status, meta, count = channel.request(op, args, body, length)
                if into is not None:
                    data: Any = channel.recv_into(into, count)
                else:
                    data = channel.recv_bytes(count)
            except (OSError, ValueError) as exc:
                channel.close()
                if retry and reused and attempt == 0 and not isinstance(exc, TimeoutError):
                    continue  # a kept channel its node had closed: once more, on a new one
                raise self._unavailable(exc) from None
            break
        self._down_until = 0.0
        with self._lock:
            if len(self._channels) < self.pool_size and self._users:
                self._channels.append((channel, time.monotonic()))
                channel = None
        if channel is not None:
            channel.close()
        self._channel_answer(op, status, meta, observe)
        return meta, data

    def _channel_answer(self, op: int, status: int, meta: Mapping[str, Any],
                        observe: Observe | None) -> None:
        """Note the disk's state from a channel reply; raise what an error stands for."""
        if observe is not None:
            observe({k: v for k, v in ((STATE, meta.get("state")), (EPOCH, meta.get("epoch")))
                     if isinstance(v, str)})
        if status >= 300:
            raise _failure(f"{self.base} data channel", status, meta, op in IO_OPS)

    async def _aopen_channel(self) -> data_channel.AsyncChannel | None:
        path = PREFIX + data_channel.PATH
        _, headers = self.prepare("GET", path, None, b"")
        try:
            async with asyncio.timeout(self.connect_timeout):
                opened = await data_channel.open_async(self._address, path, headers,
                                                       self._secret)
        except (OSError, EOFError, ValueError) as exc:  # TimeoutError is an OSError
            raise self._unavailable(exc) from None
        if isinstance(opened, data_channel.AsyncChannel):
            return opened
        return self._no_channel(*opened)

    async def achannel_call(self, op: int, args: Sequence[Any], *, retry: bool = True,
                            observe: Observe | None = None) -> bytes | None:
        """A metadata request over a channel of the running event loop: the
        reply's data; None when the node serves no channel (the caller uses HTTP)."""
        if not self._channel_ok:
            return None
        self._gate(False)
        loop = asyncio.get_running_loop()
        with self._lock:
            pool = self._async_channels.setdefault(loop, [])
        now = time.monotonic()
        for attempt in (0, 1):
            channel = _kept(pool, now)
            reused = channel is not None
            channel = channel or await self._aopen_channel()
            if channel is None:
                return None
            try:
                async with asyncio.timeout(self.timeout):
                    status, meta, data = await channel.request(op, args)
            except (OSError, EOFError, ValueError) as exc:  # EOF: IncompleteReadError
                channel.close()
                if retry and reused and attempt == 0 and not isinstance(exc, TimeoutError):
                    continue  # a kept channel its node had closed: once more, on a new one
                raise self._unavailable(exc) from None
            except BaseException:  # cancelled mid-request: the channel is out of step
                channel.close()
                raise
            break
        self._down_until = 0.0
        if len(pool) < self.pool_size and self._users:
            pool.append((channel, time.monotonic()))
        else:
            channel.close()
        self._channel_answer(op, status, meta, observe)
        return data

    # async calls (event loop) ------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        with self._lock:
            session = self._sessions.get(loop)
            if session is None or session.closed:
                connector = aiohttp.TCPConnector(
                    ssl=self.ssl if self.ssl is not None else True, limit=2 * self.pool_size,
                    keepalive_timeout=15)
                session = aiohttp.ClientSession(
                    connector=connector, auto_decompress=False,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout,
                                                  sock_read=self.timeout))
                self._sessions[loop] = session
        return session

    async def acall(self, method: str, path: str, params: Mapping[str, object] | None = None,
                    body: bytes = b"", *, retry: bool = False,
                    observe: Observe | None = None) -> Reply:
        self._gate(False)
        session = self._session()
        for attempt in (0, 1):
            url, headers = self.prepare(method, path, params, body)
            try:
                # (a large body as a stream: aiohttp then writes it without a warning)
                data_arg = io.BytesIO(body) if len(body) > _LARGE else body
                async with session.request(method, URL(url, encoded=True), data=data_arg,
                                           headers=headers, allow_redirects=False) as resp:
                    data = await resp.read()
                    status, reply_headers = resp.status, resp.headers
            except aiohttp.ServerDisconnectedError as exc:
                if retry and attempt == 0:
                    continue
                raise self._unavailable(exc) from None
            except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
                raise self._unavailable(exc) from None
            break
        self._down_until = 0.0
        if observe is not None:
            observe(reply_headers)
        if status >= 300:
            raise _failure(f"{self.base}{path}", status, data, False)
        return Reply(status, reply_headers, data)


def _fill(resp: Any, iov: Iov) -> int:
    """Read a response body into ``iov`` like ``os.preadv``: bytes read."""
    total = 0
    for buf in iov:
        view = memoryview(buf).cast("B")
        filled = 0
        while filled < len(view):
            n = resp.readinto(view[filled:])
            if not n:
                break
            filled += n
        total += filled
        if filled < len(view):
            break
    return total


def _kept(pool: list[tuple[Any, float]], now: float) -> Any:
    """The newest idle channel of ``pool`` still worth using, or None; older ones
    are closed before their node ends them (disk_server.CHANNEL_IDLE)."""
    while pool:
        channel, since = pool.pop()
        if now - since < CHANNEL_KEEP:
            return channel
        channel.close()
    return None


def _seg(text: str) -> str:
    return quote(text, safe="")


class RemoteDisk(Disk):
    """A disk served by another node's :func:`~storaged.disk_server.disk_app`."""

    local = False

    def __init__(self, base_url: str, disk_id: str, position: int, format: DiskFormat,
                 secret: bytes, node: str, *, ssl: ssl_module.SSLContext | None = None,
                 caller: str | None = None, disk_name: str | None = None,
                 online: bool = True, healing: bool = False, client: NodeClient | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT, timeout: float = TIMEOUT) -> None:
        if format.disk_id != disk_id:
            raise ValueError(f"format of disk {format.disk_id} given for disk {disk_id}")
        self.client = client or NodeClient(base_url, secret, caller or default_caller(), ssl=ssl,
                                           connect_timeout=connect_timeout, timeout=timeout)
        self.disk_id = disk_id
        self.position = position
        self.format = format
        self.node = node
        self.disk_name = disk_name or disk_id
        self.online = online
        self.healing = healing
        self.reason: str | None = None if online else "not attached yet"
        self.generation = 1  # bumped when the node reopened the disk (or restarted)
        self._epoch: str | None = None
        self._path = f"{PREFIX}/disks/{_seg(disk_id)}"

    def __repr__(self) -> str:
        return f"RemoteDisk({self.client.base!r}, {self.disk_id!r}, position={self.position})"

    @property
    def name(self) -> str:
        return f"{self.node}:{self.disk_name}"

    def _observe(self, headers: Mapping[str, str]) -> None:
        """Keep the disk's healing state and epoch as its node last showed them."""
        state = headers.get(STATE)
        if state == "healing":
            self.healing = True
        elif state == "online":
            self.healing = False
        epoch = headers.get(EPOCH)
        if epoch and epoch != self._epoch:
            if self._epoch is not None:
                self.generation += 1
            self._epoch = epoch

    def _call(self, method: str, sub: str, params: Mapping[str, object] | None = None,
              body: Any = b"", **kw: Any) -> Any:
        self.client.use(self)
        return self.client.call(method, self._path + sub, params, body,
                                observe=self._observe, **kw)

    def _json(self, method: str, sub: str, params: Mapping[str, object] | None = None,
              **kw: Any) -> Any:
        return self._call(method, sub, params, **kw).json()

    # metadata --------------------------------------------------------------------

    async def read(self, query: str, *args: Any) -> Any:
        if query not in READS:
            raise ValueError(f"unknown metadata query {query!r}")
        self.client.use(self)
        answer = await self.client.achannel_call(
            data_channel.OP_QUERY, [self.disk_id, wire.pack([query, list(args)])],
            observe=self._observe)
        if answer is not None:
            return wire.unpack(answer)
        reply = await self.client.acall("POST", self._path + "/read", None,
                                        wire.pack([query, list(args)]), retry=True,
                                        observe=self._observe)
        return wire.unpack(reply.body)

    def read_now(self, query: str, *args: Any) -> Any:
        if query not in READS:
            raise ValueError(f"unknown metadata query {query!r}")
        self.client.use(self)
        out = self.client.channel_call(data_channel.OP_QUERY,
                                       [self.disk_id, wire.pack([query, list(args)])],
                                       observe=self._observe)
        if out is not None:
            return wire.unpack(out[1])
        return wire.unpack(self._call("POST", "/read", None, wire.pack([query, list(args)]),
                                      retry=True).body)

    def commit(self, ops: Sequence[Op]) -> Awaitable[list[Any]]:
        return self._commit(ops)

    async def _commit(self, ops: Sequence[Op]) -> list[Any]:
        self.client.use(self)
        answer = await self.client.achannel_call(
            data_channel.OP_COMMIT, [self.disk_id, wire.pack(list(ops))], retry=False,
            observe=self._observe)
        if answer is not None:
            return wire.unpack(answer)
        reply = await self.client.acall("POST", self._path + "/commit", None,
                                        wire.pack(list(ops)), observe=self._observe)
        return wire.unpack(reply.body)

    def commit_now(self, ops: Sequence[Op]) -> list[Any]:
        self.client.use(self)
        out = self.client.channel_call(data_channel.OP_COMMIT, [self.disk_id, wire.pack(list(ops))],
                                       retry=False, observe=self._observe)
        if out is not None:
            return wire.unpack(out[1])
        return wire.unpack(self._call("POST", "/commit", None, wire.pack(list(ops))).body)

    def get_object(self, bucket: str, key: str) -> bytes | None:
        return self.read_now("get_object", bucket, key)

    def get_inline(self, bucket: str, key: str) -> bytes | None:
        return self.read_now("get_inline", bucket, key)

    def version_inline(self, bucket: str, key: str, mtime_ns: int, vid: str) -> bytes | None:
        return self.read_now("version_inline", bucket, key, mtime_ns, vid)

    def get_version(self, bucket: str, key: str, version: tuple[int, str] | None) -> bytes | None:
        return self.read_now("get_version", bucket, key, version)

    def key_versions(self, bucket: str, key: str) -> list[bytes]:
        return self.read_now("key_versions", bucket, key)

    def scan_versions(self, bucket: str, prefix: str = "", after: str = "",
                      after_suffix: bytes | None = None, skip_prefix: bool = False,
                      limit: int = 1000) -> list[tuple[str, bytes, bytes]]:
        return self.read_now("scan_versions", bucket, prefix, after, after_suffix, skip_prefix,
                             limit)

    def bucket_config(self, bucket: str) -> dict[str, tuple[int, bytes | None]]:
        return self.read_now("bucket_config", bucket)

    def scan(self, bucket: str, prefix: str = "", after: str = "", skip_prefix: bool = False,
             limit: int = 1000) -> list[tuple[str, bytes]]:
        return self.read_now("scan", bucket, prefix, after, skip_prefix, limit)

    def get(self, table: bytes, key: bytes) -> bytes | None:
        return self.read_now("get", table, key)

    def range(self, table: bytes, start: bytes, prefix: bytes) -> list[tuple[bytes, bytes]]:
        return self.read_now("range", table, start, prefix)

    def buckets(self) -> dict[str, bytes]:
        return self.read_now("buckets")

    def get_bucket(self, name: str) -> bytes | None:
        return self.read_now("get_bucket", name)

    def pending(self) -> list[tuple[str, str, str, list[int], str]]:
        return self.read_now("pending")

    def entries(self, table: bytes) -> int:
        return self.read_now("entries", table)

    def stored(self) -> tuple[int, int]:
        return self.read_now("stored")

    # shard files -----------------------------------------------------------------

    def create_shard(self, vid: str, part: int, stage: Scratch | None = None) -> ShardWriter:
        # The node stages the writes itself (``stage`` is this process's memory).
        params = {"vid": vid, "part": part, "direct": int(stage is not None)}
        doc = self._json("POST", "/writers", params, io=True)
        return RemoteShardWriter(self, doc["session"])

    def read_shard(self, vid: str, part: int, offset: int, iov: Iov) -> int:
        length = sum(memoryview(b).nbytes for b in iov)
        self.client.use(self)
        got = self.client.channel_call(data_channel.OP_READ,
                                       [self.disk_id, vid, part, offset, length], into=iov,
                                       observe=self._observe)
        if got is not None:
            return got[1]
        return self.client.read_into(
            f"{self._path}/shards/{_seg(vid)}/{part}", {"offset": offset, "length": length},
            iov, observe=self._observe)

    def shard_size(self, vid: str, part: int) -> int | None:
        return self._json("GET", f"/shards/{_seg(vid)}/{part}/size", io=True, retry=True)["size"]

    def purge(self, vid: str, parts: Sequence[int]) -> None:
        self._call("POST", f"/shards/{_seg(vid)}/purge",
                   {"parts": ",".join(str(p) for p in parts)}, io=True, retry=True)

    # block files -----------------------------------------------------------------

    def open_block_file(self, name: str, create: bool = True) -> BlockFile | None:
        epoch = self._json("POST", f"/files/{_seg(name)}/open", {"create": int(create)},
                           io=True, retry=True)["epoch"]
        return None if epoch is None else RemoteBlockFile(self, name, epoch)

    def has_file(self, name: str) -> bool:
        return self._json("GET", f"/files/{_seg(name)}/exists", io=True, retry=True)["exists"]

    def remove_file(self, name: str) -> None:
        self._call("DELETE", f"/files/{_seg(name)}", io=True, retry=True)

    # the disk itself ---------------------------------------------------------------

    def space(self) -> tuple[int, int, int, str]:
        doc = self._json("GET", "/space", io=True, retry=True)
        return doc["size"], doc["used"], doc["free"], doc["fs"]

    def status(self) -> tuple[str, str | None]:
        if not self.online:
            return "offline", self.reason or "unavailable"
        try:
            doc = self._json("GET", "/status", retry=True, ping=True, quick=True)
        except Exception as exc:
            return "offline", f"node unreachable: {exc}"
        return doc["state"], doc["reason"]

    def check(self) -> bool:
        try:
            return bool(self._json("GET", "/check", retry=True, ping=True, quick=True)["ok"])
        except Exception as exc:
            log.debug("check of %s failed: %s", self.name, exc)
            return False

    def reattach(self, owner: bool) -> str | None:
        away = self.reason is not None
        doc = self._json("POST", "/reattach", {"owner": int(owner), "away": int(away)},
                         ping=True)
        reason = doc["reason"]
        if reason is not None:
            return reason
        fmt = DiskFormat.from_json(json.dumps(doc["format"]))
        if fmt.disk_id != self.disk_id or not fmt.same_set(self.format):
            return f"node {self.node} holds another disk under {self.disk_id}"
        self.format = fmt
        self.disk_name = doc["name"]
        self.healing = doc["healing"]
        self.online = True
        self.reason = None
        return None

    def mark_healed(self) -> None:
        self._call("POST", "/healed")
        self.healing = False

    def close(self) -> None:
        """Offline here (the disk itself stays as it is on its node); the node's
        connections close with its last disk."""
        self.online = False
        self.client.release(self)

    async def aclose(self) -> None:
        """:meth:`close`, waiting for the connections to close."""
        self.close()
        await self.client.wait_closed()


class RemoteShardWriter(ShardWriter):
    """A shard file being written on another node (a session of its disk server)."""

    remote = True

    def __init__(self, disk: RemoteDisk, session: str) -> None:
        self.disk = disk
        self.session = session
        self.path = f"{disk._path}/writers/{_seg(session)}"
        self.broken = False

    def write(self, iov: Iov, offset: int) -> None:
        length = sum(memoryview(b).nbytes for b in iov)
        try:
            if self.disk.client.channel_call(
                    data_channel.OP_WRITE, [self.disk.disk_id, self.session, offset, length],
                    body=iov, length=length, observe=self.disk._observe) is not None:
                return
            self.disk.client.call("PUT", self.path, {"offset": offset}, list(iov),
                                  unsigned=True, length=length, io=True, retry=True,
                                  observe=self.disk._observe)
        except ConnectionError:
            self.broken = True
            raise

    def commit(self) -> None:
        self.disk.client.call("POST", self.path + "/commit", io=True, slow=True,
                              observe=self.disk._observe)

    def abort(self) -> None:
        """Best effort: a session its node never hears about again expires there."""
        if self.broken:
            return
        try:
            self.disk.client.call("DELETE", self.path, io=True, retry=True)
        except OSError as exc:
            log.debug("abort of a shard writer on %s failed: %s", self.disk.name, exc)


class RemoteBlockFile(BlockFile):
    """A block file of a disk on another node, as opened at ``epoch`` there."""

    __slots__ = ("disk", "name", "epoch", "path", "closed")

    def __init__(self, disk: RemoteDisk, name: str, epoch: str) -> None:
        self.disk, self.name, self.epoch = disk, name, epoch
        self.path = f"{disk._path}/files/{_seg(name)}"
        self.closed = False

    def __repr__(self) -> str:
        return f"RemoteBlockFile({self.disk.name!r}, {self.name!r})"

    def _call(self, method: str, sub: str, params: dict[str, object], body: Any = b"",
              slow: bool = False) -> Reply:
        if self.closed:
            raise OSError(errno.EBADF, f"{self!r} is closed")
        params["epoch"] = self.epoch
        return self.disk.client.call(method, self.path + sub, params, body, io=True, retry=True,
                                     slow=slow, observe=self.disk._observe)

    def pread(self, length: int, offset: int) -> bytes:
        if length <= 0:
            return b""
        return self._call("GET", "", {"offset": offset, "length": length}).body

    def preadinto(self, buf: bytearray | memoryview, offset: int) -> int:
        if self.closed:
            raise OSError(errno.EBADF, f"{self!r} is closed")
        length = memoryview(buf).nbytes
        if not length:
            return 0
        return self.disk.client.read_into(
            self.path, {"epoch": self.epoch, "offset": offset, "length": length}, [buf],
            observe=self.disk._observe)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        self._call("PUT", "", {"offset": offset}, data)

    def punch(self, offset: int, length: int) -> None:
        if length > 0:
            self._call("POST", "/punch", {"offset": offset, "length": length})

    def sync(self) -> None:
        self._call("POST", "/sync", {}, slow=True)

    def size(self) -> int:
        return self._call("GET", "/size", {}).json()["size"]

    def close(self) -> None:
        self.closed = True


def remote_disks(base_url: str, secret: bytes, node: str, *, caller: str | None = None,
                 ssl: ssl_module.SSLContext | None = None, **kw: Any) -> list[RemoteDisk]:
    """Every disk a node serves, as RemoteDisks sharing one client (blocking)."""
    client = NodeClient(base_url, secret, caller or default_caller(), ssl=ssl, **kw)
    listed = client.call("GET", PREFIX + "/disks").json()
    disks = []
    for entry in listed:
        fmt = DiskFormat.from_json(json.dumps(entry["format"]))
        disk = RemoteDisk(base_url, entry["id"], entry["position"], fmt, secret, node,
                          client=client, disk_name=entry["name"], online=entry["online"],
                          healing=entry["healing"])
        if not entry["online"]:
            disk.reason = entry["reason"] or "offline on its node"
        disk._epoch = entry["epoch"]
        disks.append(disk)
    return disks
