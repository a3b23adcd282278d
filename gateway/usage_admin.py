"""The admin API of usage: ``GET /_basalt/v1/usage?since=&until=&account=&by=``.

Rows of storaged.metering, summed per account (default), per bucket, volume, VM
or network (``by``), per account and day (``by=day``), or per hour (``by=hour``).
``since``/``until`` are ISO 8601 (default: this month so far, UTC); ``account``
takes an id or a name.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from storaged import metering

from .admin import AdminError, admin_route
from .identity import IdentityError

USAGE = "/_basalt/v1/usage"
BY = (*metering.KINDS, "day", "hour", "account")


def span(query: Any) -> tuple[float, float]:
    """(since, until) from a request's query (default: this month so far)."""
    try:
        until = metering.parse_moment(query["until"]) if query.get("until") else time.time()
        since = (metering.parse_moment(query["since"]) if query.get("since")
                 else metering.parse_moment(time.strftime("%Y-%m-01", time.gmtime(until))))
    except ValueError as exc:
        raise AdminError(400, "InvalidArgument", f"not an ISO 8601 time: {exc}") from None
    if since >= until:
        raise AdminError(400, "InvalidArgument", "since must come before until")
    return since, until


async def account_filter(request: web.Request, name: str | None) -> str | None:
    """The account id a query names (by id or name), None for every account."""
    if not name:
        return None
    directory = request["directory"]
    await directory.fresh()
    try:
        return directory.account(name).id
    except IdentityError as exc:
        raise AdminError(exc.status, exc.code, exc.message) from None


@admin_route("GET", USAGE)
async def usage(request: web.Request, store: Any) -> web.Response:
    by = request.query.get("by") or "account"
    if by not in BY:
        raise AdminError(400, "InvalidArgument", f"by must be one of {', '.join(BY)}")
    since, until = span(request.query)
    account = await account_filter(request, request.query.get("account"))
    rows = await metering.read_usage(store, since, until)
    if account is not None:
        rows = [r for r in rows if r["account"] == account]
    if by != "hour":
        rows = metering.summarize(rows, None if by == "account" else by)
    names = {a.id: a.name for a in request["directory"].all_accounts()}
    for row in rows:
        row["account_name"] = names.get(row["account"], "")
    return web.json_response(rows)
