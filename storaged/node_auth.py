"""Request signing between the nodes of a cluster (the internal node API).

Every node holds the same cluster secret (``BASALT_CLUSTER_SECRET``). A request
from one node to another carries::

    X-Basalt-Node            the caller's node name
    X-Basalt-Time            unix time in nanoseconds
    X-Basalt-Nonce           128 random bits, hex
    X-Basalt-Content-SHA256  hex SHA-256 of the body, or UNSIGNED-PAYLOAD for a
                             streamed shard body (its frames carry xxh3 checksums)
    X-Basalt-Signature       hex HMAC-SHA256(secret, string to sign)

The string to sign is the method, the raw path, the canonical query (sorted
``k=v`` pairs, RFC 3986 escaped, joined by ``&``), the node, the time, the nonce
and the content digest, one per line. :class:`Verifier` rejects a request with
missing or malformed headers, a bad signature, a time more than ``skew``
seconds away from its own clock, a nonce it has already seen within that
window (replay), and a body that does not match its signed digest.

Responses are not signed: run the node API over TLS where the network between
nodes is not trusted.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import quote

NODE = "X-Basalt-Node"
TIME = "X-Basalt-Time"
NONCE = "X-Basalt-Nonce"
CONTENT = "X-Basalt-Content-SHA256"
SIGNATURE = "X-Basalt-Signature"
UNSIGNED = "UNSIGNED-PAYLOAD"
SECRET_ENV = "BASALT_CLUSTER_SECRET"

SKEW = 300  # seconds a request's time may differ from the verifier's clock
MAX_NONCES = 1 << 20  # nonces remembered at most (see Verifier)
MIN_SECRET = 16  # bytes

_NODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_TIME_RE = re.compile(r"[0-9]{1,20}")
_HEX32_RE = re.compile(r"[0-9a-f]{32}")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")


class AuthError(Exception):
    """A request that is not (or no longer) authentic; the message says why."""


def cluster_secret(environ: Mapping[str, str] | None = None) -> bytes:
    """The cluster secret from ``BASALT_CLUSTER_SECRET`` (at least 16 bytes)."""
    value = (os.environ if environ is None else environ).get(SECRET_ENV, "")
    secret = value.encode()
    check_secret(secret)
    return secret


def check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET:
        raise ValueError(f"the cluster secret must be at least {MIN_SECRET} bytes "
                         f"(set {SECRET_ENV})")


def body_digest(body: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(body).hexdigest()


def _escape(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_query(params: Mapping[str, object] | Iterable[tuple[str, object]]) -> str:
    """``k=v`` pairs sorted and escaped, joined by ``&`` (also the query sent)."""
    items = params.items() if isinstance(params, Mapping) else params
    return "&".join(f"{_escape(k)}={_escape(str(v))}" for k, v in
                    sorted((str(k), str(v)) for k, v in items))


def string_to_sign(method: str, path: str, query: str, node: str, time_ns: str | int,
                   nonce: str, content_sha256: str) -> bytes:
    return "\n".join((method.upper(), path, query, node, str(time_ns), nonce,
                      content_sha256)).encode()


def signature(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: bytes, method: str, path: str, query: str, node: str,
         content_sha256: str, *, now_ns: int | None = None,
         nonce: str | None = None) -> dict[str, str]:
    """The authentication headers of one request.

    ``query`` is the canonical query (:func:`canonical_query`), ``content_sha256``
    the body's :func:`body_digest` or :data:`UNSIGNED`.
    """
    time_ns = time.time_ns() if now_ns is None else now_ns
    nonce = secrets.token_hex(16) if nonce is None else nonce
    sig = signature(secret, string_to_sign(method, path, query, node, time_ns, nonce,
                                           content_sha256))
    return {NODE: node, TIME: str(time_ns), NONCE: nonce, CONTENT: content_sha256,
            SIGNATURE: sig}


class Claims:
    """What a verified request says about itself."""

    __slots__ = ("node", "time_ns", "nonce", "content_sha256")

    def __init__(self, node: str, time_ns: int, nonce: str, content_sha256: str) -> None:
        self.node, self.time_ns, self.nonce = node, time_ns, nonce
        self.content_sha256 = content_sha256

    @property
    def unsigned(self) -> bool:
        return self.content_sha256 == UNSIGNED


class Verifier:
    """Checks signed requests against the cluster secret; remembers nonces.

    A nonce is remembered until its request's time leaves the accepted window,
    so a replay is refused for as long as it would otherwise be accepted. At
    most ``max_nonces`` are kept: when full, the oldest is dropped and requests
    no newer than it are refused from then on (fail closed, never replayable).
    """

    def __init__(self, secret: bytes, *, skew: float = SKEW, max_nonces: int = MAX_NONCES,
                 clock: Callable[[], int] = time.time_ns) -> None:
        check_secret(secret)
        self._secret = secret
        self.skew_ns = int(skew * 1e9)
        self.max_nonces = max_nonces
        self.clock = clock
        self._seen: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self._floor = 0  # requests at or before this time may have been dropped: refused
        self._lock = threading.Lock()

    def verify(self, method: str, path: str, query: str,
               headers: Mapping[str, str]) -> Claims:
        """The request's claims when it is authentic; AuthError otherwise.

        ``query`` is the canonical form of the request's query parameters.
        The body is checked apart (:meth:`check_body`), once it has arrived.
        """
        values = {}
        for name in (NODE, TIME, NONCE, CONTENT, SIGNATURE):
            value = headers.get(name)
            if not value:
                raise AuthError(f"missing {name} header")
            values[name] = value
        node, stamp, nonce = values[NODE], values[TIME], values[NONCE]
        content, sig = values[CONTENT], values[SIGNATURE]
        if not _NODE_RE.fullmatch(node):
            raise AuthError(f"malformed {NODE} header")
        if not _TIME_RE.fullmatch(stamp):
            raise AuthError(f"malformed {TIME} header")
        if not _HEX32_RE.fullmatch(nonce):
            raise AuthError(f"malformed {NONCE} header")
        if content != UNSIGNED and not _HEX64_RE.fullmatch(content):
            raise AuthError(f"malformed {CONTENT} header")
        if not _HEX64_RE.fullmatch(sig):
            raise AuthError(f"malformed {SIGNATURE} header")
        expected = signature(self._secret, string_to_sign(method, path, query, node, stamp,
                                                          nonce, content))
        if not hmac.compare_digest(expected, sig):
            raise AuthError("signature does not match (wrong cluster secret?)")
        time_ns = int(stamp)
        now = self.clock()
        if abs(now - time_ns) > self.skew_ns:
            raise AuthError(f"request time is {(now - time_ns) / 1e9:+.0f} s off "
                            f"(more than {self.skew_ns / 1e9:.0f} s): clocks out of sync "
                            "or a replay")
        self._remember(nonce, time_ns, now)
        return Claims(node, time_ns, nonce, content)

    def _remember(self, nonce: str, time_ns: int, now: int) -> None:
        with self._lock:
            seen = self._seen
            while seen:  # forget nonces whose requests are out of the window now
                oldest, (_, expires) = next(iter(seen.items()))
                if expires >= now:
                    break
                del seen[oldest]
            if nonce in seen:
                raise AuthError("nonce already used (replayed request)")
            if time_ns <= self._floor:
                raise AuthError("request too old to be checked for replay")
            while len(seen) >= self.max_nonces:
                _, (dropped, _) = seen.popitem(last=False)
                self._floor = max(self._floor, dropped)
            seen[nonce] = (time_ns, time_ns + self.skew_ns)

    def check_body(self, claims: Claims, body: bytes | bytearray | memoryview) -> None:
        """AuthError unless ``body`` is the one the request signed."""
        if claims.unsigned:
            return
        if not hmac.compare_digest(body_digest(body), claims.content_sha256):
            raise AuthError("body does not match its signed SHA-256")

    def __len__(self) -> int:
        return len(self._seen)
