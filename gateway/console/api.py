"""The console's JSON API under ``/_basalt/console/api/``.

    GET    session              who is signed in, and the CSRF token (401: nobody)
    POST   session              sign in {access_key, secret_key}
    DELETE session              sign out (the session's record is removed)
    POST   presign              {requests: [{method, bucket?, key?, path?, query?, headers?,
                                expires?}]}
                                -> {urls: [...]}: SigV4 presigned as the user
    GET    bucket-stats?bucket=B (repeated) -> {B: {bytes, objects} | null}
    GET    usage?since=&until=&by=&account=   metered usage (the caller's account
                                unless root)
    POST   bill {prices: TOML text, month, account?}   basalt/billing.py's bill
    GET    vms/NAME/console?csrf=T   WebSocket: the VM's serial console, live, and what
                                the browser sends typed into it (root)

Every request but the first two needs the session's CSRF token (header
``X-Basalt-CSRF``; the WebSocket's ``csrf`` query parameter, since browsers
cannot set headers on one), and every answer is JSON.
"""

from __future__ import annotations

import hmac
import json
import os
import tempfile
import time
from typing import Any

from aiohttp import web
from multidict import MultiDict

from storaged import StorageError

from .. import access, usage_admin
from ..errors import S3Error
from ..router import Route
from . import presign as signer
from . import session as sessions
from .vm_console import bridge as vm_console_bridge

PRESIGN_DEFAULT = 900
RENEW = "console_session_renewed"
METHODS = {"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"}


class ConsoleError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


async def _json(request: web.Request) -> dict[str, Any]:
    # A JSON body only: a cross-site HTML form cannot send one without a preflight.
    if request.content_type != "application/json":
        raise ConsoleError(415, "UnsupportedMediaType", "send application/json")
    try:
        body = await request.json()
    except ValueError:
        raise ConsoleError(400, "InvalidArgument", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ConsoleError(400, "InvalidArgument", "the body must be a JSON object")
    return body


def _view(session: sessions.Session, principal: Any) -> dict[str, Any]:
    return {"access_key": session.access_key, "account": principal.account,
            "account_name": principal.account_name, "user": principal.user,
            "admin": principal.admin, "csrf": session.csrf,
            "idle_seconds": sessions.idle_seconds()}


class Caller:
    """A signed-in request: its session, principal and secret."""

    def __init__(self, session: sessions.Session, secret: str, principal: Any) -> None:
        self.session, self.secret, self.principal = session, secret, principal


async def caller(request: web.Request, store: Any, csrf: str | None = None) -> Caller:
    """The request's live session (401 otherwise) with a good CSRF token (403 otherwise)."""
    cookie = request.cookies.get(sessions.COOKIE)
    session = sessions.unseal(request, cookie) if cookie else None
    if session is None or not await sessions.live(store, session):
        raise ConsoleError(401, "NotSignedIn", "sign in first (no session, or it ended)")
    found = await request["directory"].resolve(session.access_key)
    if found is None:  # the key was disabled or deleted since
        raise ConsoleError(401, "NotSignedIn", "this access key no longer signs requests")
    if not sessions.csrf_ok(request, session, csrf):
        raise ConsoleError(403, "InvalidCSRFToken", "missing or wrong CSRF token")
    if sessions.refresh_due(session):
        request[RENEW] = session.touched()  # console.handle sets the fresher cookie
    return Caller(session, *found)


async def get_session(request: web.Request, store: Any) -> web.Response:
    cookie = request.cookies.get(sessions.COOKIE)
    session = sessions.unseal(request, cookie) if cookie else None
    if session is None or not await sessions.live(store, session):
        raise ConsoleError(401, "NotSignedIn", "not signed in")
    found = await request["directory"].resolve(session.access_key)
    if found is None:
        raise ConsoleError(401, "NotSignedIn", "this access key no longer signs requests")
    if sessions.refresh_due(session):
        request[RENEW] = session.touched()
    return web.json_response(_view(session, found[1]))


async def sign_in(request: web.Request, store: Any) -> web.Response:
    body = await _json(request)
    access_key, secret = str(body.get("access_key", "")), str(body.get("secret_key", ""))
    await request["directory"].fresh()
    found = await request["directory"].resolve(access_key) if access_key else None
    if found is None or not hmac.compare_digest(found[0].encode(), secret.encode()):
        raise ConsoleError(403, "InvalidCredentials", "wrong access key or secret key")
    session = sessions.new_session(access_key)
    await sessions.record(store, session)
    response = web.json_response(_view(session, found[1]))
    sessions.set_cookie(request, response, session)
    return response


async def sign_out(request: web.Request, store: Any) -> web.Response:
    who = await caller(request, store)
    await sessions.forget(store, who.session)
    response = web.json_response({"signed_out": True})
    sessions.clear_cookie(request, response)
    return response


def _one_url(request: web.Request, who: Caller, ask: Any) -> str:
    if not isinstance(ask, dict):
        raise ConsoleError(400, "InvalidArgument", "each request is a JSON object")
    method = str(ask.get("method", "GET")).upper()
    if method not in METHODS:
        raise ConsoleError(400, "InvalidArgument", f"method {method} is not allowed")
    query = ask.get("query") or {}
    if not isinstance(query, dict):
        raise ConsoleError(400, "InvalidArgument", "query must be an object")
    try:
        expires = int(ask.get("expires", PRESIGN_DEFAULT))
    except (TypeError, ValueError):
        expires = -1
    if not 1 <= expires <= 7 * 24 * 3600:
        raise ConsoleError(400, "InvalidArgument", "expires must be 1 second to 7 days")
    if "path" in ask:  # the admin API: only for the root credentials
        path = str(ask["path"])
        if not path.startswith("/_basalt/v1/") or not who.principal.admin:
            raise ConsoleError(403, "AccessDenied", "the admin API is for the root credentials")
    else:
        key = ask.get("key")
        path = signer.object_path(ask.get("bucket"), None if key is None else str(key))
    headers = ask.get("headers") or {}
    if not isinstance(headers, dict):
        raise ConsoleError(400, "InvalidArgument", "headers must be an object")
    return signer.presign(method, path, {str(k): str(v) for k, v in query.items()},
                          request.host, who.session.access_key, who.secret, expires,
                          {str(k): str(v) for k, v in headers.items()})


async def presign(request: web.Request, store: Any) -> web.Response:
    who = await caller(request, store)
    asks = (await _json(request)).get("requests")
    if not isinstance(asks, list) or len(asks) > 1000:
        raise ConsoleError(400, "InvalidArgument", "requests: a list of at most 1000")
    return web.json_response({"urls": [_one_url(request, who, ask) for ask in asks]})


async def bucket_stats(request: web.Request, store: Any) -> web.Response:
    """Stored bytes and objects of buckets the caller may list (as ListObjects is
    judged: bucket policy, identity policy, ACL); null for the others."""
    who = await caller(request, store)
    found: dict[str, Any] = {}
    for bucket in request.query.getall("bucket", [])[:1000]:
        try:
            await access.check(store, request["directory"], request,
                               Route("ListObjectsV2", bucket), who.principal)
            used = await store.bucket_usage(bucket)
            found[bucket] = {"bytes": used[0], "objects": used[1]}
        except (S3Error, StorageError):  # AccessDenied, NoSuchBucket
            found[bucket] = None
    return web.json_response(found)


class _UsageQuery:
    """What usage_admin.usage reads of a request: its query and the directory."""

    def __init__(self, request: web.Request, query: dict[str, str]) -> None:
        self.query, self._request = MultiDict(query), request

    def __getitem__(self, name: str) -> Any:
        return self._request[name]


async def _usage_rows(request: web.Request, store: Any, who: Caller,
                      query: dict[str, str]) -> list[dict[str, Any]]:
    """The admin API's usage answer, for the caller's own account unless root."""
    if not who.principal.admin:
        query["account"] = who.principal.account
    from ..admin import AdminError
    try:
        response = await usage_admin.usage(_UsageQuery(request, query), store)
    except AdminError as exc:
        raise ConsoleError(exc.status, exc.code, exc.message) from None
    return json.loads(response.text)


async def usage(request: web.Request, store: Any) -> web.Response:
    who = await caller(request, store)
    query = {k: v for k, v in request.query.items() if k in ("since", "until", "by", "account")}
    return web.json_response(await _usage_rows(request, store, who, query))


def _prices(text: str) -> tuple[str, dict[str, Any]]:
    """billing.load_prices on pasted text (it reads a file: the same checks)."""
    from basalt import billing
    with tempfile.TemporaryDirectory(prefix="basalt-prices-") as tmp:
        path = os.path.join(tmp, "prices.toml")
        with open(path, "w") as f:
            f.write(text)
        try:
            return billing.load_prices(path)
        except billing.PriceListError as exc:
            raise ConsoleError(400, "InvalidPriceList",
                               str(exc).replace(path, "the price list")) from None


async def bill(request: web.Request, store: Any) -> web.Response:
    """The bill `basalt bill` prints, from the same rows and basalt/billing.py."""
    from basalt import billing
    who = await caller(request, store)
    body = await _json(request)
    currency, prices = _prices(str(body.get("prices", "")))
    month = str(body.get("month") or time.strftime("%Y-%m", time.gmtime()))
    try:
        start, end = billing.month_span(month)
    except billing.PriceListError as exc:
        raise ConsoleError(400, "InvalidArgument", str(exc)) from None
    query = {"since": start.isoformat(), "until": end.isoformat(), "by": "account"}
    if body.get("account"):
        query["account"] = str(body["account"])
    rows = await _usage_rows(request, store, who, query)
    return web.json_response(billing.bill(rows, prices, currency, month))


async def vm_console(request: web.Request, store: Any, owner: Any, name: str
                     ) -> web.StreamResponse:
    """The VM's serial console over a WebSocket (root only): the guest's output
    live, and what the browser sends typed into it (vm_console.bridge)."""
    who = await caller(request, store, csrf=request.query.get("csrf", ""))
    if not who.principal.admin:
        raise ConsoleError(403, "AccessDenied", "VMs are for the root credentials")
    if owner is None or not owner.socket_path:
        raise ConsoleError(503, "ServiceUnavailable", "the disk-owning process is not running")
    return await vm_console_bridge(request, owner.socket_path, name)
