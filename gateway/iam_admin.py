"""The admin API of accounts, users, identity policies and access keys.

``/_basalt/v1/accounts[/NAME[/users[/USER[/policy|/keys]]|/keys]]`` and
``/_basalt/v1/keys[/KEY[/enable|/disable]]``, JSON in and out, root credentials
only (as all of ``/_basalt/v1/``). Secrets appear once: in the answer that
creates a key.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from .admin import AdminError, admin_route
from .identity import Directory, IdentityError
from .policy import MalformedPolicy, parse_policy
from .quota import account_buckets

ACCOUNTS = "/_basalt/v1/accounts"
KEYS = "/_basalt/v1/keys"


def _directory(request: web.Request) -> Directory:
    return request["directory"]


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise AdminError(400, "InvalidArgument", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise AdminError(400, "InvalidArgument", "the body must be a JSON object")
    return body


def _segments(path: str, prefix: str) -> list[str]:
    rest = path[len(prefix):].strip("/")
    return [unquote(s) for s in rest.split("/")] if rest else []


async def _answer(fn: Any, *args: Any) -> web.Response:
    try:
        return await fn(*args)
    except IdentityError as exc:
        raise AdminError(exc.status, exc.code, exc.message) from None


# --- accounts ------------------------------------------------------------------------

@admin_route("GET", ACCOUNTS)
async def list_accounts(request: web.Request, store: Any) -> web.Response:
    directory = _directory(request)
    await directory.fresh(0)
    return web.json_response([a.as_dict() for a in directory.all_accounts()])


@admin_route("POST", ACCOUNTS)
async def create_account(request: web.Request, store: Any) -> web.Response:
    body = await _body(request)
    name = body.get("name")
    if not isinstance(name, str):
        raise AdminError(400, "InvalidArgument", "give the account's name")

    async def create() -> web.Response:
        account = await _directory(request).create_account(name, body.get("email") or "")
        return web.json_response(account.as_dict(), status=201)
    return await _answer(create)


@admin_route("GET", ACCOUNTS + "/")
@admin_route("POST", ACCOUNTS + "/")
@admin_route("PUT", ACCOUNTS + "/")
@admin_route("DELETE", ACCOUNTS + "/")
async def account_path(request: web.Request, store: Any) -> web.Response:
    """Everything under one account: itself, its users, their policies and keys."""
    parts = _segments(request.path, ACCOUNTS)
    return await _answer(_account_path, request, store, request.method, parts)


async def _account_path(request: web.Request, store: Any, method: str,
                        parts: list[str]) -> web.Response:
    directory = _directory(request)
    await directory.fresh(0)
    account = directory.account(parts[0])
    match method, parts[1:]:
        case "GET", []:
            return web.json_response({**account.as_dict(),
                                      "users": [u.name for u in directory.users(account)],
                                      "buckets": await account_buckets(store, account.id)})
        case "DELETE", []:
            await directory.delete_account(account.name, await account_buckets(store, account.id))
            return web.Response(status=204)
        case "GET", ["users"]:
            return web.json_response([u.as_dict(account.name) for u in directory.users(account)])
        case "POST", ["users"]:
            name = (await _body(request)).get("name")
            if not isinstance(name, str):
                raise AdminError(400, "InvalidArgument", "give the user's name")
            _, user = await directory.create_user(account.name, name)
            return web.json_response(user.as_dict(account.name), status=201)
        case "GET", ["users", user]:
            return web.json_response(directory.user(account, user).as_dict(account.name))
        case "DELETE", ["users", user]:
            await directory.delete_user(account.name, user)
            return web.Response(status=204)
        case "PUT", ["users", user, "policy"]:
            text = (await request.read()).decode("utf-8", "replace")
            try:
                parse_policy(text, "identity")
            except MalformedPolicy as exc:
                raise AdminError(400, "MalformedPolicyDocument", exc.message) from None
            await directory.set_user_policy(account.name, user, text)
            return web.Response(status=204)
        case "GET", ["users", user, "policy"]:
            policy = directory.user(account, user).policy
            if policy is None:
                raise AdminError(404, "NoSuchEntity", f"user {user} has no policy")
            return web.Response(text=policy, content_type="application/json")
        case "DELETE", ["users", user, "policy"]:
            await directory.set_user_policy(account.name, user, None)
            return web.Response(status=204)
        case "POST", ["users", user, "keys"]:
            return await _create_key(directory, account.name, user)
        case "POST", ["keys"]:
            return await _create_key(directory, account.name, None)
    raise AdminError(404, "NotFound", f"no admin endpoint {method} {request.path}")


async def _create_key(directory: Directory, account: str, user: str | None) -> web.Response:
    key, secret = await directory.create_key(account, user)
    name = directory.account(key.account).name
    return web.json_response({**key.as_dict(name, None), "secret_key": secret}, status=201)


# --- keys ----------------------------------------------------------------------------

@admin_route("GET", KEYS)
async def list_keys(request: web.Request, store: Any) -> web.Response:
    async def answer() -> web.Response:
        directory = _directory(request)
        await directory.fresh(0)
        account = request.query.get("account")
        found = directory.account(account) if account else None
        keys = directory.keys(found, request.query.get("user") or None)
        return web.json_response([
            k.as_dict(directory.account(k.account).name, directory.last_used(k.access_key))
            for k in keys if directory.account_by_id(k.account) is not None])
    return await _answer(answer)


@admin_route("POST", KEYS + "/")
@admin_route("DELETE", KEYS + "/")
@admin_route("GET", KEYS + "/")
async def key_path(request: web.Request, store: Any) -> web.Response:
    parts = _segments(request.path, KEYS)

    async def answer() -> web.Response:
        directory = _directory(request)
        await directory.fresh(0)
        match request.method, parts:
            case "GET", [key]:
                found = directory.key(key)
                return web.json_response(found.as_dict(directory.account(found.account).name,
                                                       directory.last_used(key)))
            case "DELETE", [key]:
                await directory.delete_key(key)
                return web.Response(status=204)
            case "POST", [key, ("enable" | "disable") as change]:
                found = await directory.set_key_status(
                    key, "Active" if change == "enable" else "Inactive")
                return web.json_response(found.as_dict(directory.account(found.account).name,
                                                       directory.last_used(key)))
        raise AdminError(404, "NotFound", f"no admin endpoint {request.method} {request.path}")
    return await _answer(answer)
