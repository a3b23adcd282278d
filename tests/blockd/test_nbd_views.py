"""Large READs of a plaintext volume sent from views of its mapped files:
what the client gets, in every reply format and while the socket is full.

A volume served by an in-process NBDServer. The views read the files when
written to the socket, so they are only valid while no freed slot can be
reused: these tests check the data a client gets when it stops reading
(replies wait in the connection's view queue, then are copied after
VIEW_HOLD), and that a slot freed and reused after its reply was written
cannot change that reply.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket

import pytest
from rawnbd import RawClient
from volume_helpers import close, open_manager

import blockd.nbd_connection as nbd_connection
from blockd import protocol as p
from blockd.nbd_client import NBDClient
from blockd.nbd_server import NBDServer
from blockd.pool import BLOCK, CHUNK, ChunkPool

MiB = 1 << 20


@pytest.fixture
def careful(monkeypatch):
    """Reads of the pool's careful path, into memory (counted in ['reads'])."""
    counted = collections.Counter()
    original = ChunkPool.read

    def read(self, *args):
        counted["reads"] += 1
        return original(self, *args)

    monkeypatch.setattr(ChunkPool, "read", read)
    return counted


@pytest.fixture
async def served(dirs):
    store, vm = await open_manager(dirs)
    server = NBDServer(vm)
    await server.start("127.0.0.1", 0)
    try:
        yield server, vm
    finally:
        await server.close()
        await close(store, vm)


def paused(client: NBDClient, buffer: int = 0) -> asyncio.Transport:
    """The client's transport, reading paused: replies pile up in the socket
    (``buffer``: its receive buffer's size, if set)."""
    transport = client._writer.transport
    if buffer:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    transport.pause_reading()
    return transport


async def test_structured_and_simple_reads_of_data_holes_and_partial_chunks(served, careful):
    """Written blocks are sent from views, holes as OFFSET_HOLE chunks (or
    zeros), a chunk with unwritten blocks read into memory; every format
    reads back the same."""
    server, vm = served
    await vm.create("v", 16 * MiB)
    data = os.urandom(2 * MiB)
    async with NBDClient("127.0.0.1", server.port, "v") as client:
        await client.write(0, data[:MiB])                    # chunks 0-15
        await client.write(MiB + CHUNK, data[MiB + CHUNK:])  # chunk 16 a hole, 17-31
        await client.write(3 * MiB, data[:BLOCK])            # chunk 48: one block of 16
    expect = bytearray(4 * MiB)
    expect[:MiB] = data[:MiB]
    expect[MiB + CHUNK:2 * MiB] = data[MiB + CHUNK:]
    expect[3 * MiB:3 * MiB + BLOCK] = data[:BLOCK]

    def read_all(structured: bool, flags: int = 0) -> list[bytes]:
        with RawClient.tcp(server.port) as c:
            c.greet()
            c.go("v", structured=structured)
            out = []
            for i, (offset, length) in enumerate([(0, 4 * MiB), (BLOCK, 2 * MiB - 2 * BLOCK),
                                                  (MiB - CHUNK, 3 * CHUNK)]):
                error, got = c.read(i + 1, offset, length, flags)
                assert error == 0
                out.append(got)
            return out

    for structured, flags in ((True, 0), (True, p.CMD_FLAG_DF), (False, 0)):
        careful.clear()
        got = await asyncio.to_thread(read_all, structured, flags)
        assert got == [bytes(expect), bytes(expect[BLOCK:2 * MiB - BLOCK]),
                       bytes(expect[MiB - CHUNK:MiB + 2 * CHUNK])]
        assert careful["reads"] == 1  # chunk 48, 15 of its blocks unwritten


async def test_replies_wait_for_a_client_that_is_not_reading(served, careful):
    """Replies the socket cannot take wait in the view queue, in order with
    the small replies after them, and reach the client intact once it reads
    again: sent from the views, none copied."""
    server, vm = served
    await vm.create("v", 16 * MiB)
    data = os.urandom(8 * MiB)
    async with NBDClient("127.0.0.1", server.port, "v") as client:
        await client.write(0, data)
        transport = paused(client)
        reads = [asyncio.ensure_future(client.read(i % 8 * MiB, MiB)) for i in range(24)]
        small = asyncio.ensure_future(client.read(5 * BLOCK, BLOCK))
        (conn,) = server._connections
        for _ in range(100):
            await asyncio.sleep(0.01)
            if conn._vq:
                break
        assert conn._vq, "the socket never filled up"
        transport.resume_reading()
        got = await asyncio.gather(*reads)
        assert got == [data[i % 8 * MiB:][:MiB] for i in range(24)]
        assert await small == data[5 * BLOCK:6 * BLOCK]
        assert conn.tx_copied == 0 and not conn._vq and not careful["reads"]


async def wait_for(predicate, what: str) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


@pytest.mark.parametrize("hold", [nbd_connection.VIEW_HOLD, 0.1])
async def test_freed_and_reused_slots_cannot_change_replies_not_yet_read(
        served, careful, monkeypatch, hold):
    """Replies to a client that stopped reading, whether written to the
    socket (copied into it: sendfile would have lent it the page cache pages,
    which the punch of a recycled slot zeroes in place) or copied after
    VIEW_HOLD (which ends the requests, so freed slots can be recycled while
    the client still does not read): another volume's data written to the
    reused slots never reaches them, nor do the punch's zeros."""
    monkeypatch.setattr(nbd_connection, "VIEW_HOLD", hold)
    server, vm = served
    await vm.create("v", 16 * MiB)
    await vm.create("w", 16 * MiB)
    count = 4 if hold >= 1 else 24  # fits in the socket / does not
    data, secret = os.urandom(8 * MiB), os.urandom(8 * MiB)
    async with NBDClient("127.0.0.1", server.port, "v") as client, \
            NBDClient("127.0.0.1", server.port, "v") as trimmer, \
            NBDClient("127.0.0.1", server.port, "w") as writer:
        await client.write(0, data)
        slots = set(vm.map_of("v").values())
        transport = paused(client, 8 * MiB)
        reads = [asyncio.ensure_future(client.read(i % 8 * MiB, MiB)) for i in range(count)]
        await wait_for(lambda: sum(c.requests for c in server._connections) == 1 + count,
                       "the reads arrived")
        await wait_for(lambda: not any(c._inflight or c._vq for c in server._connections),
                       "the replies were written or copied")
        conn = next(c for c in server._connections if c.requests == 1 + count)
        assert not careful["reads"]
        if hold >= 1:  # all written from the views, none copied
            assert conn.tx_copied == 0
        else:
            assert conn.tx_copied > 0
        await trimmer.zero(0, 8 * MiB)  # unmaps the chunks
        await trimmer.flush()  # their slots are released: punched and free again
        await vm.reclaimed()
        assert slots <= vm.free
        await writer.write(0, secret)
        assert slots & set(vm.map_of("w").values()), "no freed slot was reused"
        transport.resume_reading()
        got = await asyncio.gather(*reads)
        assert got == [data[i % 8 * MiB:][:MiB] for i in range(count)]
