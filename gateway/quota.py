"""Quotas: per bucket and per account, a maximum of bytes and of objects.

Limits
    A bucket's are its ``quota`` setting (JSON ``{"max_bytes": N|null,
    "max_objects": N|null}``), read with the bucket's other settings, which a
    request reads once anyway: a write into a bucket without a quota costs no
    read. An account's are the setting ``quota/ACCOUNT_ID`` of the system bucket
    (``.basalt-iam``), part of gateway.identity's snapshot of the accounts (so a
    new account quota binds every worker within a second, and the hot path
    reads the system bucket once a second, not once a request).

Usage
    A bucket's is the engine's counters (``store.bucket_usage``: bytes and
    versions holding data, noncurrent ones included; delete markers and parts
    of unfinished uploads are not counted). An account's is the sum over the
    buckets it owns, plus, for the root account (which owns the block volumes),
    the provisioned sizes of its volumes (snapshots not counted).

Enforcement (:func:`admit`)
    Before a write commits (PUT, copy, multipart completion; volume create and
    resize), with its size known up front (Content-Length or
    x-amz-decoded-content-length, the copy source's size, the sum of the parts
    completed): refused with 403 QuotaExceeded, naming the quota, when usage +
    this process's writes in flight + the size would pass a limit (an object
    limit counts one more object, even for an overwrite). Otherwise the size
    is reserved until the write ends. Admissions of one quota are serialised
    per process, and a write that committed stays counted for admissions that
    started reading the usage before it did, so within a process a quota is
    never overshot; across the server's worker processes by at most the
    objects in flight in the others (one per connection at most).
    A refused upload's body is never read (the gateway closes the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from storaged import NoSuchBucket

from . import identity
from .admin import AdminError, admin_route
from .errors import S3Error, ServiceUnavailable

KIND = "quota"                              # bucket setting
VOLUMES_PATH = "/_basalt/v1/volumes"


class QuotaExceeded(S3Error):
    status = 403
    message = "The quota of this bucket or account would be exceeded by this request."


@dataclasses.dataclass(frozen=True)
class Limits:
    max_bytes: int | None = None
    max_objects: int | None = None

    def __bool__(self) -> bool:
        return self.max_bytes is not None or self.max_objects is not None

    def pack(self) -> bytes | None:
        """The stored form; None (no setting) when nothing is limited."""
        return json.dumps(dataclasses.asdict(self)).encode() if self else None

    @classmethod
    def unpack(cls, raw: bytes | None) -> Limits:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(data.get("max_bytes"), data.get("max_objects"))

    def as_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)


# --- limits and usage ------------------------------------------------------------------

async def account_limits(directory: identity.Directory, account: str,
                         max_age: float = identity.REFRESH_SECONDS) -> Limits:
    """An account's limits, from the directory's snapshot of the system bucket (read
    again when older than ``max_age`` seconds)."""
    await directory.fresh(max_age)
    return Limits.unpack(directory.snapshot.quotas.get(account))


async def bucket_limits(store: Any, bucket: str) -> Limits:
    """A bucket's limits (NoSuchBucket when there is no such bucket)."""
    return Limits.unpack(await store.bucket_config(bucket, KIND))


async def account_buckets(store: Any, account: str) -> list[str]:
    """The names of the buckets ``account`` owns."""
    return [b.name for b in await identity.owned_buckets(store, account)]


async def volume_bytes(socket_path: str | None) -> int:
    """The provisioned size of every volume (the root account's), asked of the
    disk-owning process; 0 where there is none (no owner, e.g. in tests)."""
    if not socket_path:
        return 0
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket_path),
                                         timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.get("http://owner" + VOLUMES_PATH) as r:
                if r.status != 200:
                    raise AdminError(503, "ServiceUnavailable",
                                     "cannot tell the volumes' sizes for the account quota")
                return sum(v["size"] for v in await r.json())
    except aiohttp.ClientError as exc:
        raise AdminError(503, "ServiceUnavailable",
                         f"disk-owning process unreachable: {exc}") from exc


async def account_usage(store: Any, account: str, owner_socket: str | None = None
                        ) -> tuple[int, int]:
    """(bytes, objects) of an account: its buckets', plus its volumes' sizes
    for the root account."""
    found = await asyncio.gather(*(store.bucket_usage(b)
                                   for b in await account_buckets(store, account)))
    size = sum(u[0] for u in found)
    if account == identity.ROOT_ACCOUNT:
        size += await volume_bytes(owner_socket)
    return size, sum(u[1] for u in found)


# --- admission -------------------------------------------------------------------------

class _Ledger:
    """One quota's writes in flight in this process, and those that committed
    while an admission may still have been reading the usage."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.active: dict[int, tuple[int, int]] = {}
        self.done: list[tuple[int, int, int]] = []  # (sequence, bytes, objects)
        self.sequence = 0

    def pending(self, since: int) -> tuple[int, int]:
        """Bytes and objects not in a usage read that started at ``since``."""
        self.done = [d for d in self.done if d[0] > since]
        held = list(self.active.values()) + [(b, o) for _, b, o in self.done]
        return sum(b for b, _ in held), sum(o for _, o in held)

    def finish(self, token: int, committed: bool) -> None:
        entry = self.active.pop(token)
        if committed:
            self.sequence += 1
            self.done.append((self.sequence, *entry))


_ledgers: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], _Ledger]] = \
    weakref.WeakKeyDictionary()
_tokens = iter(range(1, 1 << 62))


def _refusal(what: str, limits: Limits, used: tuple[int, int], size: int) -> str | None:
    if limits.max_bytes is not None and used[0] + size > limits.max_bytes:
        return (f"The {what} byte quota of {limits.max_bytes} bytes would be exceeded "
                f"({used[0]} bytes stored or being written, {size} more requested).")
    if limits.max_objects is not None and used[1] + 1 > limits.max_objects:
        return (f"The {what} object quota of {limits.max_objects} objects would be exceeded "
                f"({used[1]} objects stored or being written).")
    return None


@contextlib.asynccontextmanager
async def _hold(store: Any, scope: tuple[str, str], limits: Limits, size: int,
                usage: Callable[[], Awaitable[tuple[int, int]]], what: str
                ) -> AsyncIterator[None]:
    ledger = _ledgers.setdefault(store, {}).setdefault(scope, _Ledger())
    token = next(_tokens)
    async with ledger.lock:
        since = ledger.sequence
        stored = await usage()
        pending = ledger.pending(since)
        refused = _refusal(what, limits, (stored[0] + pending[0], stored[1] + pending[1]), size)
        if refused is not None:
            raise QuotaExceeded(refused)
        ledger.active[token] = (size, 1)
    committed = False
    try:
        yield
        committed = True
    finally:
        ledger.finish(token, committed)


SizeSource = int | None | Callable[[], Awaitable[int]]


@contextlib.asynccontextmanager
async def admit(ctx: Any, size: SizeSource) -> AsyncIterator[None]:
    """Hold a write of ``size`` bytes (one object) into ``ctx.bucket`` within its
    bucket's and its account's quotas for the duration of the block; raises
    QuotaExceeded when it would pass one. ``size`` may be a coroutine function,
    called only when a quota applies (e.g. summing the parts of an upload)."""
    store, bucket = ctx.store, ctx.bucket
    limits = await bucket_limits(store, bucket)
    account = await identity.bucket_owner(store, bucket)
    alimits = await account_limits(ctx.request["directory"], account)
    if not limits and not alimits:
        yield
        return
    nbytes = (await size() if callable(size) else size) or 0
    async with contextlib.AsyncExitStack() as stack:
        if limits:
            await stack.enter_async_context(_hold(
                store, ("bucket", bucket), limits, nbytes,
                lambda: store.bucket_usage(bucket), f"bucket {bucket}'s"))
        if alimits:
            socket = getattr(ctx.config, "owner_socket", None)
            await stack.enter_async_context(_hold(
                store, ("account", account), alimits, nbytes,
                lambda: _s3_account_usage(store, account, socket), f"account {account}'s"))
        yield


async def _s3_account_usage(store: Any, account: str, socket: str | None) -> tuple[int, int]:
    try:
        return await account_usage(store, account, socket)
    except AdminError as exc:  # the volumes' sizes are unknown: refuse rather than guess
        raise ServiceUnavailable(exc.message) from None


async def upload_size(store: Any, bucket: str, key: str, upload_id: str,
                      numbers: set[int]) -> int:
    """The bytes a multipart completion of parts ``numbers`` makes."""
    total, after = 0, 0
    while True:
        parts, truncated = await store.list_parts(bucket, key, upload_id, after, 1000)
        total += sum(p.size for p in parts if p.number in numbers)
        if not truncated or not parts:
            return total
        after = parts[-1].number


async def admit_volume(request: web.Request, store: Any, socket: str | None) -> None:
    """Refuse (AdminError 403 QuotaExceeded) a volume create or resize that would
    take the root account (the volumes' owner) over its byte quota."""
    path = request.path
    creating = request.method == "POST" and path == VOLUMES_PATH
    resizing = request.method == "PATCH" and re.fullmatch(VOLUMES_PATH + r"/[^/]+", path)
    if not (creating or resizing):
        return
    limits = await account_limits(request["directory"], identity.ROOT_ACCOUNT, max_age=0)
    if limits.max_bytes is None:
        return
    try:
        body = json.loads(await request.read() or b"{}")
        size = body.get("size")
    except (ValueError, AttributeError):
        return  # the volume API answers malformed bodies itself
    if not isinstance(size, int) or isinstance(size, bool):
        return
    used, _ = await account_usage(store, identity.ROOT_ACCOUNT, socket)
    if resizing:
        name = path.rsplit("/", 1)[1]
        used -= await _volume_size(socket, name)
    if used + size > limits.max_bytes:
        raise AdminError(403, "QuotaExceeded",
                         f"the root account's byte quota of {limits.max_bytes} bytes would be "
                         f"exceeded ({used} bytes used, the volume needs {size})")


async def _volume_size(socket: str | None, name: str) -> int:
    if not socket:
        return 0
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket),
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.get(f"http://owner{VOLUMES_PATH}/{name}") as r:
            return (await r.json())["size"] if r.status == 200 else 0


# --- admin API -------------------------------------------------------------------------

def _limit(value: Any, name: str) -> int | None:
    """A limit from a request: a non-negative integer; null or 0 clears it."""
    if value is None or value == 0:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise AdminError(400, "InvalidArgument", f"{name} must be a non-negative integer or null")
    return value


async def _changes(request: web.Request, current: Limits) -> Limits:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        raise AdminError(400, "MalformedJSON", "the request body is not JSON") from None
    if not isinstance(body, dict) or set(body) - {"max_bytes", "max_objects"}:
        raise AdminError(400, "InvalidArgument",
                         'the body is a JSON object with "max_bytes" and/or "max_objects"')
    # A field left out keeps its value; null or 0 removes that limit.
    return Limits(_limit(body["max_bytes"], "max_bytes") if "max_bytes" in body
                  else current.max_bytes,
                  _limit(body["max_objects"], "max_objects") if "max_objects" in body
                  else current.max_objects)


def _name(request: web.Request, prefix: str) -> str:
    return request.path[len(prefix):]  # aiohttp has decoded it


BUCKETS = "/_basalt/v1/quotas/buckets/"
ACCOUNTS = "/_basalt/v1/quotas/accounts/"


async def _bucket_view(store: Any, bucket: str) -> dict[str, Any]:
    try:
        limits = await bucket_limits(store, bucket)
    except NoSuchBucket:
        raise AdminError(404, "NoSuchBucket", f"no bucket {bucket!r}") from None
    used = await store.bucket_usage(bucket)
    return {"bucket": bucket, "account": await identity.bucket_owner(store, bucket),
            **limits.as_dict(), "usage": {"bytes": used[0], "objects": used[1]}}


@admin_route("GET", BUCKETS)
async def get_bucket_quota(request: web.Request, store: Any) -> web.Response:
    return web.json_response(await _bucket_view(store, _name(request, BUCKETS)))


@admin_route("PUT", BUCKETS)
async def put_bucket_quota(request: web.Request, store: Any) -> web.Response:
    bucket = _name(request, BUCKETS)
    view = await _bucket_view(store, bucket)
    limits = await _changes(request, Limits(view["max_bytes"], view["max_objects"]))
    await store.set_bucket_config(bucket, KIND, limits.pack())
    return web.json_response({**view, **limits.as_dict()})


async def _account(request: web.Request, name_or_id: str) -> tuple[str, str]:
    """(id, name) of an account given by name or id (404 NoSuchAccount)."""
    directory = request.get("directory")
    if directory is None:  # a gateway without accounts: only the root one
        if name_or_id in (identity.ROOT_ACCOUNT, identity.ROOT_ACCOUNT_NAME):
            return identity.ROOT_ACCOUNT, identity.ROOT_ACCOUNT_NAME
        raise AdminError(404, "NoSuchAccount", f"no account {name_or_id!r}")
    await directory.fresh(0)
    try:
        account = directory.account(name_or_id)
    except identity.IdentityError as exc:
        raise AdminError(exc.status, exc.code, exc.message) from None
    return account.id, account.name


async def _account_view(request: web.Request, store: Any, name_or_id: str) -> dict[str, Any]:
    account, name = await _account(request, name_or_id)
    limits = await account_limits(request["directory"], account, max_age=0)
    owner = request.get("owner")
    used = await account_usage(store, account, getattr(owner, "socket_path", None))
    return {"account": account, "name": name, **limits.as_dict(),
            "usage": {"bytes": used[0], "objects": used[1]},
            "buckets": await account_buckets(store, account)}


@admin_route("GET", ACCOUNTS)
async def get_account_quota(request: web.Request, store: Any) -> web.Response:
    return web.json_response(await _account_view(request, store, _name(request, ACCOUNTS)))


@admin_route("PUT", ACCOUNTS)
async def put_account_quota(request: web.Request, store: Any) -> web.Response:
    account, _ = await _account(request, _name(request, ACCOUNTS))
    directory = request["directory"]
    limits = await _changes(request, await account_limits(directory, account, max_age=0))
    await directory.set_account_quota(account, limits.pack())
    return web.json_response(await _account_view(request, store, account))
