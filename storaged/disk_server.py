"""The node API: a node's disks served to the other nodes of a cluster.

:func:`disk_app` is an aiohttp application serving the given disks by their
``format.disk_id`` under ``/_basalt/node/v1/``; :class:`~storaged.remote_disk.RemoteDisk`
is its client, the :class:`~storaged.disk.Disk` of a disk on another machine.
Every request must be signed with the cluster secret (see node_auth.py) —
unknown routes included, so an unauthenticated peer learns nothing.

Routes (``{disk}`` is a disk id; bodies of ``read``/``commit`` are
:mod:`storaged.wire` bytes, other answers JSON unless noted)::

    GET    channel  (Upgrade: basalt-data/1)    101: a data channel (storaged/data_channel.py)
    GET    disks                                list: id, position, name, state, format...
    GET    disks/{disk}                         one disk's entry
    POST   disks/{disk}/read                    [query, args] → answer      (queries in READS)
    POST   disks/{disk}/commit                  [op, ...]     → [result, ...]
    GET    disks/{disk}/status | space | check
    POST   disks/{disk}/reattach?owner=&away=   → {"reason": ..., disk entry}
    POST   disks/{disk}/healed                  mark_healed
    POST   disks/{disk}/writers?vid=&part=&direct=  create a shard writer → {"session": id}
    PUT    disks/{disk}/writers/{s}?offset=     frames (streamed, UNSIGNED-PAYLOAD allowed)
    POST   disks/{disk}/writers/{s}/commit
    DELETE disks/{disk}/writers/{s}             abort
    GET    disks/{disk}/shards/{vid}/{part}?offset=&length=   bytes (short at the end)
    GET    disks/{disk}/shards/{vid}/{part}/size              {"size": n | null}
    POST   disks/{disk}/shards/{vid}/purge?parts=1,2
    POST   disks/{disk}/files/{name}/open?create=              {"epoch": e | null}
    GET    disks/{disk}/files/{name}?epoch=&offset=&length=    pread (bytes)
    PUT    disks/{disk}/files/{name}?epoch=&offset=            pwrite
    POST   disks/{disk}/files/{name}/punch?epoch=&offset=&length=
    POST   disks/{disk}/files/{name}/sync?epoch=
    GET    disks/{disk}/files/{name}/size?epoch=
    GET    disks/{disk}/files/{name}/exists                    has_file
    DELETE disks/{disk}/files/{name}                           remove_file

Every answer about a disk carries ``X-Basalt-Disk-State`` (online, healing,
offline) and ``X-Basalt-Disk-Epoch`` (this server's boot and the disk's open
generation): the client keeps its view of the disk from them. Block files are
opened once per (disk, name) and kept; a request naming another epoch than the
disk's current one fails with ``ESTALE``, so a client never writes through a
file of a disk that was replaced meanwhile.

Errors are JSON ``{"error": CODE, "message": ..., "errno": n}``: ``DiskFull``
(507), ``OSError`` (with its errno), ``StorageError``, ``Unauthorized`` (401),
``NoSuchDisk``/``NoSuchSession`` (404), ``BadRequest`` (400), ``InternalError``.

Blocking disk calls run in the app's thread pool, never on the event loop.
Operations of blockd (``blockd.volmeta``) travel too: the process serving the
disks must have imported their module so that their classes are registered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from aiohttp import web

from . import data_channel, node_auth, wire
from .block_file import BlockFile
from .buffers import STAGE_BYTES, Scratch
from .disk import READS, Disk, LocalDisk
from .errors import DiskFull, StorageError
from .format import mark_healing

log = logging.getLogger("basalt.storaged.disk_server")

PREFIX = "/_basalt/node/v1"
STATE = "X-Basalt-Disk-State"
EPOCH = "X-Basalt-Disk-Epoch"
MAX_BODY = 64 << 20          # signed request bodies (metadata, block writes)
MAX_IO = 256 << 20           # one shard read or write, one block-file read
PIECE = 1 << 20              # streamed bodies are read and written this much at a time
WRITER_IDLE = 900.0          # seconds before an idle shard writer is aborted
MAX_CHANNELS = 256           # data channels served at once (one thread each)
CHANNEL_IDLE = 300.0         # seconds a data channel may wait for its next request

_VID = re.compile(r"[0-9a-f]{2,64}")
_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_UNSIGNED_ROUTES = frozenset({"shard-write"})  # streamed shard frames (self-checksummed)
# set on a request once its answer has begun streaming
_STREAMING: Any = web.RequestKey("streaming", bool) if hasattr(web, "RequestKey") else "streaming"


class NodeError(Exception):
    """An error answer of the node API (not an engine error)."""

    def __init__(self, status: int, code: str, message: str, err: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.errno = status, code, err


def _bad(message: str) -> NodeError:
    return NodeError(400, "BadRequest", message)


def error_body(code: str, message: str, err: int | None = None) -> bytes:
    return json.dumps({"error": code, "message": message, "errno": err}).encode()


def _error_response(status: int, code: str, message: str, err: int | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(code, message, err),
                        content_type="application/json")


def disk_state(disk: Disk) -> str:
    if not disk.online:
        return "offline"
    return "healing" if disk.healing else "online"


@dataclasses.dataclass
class _Writer:
    disk_id: str
    writer: Any  # ShardWriter
    last: float
    users: int = 0

    _lock = threading.Lock()  # users change on the event loop and in channel threads

    def enter(self) -> None:
        with self._lock:
            self.users += 1
            self.last = time.monotonic()

    def leave(self) -> None:
        with self._lock:
            self.users -= 1
            self.last = time.monotonic()


class _Held:
    __slots__ = ("file", "epoch", "users", "dropped")

    def __init__(self, file: BlockFile, epoch: str) -> None:
        self.file, self.epoch, self.users, self.dropped = file, epoch, 0, False


class _BlockFiles:
    """Open block files per (disk, name), closed only when nobody uses them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], _Held] = {}

    def _open(self, key: tuple[str, str], disk: Disk, epoch: str, create: bool) -> _Held | None:
        """The held file (under the lock), opened for ``epoch`` when needed."""
        held = self._held.get(key)
        if held is not None and held.epoch == epoch:
            return held
        file = disk.open_block_file(key[1], create)
        if file is None:
            return None
        if held is not None:
            self._drop(key)
        held = self._held[key] = _Held(file, epoch)
        return held

    def open(self, disk_id: str, disk: Disk, name: str, epoch: str, create: bool) -> bool:
        with self._lock:
            return self._open((disk_id, name), disk, epoch, create) is not None

    @contextlib.contextmanager
    def use(self, disk_id: str, disk: Disk, name: str, epoch: str) -> Iterator[BlockFile]:
        key = (disk_id, name)
        with self._lock:
            held = self._open(key, disk, epoch, create=False)
            if held is None:
                raise FileNotFoundError(errno.ENOENT, f"no block file {name}")
            held.users += 1
        try:
            yield held.file
        finally:
            with self._lock:
                held.users -= 1
                if held.dropped and not held.users:
                    _close_quietly(held.file)

    def _drop(self, key: tuple[str, str]) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            held.dropped = True
            if not held.users:
                _close_quietly(held.file)

    def drop(self, disk_id: str, name: str) -> None:
        with self._lock:
            self._drop((disk_id, name))

    def close_all(self) -> None:
        with self._lock:
            for key in list(self._held):
                self._drop(key)


def _close_quietly(file: BlockFile) -> None:
    try:
        file.close()
    except OSError as exc:
        log.warning("closing a block file failed: %s", exc)


def _int(request: web.Request, name: str, default: int | None = None, *,
         low: int = 0, high: int = 1 << 62) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise _bad(f"missing parameter {name}")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"parameter {name} is not a number") from None
    if not low <= value <= high:
        raise _bad(f"parameter {name} out of range")
    return value


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "0") in ("1", "true", "yes")


class _Service:
    """The state behind one :func:`disk_app`."""

    def __init__(self, disks: Sequence[Disk], secret: bytes, node: str, *,
                 writer_idle: float, threads: int, skew: float) -> None:
        self.disks = {d.format.disk_id: d for d in disks}
        self.node = node
        self.verifier = node_auth.Verifier(secret, skew=skew)
        self._secret = secret
        self.channels: set[data_channel.Channel] = set()
        self.boot = secrets.token_hex(4)
        self.writer_idle = writer_idle
        self.executor = concurrent.futures.ThreadPoolExecutor(threads,
                                                              thread_name_prefix="basalt-node")
        self.sessions: dict[str, _Writer] = {}
        self.stage = Scratch(STAGE_BYTES)  # aligned copies for direct shard writes
        self.files = _BlockFiles()
        self.locks = {disk_id: threading.Lock() for disk_id in self.disks}
        self._reaper: asyncio.Task | None = None

    # plumbing ----------------------------------------------------------------------

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def add(self, disks: Sequence[Disk]) -> None:
        """Serve more disks (a pool created while the node runs)."""
        for disk in disks:
            self.locks.setdefault(disk.format.disk_id, threading.Lock())
            self.disks.setdefault(disk.format.disk_id, disk)

    def disk(self, request: web.Request) -> Disk:
        disk_id = request.match_info["disk"]
        disk = self.disks.get(disk_id)
        if disk is None:
            raise NodeError(404, "NoSuchDisk", f"node {self.node} holds no disk {disk_id}",
                            errno.ENODEV)
        return disk

    def epoch(self, disk: Disk) -> str:
        return f"{self.boot}.{getattr(disk, 'generation', 0)}"

    def info(self, disk: Disk) -> dict[str, Any]:
        return {"id": disk.format.disk_id, "position": disk.position, "name": disk.name,
                "online": disk.online, "healing": disk.healing, "reason": disk.reason,
                "state": disk_state(disk), "epoch": self.epoch(disk),
                "format": json.loads(disk.format.to_json())}

    def stamp(self, response: web.StreamResponse, disk: Disk) -> None:
        response.headers[STATE] = disk_state(disk)
        response.headers[EPOCH] = self.epoch(disk)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        try:
            claims = self.verifier.verify(
                request.method, request.rel_url.raw_path,
                node_auth.canonical_query(request.rel_url.query.items()), request.headers)
            if claims.unsigned:
                if request.match_info.route.name not in _UNSIGNED_ROUTES:
                    raise node_auth.AuthError("an unsigned body is not accepted here")
            else:
                self.verifier.check_body(claims, await request.read())
        except node_auth.AuthError as exc:
            log.warning("node request refused", extra={"fields": {
                "peer": request.remote, "node": request.headers.get(node_auth.NODE, ""),
                "method": request.method, "path": request.path, "reason": str(exc)}})
            return _error_response(401, "Unauthorized", f"refused by node {self.node}: {exc}")
        except web.HTTPRequestEntityTooLarge:
            return _error_response(413, "BadRequest", "request body too large")
        disk = self.disks.get(request.match_info.get("disk", ""))
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # an unknown route or method
            return _error_response(exc.status, "BadRequest", exc.reason)
        except Exception as exc:
            if request.get(_STREAMING):  # the answer has begun: only breaking it off is left
                log.warning("node request failed while answering: %s %s: %s", request.method,
                            request.path, exc)
                raise
            response = self.failure(request, exc)
        if disk is not None and not response.prepared:
            self.stamp(response, disk)
        return response

    def failure(self, request: web.Request, exc: BaseException) -> web.Response:
        return _error_response(*_error_of(f"{request.method} {request.path}", exc))

    async def start(self, app: web.Application) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def stop(self, app: web.Application) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.close_channels(app)
        sessions, self.sessions = list(self.sessions.values()), {}
        for session in sessions:
            await self.run(_abort_quietly, session.writer)
        await self.run(self.files.close_all)
        self.executor.shutdown(wait=True)

    async def close_channels(self, app: web.Application) -> None:
        """End the data channels (their handlers return): the server is stopping."""
        for channel in list(self.channels):
            channel.shutdown()

    async def _reap(self) -> None:
        """Abort shard writers left idle (their client died or gave up)."""
        while True:
            await asyncio.sleep(max(0.05, min(self.writer_idle / 4, 5.0)))
            if not self.sessions:
                self.stage.trim()
            now = time.monotonic()
            for sid, session in list(self.sessions.items()):
                if not session.users and now - session.last > self.writer_idle:
                    del self.sessions[sid]
                    log.warning("shard writer %s idle for %.0f s: aborted", sid,
                                now - session.last)
                    await self.run(_abort_quietly, session.writer)

    # disks -------------------------------------------------------------------------

    async def list_disks(self, request: web.Request) -> web.Response:
        return web.json_response([self.info(d) for d in self.disks.values()])

    async def disk_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.info(self.disk(request)))

    async def read(self, request: web.Request) -> web.Response:
        disk = self.disk(request)
        try:
            decoded = wire.unpack(await request.read())
        except Exception as exc:
            raise _bad(f"undecodable query: {exc}") from None
        query, args = _checked_query(decoded)
        answer = await disk.read(query, *args)
        return web.Response(body=wire.pack(answer), content_type="application/octet-stream")

    async def commit(self, request: web.Request) -> web.Response:
        disk = self.disk(request)
        try:
            ops = wire.unpack(await request.read())
        except Exception as exc:
            raise _bad(f"undecodable operations: {exc}") from None
        results = await disk.commit(_checked_ops(ops))
        return web.Response(body=wire.pack(list(results)),
                            content_type="application/octet-stream")

    async def status(self, request: web.Request) -> web.Response:
        state, reason = await self.run(self.disk(request).status)
        return web.json_response({"state": state, "reason": reason})

    async def space(self, request: web.Request) -> web.Response:
        size, used, free, fs = await self.run(self.disk(request).space)
        return web.json_response({"size": size, "used": used, "free": free, "fs": fs})

    async def check(self, request: web.Request) -> web.Response:
        disk = self.disk(request)
        ok = disk.online and await self.run(disk.check)
        return web.json_response({"ok": bool(ok)})

    def _reattach(self, disk: Disk, owner: bool, away: bool) -> str | None:
        with self.locks[disk.format.disk_id]:
            if disk.online and not disk.check():
                log.error("disk %s lost its format: taking it offline", disk.name)
                disk.close()
                disk.reason = "lost its format.json"
            if not disk.online:
                return disk.reattach(owner)
            root = getattr(disk, "root", None)
            if owner and away and not disk.healing and root is not None:
                # The caller served without this disk: it missed writes, so it
                # is healed completely (what LocalDisk.reattach does locally).
                mark_healing(root)
                disk.healing = True
                log.warning("disk %s was away from a peer: healing", disk.name)
            return None

    async def reattach(self, request: web.Request) -> web.Response:
        disk = self.disk(request)
        reason = await self.run(self._reattach, disk, _flag(request, "owner"),
                                _flag(request, "away"))
        if reason is not None:
            disk.reason = reason
        return web.json_response({"reason": reason, **self.info(disk)})

    def _healed(self, disk: Disk) -> None:
        with self.locks[disk.format.disk_id]:
            disk.mark_healed()

    async def healed(self, request: web.Request) -> web.Response:
        disk = self.disk(request)
        await self.run(self._healed, disk)
        return web.json_response(self.info(disk))

    # shard files -------------------------------------------------------------------

    def _shard(self, request: web.Request) -> tuple[str, int]:
        vid = request.match_info["vid"]
        if not _VID.fullmatch(vid):
            raise _bad("malformed data id")
        try:
            part = int(request.match_info.get("part", "0"))
        except ValueError:
            raise _bad("malformed part number") from None
        return vid, part

    def _session(self, request: web.Request, disk: Disk) -> tuple[str, _Writer]:
        sid = request.match_info["session"]
        session = self.sessions.get(sid)
        if session is None or session.disk_id != disk.format.disk_id:
            raise NodeError(404, "NoSuchSession", f"no shard writer {sid} (expired or ended)",
                            errno.EBADF)
        return sid, session

    async def create_writer(self, request: web.Request) -> web.Response:
        disk = self.disk(request)
        vid = request.query.get("vid", "")
        if not _VID.fullmatch(vid):
            raise _bad("malformed data id")
        part = _int(request, "part", high=1 << 20)
        # direct: a part's shard, written past the page cache (storaged.writer)
        stage = self.stage if _flag(request, "direct") else None
        writer = await self.run(disk.create_shard, vid, part, stage)
        sid = secrets.token_hex(16)
        self.sessions[sid] = _Writer(disk.format.disk_id, writer, time.monotonic())
        return web.json_response({"session": sid})

    async def write_shard(self, request: web.Request) -> web.Response:
        disk = self.disk(request)
        _, session = self._session(request, disk)
        offset = _int(request, "offset")
        if request.content_length is not None and request.content_length > MAX_IO:
            raise _bad("shard write too large")
        session.enter()
        done = 0
        try:
            # The chunks as they came, written together (one pwritev, no joining copy).
            pending: list[bytes] = []
            size = 0
            async for chunk in request.content.iter_chunked(PIECE):
                pending.append(chunk)
                size += len(chunk)
                if size >= PIECE:
                    await self.run(session.writer.write, pending, offset + done)
                    done += size
                    pending, size = [], 0
            if pending:
                await self.run(session.writer.write, pending, offset + done)
                done += size
        finally:
            session.leave()
        return web.json_response({"written": done})

    async def commit_writer(self, request: web.Request) -> web.Response:
        disk = self.disk(request)
        sid, session = self._session(request, disk)
        if session.users:
            raise NodeError(409, "BadRequest", "shard writer still being written", errno.EBUSY)
        del self.sessions[sid]
        try:
            await self.run(session.writer.commit)
        except BaseException:
            await self.run(_abort_quietly, session.writer)
            raise
        return web.json_response({})

    async def abort_writer(self, request: web.Request) -> web.Response:
        disk = self.disk(request)
        session = self.sessions.get(request.match_info["session"])
        if session is not None and session.disk_id == disk.format.disk_id:
            del self.sessions[request.match_info["session"]]
            await self.run(session.writer.abort)
        return web.json_response({})

    async def read_shard(self, request: web.Request) -> web.StreamResponse:
        disk = self.disk(request)
        vid, part = self._shard(request)
        offset = _int(request, "offset")
        length = _int(request, "length", high=MAX_IO)
        first = bytearray(min(length, PIECE))
        got = await self.run(disk.read_shard, vid, part, offset, [first])
        if got < len(first) or length <= PIECE:  # all of it in one piece
            return web.Response(body=memoryview(first)[:got],
                                content_type="application/octet-stream")
        response = web.StreamResponse()
        response.content_type = "application/octet-stream"
        self.stamp(response, disk)
        request[_STREAMING] = True
        await response.prepare(request)
        await response.write(first)
        done = got
        while done < length:  # an error from here on aborts the connection: never a short read
            buf = bytearray(min(PIECE, length - done))
            got = await self.run(disk.read_shard, vid, part, offset + done, [buf])
            if got:
                await response.write(memoryview(buf)[:got])
            done += got
            if got < len(buf):
                break
        await response.write_eof()
        return response

    # the data channel (see storaged/data_channel.py) -----------------------------------

    async def channel(self, request: web.Request) -> web.StreamResponse:
        """Switch this connection to a data channel served by a thread of its own."""
        transport = request.transport
        if request.headers.get("Upgrade", "").lower() != data_channel.PROTOCOL:
            raise _bad(f"expected Upgrade: {data_channel.PROTOCOL}")
        if transport is None or request.secure or transport.get_extra_info("sslcontext"):
            raise _bad("no data channel over TLS")  # the client goes on over HTTP
        if len(self.channels) >= MAX_CHANNELS:
            raise NodeError(503, "Busy", f"node {self.node} serves {MAX_CHANNELS} data "
                            "channels already")
        response = web.StreamResponse(status=101, headers={
            "Upgrade": data_channel.PROTOCOL, "Connection": "Upgrade"})
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        request[_STREAMING] = True
        transport.pause_reading()
        while transport.get_write_buffer_size():  # the 101 goes out before any frame
            await asyncio.sleep(0.001)
        # The thread works on its own descriptor of the connection; aiohttp closes
        # its own once this handler returns (after the thread is done).
        sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
        sock.settimeout(CHANNEL_IDLE)
        channel = data_channel.Channel(sock, self._secret, request.headers[node_auth.NONCE])
        self.channels.add(channel)
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def serve() -> None:
            try:
                self._serve_channel(channel, request.headers.get(node_auth.NODE, "?"))
            finally:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        threading.Thread(target=serve, name="basalt-channel", daemon=True).start()
        try:
            await asyncio.shield(done)
        finally:
            channel.shutdown()  # also when cancelled (the server stopping): the thread ends
            self.channels.discard(channel)
        return response

    def _serve_channel(self, channel: data_channel.Channel, peer: str) -> None:
        scratch = memoryview(bytearray(PIECE))  # reused for every body received
        try:
            while (request := channel.next_request()) is not None:
                op, args = request
                if op == data_channel.OP_WRITE:
                    self._channel_write(channel, args, scratch)
                elif op == data_channel.OP_READ:
                    self._channel_read(channel, args, scratch)
                elif op in (data_channel.OP_QUERY, data_channel.OP_COMMIT):
                    self._channel_meta(channel, op, args)
                else:
                    raise data_channel.ChannelClosed(f"unknown operation {op}")
        except data_channel.ChannelClosed as exc:
            if "authentication" in str(exc):
                log.warning("node data channel refused", extra={"fields": {
                    "node": peer, "reason": str(exc)}})
            else:
                log.debug("data channel from %s ended: %s", peer, exc)
        except OSError as exc:
            log.debug("data channel from %s ended: %s", peer, exc)
        finally:
            channel.close()

    def _meta(self, disk: Disk) -> dict[str, Any]:
        return {"state": disk_state(disk), "epoch": self.epoch(disk)}

    def _channel_error(self, channel: data_channel.Channel, where: str, exc: BaseException,
                       disk: Disk | None) -> None:
        status, code, message, err = _error_of(where, exc)
        meta = self._meta(disk) if disk is not None else {}
        meta.update(error=code, message=message, errno=err)
        channel.reply(status, meta)

    def _channel_disk(self, disk_id: Any) -> Disk:
        disk = self.disks.get(disk_id) if isinstance(disk_id, str) else None
        if disk is None:
            raise NodeError(404, "NoSuchDisk", f"node {self.node} holds no disk {disk_id}",
                            errno.ENODEV)
        return disk

    def _channel_write(self, channel: data_channel.Channel, args: list[Any],
                       scratch: memoryview) -> None:
        """[disk id, session, offset, length] + body: a shard writer's write."""
        length = args[3] if len(args) == 4 else None
        if not isinstance(length, int) or not 0 <= length <= MAX_IO:
            raise data_channel.ChannelClosed("malformed shard write")  # its body is unknown
        disk_id, sid, offset = args[:3]
        where = f"channel write {disk_id}/{sid}"
        disk = None
        try:
            disk = self._channel_disk(disk_id)
            session = self.sessions.get(sid) if isinstance(sid, str) else None
            if session is None or session.disk_id != disk.format.disk_id:
                raise NodeError(404, "NoSuchSession", f"no shard writer {sid} (expired or "
                                "ended)", errno.EBADF)
            if not isinstance(offset, int) or offset < 0:
                raise _bad("malformed offset")
        except Exception as exc:
            channel.drain(length, scratch)
            self._channel_error(channel, where, exc, disk)
            return
        failed: BaseException | None = None
        done = 0
        session.enter()
        try:
            while done < length:
                piece = scratch[:min(len(scratch), length - done)]
                channel.read_into(piece)
                if failed is None:  # after a failure the rest is only received
                    try:
                        session.writer.write([piece], offset + done)
                    except Exception as exc:
                        failed = exc
                done += len(piece)
        finally:
            session.leave()
        if failed is not None:
            self._channel_error(channel, where, failed, disk)
        else:
            channel.reply(200, {**self._meta(disk), "written": done})

    def _channel_meta(self, channel: data_channel.Channel, op: int, args: list[Any]) -> None:
        """[disk id, wire bytes]: a metadata query or commit, in this thread (an
        LMDB read; a commit batched with the other threads')."""
        where = "channel query" if op == data_channel.OP_QUERY else "channel commit"
        disk = None
        try:
            if len(args) != 2 or not isinstance(args[1], bytes):
                raise _bad("malformed metadata request")
            disk = self._channel_disk(args[0])
            try:
                decoded = wire.unpack(args[1])
            except Exception as exc:
                raise _bad(f"undecodable metadata request: {exc}") from None
            if op == data_channel.OP_QUERY:
                query, qargs = _checked_query(decoded)
                answer = disk.read_now(query, *qargs)
            else:  # batched with the other channels' commits (MetaDB.commit_now)
                answer = list(disk.commit_now(_checked_ops(decoded)))
            data = wire.pack(answer)
        except Exception as exc:
            self._channel_error(channel, where, exc, disk)
            return
        channel.reply(200, self._meta(disk), len(data), data)

    def _channel_read(self, channel: data_channel.Channel, args: list[Any],
                      scratch: memoryview) -> None:
        """[disk id, vid, part, offset, length]: bytes of a shard file (short at its
        end), sent by ``sendfile`` from a plain LocalDisk, else read piece by piece
        through the disk's interface. A failure once the reply has begun ends the
        channel: the client never takes a short read for a whole one."""
        where = "channel read"
        disk = None
        fd = None
        try:
            disk_id, vid, part, offset, length = args
            where = f"channel read {disk_id}/{vid}.{part}"
            disk = self._channel_disk(disk_id)
            if not (isinstance(vid, str) and _VID.fullmatch(vid) and isinstance(part, int)
                    and isinstance(offset, int) and offset >= 0
                    and isinstance(length, int) and 0 <= length <= MAX_IO):
                raise _bad("malformed shard read")
            if type(disk).read_shard is LocalDisk.read_shard:
                fd = os.open(disk.shard_path(vid, part), os.O_RDONLY | os.O_CLOEXEC)
                size = os.fstat(fd).st_size
            else:
                size = disk.shard_size(vid, part)
                if size is None:
                    raise FileNotFoundError(errno.ENOENT, "no such shard file")
            count = max(0, min(length, size - offset))
            first = scratch[:min(count, len(scratch))]
            if fd is None and count:
                first = first[:disk.read_shard(vid, part, offset, [first])]
        except Exception as exc:
            if fd is not None:
                os.close(fd)
            self._channel_error(channel, where, exc, disk)
            return
        try:
            channel.reply(200, self._meta(disk), count)
            if fd is not None:
                if count:
                    channel.sendfile(fd, offset, count)
                return
            done = 0
            while done < count:
                if done:
                    piece = scratch[:min(count - done, len(scratch))]
                    first = piece[:disk.read_shard(vid, part, offset + done, [piece])]
                if not first:
                    raise data_channel.ChannelClosed(f"{where}: the shard shrank")
                channel.sock.sendall(first)
                done += len(first)
        except data_channel.ChannelClosed:
            raise
        except OSError as exc:
            raise data_channel.ChannelClosed(f"{where}: {exc}") from None
        finally:
            if fd is not None:
                os.close(fd)

    async def shard_size(self, request: web.Request) -> web.Response:
        disk = self.disk(request)
        vid, part = self._shard(request)
        return web.json_response({"size": await self.run(disk.shard_size, vid, part)})

    async def purge(self, request: web.Request) -> web.Response:
        disk = self.disk(request)
        vid, _ = self._shard(request)
        try:
            parts = [int(p) for p in request.query.get("parts", "").split(",") if p]
        except ValueError:
            raise _bad("malformed part numbers") from None
        await self.run(disk.purge, vid, parts)
        return web.json_response({})

    # block files -------------------------------------------------------------------

    def _file(self, request: web.Request) -> str:
        name = request.match_info["name"]
        if not _FILE.fullmatch(name):
            raise _bad("malformed file name")
        return name

    def _with_file(self, disk: Disk, name: str, epoch: str, fn: Callable[[BlockFile], Any]) -> Any:
        """``fn(file)`` in a worker thread, on the file as the client opened it."""
        current = self.epoch(disk)
        if epoch != current:
            raise OSError(errno.ESTALE, f"disk {disk.name} was reopened since the file was "
                                        f"opened ({epoch} → {current})")
        if not disk.online:
            raise OSError(errno.EIO, f"disk {disk.name} is offline")
        with self.files.use(disk.format.disk_id, disk, name, epoch) as file:
            return fn(file)

    async def file_call(self, request: web.Request, fn: Callable[[BlockFile], Any]) -> Any:
        disk = self.disk(request)
        name = self._file(request)
        return await self.run(self._with_file, disk, name, request.query.get("epoch", ""), fn)

    async def open_file(self, request: web.Request) -> web.Response:
        disk = self.disk(request)
        name = self._file(request)

        def opened() -> str | None:
            if not disk.online:
                raise OSError(errno.EIO, f"disk {disk.name} is offline")
            epoch = self.epoch(disk)
            return epoch if self.files.open(disk.format.disk_id, disk, name, epoch,
                                            _flag(request, "create")) else None

        return web.json_response({"epoch": await self.run(opened)})

    async def pread(self, request: web.Request) -> web.Response:
        offset = _int(request, "offset")
        length = _int(request, "length", high=MAX_IO)
        data = await self.file_call(request, lambda f: f.pread(length, offset))
        return web.Response(body=data, content_type="application/octet-stream")

    async def pwrite(self, request: web.Request) -> web.Response:
        offset = _int(request, "offset")
        body = await request.read()
        await self.file_call(request, lambda f: f.pwrite(body, offset))
        return web.json_response({})

    async def punch(self, request: web.Request) -> web.Response:
        offset = _int(request, "offset")
        length = _int(request, "length")
        await self.file_call(request, lambda f: f.punch(offset, length))
        return web.json_response({})

    async def sync(self, request: web.Request) -> web.Response:
        await self.file_call(request, lambda f: f.sync())
        return web.json_response({})

    async def file_size(self, request: web.Request) -> web.Response:
        return web.json_response({"size": await self.file_call(request, lambda f: f.size())})

    async def has_file(self, request: web.Request) -> web.Response:
        disk = self.disk(request)
        name = self._file(request)
        return web.json_response({"exists": await self.run(disk.has_file, name)})

    async def remove_file(self, request: web.Request) -> web.Response:
        disk = self.disk(request)
        name = self._file(request)

        def remove() -> None:
            self.files.drop(disk.format.disk_id, name)
            disk.remove_file(name)

        await self.run(remove)
        return web.json_response({})


def _checked_query(decoded: Any) -> tuple[str, list[Any]]:
    """(query, args) of a decoded metadata query, if it is one a disk answers."""
    if not (isinstance(decoded, list) and len(decoded) == 2 and decoded[0] in READS
            and isinstance(decoded[1], list)):
        name = decoded[0] if isinstance(decoded, list) and decoded else decoded
        raise _bad(f"unknown metadata query {name!r}")
    return decoded[0], decoded[1]


def _checked_ops(decoded: Any) -> list[Any]:
    if not isinstance(decoded, list) or not all(callable(getattr(op, "apply", None))
                                                for op in decoded):
        raise _bad("not a list of metadata operations")
    return decoded


def _error_of(where: str, exc: BaseException) -> tuple[int, str, str, int | None]:
    """(status, code, message, errno) of the answer to a failed request, logged."""
    if isinstance(exc, NodeError):
        if exc.status >= 500:
            log.error("node request failed: %s: %s", where, exc)
        return exc.status, exc.code, str(exc), exc.errno
    if isinstance(exc, DiskFull):
        log.warning("disk full: %s: %s", where, exc)
        return 507, "DiskFull", str(exc), errno.ENOSPC
    if isinstance(exc, OSError):
        if exc.errno != errno.ENOENT:
            log.warning("disk error: %s: %s", where, exc)
        message = exc.strerror if exc.strerror and exc.errno else str(exc)
        if exc.filename is not None:
            message = f"{message}: {exc.filename}"
        return (404 if exc.errno == errno.ENOENT else 500, "OSError", message,
                exc.errno or errno.EIO)
    if isinstance(exc, StorageError):
        log.error("storage error: %s: %s", where, exc)
        return 500, "StorageError", str(exc), None
    log.error("node request failed: %s", where, exc_info=exc)
    return 500, "InternalError", f"{type(exc).__name__}: {exc}", None


def _abort_quietly(writer: Any) -> None:
    try:
        writer.abort()
    except Exception as exc:
        log.warning("aborting a shard writer failed: %s", exc)


SERVICE = web.AppKey("disk_service", object)


def disk_app(disks: Sequence[Disk], secret: bytes, node: str, *,
             writer_idle: float = WRITER_IDLE, threads: int = 32,
             skew: float = node_auth.SKEW) -> web.Application:
    """The node API serving ``disks`` (by ``format.disk_id``) to the other nodes.

    ``secret`` is the cluster secret, ``node`` this node's name (in errors and
    logs); shard writers idle for ``writer_idle`` seconds are aborted.
    """
    service = _Service(disks, secret, node, writer_idle=writer_idle, threads=threads, skew=skew)
    app = web.Application(middlewares=[service.middleware], client_max_size=MAX_BODY)
    app.on_startup.append(service.start)
    app.on_shutdown.append(service.close_channels)
    app.on_cleanup.append(service.stop)
    d = PREFIX + "/disks/{disk}"
    s = d + "/shards/{vid}"
    f = d + "/files/{name}"
    w = d + "/writers/{session}"
    app.router.add_get(PREFIX + "/disks", service.list_disks)
    app.router.add_get(PREFIX + data_channel.PATH, service.channel, allow_head=False)
    app.router.add_get(d, service.disk_info)
    app.router.add_post(d + "/read", service.read)
    app.router.add_post(d + "/commit", service.commit)
    app.router.add_get(d + "/status", service.status)
    app.router.add_get(d + "/space", service.space)
    app.router.add_get(d + "/check", service.check)
    app.router.add_post(d + "/reattach", service.reattach)
    app.router.add_post(d + "/healed", service.healed)
    app.router.add_post(d + "/writers", service.create_writer)
    app.router.add_put(w, service.write_shard, name="shard-write")
    app.router.add_post(w + "/commit", service.commit_writer)
    app.router.add_delete(w, service.abort_writer)
    app.router.add_get(s + "/{part}", service.read_shard, allow_head=False)
    app.router.add_get(s + "/{part}/size", service.shard_size, allow_head=False)
    app.router.add_post(s + "/purge", service.purge)
    app.router.add_post(f + "/open", service.open_file)
    app.router.add_get(f, service.pread, allow_head=False)
    app.router.add_put(f, service.pwrite)
    app.router.add_post(f + "/punch", service.punch)
    app.router.add_post(f + "/sync", service.sync)
    app.router.add_get(f + "/size", service.file_size, allow_head=False)
    app.router.add_get(f + "/exists", service.has_file, allow_head=False)
    app.router.add_delete(f, service.remove_file)
    app[SERVICE] = service
    return app
