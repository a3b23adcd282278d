"""Large READ replies written by I/O threads: whole and in order on a slow client.

A client with a tiny receive buffer pipelines 1 MiB READs between 4 KiB ones
and reads nothing until all are sent: the socket takes only part of a
thread's reply, the rest goes through the transport ahead of everything
else, and the loop's own replies wait for the wire. Every reply must arrive
whole, uninterleaved and with the right bytes, simple and structured.
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from rawnbd import RawClient, assemble_read
from volume_helpers import close, open_manager

from blockd import protocol as p
from blockd.nbd_client import NBDClient
from blockd.nbd_connection import NBDConnection
from blockd.nbd_server import NBDServer

MiB = 1 << 20


def pipelined_reads(port: int, structured: bool, data: bytes) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    with RawClient(sock) as client:
        client.greet()
        client.go("v", structured=structured)
        expected = {}
        for i in range(12):
            offset, length = (i % 4) * MiB, MiB
            if i % 3 == 2:
                offset, length = i * 4096 + 512, 4096  # a small READ, served by the loop
            client.request(p.CMD_READ, i, offset, length)
            expected[i] = (offset, length)
        while expected:
            if structured:
                handle, chunks = client.structured_reply()
                offset, length = expected.pop(handle)
                error, got = assemble_read(offset, length, chunks)
            else:
                # Simple replies carry no length: the handle says which it is.
                handle, error, _ = client.simple_reply()
                offset, length = expected.pop(handle)
                got = client.recv(length)
            assert error == 0
            assert got == data[offset:offset + length], handle


@pytest.mark.parametrize("structured", [True, False])
async def test_large_replies_from_threads_stay_whole_on_a_slow_client(dirs, structured,
                                                                     monkeypatch):
    rests = []  # replies a thread began and the transport finished
    send_rest = NBDConnection._send_rest
    monkeypatch.setattr(NBDConnection, "_send_rest",
                        lambda self, *args: (rests.append(1), send_rest(self, *args)))
    store, vm = await open_manager(dirs)
    server = NBDServer(vm)
    await server.start("127.0.0.1", 0)
    try:
        await vm.create("v", 8 * MiB)
        data = os.urandom(4 * MiB)
        async with NBDClient("127.0.0.1", server.port, "v") as client:
            await client.write(0, data)
        await asyncio.to_thread(pipelined_reads, server.port, structured, data)
        assert rests
    finally:
        await server.close()
        await close(store, vm)
