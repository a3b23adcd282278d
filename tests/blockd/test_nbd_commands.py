"""Transmission phase from a raw socket: data, errors, structured replies, flow control."""

from __future__ import annotations

import errno
import os
import struct
import time

import pytest
from memory_export import CHUNK, MemoryExport
from nbd_helpers import MiB, wait_until
from rawnbd import assemble_read
from server_thread import ServerThread

from blockd import protocol as p
from blockd.export import Export, NBDError


@pytest.fixture(params=[True, False], ids=["structured", "simple"])
def structured(request):
    return request.param


def connect(client, name, structured=True, **kw):
    c = client()
    c.go(name, structured=structured, **kw)
    return c


def test_write_then_read_back_unaligned(client, make_export, structured):
    export = make_export()
    c = connect(client, export.name, structured)
    data = os.urandom(100_000)
    c.request(p.CMD_WRITE, 1, 12_345, len(data), data=data)
    assert c.reply_error() == (1, 0)
    assert c.read(2, 12_345, len(data)) == (0, data)
    assert c.read(3, 0, 12_345) == (0, bytes(12_345))


def test_large_write_is_received_in_pieces(client, make_export):
    export = make_export()
    c = connect(client, export.name)
    data = os.urandom(3 * MiB + 17)
    header = struct.pack(">IHHQQI", p.REQUEST_MAGIC, 0, p.CMD_WRITE, 9, 4096, len(data))
    c.send(header[:10])
    time.sleep(0.05)
    c.send(header[10:] + data[:1000])
    time.sleep(0.05)
    for i in range(1000, len(data), 700_000):
        c.send(data[i : i + 700_000])
    assert c.reply_error() == (9, 0)
    assert c.read(10, 4096, len(data)) == (0, data)


def test_sparse_read_sends_holes(client, make_export):
    export = make_export()
    c = connect(client, export.name)
    c.request(p.CMD_WRITE, 1, CHUNK, 10, data=b"x" * 10)
    assert c.reply_error() == (1, 0)
    c.request(p.CMD_READ, 2, 0, 4 * CHUNK)
    handle, chunks = c.structured_reply()
    kinds = [rtype for rtype, _ in chunks]
    assert kinds == [p.REPLY_TYPE_OFFSET_HOLE, p.REPLY_TYPE_OFFSET_DATA, p.REPLY_TYPE_OFFSET_HOLE]
    err, data = assemble_read(0, 4 * CHUNK, chunks)
    assert err == 0 and data[CHUNK : CHUNK + 10] == b"x" * 10 and data.count(0) == 4 * CHUNK - 10
    # Several data runs, read in parallel, each in its own chunk.
    c.request(p.CMD_WRITE, 3, 3 * CHUNK + 5, 4, data=b"yyyy")
    assert c.reply_error() == (3, 0)
    c.request(p.CMD_READ, 4, CHUNK // 2, 4 * CHUNK)
    _, chunks = c.structured_reply()
    kinds = [rtype for rtype, _ in chunks]
    assert kinds == [
        p.REPLY_TYPE_OFFSET_HOLE, p.REPLY_TYPE_OFFSET_DATA, p.REPLY_TYPE_OFFSET_HOLE,
        p.REPLY_TYPE_OFFSET_DATA, p.REPLY_TYPE_OFFSET_HOLE,
    ]
    err, data = assemble_read(CHUNK // 2, 4 * CHUNK, chunks)
    assert data[CHUNK // 2 : CHUNK // 2 + 10] == b"x" * 10
    assert data[2 * CHUNK + CHUNK // 2 + 5 : 2 * CHUNK + CHUNK // 2 + 9] == b"yyyy"


def test_read_with_df_is_one_data_chunk(client, make_export):
    export = make_export()
    c = connect(client, export.name)
    c.request(p.CMD_READ, 5, 0, 4 * CHUNK, flags=p.CMD_FLAG_DF)
    handle, chunks = c.structured_reply()
    assert [rtype for rtype, _ in chunks] == [p.REPLY_TYPE_OFFSET_DATA]
    assert chunks[0][1] == bytes(8 + 4 * CHUNK)


@pytest.mark.parametrize(
    "cmd, payload, expected",
    [
        (p.CMD_READ, False, errno.EINVAL),
        (p.CMD_WRITE, True, errno.ENOSPC),
        (p.CMD_WRITE_ZEROES, False, errno.ENOSPC),
        (p.CMD_TRIM, False, errno.EINVAL),
        (p.CMD_CACHE, False, errno.EINVAL),
    ],
)
def test_past_the_end(client, make_export, structured, cmd, payload, expected):
    export = make_export(size=1 * MiB)
    c = connect(client, export.name, structured)
    offset, length = 1 * MiB - 512, 1024
    if cmd == p.CMD_READ:
        assert c.read(1, offset, length) == (expected, b"")
    else:
        c.request(cmd, 1, offset, length, data=b"y" * length if payload else b"")
        assert c.reply_error() == (1, expected)
    # The connection is still usable.
    c.request(p.CMD_WRITE, 2, offset, 512, data=b"z" * 512)
    assert c.reply_error() == (2, 0)
    assert c.read(3, offset, 512) == (0, b"z" * 512)


def test_block_status_past_the_end_and_zero_length(client, make_export):
    export = make_export(size=1 * MiB)
    c = connect(client, export.name)
    c.request(p.CMD_BLOCK_STATUS, 1, 1 * MiB - 512, 1024)
    assert c.reply_error() == (1, errno.EINVAL)
    for cmd in (p.CMD_READ, p.CMD_WRITE, p.CMD_TRIM, p.CMD_WRITE_ZEROES, p.CMD_BLOCK_STATUS):
        c.request(cmd, 2, 0, 0)
        if cmd == p.CMD_READ:
            _, chunks = c.structured_reply()
            assert chunks[0][0] == p.REPLY_TYPE_ERROR
        else:
            assert c.reply_error() == (2, errno.EINVAL)


def test_oversized_read_is_refused_without_allocating(client, make_export, structured):
    export = make_export(size=1 << 40)
    c = connect(client, export.name, structured)
    assert c.read(1, 0, 0xFFFFFFFF) == (errno.EINVAL, b"")
    assert c.read(2, 0, 32 * MiB + 1) == (errno.EINVAL, b"")
    assert export.calls.get("pread", 0) == 0
    assert c.read(3, 0, 32 * MiB) == (0, bytes(32 * MiB))


def test_oversized_write_payload_is_skipped_and_refused(client, make_export):
    export = make_export(size=1 << 30)
    c = connect(client, export.name)
    length = 32 * MiB + 4096
    c.request(p.CMD_WRITE, 1, 0, length)
    block = b"q" * MiB
    for _ in range(length // MiB):
        c.send(block)
    c.send(b"q" * (length % MiB))
    assert c.reply_error() == (1, errno.EINVAL)
    assert export.chunks == {}
    c.request(p.CMD_WRITE, 2, 0, 4, data=b"good")
    assert c.reply_error() == (2, 0)


def test_read_only_export_refuses_writes(client, structured):
    c = connect(client, "ro", structured)
    c.request(p.CMD_WRITE, 1, 0, 512, data=b"w" * 512)
    assert c.reply_error() == (1, errno.EPERM)
    c.request(p.CMD_TRIM, 2, 0, 512)
    assert c.reply_error() == (2, errno.EPERM)
    c.request(p.CMD_WRITE_ZEROES, 3, 0, 512)
    assert c.reply_error() == (3, errno.EPERM)
    assert c.read(4, 0, 512) == (0, b"\x5a" * 512)


@pytest.mark.parametrize(
    "cmd, flags",
    [
        (42, 0),  # unknown command
        (p.CMD_READ, p.CMD_FLAG_REQ_ONE),  # flag of another command
        (p.CMD_WRITE_ZEROES, 1 << 9),  # unknown flag
        (p.CMD_FLUSH, 0),  # offset must be zero (sent below)
    ],
)
def test_invalid_requests_get_einval(client, make_export, structured, cmd, flags):
    export = make_export()
    c = connect(client, export.name, structured)
    offset = 512 if cmd == p.CMD_FLUSH else 0
    if cmd == p.CMD_READ:
        assert c.read(1, offset, 512, flags) == (errno.EINVAL, b"")
    else:
        c.request(cmd, 1, offset, 512 if cmd != p.CMD_FLUSH else 0, flags)
        assert c.reply_error() == (1, errno.EINVAL)
    assert c.read(2, 0, 16) == (0, bytes(16))


def test_df_needs_structured_replies(client, make_export):
    export = make_export()
    c = connect(client, export.name, structured=False)
    assert c.read(1, 0, 512, p.CMD_FLAG_DF) == (errno.EINVAL, b"")


def test_block_status_reports_holes_and_data(client, make_export):
    export = make_export(size=8 * CHUNK)
    c = connect(client, export.name)
    c.request(p.CMD_WRITE, 1, 2 * CHUNK + 5, 3, data=b"abc")
    assert c.reply_error() == (1, 0)

    def status(offset, length, flags=0):
        c.request(p.CMD_BLOCK_STATUS, 7, offset, length, flags)
        handle, chunks = c.structured_reply()
        assert handle == 7 and len(chunks) == 1 and chunks[0][0] == p.REPLY_TYPE_BLOCK_STATUS
        body = chunks[0][1]
        assert p.S_U32.unpack(body[:4])[0] == c.context_id
        return [p.S_EXTENT.unpack_from(body, i) for i in range(4, len(body), 8)]

    hole = p.STATE_HOLE | p.STATE_ZERO
    assert status(0, 8 * CHUNK) == [(2 * CHUNK, hole), (CHUNK, 0), (5 * CHUNK, hole)]
    assert status(100, 3 * CHUNK) == [(2 * CHUNK - 100, hole), (CHUNK, 0), (100, hole)]
    assert status(0, 8 * CHUNK, p.CMD_FLAG_REQ_ONE) == [(2 * CHUNK, hole)]
    assert status(0, 1000, p.CMD_FLAG_REQ_ONE) == [(1000, hole)]
    # TRIM gives the space back.
    c.request(p.CMD_TRIM, 2, 2 * CHUNK, CHUNK)
    assert c.reply_error() == (2, 0)
    assert status(0, 8 * CHUNK) == [(8 * CHUNK, hole)]


def test_block_status_without_meta_context_is_einval(client, make_export):
    export = make_export()
    c = connect(client, export.name, meta=False)
    c.request(p.CMD_BLOCK_STATUS, 1, 0, 512)
    assert c.reply_error() == (1, errno.EINVAL)


def test_meta_context_for_another_export_does_not_carry_over(client, make_export):
    export = make_export()
    c = client()
    c.request_option(p.OPT_STRUCTURED_REPLY)
    c.request_option(p.OPT_SET_META_CONTEXT, c.meta_data("disk", [p.META_BASE_ALLOCATION]))
    assert c.request_option(p.OPT_GO, c.info_data(export.name))[-1][0] == p.REP_ACK
    c.structured = True
    c.request(p.CMD_BLOCK_STATUS, 1, 0, 512)
    assert c.reply_error() == (1, errno.EINVAL)


@pytest.mark.parametrize(
    "exc, expected",
    [
        (NBDError(errno.ENOSPC), errno.ENOSPC),
        (NBDError(errno.EDQUOT), errno.ENOSPC),
        (NBDError(errno.EROFS), errno.EPERM),
        (OSError(errno.EIO, "disk gone"), errno.EIO),
        (RuntimeError("bug in the backend"), errno.EIO),
    ],
)
def test_backend_errors_become_nbd_errors(client, make_export, structured, exc, expected):
    export = make_export()
    export.fail["pwrite"] = exc
    export.fail["pread"] = exc
    c = connect(client, export.name, structured)
    c.request(p.CMD_WRITE, 1, 0, 4, data=b"data")
    assert c.reply_error() == (1, expected)
    assert c.read(2, 0, 4) == (expected, b"")
    export.fail.clear()
    assert c.read(3, 0, 4) == (0, bytes(4))


def test_structured_errors_carry_a_message(client, make_export):
    export = make_export()
    export.fail["flush"] = NBDError(errno.EIO, "replica unreachable")
    c = connect(client, export.name)
    c.request(p.CMD_FLUSH, 1)
    _, chunks = c.structured_reply()
    (rtype, payload), = chunks
    error, n = p.S_ERROR.unpack(payload[:6])
    assert rtype == p.REPLY_TYPE_ERROR and error == errno.EIO
    assert payload[6 : 6 + n] == b"replica unreachable"


def test_thin_export_running_out_of_space(client, make_export):
    export = make_export(capacity=1)
    c = connect(client, export.name)
    c.request(p.CMD_WRITE, 1, 0, 10, data=b"0123456789")
    assert c.reply_error() == (1, 0)
    c.request(p.CMD_WRITE, 2, 5 * CHUNK, 10, data=b"0123456789")
    assert c.reply_error() == (2, errno.ENOSPC)


def test_fua_is_emulated_with_flush(client, make_export):
    export = make_export(can_fua=False)
    c = connect(client, export.name)
    c.request(p.CMD_WRITE, 1, 0, 4, flags=p.CMD_FLAG_FUA, data=b"fua!")
    assert c.reply_error() == (1, 0)
    assert export.calls.get("flush") == 1
    c.request(p.CMD_WRITE, 2, 0, 4, data=b"nofu")
    assert c.reply_error() == (2, 0)
    assert export.calls.get("flush") == 1


def test_fua_not_advertised_is_einval(client, make_export):
    export = make_export(can_fua=False, can_flush=False)
    c = connect(client, export.name)
    c.request(p.CMD_WRITE, 1, 0, 4, flags=p.CMD_FLAG_FUA, data=b"fua!")
    assert c.reply_error() == (1, errno.EINVAL)


def test_write_zeroes_and_fast_zero(client, make_export):
    export = make_export()
    c = connect(client, export.name)
    c.request(p.CMD_WRITE, 1, 0, 3 * CHUNK, data=b"d" * 3 * CHUNK)
    assert c.reply_error() == (1, 0)
    # Fast zero that would need allocation: refused quickly, nothing changed.
    c.request(p.CMD_WRITE_ZEROES, 2, 0, CHUNK, p.CMD_FLAG_FAST_ZERO | p.CMD_FLAG_NO_HOLE)
    assert c.reply_error() == (2, errno.ENOTSUP)
    assert c.read(3, 0, 4) == (0, b"dddd")
    # Fast zero that may punch a hole: done.
    c.request(p.CMD_WRITE_ZEROES, 4, 0, CHUNK, p.CMD_FLAG_FAST_ZERO)
    assert c.reply_error() == (4, 0)
    assert 0 not in export.chunks
    # NO_HOLE keeps the range allocated.
    c.request(p.CMD_WRITE_ZEROES, 5, CHUNK, CHUNK, p.CMD_FLAG_NO_HOLE)
    assert c.reply_error() == (5, 0)
    assert 1 in export.chunks and export.chunks[1] == bytes(CHUNK)


def test_fast_zero_not_advertised_is_einval(client, make_export):
    export = make_export(can_fast_zero=False)
    c = connect(client, export.name)
    c.request(p.CMD_WRITE_ZEROES, 1, 0, 512, p.CMD_FLAG_FAST_ZERO)
    assert c.reply_error() == (1, errno.EINVAL)


class WritesOnly(MemoryExport):
    """An export relying on Export's default zero(): zero-filled writes."""

    zero = Export.zero
    can_fast_zero = False


def test_default_zero_writes_zeroes(client, nbd):
    export = WritesOnly("writes-only", 4 * MiB)
    nbd.run(nbd.registry.add, export)
    c = connect(client, export.name)
    c.request(p.CMD_WRITE, 1, 0, 3 * MiB, data=b"\xff" * 3 * MiB)
    assert c.reply_error() == (1, 0)
    c.request(p.CMD_WRITE_ZEROES, 2, 100, 2 * MiB + 300)
    assert c.reply_error() == (2, 0)
    err, data = c.read(3, 0, 3 * MiB)
    assert data[:100] == b"\xff" * 100
    assert data[100 : 2 * MiB + 400] == bytes(2 * MiB + 300)
    assert data[2 * MiB + 400 :] == b"\xff" * (MiB - 400)


def test_cache_calls_the_export(client, make_export):
    export = make_export()
    c = connect(client, export.name)
    c.request(p.CMD_CACHE, 1, 0, MiB)
    assert c.reply_error() == (1, 0)
    assert export.calls["cache"] == 1


def test_pipelined_requests_all_answered(client, make_export):
    export = make_export()
    c = connect(client, export.name, structured=False)
    batch = b""
    for i in range(200):
        batch += struct.pack(">IHHQQI", p.REQUEST_MAGIC, 0, p.CMD_WRITE, i, i * 4096, 4096)
        batch += bytes([i]) * 4096
    c.send(batch)
    handles = {c.simple_reply()[0] for _ in range(200)}
    assert handles == set(range(200))
    batch = b"".join(
        struct.pack(">IHHQQI", p.REQUEST_MAGIC, 0, p.CMD_READ, 1000 + i, i * 4096, 4096)
        for i in range(200)
    )
    c.send(batch)
    for _ in range(200):
        handle, error, data = c.simple_reply(4096)
        assert error == 0 and data == bytes([handle - 1000]) * 4096


def test_disconnect_completes_in_flight_requests(client, make_export):
    export = make_export()
    c = connect(client, export.name, structured=False)
    c.send(
        struct.pack(">IHHQQI", p.REQUEST_MAGIC, 0, p.CMD_WRITE, 1, 0, 4) + b"last"
        + struct.pack(">IHHQQI", p.REQUEST_MAGIC, 0, p.CMD_READ, 2, 0, 4)
        + struct.pack(">IHHQQI", p.REQUEST_MAGIC, 0, p.CMD_DISC, 3, 0, 0)
    )
    replies = {}
    for _ in range(2):
        _, _, handle = p.S_SIMPLE_REPLY.unpack(c.recv(16))
        replies[handle] = c.recv(4) if handle == 2 else b""
    assert set(replies) == {1, 2}
    assert c.is_closed()
    wait_until(lambda: export.closed == 1)


class GatedExport(MemoryExport):
    """Reads wait for the test to open a gate; counts how many wait at once."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import asyncio

        self.gate = asyncio.Event()
        self.waiting = 0
        self.most_waiting = 0

    async def pread(self, offset, length):
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await super().pread(offset, length)


def test_back_pressure_bounds_requests_in_flight(client):
    from blockd.export import StaticRegistry

    registry = StaticRegistry()
    server = ServerThread(registry, max_inflight_requests=4, max_inflight_bytes=1 << 30)
    try:
        export = server.run(GatedExport, "gated", 16 * MiB)
        server.run(registry.add, export)
        from rawnbd import RawClient

        with RawClient.tcp(server.port) as c:
            c.greet()
            c.go("gated", structured=False)
            c.send(b"".join(
                struct.pack(">IHHQQI", p.REQUEST_MAGIC, 0, p.CMD_READ, i, 0, 512)
                for i in range(100)
            ))
            wait_until(lambda: export.waiting == 4)
            time.sleep(0.2)
            assert export.most_waiting == 4  # the other 96 stay unparsed
            server.run(export.gate.set)
            handles = {c.simple_reply(512)[0] for _ in range(100)}
            assert handles == set(range(100))
    finally:
        server.stop()
