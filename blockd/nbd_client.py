"""A small asyncio NBD client (fixed newstyle, OPT_GO, simple replies).

Backups read snapshots through it (restores are written by the server
itself: blockd/restore.py), the same way any other NBD client would, with
many requests in flight on one connection; tests and benchmarks write with it.
"""

from __future__ import annotations

import asyncio
import os
import struct

from . import protocol as p

_HELLO = struct.Struct(">QQH")       # NBDMAGIC, IHAVEOPT, handshake flags
_OPTION = struct.Struct(">QII")      # IHAVEOPT, option, length
_OPT_REPLY = struct.Struct(">QIII")  # magic, option, reply type, length
_REQUEST = struct.Struct(">IHHQQI")  # magic, flags, type, handle, offset, length
_REPLY = struct.Struct(">IIQ")       # magic, error, handle


class NBDClientError(OSError):
    pass


class NBDClient:
    """One connection to one export. Use ``async with NBDClient(host, port, name)``."""

    def __init__(self, host: str, port: int, export: str) -> None:
        self.host, self.port, self.export = host, port, export
        self.size = 0
        self.flags = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, tuple[asyncio.Future, int]] = {}
        self._handle = 0
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> NBDClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port,
                                                                   limit=64 << 20)
        magic, opt, hs_flags = _HELLO.unpack(await self._reader.readexactly(_HELLO.size))
        if magic != p.NBDMAGIC or opt != p.IHAVEOPT:
            raise NBDClientError(f"{self.host}:{self.port} is not a newstyle NBD server")
        self._writer.write(struct.pack(">I", p.FLAG_C_FIXED_NEWSTYLE
                                       | (hs_flags & p.FLAG_C_NO_ZEROES)))
        name = self.export.encode()
        payload = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        self._writer.write(_OPTION.pack(p.IHAVEOPT, p.OPT_GO, len(payload)) + payload)
        await self._writer.drain()
        while True:
            _, _, kind, length = _OPT_REPLY.unpack(await self._reader.readexactly(_OPT_REPLY.size))
            data = await self._reader.readexactly(length) if length else b""
            if kind == p.REP_ACK:
                break
            if kind == p.REP_INFO and len(data) >= 12 and struct.unpack(">H", data[:2])[0] == \
                    p.INFO_EXPORT:
                self.size, self.flags = struct.unpack(">QH", data[2:12])
            elif kind & (1 << 31):
                raise NBDClientError(f"export {self.export!r} refused: "
                                     f"{data.decode(errors='replace') or hex(kind)}")
        self._task = asyncio.ensure_future(self._receive())

    async def _receive(self) -> None:
        assert self._reader is not None
        try:
            while True:
                magic, error, handle = _REPLY.unpack(await self._reader.readexactly(_REPLY.size))
                if magic != p.SIMPLE_REPLY_MAGIC:
                    raise NBDClientError("unexpected reply from the NBD server")
                fut, length = self._pending.pop(handle)
                data = await self._reader.readexactly(length) if length and not error else b""
                if not fut.done():
                    if error:
                        fut.set_exception(NBDClientError(error, os.strerror(error)))
                    else:
                        fut.set_result(data)
        except (asyncio.IncompleteReadError, ConnectionError, NBDClientError) as exc:
            for fut, _ in self._pending.values():
                if not fut.done():
                    fut.set_exception(NBDClientError(f"NBD connection lost: {exc}"))
            self._pending.clear()

    async def _request(self, kind: int, offset: int = 0, length: int = 0, data: bytes = b"",
                       flags: int = 0) -> bytes:
        assert self._writer is not None
        self._handle += 1
        fut = asyncio.get_running_loop().create_future()
        self._pending[self._handle] = (fut, length if kind == p.CMD_READ else 0)
        header = _REQUEST.pack(p.REQUEST_MAGIC, flags, kind, self._handle, offset, length)
        self._writer.writelines([header, data] if data else [header])
        await self._writer.drain()
        return await fut

    async def read(self, offset: int, length: int) -> bytes:
        return await self._request(p.CMD_READ, offset, length)

    async def write(self, offset: int, data: bytes | memoryview, fua: bool = False) -> None:
        await self._request(p.CMD_WRITE, offset, len(data), data,
                            p.CMD_FLAG_FUA if fua else 0)

    async def zero(self, offset: int, length: int) -> None:
        await self._request(p.CMD_WRITE_ZEROES, offset, length)

    async def flush(self) -> None:
        await self._request(p.CMD_FLUSH)

    async def close(self) -> None:
        if self._writer is None:
            return
        try:
            self._writer.write(_REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_DISC, 0, 0, 0))
            await self._writer.drain()
        except ConnectionError:
            pass
        self._writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._writer = None
