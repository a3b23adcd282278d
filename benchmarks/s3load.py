"""A small S3 load generator: asyncio + aiohttp, SigV4 signed by hand.

boto3 spends 1-2 ms of CPU per request, which on a 2-core machine caps a
small-object benchmark long before the server does. This client keeps the
per-request cost low:

- SigV4 header auth with ``x-amz-content-sha256: UNSIGNED-PAYLOAD`` (no body
  hashing), path-style URLs, the signing key cached per day;
- one aiohttp ``ClientSession`` whose ``TCPConnector`` holds at most
  ``concurrency`` keep-alive connections;
- PUT bodies streamed in 1 MiB slices of a caller's pre-built buffer
  (``memoryview``: no per-request copies of a 64 MiB body);
- GET bodies compared chunk by chunk against the expected bytes (memcpy +
  memcmp) or just counted, never joined into one big ``bytes``.

``self_check()`` compares the signer with botocore's ``S3SigV4Auth``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import ssl as ssl_module
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from multidict import CIMultiDict
from yarl import URL

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
CHUNK = 1 << 20  # upload slice size
_ERROR_CODE = re.compile(rb"<Code>([^<]*)</Code>")


class S3Error(Exception):
    """A request got a status other than the one expected."""

    def __init__(self, method: str, path: str, status: int, body: bytes):
        match = _ERROR_CODE.search(body)
        self.status = status
        self.code = match.group(1).decode() if match else ""
        super().__init__(f"{method} {path}: HTTP {status} {self.code} {body[:200]!r}")


class VerifyError(Exception):
    """The server answered 2xx but with the wrong bytes, size or ETag."""


def _quote(text: str, safe: str = "-_.~") -> str:
    """Percent-encode the way SigV4 wants (RFC 3986 unreserved kept)."""
    return urllib.parse.quote(text, safe=safe)


def canonical_query(query: dict[str, str] | None) -> str:
    """Sorted, encoded ``k=v&...`` as both signed and sent."""
    if not query:
        return ""
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))


class SigV4Signer:
    """AWS Signature Version 4 for S3, header form, unsigned payload."""

    def __init__(self, access_key: str, secret_key: str, region: str = "us-east-1",
                 service: str = "s3"):
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.service = service
        self._key_date = ""
        self._key = b""

    def signing_key(self, datestamp: str) -> bytes:
        """The derived key for ``datestamp`` (YYYYMMDD), computed once per day."""
        if datestamp != self._key_date:
            key = ("AWS4" + self.secret_key).encode()
            for part in (datestamp, self.region, self.service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._key, self._key_date = key, datestamp
        return self._key

    def sign(self, method: str, host: str, path: str, query: str = "",
             amz_date: str | None = None) -> dict[str, str]:
        """Headers to add to a request: Host, x-amz-date, x-amz-content-sha256,
        Authorization. ``path`` must already be URI-encoded; ``query`` is the
        canonical query string (see ``canonical_query``)."""
        if amz_date is None:
            amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        datestamp = amz_date[:8]
        canonical_headers = (f"host:{host}\n"
                             f"x-amz-content-sha256:{UNSIGNED_PAYLOAD}\n"
                             f"x-amz-date:{amz_date}\n")
        signed_headers = "host;x-amz-content-sha256;x-amz-date"
        canonical_request = "\n".join((method, path, query, canonical_headers,
                                       signed_headers, UNSIGNED_PAYLOAD))
        scope = f"{datestamp}/{self.region}/{self.service}/aws4_request"
        string_to_sign = "\n".join((
            "AWS4-HMAC-SHA256", amz_date, scope,
            hashlib.sha256(canonical_request.encode()).hexdigest()))
        signature = hmac.new(self.signing_key(datestamp), string_to_sign.encode(),
                             hashlib.sha256).hexdigest()
        return {
            "Host": host,
            "x-amz-date": amz_date,
            "x-amz-content-sha256": UNSIGNED_PAYLOAD,
            "Authorization": (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                              f"SignedHeaders={signed_headers}, Signature={signature}"),
        }


async def _slices(data: memoryview, chunk: int = CHUNK):
    """Yield ``data`` in ``chunk``-sized views (no copies)."""
    for start in range(0, len(data), chunk):
        yield data[start:start + chunk]


class S3Client:
    """Minimal signed S3 client over one keep-alive aiohttp session.

    Use as ``async with S3Client(endpoint, key, secret, concurrency=16) as c``.
    ``ssl`` is passed to aiohttp's connector (an ``ssl.SSLContext`` for https
    endpoints with a private CA, or ``False`` to skip verification).
    """

    def __init__(self, endpoint: str, access_key: str, secret_key: str, *,
                 concurrency: int, region: str = "us-east-1",
                 ssl: ssl_module.SSLContext | bool | None = None):
        url = URL(endpoint)
        self.base = f"{url.scheme}://{url.raw_authority}"
        self.host = url.raw_authority  # what aiohttp sends as Host
        self.signer = SigV4Signer(access_key, secret_key, region)
        self.concurrency = concurrency
        self.ssl = ssl
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> S3Client:
        connector = aiohttp.TCPConnector(limit=self.concurrency,
                                         ssl=self.ssl if self.ssl is not None else True)
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            read_bufsize=4 * CHUNK,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120),
            skip_auto_headers=("User-Agent",),
        )
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    # -- plumbing ---------------------------------------------------------

    def _target(self, method: str, bucket: str, key: str,
                query: dict[str, str] | None) -> tuple[URL, dict[str, str]]:
        path = "/" + _quote(bucket) + ("/" + _quote(key, safe="-_.~/") if key else "")
        qs = canonical_query(query)
        headers = self.signer.sign(method, self.host, path, qs)
        url = URL(self.base + path + ("?" + qs if qs else ""), encoded=True)
        return url, headers

    async def request(self, method: str, bucket: str, key: str = "", *,
                      query: dict[str, str] | None = None, data=None,
                      headers: dict[str, str] | None = None,
                      expect: tuple[int, ...] = (200,)) -> tuple[int, CIMultiDict, bytes]:
        """Send one signed request, read the whole (small) response body."""
        url, signed = self._target(method, bucket, key, query)
        if headers:
            signed.update(headers)
        async with self.session.request(method, url, data=data, headers=signed) as resp:
            body = await resp.read()
            if resp.status not in expect:
                raise S3Error(method, url.raw_path, resp.status, body)
            return resp.status, resp.headers.copy(), body

    # -- S3 operations ------------------------------------------------------

    async def create_bucket(self, bucket: str) -> None:
        """PUT /bucket; an existing bucket we own counts as success."""
        try:
            await self.request("PUT", bucket)
        except S3Error as err:
            if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    async def put_object(self, bucket: str, key: str, body: memoryview | bytes,
                         md5_hex: str | None = None) -> str:
        """PUT an object and return its ETag (quotes stripped).

        Bodies over 1 MiB are streamed from ``body`` in 1 MiB views with an
        explicit Content-Length. When ``md5_hex`` is given the ETag must match.
        """
        size = len(body)
        data = _slices(memoryview(body)) if size > CHUNK else bytes(body)
        _, headers, _ = await self.request(
            "PUT", bucket, key, data=data, headers={"Content-Length": str(size)})
        etag = headers.get("ETag", "").strip('"')
        if md5_hex is not None and etag != md5_hex:
            raise VerifyError(f"PUT {bucket}/{key}: ETag {etag!r} != MD5 {md5_hex}")
        return etag

    async def get_object(self, bucket: str, key: str,
                         expected: memoryview | bytes | None = None,
                         first_byte: int | None = None, last_byte: int | None = None) -> int:
        """GET an object (``first_byte``..``last_byte``: that range of it, as
        Range: bytes=FIRST-LAST; without ``last_byte``, to the end), return the
        number of body bytes.

        With ``expected`` every chunk is compared with the expected bytes at
        its offset (memcmp speed) and the total size must match; without it
        the body is only counted and dropped.
        """
        url, signed = self._target("GET", bucket, key, None)
        status = 200
        if first_byte is not None:
            signed["Range"] = f"bytes={first_byte}-{'' if last_byte is None else last_byte}"
            status = 206
        async with self.session.get(url, headers=signed) as resp:
            if resp.status != status:
                raise S3Error("GET", url.raw_path, resp.status, await resp.read())
            view = memoryview(expected) if expected is not None else None
            offset = 0
            async for chunk, _ in resp.content.iter_chunks():
                # tobytes() + bytes compare is a memcpy and a memcmp; comparing
                # the memoryview directly goes item by item (~50x slower).
                if view is not None and view[offset:offset + len(chunk)].tobytes() != chunk:
                    raise VerifyError(f"GET {bucket}/{key}: wrong bytes near offset {offset}")
                offset += len(chunk)
        if view is not None and offset != len(view):
            raise VerifyError(f"GET {bucket}/{key}: {offset} bytes, expected {len(view)}")
        return offset

    async def delete_object(self, bucket: str, key: str) -> None:
        await self.request("DELETE", bucket, key, expect=(200, 204))


# -- drivers: run an operation from N workers -----------------------------

@dataclass
class Timing:
    """What a driver measured: completed ops, wall seconds, per-op latencies."""

    ops: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        """Latency at quantile ``q`` (0..1) in seconds; 0 when nothing ran."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Op = Callable[[int], Awaitable[None]]


async def run_count(count: int, concurrency: int, op: Op) -> Timing:
    """Run ``op(i)`` for i in 0..count-1 from ``concurrency`` workers."""
    timing = Timing()
    next_index = iter(range(count))

    async def worker() -> None:
        for i in next_index:  # shared iterator: each index is taken once
            start = time.perf_counter()
            await op(i)
            timing.latencies.append(time.perf_counter() - start)
            timing.ops += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    timing.seconds = time.perf_counter() - start
    return timing


async def run_for(seconds: float, concurrency: int, op: Op) -> Timing:
    """Run ``op(i)`` with increasing i from ``concurrency`` workers until
    ``seconds`` have passed; ops already started finish and are counted, and
    the elapsed time runs until the last one finishes."""
    timing = Timing()
    counter = iter(range(1 << 62))
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            i = next(counter)
            start = time.perf_counter()
            await op(i)
            timing.latencies.append(time.perf_counter() - start)
            timing.ops += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    timing.seconds = time.perf_counter() - start
    return timing


# -- self-check -------------------------------------------------------------

def self_check() -> None:
    """Compare ``SigV4Signer`` with botocore's ``S3SigV4Auth`` on a few requests.

    Raises AssertionError on any difference. Needs botocore (a boto3 dependency).
    """
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials

    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    signer = SigV4Signer(creds.access_key, creds.secret_key, "us-east-1")
    cases = [
        ("PUT", "/bench", {}),
        ("PUT", "/bench/big/0007", {}),
        ("GET", "/bench/small/3/14", {}),
        ("GET", "/bench", {"list-type": "2", "prefix": "a b/", "max-keys": "10"}),
        ("DELETE", "/bench/" + _quote("dir/ünï code+=&.txt", safe="-_.~/"), {}),
    ]
    for method, path, query in cases:
        qs = canonical_query(query)
        url = "http://127.0.0.1:9000" + path + ("?" + qs if qs else "")
        request = AWSRequest(method=method, url=url, data=b"")
        request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
        S3SigV4Auth(creds, "s3", "us-east-1").add_auth(request)
        ours = signer.sign(method, "127.0.0.1:9000", path, qs,
                           amz_date=request.headers["X-Amz-Date"])
        assert request.headers["X-Amz-Content-SHA256"] == UNSIGNED_PAYLOAD
        assert ours["Authorization"] == request.headers["Authorization"], (
            method, path, ours["Authorization"], request.headers["Authorization"])


if __name__ == "__main__":
    self_check()
    print("SigV4 signer matches botocore S3SigV4Auth")
