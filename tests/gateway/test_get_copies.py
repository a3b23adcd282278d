"""What a large GET hands its socket, counted (not timed).

On a plain connection the stripe batches go to the transport as views of the
reader's buffers, a whole batch per write: the gateway copies none of the body
(only a tail smaller than aiohttp's drain limit), and the bytes arrive intact
although each buffer is read into again as soon as the write returns.
"""

import asyncio
import os
from asyncio import selector_events

import aiohttp
import pytest
from aiohttp import web_protocol
from s3_testkit import served_gateway

MIB = 1 << 20


@pytest.fixture
def server_writes(monkeypatch):
    """(type, length) of every buffer the server's transports were handed."""
    seen: list[tuple[type, int]] = []
    cls = selector_events._SelectorSocketTransport
    write, writelines = cls.write, cls.writelines
    nested = False

    def record(transport, data) -> None:
        if not nested and isinstance(transport._protocol, web_protocol.RequestHandler):
            seen.append((type(data), len(data)))

    def write_(self, data):
        record(self, data)
        write(self, data)

    def writelines_(self, lines):
        nonlocal nested
        lines = list(lines)
        for data in lines:
            record(self, data)
        nested = True  # this asyncio may join them and call write
        try:
            writelines(self, lines)
        finally:
            nested = False

    monkeypatch.setattr(cls, "write", write_)
    monkeypatch.setattr(cls, "writelines", writelines_)
    return seen


async def test_a_large_get_sends_the_batches_uncopied(served, server_writes):
    store, s3 = served
    await store.make_bucket("b")
    data = os.urandom(8 * MIB + 5)

    async def body():
        for i in range(0, len(data), MIB):
            yield data[i:i + MIB]
    await store.put_object("b", "k", body(), size=len(data))
    url = await asyncio.to_thread(s3.generate_presigned_url, "get_object",
                                  Params={"Bucket": "b", "Key": "k"})
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert await resp.read() == data
    views = [n for kind, n in server_writes if kind is memoryview]
    copied = sum(n for kind, n in server_writes if kind is not memoryview)
    assert views == [MIB] * 8, views  # one write per batch
    assert copied < 4096 + 5, server_writes  # the headers and the 5-byte tail


async def test_an_encrypted_get_writes_a_buffer_per_batch_not_per_package(
        tmp_path, aiohttp_server, server_writes):
    """An SSE-S3 object's 64 KiB packages are opened into one reused buffer per
    engine batch, handed to the socket uncopied: 8 writes for 8 MiB, not 128."""
    from storaged import master_key
    key_file = str(tmp_path / "master.key")
    master_key.load_or_create(key_file)
    async with served_gateway(tmp_path, aiohttp_server, master_key_file=key_file) as (store, s3):
        await store.make_bucket("b")
        data = os.urandom(8 * MIB + 5)
        await asyncio.to_thread(s3.put_object, Bucket="b", Key="k", Body=data,
                                ServerSideEncryption="AES256")
        url = await asyncio.to_thread(s3.generate_presigned_url, "get_object",
                                      Params={"Bucket": "b", "Key": "k"})
        server_writes.clear()
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200
            assert resp.headers["x-amz-server-side-encryption"] == "AES256"
            assert await resp.read() == data
    body = [(kind, n) for kind, n in server_writes if n > 4096]
    assert sum(n for _, n in body) == len(data) - 5 or sum(n for _, n in body) == len(data)
    assert len(body) <= 9, body  # 128 packages, one write per engine batch
    copied = sum(n for kind, n in body if kind is not memoryview)
    assert copied <= 64 * 1024 + 5, body  # only a tail the drain limit copies


async def test_a_small_get_goes_out_in_one_write(served, server_writes):
    """Status line, headers and a small body in one send (not the headers first:
    a second system call and a second segment for the client, per 4 KiB GET)."""
    store, s3 = served
    await store.make_bucket("b")
    data = os.urandom(4096)
    for key, body in (("k", data), ("empty", b"")):
        await s3_put(s3, key, body)
    for key, params, expected in (("k", {}, data), ("k", {"Range": "bytes=100-199"}, data[100:200]),
                                  ("empty", {}, b"")):
        server_writes.clear()
        got = await asyncio.to_thread(s3.get_object, Bucket="b", Key=key, **params)
        assert got["Body"].read() == expected
        assert len(server_writes) == 1, (key, params, server_writes)
        assert server_writes[0][1] > len(expected)  # the headers came along
    head = await asyncio.to_thread(s3.head_object, Bucket="b", Key="k")
    assert head["ContentLength"] == 4096


async def s3_put(s3, key: str, body: bytes) -> None:
    await asyncio.to_thread(s3.put_object, Bucket="b", Key=key, Body=body)
