"""DeleteObject and DeleteObjects."""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import web

from storaged import StorageError

from . import checksums, s3xml
from .bucket import xml_response
from .errors import InvalidRequest, MalformedXML, S3Error, checksum_mismatch
from .failures import s3_error
from .request import MAX_KEY_BYTES, Context


async def delete_object(ctx: Context) -> web.Response:
    await ctx.store.delete_object(ctx.bucket, ctx.key)
    return web.Response(status=204)


async def _body_verified(ctx: Context) -> bytes:
    length = ctx.request.content_length
    if length is not None and length > s3xml.MAX_BODY_SIZE:
        raise MalformedXML()
    body = await ctx.request.read()
    if len(body) > s3xml.MAX_BODY_SIZE:
        raise MalformedXML()
    md5 = checksums.content_md5(ctx.headers)
    if md5 is not None:
        checksums.verify_content_md5(md5, hashlib.md5(body).digest())
    declared = checksums.requested_checksum(ctx.headers)
    if declared is not None and declared.expected is not None:
        if checksums.checksum(declared.algorithm, body) != declared.expected:
            raise checksum_mismatch(declared.algorithm)
    if md5 is None and declared is None:
        raise InvalidRequest("Missing required header for this request: Content-MD5")
    return body


async def delete_objects(ctx: Context) -> web.Response:
    request = s3xml.parse_delete(await _body_verified(ctx))
    ctx.store.require_bucket(ctx.bucket)
    deleted: list[s3xml.DeletedEntry] = []
    errors: list[s3xml.DeleteErrorEntry] = []

    async def one(key: str) -> None:
        if len(key.encode()) > MAX_KEY_BYTES:
            errors.append(s3xml.DeleteErrorEntry(key, "KeyTooLongError", "Your key is too long"))
            return
        try:
            await ctx.store.delete_object(ctx.bucket, key)
        except (StorageError, S3Error) as exc:
            err = s3_error(exc)
            errors.append(s3xml.DeleteErrorEntry(key, err.code, err.message))
        else:
            deleted.append(s3xml.DeletedEntry(key))

    keys = [o.key for o in request.objects]
    for start in range(0, len(keys), 64):  # bounded parallelism
        await asyncio.gather(*(one(k) for k in keys[start:start + 64]))
    order = {k: i for i, k in enumerate(keys)}
    deleted.sort(key=lambda d: order[d.key])
    return xml_response(s3xml.delete_result(deleted, errors, quiet=request.quiet))
