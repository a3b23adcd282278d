"""GetObject and HeadObject: headers, conditions, ranges, streaming."""

from __future__ import annotations

import asyncio
import datetime
import functools
import re

from aiohttp import web

from storaged import ObjectInfo

from . import conditions, sse_objects
from .checksums import header_name
from .errors import InvalidPartNumber, InvalidRange
from .lifecycle import expiration_header
from .object_lock import lock_response_headers
from .request import Context, part_number, version_param
from .tagging import tagging_count_header
from .versioning import version_headers

_CONDITIONS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_OVERRIDES = {"response-content-type": "Content-Type",
              "response-content-language": "Content-Language",
              "response-expires": "Expires", "response-cache-control": "Cache-Control",
              "response-content-disposition": "Content-Disposition",
              "response-content-encoding": "Content-Encoding"}
_STORED = {"content-encoding": "Content-Encoding", "content-disposition": "Content-Disposition",
           "content-language": "Content-Language", "cache-control": "Cache-Control",
           "expires": "Expires", "x-amz-storage-class": "x-amz-storage-class",
           "x-amz-website-redirect-location": "x-amz-website-redirect-location"}


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(offset, length) of a ``Range: bytes=`` header; None to send everything.

    Syntax S3 does not serve (several ranges, other units) is ignored like
    HTTP says; a range that starts past the end is InvalidRange (416).
    """
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _unsatisfiable(size)
        n = min(n, size)
        return size - n, n
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    end = min(end, size - 1)
    return start, end - start + 1


def _unsatisfiable(size: int) -> InvalidRange:
    return InvalidRange(headers={"Content-Range": f"bytes */{size}"}, ActualObjectSize=size)


@functools.lru_cache(maxsize=4096)
def _last_modified(mtime_ns: int) -> str:
    """Last-Modified of a version (formatting it costs more than the rest of its
    headers; the same objects are read again and again)."""
    return conditions.http_date(datetime.datetime.fromtimestamp(mtime_ns / 1e9, tz=datetime.UTC))


def object_headers(info: ObjectInfo, ctx: Context) -> dict[str, str]:
    """Response headers describing an object (HEAD and GET)."""
    h = {"ETag": f'"{info.etag}"', "Last-Modified": _last_modified(info.mtime_ns),
         "Content-Type": info.content_type, "Accept-Ranges": "bytes"}
    for name, value in info.headers.items():
        if name in _STORED:
            h[_STORED[name]] = value
    for name, value in info.user_meta.items():
        h["x-amz-meta-" + name] = value
    if len(info.parts) > 1:
        h["x-amz-mp-parts-count"] = str(len(info.parts))
    query = ctx.query
    if query:
        for param, header in _OVERRIDES.items():
            if param in query:
                h[header] = query[param]
    return h


def _part_range(info: ObjectInfo, ctx: Context) -> tuple[int, int] | None:
    """(offset, length) of the part ``?partNumber=`` asks for; None without it."""
    if ctx.query.get("partNumber") is None:
        return None
    number = part_number(ctx)
    offset = 0
    for part in info.parts:
        if part.number == number:
            return offset, part.size
        offset += part.size
    raise InvalidPartNumber()


async def _resolve(ctx: Context
                   ) -> tuple[ObjectInfo, dict[str, str], int, int, int, bytes | None]:
    sse_objects.refuse_on_read(ctx.headers)
    info = await ctx.store.head_object(ctx.bucket, ctx.key, version_param(ctx),
                                       body=ctx.request.method == "GET")
    # An encrypted object's key is checked first: without the right SSE-C key
    # nothing about it (not even a precondition's outcome) is told.
    key = await sse_objects.object_key(ctx, info.encryption, ctx.bucket, ctx.key)
    if any(name in ctx.headers for name in _CONDITIONS):  # rarely: skip the dates
        conditions.check(ctx.headers, info)
    headers = object_headers(info, ctx)
    headers.update(sse_objects.response_headers(info))
    headers.update(await version_headers(ctx, info))
    headers.update(lock_response_headers(info))
    headers.update(tagging_count_header(info))
    headers.update(await expiration_header(ctx.store, info, ctx.store.lifecycle_day_ns))
    part = _part_range(info, ctx)
    rng = part or parse_range(ctx.headers.get("Range"), info.size)
    status, offset, length = 200, 0, info.size
    if rng is not None and rng[1] > 0:
        offset, length = rng
        status = 206
        headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{info.size}"
    if ctx.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
        if part is not None and len(info.parts) > 1:
            number = int(ctx.query["partNumber"])
            sums = next(p.checksums for p in info.parts if p.number == number)
            kind = "FULL_OBJECT"
        elif rng is None or part is not None:
            sums, kind = info.checksums, info.checksum_type or "FULL_OBJECT"
        else:
            sums = {}  # a byte range has no stored checksum
        for algorithm, value in sums.items():
            headers[header_name(algorithm)] = value
        if sums:
            headers["x-amz-checksum-type"] = kind
    return info, headers, status, offset, length, key


# Over TLS each write is encrypted whole into the connection's outgoing memory
# BIO, which keeps the largest size it ever held for the connection's life: 64 KiB
# pieces (4 TLS records) keep it at ~64 KiB where 256 KiB pieces pinned ~340 KiB.
SEND_PIECE = 64 * 1024
_DRAINED = 0x10000  # aiohttp drains after a write once more than this is unsent
# A body up to this size, read whole in the first chunk, is copied and sent in
# one write with the headers (_Sender copies chunks this small anyway).
SMALL_BODY = _DRAINED


class _Sender:
    """Writes the reader's chunks to the response.

    Chunks are views of stripe buffers the reader reuses, and a transport
    queues what the socket does not take at once by reference. On a plain
    socket the views go out whole, uncopied: the transport is told to pause
    at any byte it holds (write-buffer high water 0), so aiohttp's drain after
    a write returns only once the kernel has taken all of it and the buffer may
    be read into again. Over TLS (which copies while encrypting anyway) and for
    small tails the chunk is copied, in pieces of SEND_PIECE. Encrypted objects'
    plaintext comes the same way (views of a buffer gateway.sse_objects reuses).
    """

    def __init__(self, resp: web.StreamResponse, transport: asyncio.Transport | None) -> None:
        self.resp = resp
        self.transport = transport
        self.whole = transport is not None and transport.get_extra_info("sslcontext") is None
        self.limits = (0, 0)
        if self.whole:
            assert transport is not None
            self.limits = transport.get_write_buffer_limits()
            transport.set_write_buffer_limits(high=0)

    async def send(self, chunk: memoryview) -> None:
        if self.whole and len(chunk) > _DRAINED:
            await self.resp.write(chunk)
            if self.transport.get_write_buffer_size():  # type: ignore[union-attr]
                # never happens while aiohttp drains as it does; if it stopped,
                # the next read would land in bytes still queued: cut off instead
                self.transport.abort()  # type: ignore[union-attr]
                raise ConnectionResetError("a reused buffer was still queued")
        else:
            for start in range(0, len(chunk), SEND_PIECE):
                await self.resp.write(bytes(chunk[start:start + SEND_PIECE]))

    def close(self, failed: bool) -> None:
        if not self.whole:
            return
        transport = self.transport
        assert transport is not None
        if failed and transport.get_write_buffer_size():
            transport.abort()  # it may still hold views of buffers about to be reused
        elif not transport.is_closing():
            transport.set_write_buffer_limits(high=self.limits[1], low=self.limits[0])


async def head_object(ctx: Context) -> web.StreamResponse:
    _, headers, status, _, length, _ = await _resolve(ctx)
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = length
    return resp


async def get_object(ctx: Context) -> web.StreamResponse:
    info, headers, status, offset, length, key = await _resolve(ctx)
    if key is not None:
        reader = sse_objects.plaintext(ctx.store, info, key, offset, length)
    else:
        reader = await ctx.store.get_object(ctx.bucket, ctx.key, offset, length, info=info)
    chunks = reader.__aiter__()
    sender: _Sender | None = None
    failed = True
    try:
        # The first batch is read before the status line goes out, so an
        # unreadable object still gets a proper error response.
        first = await anext(chunks, None)
        if length <= SMALL_BODY and (0 if first is None else len(first)) == length:
            # The whole body is here: one Response sends the status line, the
            # headers and the body in one write (a StreamResponse sends its
            # headers on their own: a second send, and a second segment for the
            # client to take in, per small GET).
            resp = web.Response(status=status, headers=headers,
                                body=b"" if first is None else bytes(first))
            ctx.request["bytes_out"] = length
            return resp
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        await resp.prepare(ctx.request)
        ctx.request["streaming"] = True
        sender = _Sender(resp, ctx.request.transport)
        if first is not None:
            await sender.send(first)
            async for chunk in chunks:
                await sender.send(chunk)
        await resp.write_eof()
        failed = False
    finally:
        if sender is not None:
            sender.close(failed)
        await reader.aclose()
    ctx.request["bytes_out"] = length
    return resp
