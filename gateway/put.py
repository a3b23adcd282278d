"""PutObject: stream the verified body into the engine."""

from __future__ import annotations

from aiohttp import web

from storaged import Condition

from .checksums import header_name
from .request import Context, Payload, object_attrs


def write_condition(ctx: Context) -> Condition | None:
    """``If-None-Match: *`` / ``If-Match: ETAG`` on a write."""
    if_none = ctx.headers.get("If-None-Match")
    if_match = ctx.headers.get("If-Match")
    if if_none is None and if_match is None:
        return None
    return Condition(absent=if_none is not None and if_none.strip() == "*",
                     etag=if_match.strip().strip('"') if if_match else None)


async def put_object(ctx: Context) -> web.Response:
    attrs = object_attrs(ctx.headers)
    payload = Payload(ctx)
    info = await ctx.store.put_object(
        ctx.bucket, ctx.key, payload.stream, size=payload.size, attrs=attrs,
        content_md5=payload.content_md5, hashers=payload.hashers, finalize=payload.finalize,
        condition=write_condition(ctx))
    ctx.request["bytes_in"] = info.size
    headers = {"ETag": f'"{info.etag}"'}
    for algorithm, value in info.checksums.items():
        headers[header_name(algorithm)] = value
        headers["x-amz-checksum-type"] = "FULL_OBJECT"
    return web.Response(status=200, headers=headers)
