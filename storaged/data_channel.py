"""The node data channel: shard bytes between nodes over a bare TCP stream.

Through aiohttp a 1 MiB shard write cost the receiving node ~1.6 ms of CPU and
the sender ~1 ms (HTTP parsing, a wakeup per 64 KiB piece, joined copies),
where ``recv_into`` + ``pwritev`` cost ~0.4 ms; a read was as dear, and a
metadata query cost both sides ~0.2 ms. So the hot paths (shard reads and
writes, metadata queries and commits) leave HTTP after one signed request::

    GET /_basalt/node/v1/channel  Upgrade: basalt-data/1  (signed like every node request)
    101 Switching Protocols

after which the server serves frames on that socket in a thread of its own,
receiving write bodies into reused buffers and sending reads with ``sendfile``,
until the client closes it. Over TLS there is no channel: the HTTP routes serve.

A request::

    HEAD (op u8, seq u64, args length u32) | args (msgpack list) |
    HMAC-SHA256(secret, PROTOCOL nonce seq op args) (32 bytes) | body (writes)

``nonce`` is the upgrade request's (refused if ever seen again, see node_auth)
and ``seq`` counts the channel's requests from 0, so a frame replayed,
reordered or moved to another channel fails its check and ends the channel. A
write's body is not signed: shard frames carry their own checksums, as over
HTTP with UNSIGNED-PAYLOAD. A reply::

    (status u16, meta length u32, data length u64) | meta (msgpack map) | data

``status`` is an HTTP status; meta holds the disk's ``state`` and ``epoch``
and, for an error, the node API's ``error``/``message``/``errno``. Metadata
travels as :mod:`storaged.wire` bytes inside the (authenticated) arguments.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import socket
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from .node_auth import NONCE as NONCE_HEADER

PROTOCOL = "basalt-data/1"
PATH = "/channel"  # under the node API's prefix

OP_WRITE = 1   # [disk id, session, offset, length] + body → meta "written"
OP_READ = 2    # [disk id, vid, part, offset, length]     → data: the bytes (short at EOF)
OP_QUERY = 3   # [disk id, wire [query, args]]           → data: wire answer
OP_COMMIT = 4  # [disk id, wire [op, ...]]               → data: wire [result, ...]

_HEAD = struct.Struct("!BQI")
_REPLY = struct.Struct("!HIQ")
_MAC = 32
MAX_ARGS = 64 << 20  # metadata commits carry their operations (small objects inline)


class ChannelClosed(ConnectionError):
    """The other side closed the channel (or broke a frame): the channel is done."""


def _mac(secret: bytes, nonce: bytes, seq: int, op: int, args: bytes) -> bytes:
    return hmac.new(secret, b"%s\n%s\n%d\n%d\n" % (PROTOCOL.encode(), nonce, seq, op) + args,
                    hashlib.sha256).digest()


def _request_frame(end: Channel | AsyncChannel, op: int, args: Sequence[Any]) -> bytes:
    """The next request of a channel's client end: head, arguments, HMAC."""
    packed = msgpack.packb(list(args))
    mac = _mac(end._secret, end._nonce, end.seq, op, packed)
    end.seq += 1
    return _HEAD.pack(op, end.seq - 1, len(packed)) + packed + mac


def recv_exact(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from ``sock``; ChannelClosed at an early end."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if not n:
            raise ChannelClosed("the channel was closed mid-frame")
        got += n


class Channel:
    """One end of an open channel: framing and authentication, no meaning.

    Receives go through a small buffer, so a small frame (a metadata query, a
    reply head) costs one ``recv``; bodies past the buffer go straight into
    the caller's memory (:meth:`read_into`).
    """

    BUFFER = 64 << 10

    def __init__(self, sock: socket.socket, secret: bytes, nonce: str) -> None:
        self.sock = sock
        self._secret = secret
        self._nonce = nonce.encode()
        self.seq = 0
        self._buf = bytearray(self.BUFFER)
        self._view = memoryview(self._buf)
        self._start = self._end = 0

    def shutdown(self) -> None:
        """End the channel from another thread: its user's calls return or fail
        (closing it there could hand its descriptor number to another file)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.shutdown()
        self.sock.close()

    # receiving -----------------------------------------------------------------------

    def _fill(self, size: int) -> bool:
        """At least ``size`` bytes buffered; False when the peer closed the
        channel before sending any (ChannelClosed when it did so mid-way)."""
        if self._end - self._start >= size:
            return True
        if self._start:  # move the rest to the front
            rest = self._end - self._start
            self._buf[:rest] = self._buf[self._start:self._end]
            self._start, self._end = 0, rest
        while self._end < size:
            n = self.sock.recv_into(self._view[self._end:])
            if not n:
                if self._end == 0:
                    return False
                raise ChannelClosed("the channel was closed mid-frame")
            self._end += n
        return True

    def _take(self, size: int) -> bytes:
        if size > self.BUFFER:
            out = bytearray(size)
            self.read_into(memoryview(out))
            return bytes(out)
        if not self._fill(size):
            raise ChannelClosed("the channel was closed mid-frame")
        out = bytes(self._view[self._start:self._start + size])
        self._start += size
        return out

    def read_into(self, view: memoryview) -> None:
        """Fill ``view`` with the next bytes (buffered ones first)."""
        have = min(self._end - self._start, len(view))
        if have:
            view[:have] = self._view[self._start:self._start + have]
            self._start += have
        if have < len(view):
            recv_exact(self.sock, view[have:])

    # client side -------------------------------------------------------------------

    def request(self, op: int, args: Sequence[Any], body: Sequence[Any] = (),
                length: int = 0) -> tuple[int, dict[str, Any], int]:
        """Send one request (``body``: buffers of ``length`` bytes) and read the
        reply's head: (status, meta, data length). The caller reads the data."""
        self.sock.sendall(_request_frame(self, op, args))
        for buf in body:
            self.sock.sendall(buf)
        status, meta_len, data_len = _REPLY.unpack(self._take(_REPLY.size))
        meta = msgpack.unpackb(self._take(meta_len)) if meta_len else {}
        return status, meta, data_len

    def recv_into(self, iov: Sequence[Any], length: int) -> int:
        """Read a reply's ``length`` data bytes into ``iov``, like ``preadv``."""
        left = length
        for buf in iov:
            view = memoryview(buf).cast("B")[:left]
            self.read_into(view)
            left -= len(view)
            if not left:
                break
        if left:
            raise ChannelClosed(f"{left} bytes more than asked for")
        return length

    def recv_bytes(self, length: int) -> bytes:
        return self._take(length)

    # server side -------------------------------------------------------------------

    def next_request(self) -> tuple[int, list[Any]] | None:
        """The next request's (op, args), authenticated; None when the client
        closed the channel between requests."""
        if self._start == self._end and not self._fill(_HEAD.size):
            return None
        op, seq, args_len = _HEAD.unpack(self._take(_HEAD.size))
        if args_len > MAX_ARGS:
            raise ChannelClosed(f"request arguments of {args_len} bytes")
        packed = self._take(args_len)
        mac = self._take(_MAC)
        if seq != self.seq or not hmac.compare_digest(
                mac, _mac(self._secret, self._nonce, seq, op, packed)):
            raise ChannelClosed("a request frame failed its authentication")
        self.seq += 1
        args = msgpack.unpackb(packed)
        if not isinstance(args, list):
            raise ChannelClosed("malformed request arguments")
        return op, args

    def drain(self, length: int, scratch: memoryview) -> None:
        """Receive and drop a body the server will not use (keeps the stream in step)."""
        while length:
            piece = scratch[:min(length, len(scratch))]
            self.read_into(piece)
            length -= len(piece)

    def reply(self, status: int, meta: Mapping[str, Any], length: int = 0,
              data: bytes | memoryview = b"") -> None:
        packed = msgpack.packb(dict(meta))
        head = _REPLY.pack(status, len(packed), length) + packed
        if data and len(data) <= self.BUFFER:
            self.sock.sendall(head + bytes(data))  # one send for a small answer
            return
        self.sock.sendall(head)
        if data:
            self.sock.sendall(data)

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        """Send ``count`` bytes of file ``fd`` from ``offset`` (kernel to kernel)."""
        with os.fdopen(fd, "rb", buffering=0, closefd=False) as file:
            sent = self.sock.sendfile(file, offset, count)
        if sent != count:  # the file shrank: the reply promised more, end the channel
            raise ChannelClosed(f"sent {sent} of {count} bytes")


class AsyncChannel:
    """The client end of a channel on an event loop (metadata requests from the
    engine's coroutines: no thread hop per request)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 secret: bytes, nonce: str) -> None:
        self.reader, self.writer = reader, writer
        self._secret = secret
        self._nonce = nonce.encode()
        self.seq = 0

    def close(self) -> None:
        """Close (on its event loop's thread)."""
        self.writer.close()

    async def request(self, op: int, args: Sequence[Any]) -> tuple[int, dict[str, Any], bytes]:
        """(status, meta, data) of one request without a body."""
        self.writer.write(_request_frame(self, op, args))
        status, meta_len, data_len = _REPLY.unpack(await self.reader.readexactly(_REPLY.size))
        rest = await self.reader.readexactly(meta_len + data_len) if meta_len + data_len else b""
        meta = msgpack.unpackb(rest[:meta_len]) if meta_len else {}
        return status, meta, rest[meta_len:]


async def open_async(address: tuple[str, int], path: str, headers: Mapping[str, str],
                     secret: bytes) -> AsyncChannel | tuple[int, bytes]:
    """A channel opened on the running loop, or the (status, body) of the refusal."""
    reader, writer = await asyncio.open_connection(*address, limit=MAX_ARGS)
    try:
        writer.write(upgrade_request(path, "{}:{}".format(*address), headers))
        head = await reader.readuntil(b"\r\n\r\n")
        status, length = _answer_head(head)
        if status == 101:
            return AsyncChannel(reader, writer, secret, headers[NONCE_HEADER])
        body = await reader.read(min(length, 1 << 16)) if length else b""
    except BaseException:
        writer.close()
        raise
    writer.close()
    return status, body


def _answer_head(head: bytes) -> tuple[int, int]:
    """(status, content length) of an HTTP answer's head."""
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise ChannelClosed(f"malformed answer to the channel request: {lines[0]!r}") from None
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip() or 0)
    return status, length


def upgrade_request(path: str, host: str, headers: Mapping[str, str]) -> bytes:
    """The HTTP request asking a node's API for a channel (``headers``: signed)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: Upgrade",
             f"Upgrade: {PROTOCOL}", "Content-Length: 0"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_upgrade_answer(sock: socket.socket, limit: int = 1 << 16) -> tuple[int, bytes]:
    """(status, body) of the answer to :func:`upgrade_request`; the body only
    when it is not 101 (an error in the node API's JSON)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk or len(data) > limit:
            raise ChannelClosed("no answer to the channel request")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status, length = _answer_head(head)
    if status == 101:
        if rest:
            raise ChannelClosed("the node sent data before the channel opened")
        return status, b""
    while len(rest) < min(length, limit):
        chunk = sock.recv(4096)
        if not chunk:
            break
        rest += chunk
    return status, rest
