"""The admin API of KMS keys: ``/_basalt/v1/kms/keys[/KEY[/rotate|/enable|/disable]]``.

JSON in and out, root credentials only (as all of ``/_basalt/v1/``). Answers
show a key's id, name, ARN, state and versions: never key material.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from storaged.kms import KeyRecord, KeyService, KMSError

from .admin import AdminError, admin_route

KEYS = "/_basalt/v1/kms/keys"
_STATUS = {"NotFoundException": 404, "AlreadyExistsException": 409,
           "ValidationException": 400, "DisabledException": 400}


def _service(request: web.Request) -> KeyService:
    service = request.get("keys")
    if service is None:
        raise AdminError(503, "KMSUnavailable", "this server has no key service")
    return service


def _shown(request: web.Request, record: KeyRecord) -> dict[str, Any]:
    return record.as_dict(request.get("region") or "us-east-1")


async def _answer(request: web.Request, call: Any, status: int = 200) -> web.Response:
    try:
        record = await call
    except KMSError as exc:
        raise AdminError(_STATUS.get(exc.code, 500), exc.code, exc.message) from None
    return web.json_response(_shown(request, record), status=status)


@admin_route("GET", KEYS)
async def list_keys(request: web.Request, store: Any) -> web.Response:
    return web.json_response([_shown(request, r) for r in await _service(request).keys()])


@admin_route("POST", KEYS)
async def create_key(request: web.Request, store: Any) -> web.Response:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        raise AdminError(400, "InvalidArgument", "the body is not JSON") from None
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str):
        raise AdminError(400, "InvalidArgument", "give the key's name")
    description = body.get("description") or ""
    return await _answer(request, _service(request).create(name, str(description)), 201)


@admin_route("GET", KEYS + "/")
@admin_route("POST", KEYS + "/")
async def key_path(request: web.Request, store: Any) -> web.Response:
    """One key: show it (GET), or rotate, enable or disable it (POST …/ACTION)."""
    # Split before decoding: a name may hold "/" (alias/NAME, aws/s3), sent as %2F.
    rest = request.rel_url.raw_path[len(KEYS):].strip("/").split("/")
    ref = unquote(rest[0])
    action = rest[1] if len(rest) == 2 else None
    service = _service(request)
    if request.method == "GET" and len(rest) == 1:
        return await _answer(request, service.find(ref, fresh=True))
    if request.method == "POST" and action == "rotate":
        return await _answer(request, service.rotate(ref))
    if request.method == "POST" and action in ("enable", "disable"):
        return await _answer(request, service.set_enabled(ref, action == "enable"))
    raise AdminError(404, "NotFound", f"no admin endpoint {request.method} {request.path}")
