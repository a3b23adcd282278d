"""multipart/form-data read as a stream, for POST Object (HTML form uploads).

The fields before the file are read into memory, at most :data:`MAX_PRE_DATA`
bytes of body before the file's content as S3 limits them; the file's content
is then handed out chunk by chunk as it arrives, never held whole; whatever
follows it is ignored, as S3 ignores the fields after ``file``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from typing import Protocol
from urllib.parse import unquote

from .errors import S3Error

MAX_PRE_DATA = 20480  # S3's MaxPostPreDataLengthBytes
FILE_FIELD = "file"
_HEADERS_END = b"\r\n\r\n"
_MAX_BOUNDARY = 200
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf'\s*;\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')


class MalformedPOSTRequest(S3Error):
    status = 400
    message = "The body of your POST request is not well-formed multipart/form-data."


class MaxPostPreDataLengthExceeded(S3Error):
    status = 400
    message = "Your POST request fields preceeding the upload file was too large."  # S3's words

    def __init__(self) -> None:
        super().__init__(MaxPostPreDataLengthBytes=MAX_PRE_DATA)


class Stream(Protocol):
    """What the reader needs of a body (aiohttp's ``StreamReader`` has it)."""

    async def readany(self) -> bytes: ...


@dataclasses.dataclass(frozen=True)
class Form:
    """The fields before the file (names as sent, in order) and the file part's
    ``filename`` (None when it has none, or when the form has no file)."""

    fields: tuple[tuple[str, str], ...]
    has_file: bool
    filename: str | None = None


def boundary_of(content_type: str) -> bytes:
    """The ``boundary`` parameter of a multipart/form-data Content-Type."""
    _, params = _split_header(content_type)
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > _MAX_BOUNDARY or not boundary.isascii():
        raise MalformedPOSTRequest()
    return boundary.encode("ascii")


class FormReader:
    """Reads one multipart/form-data body: :meth:`read_form`, then :meth:`file`."""

    def __init__(self, stream: Stream, boundary: bytes, max_pre_data: int = MAX_PRE_DATA) -> None:
        self._stream = stream
        self._dash_boundary = b"--" + boundary
        self._delimiter = b"\r\n--" + boundary
        self._max_pre_data = max_pre_data
        self._buf = bytearray()
        self._consumed = 0      # body bytes taken out of the buffer so far
        self._eof = False
        self.file_offset = 0    # where the file's content starts in the body
        self.file_size = 0      # file bytes handed out so far
        self.file_complete = False

    async def read_form(self) -> Form:
        """The fields up to the file part (or to the end of a form without one)."""
        fields: list[tuple[str, str]] = []
        await self._first_boundary()
        while True:
            more = await self._after_delimiter()
            if more:
                name, filename = await self._part_headers()
            if self._consumed > self._max_pre_data:
                raise MaxPostPreDataLengthExceeded()
            if not more:
                return Form(tuple(fields), False)
            if name.lower() == FILE_FIELD:
                self.file_offset = self._consumed
                return Form(tuple(fields), True, filename)
            index = await self._find(self._delimiter)
            fields.append((name, _text(bytes(self._buf[:index]))))
            self._take(index + 2)  # the value and the CRLF before the boundary

    async def file(self) -> AsyncIterator[bytes]:
        """The file's content as it arrives (after :meth:`read_form` found it)."""
        keep = len(self._delimiter) - 1
        start = 0
        while True:
            index = self._buf.find(self._delimiter, start)
            if index >= 0:
                if index:
                    yield self._chunk(index)
                self.file_complete = True
                return
            # Hand out all but a tail that could be the start of the delimiter.
            ready = len(self._buf) - keep
            if ready > 0:
                yield self._chunk(ready)
            start = max(0, len(self._buf) - keep)
            if not await self._more():
                raise MalformedPOSTRequest()

    async def discard_rest(self, limit: int) -> bool:
        """Read and drop what follows the file (S3 ignores it), up to ``limit``
        bytes; True when the body ended within it."""
        dropped = len(self._buf)
        self._buf.clear()
        while dropped <= limit:
            chunk = await self._stream.readany()
            if not chunk:
                return True
            dropped += len(chunk)
        return False

    def _chunk(self, size: int) -> bytes:
        chunk = bytes(self._buf[:size])
        self._take(size)
        self.file_size += size
        return chunk

    def _take(self, size: int) -> None:
        del self._buf[:size]
        self._consumed += size

    async def _more(self, pre_data: bool = False) -> bool:
        if pre_data and self._consumed + len(self._buf) > self._max_pre_data:
            raise MaxPostPreDataLengthExceeded()
        if self._eof:
            return False
        chunk = await self._stream.readany()
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    async def _find(self, pattern: bytes, start: int = 0) -> int:
        """Index of ``pattern`` in the buffer (reading on while it is not there)."""
        while True:
            index = self._buf.find(pattern, start)
            if index >= 0:
                return index
            start = max(0, len(self._buf) - len(pattern) + 1)
            if not await self._more(pre_data=True):
                raise MalformedPOSTRequest()

    async def _need(self, size: int) -> None:
        while len(self._buf) < size:
            if not await self._more(pre_data=True):
                raise MalformedPOSTRequest()

    async def _first_boundary(self) -> None:
        # A preamble may come before the first boundary (RFC 2046); it is dropped.
        await self._need(len(self._dash_boundary))
        if not self._buf.startswith(self._dash_boundary):
            self._take(await self._find(self._delimiter) + 2)

    async def _after_delimiter(self) -> bool:
        """Past a boundary: True if a part follows, False at the closing one."""
        self._take(len(self._dash_boundary))
        await self._need(2)
        if self._buf.startswith(b"--"):
            return False
        end = await self._find(b"\r\n")
        if self._buf[:end].strip(b" \t"):
            raise MalformedPOSTRequest()
        self._take(end + 2)
        return True

    async def _part_headers(self) -> tuple[str, str | None]:
        """(field name, filename) from a part's Content-Disposition."""
        await self._need(2)
        if self._buf.startswith(b"\r\n"):
            raise MalformedPOSTRequest()  # no headers: no Content-Disposition
        end = await self._find(_HEADERS_END)
        block = _text(bytes(self._buf[:end]))
        self._take(end + len(_HEADERS_END))
        disposition = None
        for line in block.split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep:
                raise MalformedPOSTRequest()
            if name.strip().lower() == "content-disposition":
                disposition = value
        if disposition is None:
            raise MalformedPOSTRequest()
        kind, params = _split_header(disposition)
        if kind.lower() != "form-data" or "name" not in params:
            raise MalformedPOSTRequest()
        return params["name"], params.get("filename")


def _text(raw: bytes) -> str:
    """Form text is UTF-8 (what browsers send); other bytes are kept as Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _split_header(value: str) -> tuple[str, dict[str, str]]:
    """``type; a=1; b="two"`` → ("type", {"a": "1", "b": "two"}); names lower-cased,
    RFC 5987 ``name*=UTF-8''...`` values decoded and preferred."""
    head, _, rest = value.partition(";")
    params: dict[str, str] = {}
    extended: dict[str, str] = {}
    rest = ";" + rest if rest else ""
    for match in _PARAM.finditer(rest):
        name, quoted, bare = match.group(1).lower(), match.group(2), match.group(3)
        text = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare.strip()
        if name.endswith("*"):
            charset, _, encoded = text.partition("'")
            _, _, encoded = encoded.partition("'")
            try:
                extended[name[:-1]] = unquote(encoded, encoding=charset or "utf-8",
                                              errors="strict")
            except (LookupError, UnicodeDecodeError):
                continue
        else:
            params.setdefault(name, text)
    params.update(extended)
    return head.strip(), params
