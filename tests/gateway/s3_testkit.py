"""Shared helpers for the gateway tests: the AWS documentation's credentials, a
boto3 client whose HTTP layer is stubbed (to capture real SDK requests and feed it
our responses), byte sources that split reads at random, and an independent
aws-chunked encoder."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from gateway.errors import S3Error
from gateway.sigv4 import EMPTY_SHA256, AuthContext, verify_request

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_NOW = datetime(2013, 5, 24, tzinfo=UTC)
DOC_DATE = "20130524T000000Z"
DOC_SCOPE = "20130524/us-east-1/s3/aws4_request"


def secret_for(access_key: str) -> str | None:
    return SECRET_KEY if access_key == ACCESS_KEY else None


@dataclass
class Captured:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> str:
        return urlsplit(self.url).query

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def verify(self, now: datetime | None = None) -> AuthContext:
        """Run our verifier on the request exactly as the SDK would have sent it."""
        return verify_request(self.method, self.path, self.query, self.headers, secret_for, now)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: object):
        yield self._body


@dataclass
class StubbedS3:
    """A boto3 S3 client that never touches the network."""

    client: object
    requests: list[Captured] = field(default_factory=list)
    responder: Callable[[Captured], tuple[int, dict[str, str], bytes]] | None = None

    def _send(self, request, **_: object) -> AWSResponse:
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()]
        netloc = urlsplit(request.url).netloc
        if not any(k.lower() == "host" for k, _ in headers):
            headers.append(("Host", netloc))  # the HTTP client adds it on the wire
        captured = Captured(request.method, request.url, headers, body or b"")
        self.requests.append(captured)
        status, response_headers, response_body = (
            self.responder(captured) if self.responder else (200, {}, b""))
        return AWSResponse(request.url, status, response_headers, _Raw(response_body))


_STUBS: dict[tuple, StubbedS3] = {}


def stubbed_s3(endpoint: str = "https://s3.example.com", *, path_style: bool = True,
               **config: object) -> StubbedS3:
    """A stubbed client, reused across tests (creating one takes ~100 ms)."""
    cache_key = (endpoint, path_style, tuple(sorted(config.items())))
    stub = _STUBS.get(cache_key)
    if stub is None:
        stub = _STUBS[cache_key] = _new_stub(endpoint, path_style, config)
    stub.requests.clear()
    stub.responder = None
    return stub


def _new_stub(endpoint: str, path_style: bool, config: dict) -> StubbedS3:
    session = boto3.session.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                                    region_name="us-east-1")
    s3_config = {"addressing_style": "path" if path_style else "virtual"}
    client = session.client("s3", endpoint_url=endpoint, config=Config(
        s3=s3_config, retries={"total_max_attempts": 1}, **config))
    stub = StubbedS3(client)
    client.meta.events.register_first("before-send.s3", stub._send)
    return stub


class SplitSource:
    """A ``read(n)`` byte source that returns short reads of random sizes."""

    def __init__(self, data: bytes, seed: int = 0, max_read: int | None = None) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._random = random.Random(seed)
        self._max_read = max_read
        self.reads = 0

    async def read(self, n: int) -> bytes:
        self.reads += 1
        limit = min(n, self._max_read or n)
        size = self._random.randint(1, max(1, limit))
        chunk = bytes(self._data[self._pos:self._pos + size])
        self._pos += len(chunk)
        return chunk


def signing_key(date: str = "20130524", region: str = "us-east-1") -> bytes:
    key = ("AWS4" + SECRET_KEY).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def auth_context(mode: str, seed: str = "0" * 64, *, amz_date: str = DOC_DATE,
                 scope: str = DOC_SCOPE) -> AuthContext:
    return AuthContext(ACCESS_KEY, "us-east-1", amz_date, scope, signing_key(amz_date[:8]),
                       seed, mode, presigned=False)


def encode_chunked(data: bytes, chunk_size: int, *, auth: AuthContext | None = None,
                   trailers: dict[str, str] | None = None, sign_trailer: bool = True) -> bytes:
    """aws-chunked encoding written from the AWS docs, independently of gateway.chunked.

    With ``auth`` every chunk is signed (chain from ``auth.seed_signature``).
    """
    out = bytearray()
    previous = auth.seed_signature if auth else None
    pieces = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    for piece in pieces:
        if auth:
            sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", auth.amz_date, auth.scope, previous,
                             EMPTY_SHA256, hashlib.sha256(piece).hexdigest()])
            previous = hmac.new(auth.signing_key, sts.encode(), hashlib.sha256).hexdigest()
            out += b"%x;chunk-signature=%s\r\n" % (len(piece), previous.encode())
        else:
            out += b"%x\r\n" % len(piece)
        if piece:
            out += piece + b"\r\n"
    for name, value in (trailers or {}).items():
        out += f"{name}:{value}\r\n".encode()
    if auth and trailers is not None and sign_trailer:
        canonical = "".join(f"{n}:{v}\n" for n, v in sorted(trailers.items()))
        sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", auth.amz_date, auth.scope, previous,
                         hashlib.sha256(canonical.encode()).hexdigest()])
        signature = hmac.new(auth.signing_key, sts.encode(), hashlib.sha256).hexdigest()
        out += f"x-amz-trailer-signature:{signature}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


@contextlib.contextmanager
def raises(code: str, message: str | None = None):
    """Expect the S3 error ``code`` (and ``message``) from the block."""
    with pytest.raises(S3Error) as info:
        yield info
    assert info.value.code == code, str(info.value)
    if message is not None:
        assert info.value.message == message


@contextlib.asynccontextmanager
async def served_gateway(tmp_path, aiohttp_server, **config):
    """(store, boto3 client) of an in-process gateway on four disks in
    ``tmp_path``, served by pytest-aiohttp's ``aiohttp_server`` (``config``:
    more GatewayConfig fields)."""
    from gateway import Gateway
    from gateway.request import GatewayConfig
    from storaged import ObjectStore
    store = ObjectStore.open([str(tmp_path / f"d{i}") for i in range(4)], sync=False)
    await store.start(heal=False)
    server = await aiohttp_server(
        Gateway(store, GatewayConfig(credentials={ACCESS_KEY: SECRET_KEY}, **config)).app())
    s3 = boto3.client("s3", endpoint_url=str(server.make_url("")).rstrip("/"),
                      aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                      region_name="us-east-1",
                      config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    try:
        yield store, s3
    finally:
        await server.close()
        await store.close()
