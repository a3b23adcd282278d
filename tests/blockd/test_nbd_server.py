"""Server lifecycle on the test's own event loop: start, isolation, shutdown, logging."""

from __future__ import annotations

import asyncio
import errno
import logging
import os

import pytest
from memory_export import MemoryExport

from blockd import protocol as p
from blockd.export import StaticRegistry
from blockd.nbd_server import NBDServer

MiB = 1024 * 1024


class Client:
    """An asyncio raw client: just enough protocol to reach transmission."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, server: NBDServer, name: str | None = "disk", unix: str | None = None):
        if unix:
            reader, writer = await asyncio.open_unix_connection(unix)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        c = cls(reader, writer)
        await reader.readexactly(18)
        writer.write(p.S_U32.pack(p.FLAG_C_FIXED_NEWSTYLE | p.FLAG_C_NO_ZEROES))
        if name is not None:
            raw = name.encode()
            data = p.S_U32.pack(len(raw)) + raw + p.S_U16.pack(0)
            writer.write(p.S_OPTION.pack(p.IHAVEOPT, p.OPT_GO, len(data)) + data)
            while True:
                _, _, rtype, n = p.S_OPTION_REPLY.unpack(await reader.readexactly(20))
                await reader.readexactly(n)
                if rtype == p.REP_ACK:
                    break
                assert rtype == p.REP_INFO, hex(rtype)
        return c

    def request(self, cmd: int, handle: int, offset: int = 0, length: int = 0, data: bytes = b"") -> None:
        self.writer.write(p.S_REQUEST.pack(p.REQUEST_MAGIC, 0, cmd, handle, offset, length) + data)

    async def reply(self, read_length: int = 0) -> tuple[int, int, bytes]:
        _, error, handle = p.S_SIMPLE_REPLY.unpack(await self.reader.readexactly(16))
        data = await self.reader.readexactly(read_length) if read_length and not error else b""
        return handle, error, data

    async def closed(self) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), 5) == b""
        except ConnectionError:
            return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def server(tmp_path):
    disk = MemoryExport("disk", 16 * MiB)
    srv = NBDServer(StaticRegistry([disk]), shutdown_timeout=2)
    await srv.start("127.0.0.1", 0)
    await srv.start_unix(str(tmp_path / "nbd.sock"))
    srv.disk = disk
    srv.unix_path = str(tmp_path / "nbd.sock")
    yield srv
    await srv.close()


async def test_tcp_and_unix_serve_the_same_export(server):
    a = await Client.connect(server)
    b = await Client.connect(server, unix=server.unix_path)
    a.request(p.CMD_WRITE, 1, 100, 5, b"hello")
    assert await a.reply() == (1, 0, b"")
    b.request(p.CMD_READ, 2, 100, 5)
    assert await b.reply(5) == (2, 0, b"hello")
    a.close()
    b.close()


async def test_bad_request_magic_drops_only_that_connection(server):
    healthy = await Client.connect(server)
    rogue = await Client.connect(server)
    rogue.writer.write(b"\xde\xad\xbe\xef" * 7)
    assert await rogue.closed()
    healthy.request(p.CMD_READ, 1, 0, 4)
    assert await healthy.reply(4) == (1, 0, bytes(4))
    healthy.close()


async def test_hang_up_mid_payload_closes_the_export(server):
    c = await Client.connect(server)
    c.request(p.CMD_WRITE, 1, 0, 4 * MiB, b"z" * MiB)
    await c.writer.drain()
    await asyncio.sleep(0.05)
    c.writer.transport.abort()
    for _ in range(100):
        if server.connections == 0:
            break
        await asyncio.sleep(0.01)
    assert server.connections == 0
    assert server.disk.opened == server.disk.closed == 1
    assert server.disk.chunks == {}  # a half-received write never reaches the export


async def test_close_finishes_in_flight_requests_then_hangs_up(tmp_path):
    gate = asyncio.Event()

    class Slow(MemoryExport):
        async def flush(self):
            await gate.wait()

    srv = NBDServer(StaticRegistry([Slow("disk", MiB)]), shutdown_timeout=5)
    await srv.start("127.0.0.1", 0)
    idle = await Client.connect(srv)
    busy = await Client.connect(srv)
    waiting = await Client.connect(srv, name=None)  # still in the handshake
    busy.request(p.CMD_FLUSH, 7)
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(srv.close())
    await asyncio.sleep(0.1)
    assert not closing.done()  # waits for the flush
    gate.set()
    assert await busy.reply() == (7, 0, b"")
    await asyncio.wait_for(closing, 5)
    for c in (idle, busy, waiting):
        assert await c.closed()


async def test_close_drops_requests_that_never_finish():
    class Stuck(MemoryExport):
        async def flush(self):
            await asyncio.Event().wait()

    export = Stuck("disk", MiB)
    srv = NBDServer(StaticRegistry([export]), shutdown_timeout=0.2)
    await srv.start("127.0.0.1", 0)
    c = await Client.connect(srv)
    c.request(p.CMD_FLUSH, 1)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(srv.close(), 5)
    assert await c.closed()
    assert export.closed == 1


async def test_unix_socket_file_removed_on_close(tmp_path):
    path = str(tmp_path / "s.sock")
    srv = NBDServer(StaticRegistry())
    await srv.start_unix(path)
    assert os.path.exists(path)
    await srv.close()
    assert not os.path.exists(path)


async def test_resize_is_seen_by_connected_clients(server):
    c = await Client.connect(server)
    end = 16 * MiB
    c.request(p.CMD_READ, 1, end, 512)
    assert (await c.reply(512))[1] == errno.EINVAL
    server.disk.size = 32 * MiB
    c.request(p.CMD_WRITE, 2, end, 3, b"new")
    assert await c.reply() == (2, 0, b"")
    server.disk.size = 8 * MiB
    c.request(p.CMD_WRITE, 3, 8 * MiB, 3, b"old")
    assert (await c.reply())[1] == errno.ENOSPC
    c.close()


async def test_minimum_block_size_is_enforced():
    export = MemoryExport("aligned", MiB, minimum_block_size=512)
    srv = NBDServer(StaticRegistry([export]))
    await srv.start("127.0.0.1", 0)
    try:
        c = await Client.connect(srv, "aligned")
        c.request(p.CMD_WRITE, 1, 100, 512, b"a" * 512)
        assert (await c.reply())[1] == errno.EINVAL
        c.request(p.CMD_READ, 2, 512, 100)
        assert (await c.reply())[1] == errno.EINVAL
        c.request(p.CMD_WRITE, 3, 1024, 512, b"b" * 512)
        assert await c.reply() == (3, 0, b"")
        c.close()
    finally:
        await srv.close()


async def test_one_log_line_per_connection(server, caplog):
    caplog.set_level(logging.INFO, logger="blockd.nbd")
    c = await Client.connect(server)
    for i in range(20):
        c.request(p.CMD_WRITE, i, i * 4096, 4096, os.urandom(4096))
    for _ in range(20):
        await c.reply()
    c.request(p.CMD_DISC, 99)
    assert await c.closed()
    for _ in range(100):
        if server.connections == 0:
            break
        await asyncio.sleep(0.01)
    lines = [r for r in caplog.records if r.getMessage() == "nbd connection closed"]
    assert len(lines) == 1
    info = lines[0].fields
    assert info["export"] == "disk" and info["requests"] == 20
    assert info["rx_bytes"] > 20 * 4096 and info["reason"] == "client disconnected"


async def test_backend_bug_is_logged_and_answered_with_eio(server, caplog):
    server.disk.fail["pread"] = ZeroDivisionError("oops")
    c = await Client.connect(server)
    c.request(p.CMD_READ, 1, 0, 8)
    assert (await c.reply(8))[1] == errno.EIO
    assert any(r.getMessage() == "nbd backend raised" for r in caplog.records)
    del server.disk.fail["pread"]
    c.request(p.CMD_READ, 2, 0, 8)
    assert await c.reply(8) == (2, 0, bytes(8))
    c.close()


async def test_handshake_flood_is_bounded(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await reader.readexactly(18)
    writer.write(p.S_U32.pack(p.FLAG_C_FIXED_NEWSTYLE))
    # Thousands of options without reading a single reply.
    option = p.S_OPTION.pack(p.IHAVEOPT, p.OPT_LIST, 0)
    writer.write(option * 20_000)
    await asyncio.sleep(0.5)
    writer.transport.abort()
    for _ in range(100):
        if server.connections == 0:
            break
        await asyncio.sleep(0.01)
    assert server.connections == 0
    c = await Client.connect(server)
    c.request(p.CMD_READ, 1, 0, 8)
    assert await c.reply(8) == (1, 0, bytes(8))
    c.close()


async def test_requests_split_across_many_tiny_packets(server):
    c = await Client.connect(server)
    data = os.urandom(70_000)  # above the small-write threshold
    message = p.S_REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_WRITE, 5, 3, len(data)) + data
    message += p.S_REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_READ, 6, 3, len(data))
    for i in range(0, len(message), 9973):
        c.writer.write(message[i : i + 9973])
        await c.writer.drain()
    assert await c.reply() == (5, 0, b"")
    assert await c.reply(len(data)) == (6, 0, data)
    c.close()
