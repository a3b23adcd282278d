"""Bucket CORS: Put/Get/DeleteBucketCors, preflight OPTIONS, headers on responses.

The rules are kept as ``CorsConfig.pack()`` in the bucket's "cors" setting
(gateway/cors_xml.py parses, validates, renders and matches them). A preflight is
answered from them without authentication. An actual request with an Origin header
gets the headers of the first rule matching its origin and method (and the
Access-Control-Request-* headers, when it has them, as S3 does): ``prepare`` finds
them after routing, before authentication, so error responses carry them too, and
``add_headers`` puts them on the response as it starts.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

import storaged

from .bucket import xml_response
from .cors_xml import METHODS, CorsConfig, parse_cors, render_cors, request_headers
from .errors import BadRequest, S3Error
from .request import Context
from .verified_body import verified_body

KIND = "cors"
_FOUND = "cors_headers"  # request key: the CORS headers for this request's response


class NoSuchCORSConfiguration(S3Error):
    status = 404
    message = "The CORS configuration does not exist"


class CORSForbidden(S3Error):
    """How S3 refuses a preflight (with Method and ResourceType in the document)."""

    code = "AccessForbidden"
    status = 403
    message = "CORSResponse: This CORS request is not allowed."


NOT_FOUND = "CORSResponse: Bucket not found"
NOT_ENABLED = "CORSResponse: CORS is not enabled for this bucket."
# S3's own wording, its spelling of "evalution" included.
NOT_ALLOWED = ("CORSResponse: This CORS request is not allowed. This is usually because the "
               "evalution of Origin, request method / Access-Control-Request-Method or "
               "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.")


async def stored_config(store: Any, bucket: str) -> CorsConfig | None:
    """The bucket's CORS rules (None without any); NoSuchBucket when there is no bucket."""
    raw = await store.bucket_config(bucket, KIND)
    return None if raw is None else CorsConfig.unpack(raw)


async def prepare(request: web.Request, route: Any, store: Any) -> None:
    """Before the request is judged: find the CORS rule that answers its Origin."""
    origin = request.headers.get("Origin")
    if not origin:
        return  # not a cross-origin request: the hot path reads nothing
    if route.bucket is None or route.op == "PreflightCors":
        return
    try:
        config = await stored_config(store, route.bucket)
    except (storaged.StorageError, S3Error):
        return  # no such bucket (or unreadable): the handler says so, without CORS
    if config is None:
        return
    # S3 matches an actual request carrying preflight headers as it would the preflight.
    method = request.headers.get("Access-Control-Request-Method") or request.method
    headers = request_headers(request.headers.get("Access-Control-Request-Headers"))
    rule = config.match(origin, method, headers)
    if rule is not None:
        request[_FOUND] = rule.response_headers(origin, headers)


def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """As the response starts: the CORS headers ``prepare`` found."""
    found = request.get(_FOUND)
    if not found:
        return
    vary = response.headers.get("Vary")
    response.headers.update(found)
    if vary:
        response.headers["Vary"] = f"{vary}, {found['Vary']}"


async def preflight(ctx: Context) -> web.Response:
    """OPTIONS on a bucket or object: 200 with the matching rule's headers, or S3's refusal."""
    headers = ctx.headers
    origin = headers.get("Origin")
    if not origin:
        raise BadRequest("Insufficient information. Origin request header needed.")
    method = headers.get("Access-Control-Request-Method")
    try:
        config = await stored_config(ctx.store, ctx.bucket)
    except storaged.NoSuchBucket:
        raise CORSForbidden(NOT_FOUND, Method=method or "OPTIONS",
                            ResourceType="BUCKET") from None
    if config is None:
        raise CORSForbidden(NOT_ENABLED, Method=method or "OPTIONS", ResourceType="BUCKET")
    if method not in METHODS:
        raise BadRequest(f"Invalid Access-Control-Request-Method: {method or 'null'}")
    wanted = request_headers(headers.get("Access-Control-Request-Headers"))
    rule = config.match(origin, method, wanted)
    if rule is None:
        raise CORSForbidden(NOT_ALLOWED, Method=method,
                            ResourceType="OBJECT" if ctx.route.key is not None else "BUCKET")
    return web.Response(status=200, headers=rule.response_headers(origin, wanted))


async def put_bucket_cors(ctx: Context) -> web.Response:
    body = await verified_body(ctx)              # Content-MD5 or a checksum is required
    await ctx.store.require_bucket(ctx.bucket)    # NoSuchBucket before any XML error
    config = parse_cors(body)
    await ctx.store.set_bucket_config(ctx.bucket, KIND, config.pack())
    return web.Response(status=200)


async def get_bucket_cors(ctx: Context) -> web.Response:
    config = await stored_config(ctx.store, ctx.bucket)
    if config is None:
        raise NoSuchCORSConfiguration(BucketName=ctx.bucket)
    return xml_response(render_cors(config))


async def delete_bucket_cors(ctx: Context) -> web.Response:
    await ctx.store.set_bucket_config(ctx.bucket, KIND, None)
    return web.Response(status=204)
