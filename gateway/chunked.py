"""Streaming decoder for ``Content-Encoding: aws-chunked`` request bodies.

The body is a sequence of ``<hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n``
frames ended by a zero-size chunk, optionally followed by trailing headers
(``x-amz-checksum-crc32:...``, ``x-amz-trailer-signature:...``) and an empty line.
Three payload modes exist (the ``x-amz-content-sha256`` value):

- ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``: every chunk is signed; each signature
  chains from the previous one, starting at the request's seed signature.
- ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER``: the same plus a signed trailer.
- ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``: no chunk signatures, a trailer (what
  boto3 and aws-cli send by default over HTTPS).

A signed chunk is held in memory until its signature is checked (so only verified
bytes are ever yielded); an unsigned one streams through as it arrives. Memory is
therefore bounded by one chunk (``max_chunk_size``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from gateway.errors import (
    IncompleteBody,
    InvalidArgument,
    InvalidChunkSizeError,
    InvalidRequest,
    MalformedTrailerError,
    MissingContentLength,
)
from gateway.sigv4 import (
    EMPTY_SHA256,
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    AuthContext,
    sign,
    signature_mismatch,
)

MIN_CHUNK_SIZE = 8192  # S3 refuses smaller chunks except the last one
MAX_CHUNK_SIZE = 16 * 1024 * 1024
THREAD_HASH_THRESHOLD = 64 * 1024  # smaller chunks hash faster than a thread hop
_READ_SIZE = 64 * 1024  # look-ahead for chunk headers
_MAX_LINE = 4096
_MAX_TRAILER_SECTION = 16 * 1024
_HEX_SIZE = re.compile(rb"[0-9a-fA-F]{1,8}")
_HEX_SIGNATURE = re.compile(rb"[0-9a-fA-F]{64}")
_SIGNATURE_PREFIX = b"chunk-signature="
_TRAILER_SIGNATURE = "x-amz-trailer-signature"

Piece = bytes | memoryview
RunInThread = Callable[..., Awaitable[Any]]


class ByteSource(Protocol):
    async def read(self, n: int) -> bytes: ...


def strip_aws_chunked(content_encoding: str | None) -> str | None:
    """The Content-Encoding to store once ``aws-chunked`` is removed (None if nothing is left)."""
    if not content_encoding:
        return None
    rest = [e.strip() for e in content_encoding.split(",")
            if e.strip() and e.strip().lower() != "aws-chunked"]
    return ", ".join(rest) or None


class _Reader:
    """Buffered reads over a ``read(n)`` source: lines found with ``bytes.find``.

    A source that has ``readany`` (aiohttp's request stream) hands over the
    chunks it received as they are: chunk data is yielded as views of them,
    never joined or sliced into new bytes (each copy of a large body also
    left the allocator with fragments to keep).
    """

    def __init__(self, source: ByteSource) -> None:
        readany = getattr(source, "readany", None)
        self._read: Callable[[], Awaitable[bytes]] = (
            readany if readany is not None else lambda: source.read(_READ_SIZE))
        self._buf = b""
        self._pos = 0
        self._eof = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        data = await self._read()
        if not data:
            self._eof = True
            return False
        self._buf = self._buf[self._pos:] + data if self._pos < len(self._buf) else data
        self._pos = 0
        return True

    async def at_eof(self) -> bool:
        """True when nothing is left, buffered or in the source."""
        return self._pos >= len(self._buf) and not await self._fill()

    async def line(self, limit: int, *, unterminated_ok: bool = False) -> bytes | None:
        """The next CRLF-terminated line without its CRLF; None at the end of the body.

        With ``unterminated_ok`` a last line that lacks its CRLF is returned as is
        (some clients omit the final CRLF of the trailer section); otherwise it is
        an IncompleteBody.
        """
        while True:
            end = self._buf.find(b"\r\n", self._pos)
            if end >= 0:
                if end - self._pos > limit:
                    raise InvalidRequest("Malformed aws-chunked body: line too long.")
                line = self._buf[self._pos:end]
                self._pos = end + 2
                return line
            if len(self._buf) - self._pos > limit + 1:
                raise InvalidRequest("Malformed aws-chunked body: line too long.")
            if not await self._fill():
                rest = self._buf[self._pos:]
                self._pos = len(self._buf)
                if rest and not unterminated_ok:
                    raise IncompleteBody()
                return rest or None

    async def crlf(self) -> None:
        """Consume the CRLF that ends chunk data."""
        while len(self._buf) - self._pos < 2:
            if not await self._fill():
                raise IncompleteBody()
        if self._buf[self._pos:self._pos + 2] != b"\r\n":
            raise InvalidRequest("Malformed aws-chunked body: chunk data is not followed by CRLF.")
        self._pos += 2

    async def exactly(self, size: int) -> AsyncIterator[Piece]:
        """Yield pieces that add up to ``size`` bytes; IncompleteBody if the body ends first."""
        while size:
            if self._pos >= len(self._buf) and not await self._fill():
                raise IncompleteBody()
            take = min(len(self._buf) - self._pos, size)
            yield memoryview(self._buf)[self._pos:self._pos + take]
            self._pos += take
            size -= take


def _sha256_hex(pieces: Sequence[Piece]) -> str:
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return digest.hexdigest()


async def _to_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class AwsChunkedDecoder:
    """Async iterator over the payload of an aws-chunked body.

    After iteration completes, ``trailers`` holds the trailing headers (lower-case
    names, without the trailer signature) and ``decoded_size`` the payload length.
    Errors are raised as ``S3Error`` during iteration.
    """

    def __init__(
        self,
        source: ByteSource,
        auth: AuthContext,
        *,
        decoded_length: int | None,
        trailer_names: Sequence[str] = (),
        run_in_thread: RunInThread | None = None,
        min_chunk_size: int = MIN_CHUNK_SIZE,
        max_chunk_size: int = MAX_CHUNK_SIZE,
    ) -> None:
        mode = auth.content_sha256
        if mode not in (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER):
            raise InvalidRequest(f"x-amz-content-sha256 {mode} does not describe an aws-chunked body.")
        self._signed = mode != STREAMING_UNSIGNED_TRAILER
        self._with_trailer = mode != STREAMING_PAYLOAD
        self._declared = [name.lower() for name in trailer_names]
        if self._declared and not self._with_trailer:
            raise MalformedTrailerError()
        self._reader = _Reader(source)
        self._auth = auth
        self._previous = auth.seed_signature
        self._decoded_length = decoded_length
        self._run_in_thread = run_in_thread or _to_thread
        self._min_chunk_size = min_chunk_size
        self._max_chunk_size = max_chunk_size
        self._iterator: AsyncIterator[Piece] | None = None
        self.trailers: dict[str, str] = {}
        self.decoded_size = 0

    @classmethod
    def from_headers(cls, source: ByteSource, headers: Mapping[str, str], auth: AuthContext,
                     **options: Any) -> AwsChunkedDecoder:
        """Build a decoder from the request headers (``x-amz-decoded-content-length``,
        ``x-amz-trailer``); a missing decoded length is MissingContentLength, as in S3."""
        lowered = {k.lower(): v for k, v in headers.items()}
        value = lowered.get("x-amz-decoded-content-length")
        if value is None:
            raise MissingContentLength()
        if not re.fullmatch(r"[0-9]{1,19}", value.strip()):
            raise InvalidArgument("x-amz-decoded-content-length must be a non-negative integer",
                                  ArgumentName="x-amz-decoded-content-length", ArgumentValue=value)
        names = [n.strip() for n in lowered.get("x-amz-trailer", "").split(",") if n.strip()]
        return cls(source, auth, decoded_length=int(value), trailer_names=names, **options)

    def __aiter__(self) -> AwsChunkedDecoder:
        return self

    async def __anext__(self) -> Piece:
        if self._iterator is None:
            self._iterator = self._decode()
        return await self._iterator.__anext__()

    async def _decode(self) -> AsyncIterator[Piece]:
        index = 0
        small_chunk: int | None = None  # size of a short chunk that must be the last one
        while True:
            size, signature = await self._chunk_header()
            index += 1
            if size and small_chunk is not None:
                raise InvalidChunkSizeError(Chunk=index - 1, BadChunkSize=small_chunk)
            if size < self._min_chunk_size:
                small_chunk = size
            if self._decoded_length is not None and self.decoded_size + size > self._decoded_length:
                raise IncompleteBody()
            if self._signed:
                pieces = [piece async for piece in self._reader.exactly(size)]
                await self._verify_chunk(pieces, size, signature)
                if size:
                    await self._reader.crlf()
                for piece in pieces:
                    yield piece
            else:
                async for piece in self._reader.exactly(size):
                    yield piece
                if size:
                    await self._reader.crlf()
            self.decoded_size += size
            if size == 0:
                break
        await self._finish()

    async def _chunk_header(self) -> tuple[int, bytes | None]:
        line = await self._reader.line(_MAX_LINE)
        if line is None:
            raise IncompleteBody()
        size_text, _, extension = line.partition(b";")
        if not _HEX_SIZE.fullmatch(size_text):
            raise InvalidRequest("Malformed aws-chunked body: chunk size is not hexadecimal.")
        size = int(size_text, 16)
        if size > self._max_chunk_size:
            raise InvalidRequest(f"Chunk size {size} exceeds the maximum of "
                                 f"{self._max_chunk_size} bytes.")
        if not self._signed:
            return size, None  # chunk extensions carry nothing we use without signing
        if not extension.startswith(_SIGNATURE_PREFIX) or not _HEX_SIGNATURE.fullmatch(
                extension[len(_SIGNATURE_PREFIX):]):
            raise InvalidRequest("Malformed aws-chunked body: missing chunk-signature.")
        return size, extension[len(_SIGNATURE_PREFIX):]

    async def _verify_chunk(self, pieces: list[Piece], size: int, provided: bytes | None) -> None:
        if size > THREAD_HASH_THRESHOLD:
            digest = await self._run_in_thread(_sha256_hex, pieces)
        else:
            digest = _sha256_hex(pieces) if size else EMPTY_SHA256
        auth = self._auth
        string_to_sign = (f"AWS4-HMAC-SHA256-PAYLOAD\n{auth.amz_date}\n{auth.scope}\n"
                          f"{self._previous}\n{EMPTY_SHA256}\n{digest}")
        self._previous = self._check(string_to_sign, (provided or b"").decode("ascii"))

    def _check(self, string_to_sign: str, provided: str) -> str:
        expected = sign(self._auth.signing_key, string_to_sign)
        if not hmac.compare_digest(expected, provided.lower()):
            raise signature_mismatch(self._auth.access_key, string_to_sign, provided)
        return expected

    async def _finish(self) -> None:
        """Read what follows the zero-size chunk: trailers, the empty line, then EOF."""
        if self._decoded_length is not None and self.decoded_size != self._decoded_length:
            raise IncompleteBody()
        lines: list[bytes] = []
        total = 0
        while True:
            line = await self._reader.line(_MAX_LINE, unterminated_ok=True)
            if line is None:
                break
            if not line:
                # Some encoders put an empty line between the final chunk and the trailers.
                if not lines and self._declared and not await self._reader.at_eof():
                    continue
                break
            total += len(line)
            if total > _MAX_TRAILER_SECTION or not self._with_trailer:
                raise MalformedTrailerError()
            lines.append(line)
        if not await self._reader.at_eof():
            raise InvalidRequest("Malformed aws-chunked body: data after the final chunk.")
        self._parse_trailers(lines)

    def _parse_trailers(self, lines: list[bytes]) -> None:
        signature = None
        for raw in lines:
            name_bytes, sep, value_bytes = raw.partition(b":")
            name = name_bytes.decode("latin-1").strip().lower()
            value = value_bytes.decode("latin-1").strip()
            if not sep or not name:
                raise MalformedTrailerError()
            if name == _TRAILER_SIGNATURE:
                signature = value
            elif name not in self._declared or name in self.trailers:
                raise MalformedTrailerError()
            else:
                self.trailers[name] = value
        if set(self.trailers) != set(self._declared):
            raise MalformedTrailerError()
        if self._signed and self._with_trailer and lines:
            if signature is None:
                raise MalformedTrailerError()
            canonical = "".join(f"{name}:{self.trailers[name]}\n" for name in sorted(self.trailers))
            digest = hashlib.sha256(canonical.encode("latin-1")).hexdigest()
            auth = self._auth
            self._check(f"AWS4-HMAC-SHA256-TRAILER\n{auth.amz_date}\n{auth.scope}\n"
                        f"{self._previous}\n{digest}", signature)
