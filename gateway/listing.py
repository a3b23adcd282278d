"""ListObjects (v1) and ListObjectsV2 over the engine's merged LMDB scans."""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from storaged import ObjectInfo

from . import s3xml
from .bucket import bucket_owner_xml, xml_response
from .errors import InvalidArgument
from .request import Context


def max_keys_param(ctx: Context) -> int:
    raw = ctx.query.get("max-keys", "1000")
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument("Provided max-keys not an integer or within integer range",
                              ArgumentName="max-keys", ArgumentValue=raw) from None
    if value < 0:
        raise InvalidArgument("Argument maxKeys must be an integer between 0 and 2147483647",
                              ArgumentName="max-keys", ArgumentValue=raw)
    return min(value, 1000)


def encoding_param(ctx: Context) -> str | None:
    value = ctx.query.get("encoding-type")
    if value is not None and value.lower() != "url":
        raise InvalidArgument("Invalid Encoding Method specified in Request",
                              ArgumentName="encoding-type", ArgumentValue=value)
    return value.lower() if value else None


def object_entry(info: ObjectInfo, owner: s3xml.Owner | None) -> s3xml.ObjectEntry:
    algorithm = next(iter(info.checksums), None)
    return s3xml.ObjectEntry(
        key=info.key, size=info.size, etag=info.etag, last_modified=info.last_modified,
        storage_class=info.headers.get("x-amz-storage-class", "STANDARD"), owner=owner,
        checksum_algorithm=algorithm,
        checksum_type=(info.checksum_type or "FULL_OBJECT") if algorithm else None)


def encode_token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode()).decode()


def decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("The continuation token provided is incorrect",
                              ArgumentName="continuation-token") from None


async def list_objects(ctx: Context) -> web.Response:
    q = ctx.query
    prefix, delimiter, marker = q.get("prefix", ""), q.get("delimiter", ""), q.get("marker", "")
    max_keys, encoding = max_keys_param(ctx), encoding_param(ctx)
    page = await ctx.store.list_objects(ctx.bucket, prefix, delimiter, marker, max_keys)
    owner = await bucket_owner_xml(ctx)
    body = s3xml.list_objects_v1(
        ctx.bucket, [object_entry(o, owner) for o in page.objects], page.prefixes, prefix=prefix,
        marker=marker, max_keys=max_keys, delimiter=delimiter or None,
        is_truncated=page.truncated,
        next_marker=page.next_marker if page.truncated and delimiter else None,
        encoding_type=encoding)
    return xml_response(body)


async def list_objects_v2(ctx: Context) -> web.Response:
    q = ctx.query
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    max_keys, encoding = max_keys_param(ctx), encoding_param(ctx)
    token = q.get("continuation-token")
    start_after = q.get("start-after")
    after = decode_token(token) if token is not None else (start_after or "")
    fetch_owner = q.get("fetch-owner", "false").lower() == "true"
    page = await ctx.store.list_objects(ctx.bucket, prefix, delimiter, after, max_keys)
    owner = await bucket_owner_xml(ctx) if fetch_owner else None
    body = s3xml.list_objects_v2(
        ctx.bucket, [object_entry(o, owner) for o in page.objects], page.prefixes, prefix=prefix,
        max_keys=max_keys, delimiter=delimiter or None, is_truncated=page.truncated,
        continuation_token=token,
        next_continuation_token=encode_token(page.next_marker) if page.truncated else None,
        start_after=start_after, encoding_type=encoding, fetch_owner=fetch_owner)
    return xml_response(body)
