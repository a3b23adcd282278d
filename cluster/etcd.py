"""An asyncio etcd v3 client over etcd's JSON gRPC-gateway (aiohttp, no gRPC stack).

Every call is one ``POST /v3/...`` with a JSON body; keys and values travel as
base64, int64 fields (revisions, lease ids, TTLs) as decimal strings. Verified
against etcd 3.4 (Debian bookworm's ``etcd-server`` 3.4.23).

Failover: the client holds a list of endpoints and sends each request to the one
that answered last; on a connection error, a timeout, a 5xx or an etcd
"unavailable" answer it moves on to the next, and raises :class:`EtcdUnavailable`
when none answers. Every request but serializable reads carries the gRPC metadata
``hasleader: true`` (the ``Grpc-Metadata-Hasleader`` header): a member cut off
from the quorum then answers ``503 etcdserver: no leader`` at once instead of
letting the request hang until its internal timeout (about 6 s: ``500 context
deadline exceeded`` or ``etcdserver: request timed out``), and cancels watch
streams it can no longer serve.

A transaction (``create``, ``compare_and_swap``, ``txn``) is sent to another
endpoint only when it certainly was not applied (the connection was never made,
or the member refused it for lack of a leader). When the answer was lost after
the request went out, :class:`EtcdUnavailable` is raised with ``maybe_applied``
set: the outcome is unknown and the caller must look before retrying. Reads,
puts, deletes and lease calls are retried freely (repeating them leaves the same
state). A read that every member failed for want of a leader ("leader changed":
the leader was lost; "no leader": a new one is being chosen, or the quorum is
lost) is tried again for up to ``ELECTION_PATIENCE`` seconds, as etcd's own
client retries unavailable reads: an election takes about a second, and until
it ends the members answer exactly as they do without a quorum.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp

__all__ = [
    "Etcd",
    "EtcdCompacted",
    "EtcdError",
    "EtcdUnavailable",
    "KeyValue",
    "Watch",
    "WatchEvent",
    "compare",
    "op_delete",
    "op_get",
    "op_put",
    "parse_endpoints",
    "prefix_end",
]

DEFAULT_PORT = 2379
# gRPC status codes (the gateway reports them as "code" / "grpc_code").
_NOT_FOUND = 5
_DEADLINE_EXCEEDED = 4
_UNAVAILABLE = 14
# Answers meaning "this member cannot serve now, another may": the request was not
# (or not known to be) applied. "no leader" is raised by the hasleader check before
# the request reaches raft, so it alone is certain not to have been applied.
_UNAVAILABLE_MESSAGES = (
    "no leader",
    "request timed out",
    "context deadline exceeded",
    "leader changed",
    "too many requests",
    "server stopped",
    "not capable",
    "timed out",
)
_NOT_APPLIED_MESSAGES = ("etcdserver: no leader", "etcdserver: too many requests")
ELECTION_PATIENCE = 3.0  # seconds a read waits out an election (etcd's takes ~1 s)
_ELECTION_MESSAGES = ("leader changed", "no leader")
_HEADERS = {"Grpc-Metadata-Hasleader": "true"}


class EtcdError(Exception):
    """etcd answered with an error (or an answer that makes no sense)."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None,
                 endpoint: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code          # gRPC status code, when etcd gave one
        self.status = status      # HTTP status of the gateway's answer
        self.endpoint = endpoint


class EtcdUnavailable(EtcdError):
    """No endpoint could serve the request: all unreachable, timing out, or without
    a leader (quorum lost). ``maybe_applied`` is true when a write may have been
    applied even so (the answer was lost after the request was sent)."""

    def __init__(self, message: str, *, maybe_applied: bool = False, **kw: Any):
        super().__init__(message, **kw)
        self.maybe_applied = maybe_applied


class EtcdCompacted(EtcdError):
    """A watch asked for history etcd has compacted away (``revision`` is the oldest kept)."""

    def __init__(self, message: str, revision: int, **kw: Any):
        super().__init__(message, **kw)
        self.revision = revision


class KeyValue(NamedTuple):
    key: bytes
    value: bytes
    mod_revision: int


class WatchEvent(NamedTuple):
    type: str            # "PUT" or "DELETE"
    key: bytes
    value: bytes         # b"" for DELETE
    mod_revision: int


Bytes = bytes | str


def _bytes(data: Bytes) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def _b64(data: Bytes) -> str:
    return base64.b64encode(_bytes(data)).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: Bytes) -> bytes:
    """The range_end that selects every key starting with ``prefix`` (etcd's rule:
    the prefix with its last byte below 0xff incremented; ``b"\\0"`` = to the end)."""
    raw = bytearray(_bytes(prefix))
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"
    raw[-1] += 1
    return bytes(raw)


def parse_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """``etcd://H1:2379,H2:2379`` (``etcds://`` for TLS), a plain ``http(s)://H:P``
    URL, ``H:P`` or a list of those, to base URLs ``http://H:P``."""
    items: list[str] = []
    for entry in [endpoints] if isinstance(endpoints, str) else list(endpoints):
        scheme = "http"
        rest = entry.strip()
        if "://" in rest:
            given, rest = rest.split("://", 1)
            given = given.lower()
            if given in ("etcds", "https"):
                scheme = "https"
            elif given not in ("etcd", "http"):
                raise ValueError(f"not an etcd endpoint URL: {entry!r}")
        for host in rest.rstrip("/").split(","):
            host = host.strip()
            if not host:
                continue
            parts = urlsplit(f"//{host}")
            if not parts.hostname or parts.path or parts.query:
                raise ValueError(f"not an etcd endpoint: {host!r} in {entry!r}")
            try:
                port = parts.port or DEFAULT_PORT
            except ValueError:
                raise ValueError(f"bad port in etcd endpoint {host!r}") from None
            name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            items.append(f"{scheme}://{name}:{port}")
    if not items:
        raise ValueError(f"no etcd endpoint in {endpoints!r}")
    return items


# Building blocks of txn() (the gateway's JSON shapes).

def compare(key: Bytes, target: str, result: str, value: int | Bytes) -> dict:
    """One txn comparison: ``target`` VERSION|CREATE|MOD|VALUE|LEASE, ``result``
    EQUAL|GREATER|LESS|NOT_EQUAL, ``value`` a revision/version/lease id or a value."""
    target = target.upper()
    field = {"VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision",
             "VALUE": "value", "LEASE": "lease"}[target]
    encoded = _b64(value) if target == "VALUE" else str(int(value))
    return {"key": _b64(key), "target": target, "result": result.upper(), field: encoded}


def op_put(key: Bytes, value: Bytes, lease: int | None = None) -> dict:
    body = {"key": _b64(key), "value": _b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def op_get(key: Bytes, range_end: Bytes | None = None) -> dict:
    body = {"key": _b64(key)}
    if range_end is not None:
        body["range_end"] = _b64(range_end)
    return {"request_range": body}


def op_delete(key: Bytes, range_end: Bytes | None = None) -> dict:
    body = {"key": _b64(key)}
    if range_end is not None:
        body["range_end"] = _b64(range_end)
    return {"request_delete_range": body}


def _error_from(status: int, data: Any, endpoint: str, text: bytes = b"") -> EtcdError:
    """The exception for one error answer of the gateway (unary or stream form)."""
    code: int | None = None
    message = ""
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):             # stream form: {"error": {"grpc_code": ..}}
            code = err.get("grpc_code")
            message = err.get("message") or ""
            status = err.get("http_code") or status
        else:                                 # unary form: {"error": .., "code": ..}
            code = data.get("code")
            message = data.get("message") or (err if isinstance(err, str) else "")
    if not message:
        message = text.decode(errors="replace").strip()[:200] or f"HTTP {status}"
    lowered = message.lower()
    where = f"{endpoint}: {message}"
    if (code in (_UNAVAILABLE, _DEADLINE_EXCEEDED) or status >= 500
            or any(m in lowered for m in _UNAVAILABLE_MESSAGES)):
        applied = not any(m in lowered for m in _NOT_APPLIED_MESSAGES)
        return EtcdUnavailable(where, maybe_applied=applied, code=code, status=status,
                               endpoint=endpoint)
    return EtcdError(where, code=code, status=status, endpoint=endpoint)


class Etcd:
    """etcd v3 client over the JSON gateway, with endpoint failover.

    ``timeout`` bounds one attempt on one endpoint (connecting takes at most
    ``connect_timeout``); a call that fails over through every endpoint is bounded
    by ``len(endpoints) * timeout``. Create it anywhere, use it in one event loop,
    ``await close()`` (or ``async with``) at the end.
    """

    def __init__(self, endpoints: str | Sequence[str], *, timeout: float = 5.0,
                 connect_timeout: float | None = None):
        self.endpoints = parse_endpoints(endpoints)
        self.timeout = timeout
        self.connect_timeout = min(1.0, timeout) if connect_timeout is None else connect_timeout
        self._current = 0
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()

    @property
    def endpoint(self) -> str:
        """The endpoint requests go to first (the last one that answered)."""
        return self.endpoints[self._current]

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Etcd:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for watch in list(self._watches):
            await watch.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise EtcdError("etcd client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._current + i) % n for i in range(n)]

    async def _read(self, body: dict, *, serializable: bool = False) -> dict:
        """A range request, waiting out an election (see the module's docstring)."""
        if serializable:
            body["serializable"] = True
        deadline = time.monotonic() + ELECTION_PATIENCE
        while True:
            try:
                return await self._call("/v3/kv/range", body, need_leader=not serializable)
            except EtcdUnavailable as exc:
                if not any(m in exc.message for m in _ELECTION_MESSAGES) \
                        or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.2)

    async def _call(self, path: str, body: dict, *, retry_applied: bool = True,
                    need_leader: bool = True) -> dict:
        """POST ``body`` to ``path`` on the working endpoint, failing over.

        ``retry_applied=False`` (transactions): move on only when the request
        certainly was not applied; otherwise raise with ``maybe_applied``.
        ``need_leader=False`` (serializable reads): let a member without a
        leader answer from its local copy."""
        headers = _HEADERS if need_leader else None
        session = self._http()
        timeout = aiohttp.ClientTimeout(total=self.timeout, connect=self.connect_timeout)
        failures: list[str] = []
        for index in self._order():
            endpoint = self.endpoints[index]
            sent = False
            try:
                async with session.post(endpoint + path, json=body, headers=headers,
                                        timeout=timeout) as resp:
                    sent = True
                    text = await resp.read()
                    status = resp.status
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                failures.append(f"{endpoint}: {exc!r}")
                continue
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                # Sent (or possibly sent): the answer is lost, not the request.
                if not retry_applied:
                    raise EtcdUnavailable(
                        f"{endpoint}: {exc!r} (the request may have been applied)",
                        maybe_applied=True, endpoint=endpoint) from exc
                failures.append(f"{endpoint}: {exc!r}{' after sending' if sent else ''}")
                continue
            data = _parse(text)
            if status == 200 and isinstance(data, dict) and "error" not in data:
                self._current = index
                return data
            err = _error_from(status, data, endpoint, text)
            if not isinstance(err, EtcdUnavailable):
                self._current = index      # the member answered: it is reachable
                raise err
            if not retry_applied and err.maybe_applied:
                raise err
            failures.append(err.message)
        raise EtcdUnavailable("no etcd endpoint could serve the request: " + "; ".join(failures))

    # Keys and values.

    async def get(self, key: Bytes, *, serializable: bool = False) -> tuple[bytes, int] | None:
        """``(value, mod_revision)`` of ``key``, or None. ``serializable`` reads the
        member's local copy (possibly stale, but served without a quorum)."""
        data = await self._read({"key": _b64(key)}, serializable=serializable)
        kvs = data.get("kvs") or []
        if not kvs:
            return None
        return _unb64(kvs[0].get("value")), int(kvs[0].get("mod_revision", 0))

    async def get_prefix(self, prefix: Bytes, *, serializable: bool = False) -> list[KeyValue]:
        """Every key starting with ``prefix``, in key order, as ``(key, value, mod_revision)``."""
        body = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                "sort_order": "ASCEND", "sort_target": "KEY"}
        data = await self._read(body, serializable=serializable)
        return [_kv(item) for item in data.get("kvs") or []]

    async def revision(self) -> int:
        """The store's current revision."""
        data = await self._read({"key": _b64(b"\0"), "count_only": True})
        return _revision(data)

    async def put(self, key: Bytes, value: Bytes, lease: int | None = None) -> int:
        """Set ``key``; returns the new revision. ``lease`` ties the key to a lease."""
        body = op_put(key, value, lease)["request_put"]
        return _revision(await self._call("/v3/kv/put", body))

    async def delete(self, key: Bytes) -> bool:
        """Remove ``key``; True when it existed."""
        data = await self._call("/v3/kv/deleterange", {"key": _b64(key)})
        return int(data.get("deleted", 0)) > 0

    async def delete_prefix(self, prefix: Bytes) -> int:
        """Remove every key starting with ``prefix``; how many there were."""
        body = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        data = await self._call("/v3/kv/deleterange", body)
        return int(data.get("deleted", 0))

    async def txn(self, compares: Iterable[dict], success: Iterable[dict],
                  failure: Iterable[dict] = ()) -> tuple[bool, list[dict]]:
        """A raw transaction (build its parts with :func:`compare`, :func:`op_put`,
        :func:`op_get`, :func:`op_delete`): ``(succeeded, responses)`` with the
        gateway's response objects (``{"response_range": {...}}``, ...)."""
        body = {"compare": list(compares), "success": list(success), "failure": list(failure)}
        data = await self._call("/v3/kv/txn", body, retry_applied=False)
        return bool(data.get("succeeded")), list(data.get("responses") or [])

    async def create(self, key: Bytes, value: Bytes, lease: int | None = None) -> bool:
        """Put ``key`` only when it does not exist; True when this call created it.

        Of many concurrent creates of one key exactly one returns True. With a
        ``lease``, a key found already holding this value on this lease counts as
        created by us (a previous attempt whose answer was lost)."""
        ok, responses = await self.txn(
            [compare(key, "CREATE", "EQUAL", 0)], [op_put(key, value, lease)], [op_get(key)])
        if ok:
            return True
        if lease:
            kvs = (responses[0].get("response_range") or {}).get("kvs") or [] if responses else []
            if kvs and int(kvs[0].get("lease", 0)) == int(lease) \
                    and _unb64(kvs[0].get("value")) == _bytes(value):
                return True
        return False

    async def compare_and_swap(self, key: Bytes, expected_mod_revision: int, value: Bytes,
                               lease: int | None = None) -> bool:
        """Put ``key`` only if its mod_revision is still ``expected_mod_revision``
        (0: only if absent); True when it was written."""
        ok, _ = await self.txn([compare(key, "MOD", "EQUAL", expected_mod_revision)],
                               [op_put(key, value, lease)])
        return ok

    # Leases.

    async def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        data = await self._call("/v3/lease/grant", {"TTL": str(int(ttl))})
        return int(data["ID"])

    async def keepalive(self, lease_id: int) -> int:
        """Refresh a lease; the TTL it has left afterwards, 0 when it has expired."""
        data = await self._call("/v3/lease/keepalive", {"ID": str(lease_id)})
        result = data.get("result") or {}
        return max(0, int(result.get("TTL", 0)))

    async def time_to_live(self, lease_id: int) -> int:
        """Seconds a lease has left without refresh, 0 when expired/unknown."""
        data = await self._call("/v3/lease/timetolive", {"ID": str(lease_id)})
        return max(0, int(data.get("TTL", 0)))

    async def revoke(self, lease_id: int) -> None:
        """End a lease now (its keys are deleted); an unknown lease is not an error."""
        try:
            await self._call("/v3/lease/revoke", {"ID": str(lease_id)})
        except EtcdError as exc:
            if exc.code != _NOT_FOUND:
                raise

    # Watches.

    def watch_prefix(self, prefix: Bytes, start_revision: int | None = None) -> Watch:
        """Events on every key starting with ``prefix`` (see :class:`Watch`)."""
        return Watch(self, _bytes(prefix), prefix_end(prefix), start_revision)

    def watch(self, key: Bytes, start_revision: int | None = None) -> Watch:
        """Events on one key (see :class:`Watch`)."""
        return Watch(self, _bytes(key), None, start_revision)


class Watch:
    """An async iterator of :class:`WatchEvent` over a key range.

    Starts at ``start_revision`` (default: changes after the watch is created).
    When the stream breaks (member killed, member without a leader, ...) it
    reconnects to the next endpoint and resumes from the revision after the last
    event it delivered, retrying with back-off for as long as it is iterated;
    events are never skipped or repeated. History compacted away raises
    :class:`EtcdCompacted`. Iteration ends when the watch or its client is closed.
    Use ``async with etcd.watch_prefix(p) as events: async for ev in events: ...``
    or call :meth:`close`.
    """

    def __init__(self, etcd: Etcd, key: bytes, range_end: bytes | None,
                 start_revision: int | None):
        self._etcd = etcd
        self._key = key
        self._range_end = range_end
        self.next_revision = start_revision
        self.endpoint: str | None = None    # where the stream is open now
        self.reconnects = 0
        self._gen: AsyncIterator[WatchEvent] | None = None
        self._resp: aiohttp.ClientResponse | None = None
        self._closed = False
        etcd._watches.add(self)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        if self._gen is None:
            self._gen = self._events()
        return await self._gen.__anext__()

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        self._etcd._watches.discard(self)
        if self._resp is not None:
            self._resp.close()
        gen, self._gen = self._gen, None
        if gen is not None:
            try:
                await gen.aclose()  # type: ignore[attr-defined]
            except RuntimeError:
                pass                # being iterated right now: it ends at its next step

    def _request(self) -> dict:
        create: dict[str, Any] = {"key": _b64(self._key), "progress_notify": True}
        if self._range_end is not None:
            create["range_end"] = _b64(self._range_end)
        if self.next_revision is not None:
            create["start_revision"] = str(self.next_revision)
        return {"create_request": create}

    async def _events(self) -> AsyncIterator[WatchEvent]:
        etcd = self._etcd
        delay = 0.05
        while not self._closed and not etcd.closed:
            for index in etcd._order():
                if self._closed or etcd.closed:
                    return
                endpoint = etcd.endpoints[index]
                try:
                    async for event in self._stream(endpoint, index):
                        delay = 0.05
                        yield event
                except (TimeoutError, aiohttp.ClientError, OSError, EtcdUnavailable):
                    pass
                finally:
                    self.endpoint = None
                if self._closed or etcd.closed:
                    return
                self.reconnects += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _stream(self, endpoint: str, index: int) -> AsyncIterator[WatchEvent]:
        etcd = self._etcd
        session = etcd._http()
        timeout = aiohttp.ClientTimeout(total=None, connect=etcd.connect_timeout,
                                        sock_connect=etcd.connect_timeout)
        async with session.post(endpoint + "/v3/watch", json=self._request(), headers=_HEADERS,
                                timeout=timeout) as resp:
            if resp.status != 200:
                text = await resp.read()
                raise _error_from(resp.status, _parse(text), endpoint, text)
            self._resp = resp
            buffer = b""
            try:
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if not line.strip():
                            continue
                        for event in self._message(_parse(line), endpoint, index):
                            yield event
            finally:
                self._resp = None
        raise EtcdUnavailable(f"{endpoint}: watch stream ended")

    def _message(self, msg: Any, endpoint: str, index: int) -> list[WatchEvent]:
        if not isinstance(msg, dict) or "error" in msg:
            raise _error_from(200, msg, endpoint)
        result = msg.get("result") or {}
        header_rev = int((result.get("header") or {}).get("revision", 0))
        if result.get("compact_revision") not in (None, "0", 0):
            raise EtcdCompacted(f"{endpoint}: watch history compacted",
                                int(result["compact_revision"]), endpoint=endpoint)
        if result.get("canceled"):
            raise EtcdUnavailable(f"{endpoint}: watch canceled: {result.get('cancel_reason', '')}",
                                  endpoint=endpoint)
        if result.get("created"):
            self.endpoint = endpoint
            self._etcd._current = index
            if self.next_revision is None:
                self.next_revision = header_rev + 1
        events = []
        for item in result.get("events") or []:
            kv = item.get("kv") or {}
            rev = int(kv.get("mod_revision", 0))
            events.append(WatchEvent(item.get("type", "PUT"), _unb64(kv.get("key")),
                                     _unb64(kv.get("value")), rev))
        if events:
            self.next_revision = events[-1].mod_revision + 1
        elif not result.get("created") and header_rev and self.next_revision is not None:
            # A progress notification: nothing happened up to header_rev.
            self.next_revision = max(self.next_revision, header_rev + 1)
        return events


def _parse(text: bytes) -> Any:
    """One JSON document; of a stream answer (JSON lines), its first line."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return json.loads(text.strip().split(b"\n", 1)[0])
    except ValueError:
        return None


def _kv(item: dict) -> KeyValue:
    return KeyValue(_unb64(item.get("key")), _unb64(item.get("value")),
                    int(item.get("mod_revision", 0)))


def _revision(data: dict) -> int:
    return int((data.get("header") or {}).get("revision", 0))
