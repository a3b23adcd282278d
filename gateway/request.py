"""One S3 request: its context, the object attributes it carries, and its body.

:class:`Context` is what every handler receives. :class:`Payload` turns the
request body into the stream the engine stores — aws-chunked decoded when the
client streams, SHA-256, Content-MD5 and ``x-amz-checksum-*`` verified — and
says which checksum to store with the object.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from storaged import ObjectAttrs, ObjectStore
from storaged.meta import parse_version

from . import checksums
from .chunked import AwsChunkedDecoder, strip_aws_chunked
from .errors import (
    InvalidArgument,
    InvalidStorageClass,
    KeyTooLongError,
    MetadataTooLarge,
    MissingContentLength,
    XAmzContentSHA256Mismatch,
    checksum_mismatch,
)
from .router import Route
from .s3xml import Owner
from .sigv4 import AuthContext

MAX_KEY_BYTES = 1024
MAX_USER_META = 2048
MAX_PUT_SIZE = 5 << 30
META_PREFIX = "x-amz-meta-"
SYSTEM_HEADERS = ("content-encoding", "content-disposition", "content-language",
                  "cache-control", "expires", "x-amz-storage-class",
                  "x-amz-website-redirect-location")
STORAGE_CLASSES = {"STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA",
                   "INTELLIGENT_TIERING", "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR",
                   "OUTPOSTS", "SNOW", "EXPRESS_ONEZONE"}


@dataclasses.dataclass
class GatewayConfig:
    """Settings of the S3 endpoint (same in every worker)."""

    credentials: Mapping[str, str]          # access key → secret key
    region: str = "us-east-1"
    domain: str | None = None               # virtual-hosted style: bucket.DOMAIN
    owner: Owner = dataclasses.field(default_factory=lambda: Owner("basalt", "basalt"))
    owner_socket: str | None = None         # admin requests served by the disk owner
    nbd_address: str = ""                   # host:port of the NBD server (for clients)
    nbd_socket: str | None = None           # its Unix socket
    data_dir: str | None = None             # the server's data dir (audit log, keys)
    master_key_file: str | None = None      # None: no key service (SSE and KMS refused)
    allow_sse_c_over_http: bool = False
    usage_flush_seconds: float = 10.0       # metered usage reaches the records this often
    usage_clock: tuple = ()                 # (epoch, hour seconds) of a test clock; (): wall clock


@dataclasses.dataclass
class Context:
    request: web.Request
    route: Route
    store: ObjectStore
    config: GatewayConfig
    request_id: str
    auth: AuthContext | None = None
    bytes_in: int = 0
    # Judges a principal's request (AccessDenied when refused): for operations
    # that authenticate inside their body, as POST form uploads do.
    check_access: Callable[..., Any] | None = None
    # access key → (secret, Principal), or None when the key may not sign.
    resolve_key: Callable[[str], Awaitable[Any]] | None = None

    @property
    def principal(self) -> Any:
        """Who sent the request (gateway.identity.Principal); None: anonymous."""
        return self.request.get("principal")

    @property
    def headers(self) -> Any:
        return self.request.headers

    @property
    def query(self) -> Any:
        return self.request.query

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        return self.store.run(fn, *args)

    @property
    def bucket(self) -> str:
        assert self.route.bucket is not None
        return self.route.bucket

    @property
    def key(self) -> str:
        assert self.route.key is not None
        if len(self.route.key.encode()) > MAX_KEY_BYTES:
            raise KeyTooLongError()
        return self.route.key


def object_attrs(headers: Mapping[str, str]) -> ObjectAttrs:
    """Content type, system headers and user metadata an upload sets."""
    system: dict[str, str] = {}
    user: dict[str, str] = {}
    size = 0
    for name, value in headers.items():
        lname = name.lower()
        if lname.startswith(META_PREFIX):
            meta = lname[len(META_PREFIX):]
            user[meta] = value if meta not in user else f"{user[meta]},{value}"
            size += len(meta.encode()) + len(value.encode())
        elif lname in SYSTEM_HEADERS:
            system[lname] = value
    if size > MAX_USER_META:
        raise MetadataTooLarge()
    encoding = strip_aws_chunked(system.get("content-encoding"))
    if encoding:
        system["content-encoding"] = encoding
    else:
        system.pop("content-encoding", None)
    storage = system.get("x-amz-storage-class")
    if storage is not None and storage not in STORAGE_CLASSES:
        raise InvalidStorageClass()
    if storage == "STANDARD":
        del system["x-amz-storage-class"]
    content_type = headers.get("Content-Type") or "binary/octet-stream"
    return ObjectAttrs(content_type, system, user)


async def _raw_body(content: Any) -> AsyncIterator[bytes]:
    while True:
        chunk = await content.readany()
        if not chunk:
            return
        yield chunk


class Payload:
    """The verified body of an upload (PutObject, UploadPart)."""

    def __init__(self, ctx: Context, max_size: int = MAX_PUT_SIZE) -> None:
        headers, auth = ctx.headers, ctx.auth
        self.hashers: list[Any] = []
        self._sha256 = None
        self._decoder: AwsChunkedDecoder | None = None
        self.checksum = checksums.requested_checksum(headers)
        self.content_md5 = checksums.content_md5(headers)
        if auth is not None and auth.streaming:
            declared = headers.get("x-amz-decoded-content-length")
            if declared is None:
                raise MissingContentLength()
            self._decoder = AwsChunkedDecoder.from_headers(ctx.request.content, headers, auth,
                                                           run_in_thread=ctx.run)
            self.size: int | None = _length(declared)
            self.stream: Any = self._decoder
        else:
            self.size = ctx.request.content_length
            self.stream = _raw_body(ctx.request.content)
            expected = auth.expected_sha256 if auth is not None else None
            if expected is not None:
                self._sha256 = (hashlib.sha256(), expected)
                self.hashers.append(self._sha256[0])
        if self.size is not None and self.size > max_size:
            from .errors import EntityTooLarge
            raise EntityTooLarge()
        self._checksum_hasher = None
        if self.checksum is not None:
            self._checksum_hasher = checksums.new_hasher(self.checksum.algorithm)
            self.hashers.append(self._checksum_hasher)

    def finalize(self, md5_hex: str) -> dict[str, str]:
        """Check every declared digest once the body is complete; the checksum to store."""
        if self._sha256 is not None and self._sha256[0].digest() != self._sha256[1]:
            raise XAmzContentSHA256Mismatch()
        if self.checksum is None or self._checksum_hasher is None:
            return {}
        digest = self._checksum_hasher.digest()
        expected = self.checksum.expected
        if self.checksum.in_trailer:
            trailers = self._decoder.trailers if self._decoder is not None else {}
            value = trailers.get(self.checksum.header)
            expected = (checksums.parse_checksum_value(self.checksum.algorithm, value, trailing=True)
                        if value is not None else None)
        if expected is not None and expected != digest:
            raise checksum_mismatch(self.checksum.algorithm)
        return {self.checksum.algorithm: checksums.b64(digest)}


def check_version_id(value: str, name: str = "versionId") -> str:
    """A client version id, or InvalidArgument as S3 answers a malformed one."""
    if value == "":
        raise InvalidArgument("Version id cannot be the empty string", ArgumentName=name,
                              ArgumentValue=value)
    try:
        parse_version(value)
    except ValueError:
        raise InvalidArgument("Invalid version id specified", ArgumentName=name,
                              ArgumentValue=value) from None
    return value


def version_param(ctx: Context) -> str | None:
    """The ``?versionId=`` of an object request (None without one)."""
    value = ctx.query.get("versionId")
    return None if value is None else check_version_id(value)


def part_number(ctx: Context) -> int:
    """``?partNumber=``: 1 to 10000 (InvalidArgument otherwise)."""
    raw = ctx.query.get("partNumber", "")
    number = int(raw) if raw.isdigit() else 0
    if not 1 <= number <= 10000:
        raise InvalidArgument("Part number must be an integer between 1 and 10000, inclusive",
                              ArgumentName="partNumber", ArgumentValue=raw)
    return number


def _length(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgument("x-amz-decoded-content-length is not a number") from None
    if value < 0:
        raise InvalidArgument("x-amz-decoded-content-length is negative")
    return value
