"""DeleteObject and DeleteObjects."""

from __future__ import annotations

import asyncio

from aiohttp import web

from storaged import StorageError
from storaged.store import DeleteResult

from . import access, s3xml
from .bucket import xml_response
from .errors import S3Error
from .failures import s3_error
from .object_lock import bypass_governance
from .request import MAX_KEY_BYTES, Context, check_version_id, version_param
from .router import Route
from .verified_body import verified_body


def _result_headers(result: DeleteResult) -> dict[str, str]:
    headers = {}
    if result.version_id is not None:
        headers["x-amz-version-id"] = result.version_id
    if result.delete_marker:
        headers["x-amz-delete-marker"] = "true"
    return headers


async def delete_object(ctx: Context) -> web.Response:
    result = await ctx.store.delete_object(
        ctx.bucket, ctx.key, version_param(ctx),
        bypass_governance=await bypass_governance(ctx.store, ctx.bucket, ctx.headers))
    return web.Response(status=204, headers=_result_headers(result))


async def delete_objects(ctx: Context) -> web.Response:
    request = s3xml.parse_delete(await verified_body(ctx))
    await ctx.store.require_bucket(ctx.bucket)
    deleted: list[s3xml.DeletedEntry] = []
    errors: list[s3xml.DeleteErrorEntry] = []

    bypass = await bypass_governance(ctx.store, ctx.bucket, ctx.headers)

    async def one(index: int, key: str, version: str | None) -> None:
        if len(key.encode()) > MAX_KEY_BYTES:
            errors.append(s3xml.DeleteErrorEntry(key, "KeyTooLongError", "Your key is too long",
                                                 version))
            return
        try:
            if version is not None:
                check_version_id(version)
            # Each key is judged as its own DeleteObject (DeleteObjectVersion).
            await access.check(ctx.store, ctx.request["directory"], ctx.request,
                               Route("DeleteObject", ctx.bucket, key), ctx.principal,
                               "s3:DeleteObjectVersion" if version is not None
                               else "s3:DeleteObject")
            result = await ctx.store.delete_object(ctx.bucket, key, version,
                                                   bypass_governance=bypass)
        except (StorageError, S3Error) as exc:
            err = s3_error(exc)
            errors.append(s3xml.DeleteErrorEntry(key, err.code, err.message, version))
        else:
            marker_id = result.version_id if result.delete_marker else None
            deleted.append(s3xml.DeletedEntry(key, version, result.delete_marker, marker_id))
            order[id(deleted[-1])] = index

    objects = [(i, o.key, o.version_id) for i, o in enumerate(request.objects)]
    order: dict[int, int] = {}
    for start in range(0, len(objects), 64):  # bounded parallelism
        await asyncio.gather(*(one(*o) for o in objects[start:start + 64]))
    deleted.sort(key=lambda d: order[id(d)])
    return xml_response(s3xml.delete_result(deleted, errors, quiet=request.quiet))
