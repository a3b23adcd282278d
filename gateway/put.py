"""PutObject: stream the verified body into the engine."""

from __future__ import annotations

import dataclasses
import time

from aiohttp import web

from storaged import Condition, ObjectAttrs, ObjectInfo

from . import quota, sse_objects
from .acl import acl_for_upload
from .checksums import header_name
from .lifecycle import expiration_header
from .object_lock import lock_for_write
from .request import Context, Payload, object_attrs
from .tagging import tags_for_copy, tags_from_header
from .versioning import version_headers


async def upload_attrs(ctx: Context, copy_from: ObjectInfo | None = None, copy_meta: bool = False,
                 with_body: bool = True) -> ObjectAttrs:
    """What a write gives the new version: metadata (``copy_from``'s when
    ``copy_meta``), tags (``x-amz-tagging``, or per the copy's tagging directive),
    object lock (the headers', else the bucket's default retention) and ACL (the
    x-amz-acl / x-amz-grant-* headers', gateway.acl)."""
    if copy_from is not None and copy_meta:
        attrs = ObjectAttrs(copy_from.content_type, dict(copy_from.headers),
                            dict(copy_from.user_meta))
    else:
        attrs = object_attrs(ctx.headers)
    if copy_from is not None:
        tags = tags_for_copy(ctx.headers, copy_from.tags)
    else:
        header = ctx.headers.get("x-amz-tagging")
        tags = tags_from_header(header) if header else {}
    mode, until, hold = await lock_for_write(ctx.store, ctx.bucket, ctx.headers,
                                             time.time_ns(), with_body=with_body)
    return dataclasses.replace(attrs, tags=tags, lock_mode=mode, lock_until_ns=until,
                               legal_hold=hold, acl=await acl_for_upload(ctx))


def write_condition(ctx: Context) -> Condition | None:
    """``If-None-Match: *`` / ``If-Match: ETAG`` on a write."""
    if_none = ctx.headers.get("If-None-Match")
    if_match = ctx.headers.get("If-Match")
    if if_none is None and if_match is None:
        return None
    return Condition(absent=if_none is not None and if_none.strip() == "*",
                     etag=if_match.strip().strip('"') if if_match else None)


async def put_object(ctx: Context) -> web.Response:
    attrs = await upload_attrs(ctx)
    sealing = await sse_objects.for_write(ctx)
    if sealing is not None:
        attrs = sealing.attrs(attrs)
    payload = Payload(ctx)
    async with quota.admit(ctx, payload.size):  # refused before the body is read
        info = await ctx.store.put_object(
            ctx.bucket, ctx.key, payload.stream, size=payload.size, attrs=attrs,
            content_md5=payload.content_md5, hashers=payload.hashers, finalize=payload.finalize,
            condition=write_condition(ctx), seal=sealing.seal() if sealing else None)
    ctx.request["bytes_in"] = info.size
    headers = {"ETag": f'"{info.etag}"', **(await version_headers(ctx, info)),
               **sse_objects.response_headers(info),
               **(await expiration_header(ctx.store, info, ctx.store.lifecycle_day_ns))}
    for algorithm, value in info.checksums.items():
        headers[header_name(algorithm)] = value
        headers["x-amz-checksum-type"] = "FULL_OBJECT"
    return web.Response(status=200, headers=headers)
