"""Object and bucket tags: the Tagging document, the x-amz-tagging header, the handlers.

S3's limits: up to 10 tags on an object and 50 on a bucket, unique keys of 1 to
128 and values of 0 to 256 Unicode characters (counted in UTF-16, as S3 stores
them), made of letters, digits, white space and ``_ . : / = + - @``, and no key
in the reserved ``aws:`` prefix. An object over the count is ``BadRequest``, as
S3 answers it; everything else wrong with a tag is ``InvalidTag``, and a header
that is not URL query parameters without duplicates is ``InvalidArgument``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

import msgpack
from aiohttp import web

from .bucket import xml_response
from .errors import BadRequest, InvalidArgument, InvalidTag, MalformedXML, NoSuchTagSet, xml_text
from .object_lock import read_verified_body
from .request import Context, version_param
from .s3xml import _children, _document, _parse, _text
from .versioning import version_headers

OBJECT_TAG_LIMIT = 10
BUCKET_TAG_LIMIT = 50
MAX_KEY = 128
MAX_VALUE = 256
_SYMBOLS = frozenset("_.:/=+-@")
_HEADER_MESSAGE = ("The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query "
                   "parameters without tag name duplicates.")


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _allowed(text: str) -> bool:
    return all(c in _SYMBOLS or unicodedata.category(c)[0] in "LNZ" for c in text)


def validate_tags(tags: Mapping[str, str], limit: int = OBJECT_TAG_LIMIT) -> None:
    """Raise S3's error for a tag set over ``limit`` or with a key or value it refuses.

    A limit above an object's (10) means a bucket's tags.
    """
    bucket = limit > OBJECT_TAG_LIMIT
    if len(tags) > limit:
        if not bucket:
            raise BadRequest(f"Object tags cannot be greater than {limit}")
        raise InvalidTag(f"Bucket tag count cannot be greater than {limit}")
    for key, value in tags.items():
        if not 1 <= _utf16_length(key) <= MAX_KEY or not _allowed(key):
            raise InvalidTag("The TagKey you have provided is invalid")
        if _utf16_length(value) > MAX_VALUE or not _allowed(value):
            raise InvalidTag("The TagValue you have provided is invalid")
        if key.lower().startswith("aws:"):
            if not bucket:
                raise InvalidTag("Your TagKey cannot be prefixed with aws:")
            raise InvalidTag("System tags cannot be added/updated by requester")


def parse_tagging(body: bytes, limit: int = OBJECT_TAG_LIMIT) -> dict[str, str]:
    """The tags of a Tagging body (``<Tagging><TagSet><Tag><Key/><Value/></Tag>...``)."""
    root = _parse(body, "Tagging")
    if root is None:
        raise MalformedXML()
    sets = _children(root, "TagSet")
    if len(sets) != 1:
        raise MalformedXML()
    tags: dict[str, str] = {}
    for tag in _children(sets[0], "Tag"):
        key, value = _text(tag, "Key", required=True), _text(tag, "Value", required=True)
        assert key is not None and value is not None
        if key in tags:
            raise InvalidTag("Cannot provide multiple Tags with the same key")
        tags[key] = value
    validate_tags(tags, limit)
    return tags


def tags_from_header(value: str, limit: int = OBJECT_TAG_LIMIT) -> dict[str, str]:
    """The tags of an ``x-amz-tagging`` header (``k1=v1&k2=v2``, URL query encoded).

    A key without ``=`` has the empty value; ``+`` is a space, as in a form.
    """
    tags: dict[str, str] = {}
    for pair in value.split("&"):
        if not pair:
            continue
        if pair.count("=") > 1:
            raise InvalidArgument(_HEADER_MESSAGE, ArgumentName="x-amz-tagging", ArgumentValue=value)
        raw_key, _, raw_value = pair.partition("=")
        try:
            key = unquote_plus(raw_key, errors="strict")
            val = unquote_plus(raw_value, errors="strict")
        except UnicodeDecodeError:
            raise InvalidArgument(_HEADER_MESSAGE, ArgumentName="x-amz-tagging",
                                  ArgumentValue=value) from None
        if key in tags:
            raise InvalidArgument(_HEADER_MESSAGE, ArgumentName="x-amz-tagging", ArgumentValue=value)
        tags[key] = val
    validate_tags(tags, limit)
    return tags


def tags_for_copy(headers: Mapping[str, str], source_tags: Mapping[str, str]) -> dict[str, str]:
    """CopyObject's tags: the source's (``x-amz-tagging-directive: COPY``, the default) or
    the ``x-amz-tagging`` header's (``REPLACE``)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    directive = lowered.get("x-amz-tagging-directive", "COPY")
    if directive not in ("COPY", "REPLACE"):
        raise InvalidArgument(f"Unknown tagging directive: {directive}",
                              ArgumentName="x-amz-tagging-directive", ArgumentValue=directive)
    if directive == "COPY":
        return dict(source_tags)
    return tags_from_header(lowered.get("x-amz-tagging", ""))


def tagging_count_header(info: Any) -> dict[str, str]:
    """``x-amz-tagging-count`` of GetObject and HeadObject (absent without tags)."""
    tags = getattr(info, "tags", None) or {}
    return {"x-amz-tagging-count": str(len(tags))} if tags else {}


def render_tagging(tags: Mapping[str, str]) -> bytes:
    """The Tagging document of GetObjectTagging and GetBucketTagging (tags in key order)."""
    items = "".join(f"<Tag><Key>{xml_text(k)}</Key><Value>{xml_text(tags[k])}</Value></Tag>"
                    for k in sorted(tags))
    return _document("Tagging", ("<TagSet>", items, "</TagSet>"))


# --- handlers ----------------------------------------------------------------------------

async def put_object_tagging(ctx: Context) -> web.Response:
    """PUT /{bucket}/{key}?tagging[&versionId=]"""
    version_id = version_param(ctx)
    tags = parse_tagging(await read_verified_body(ctx))
    info = await ctx.store.update_object(ctx.bucket, ctx.key, version_id, tags=tags)
    return web.Response(status=200, headers=await version_headers(ctx, info))


async def get_object_tagging(ctx: Context) -> web.Response:
    """GET /{bucket}/{key}?tagging[&versionId=]"""
    info = await ctx.store.head_object(ctx.bucket, ctx.key, version_param(ctx))
    resp = xml_response(render_tagging(getattr(info, "tags", None) or {}))
    resp.headers.update(await version_headers(ctx, info))
    return resp


async def delete_object_tagging(ctx: Context) -> web.Response:
    """DELETE /{bucket}/{key}?tagging[&versionId=]"""
    info = await ctx.store.update_object(ctx.bucket, ctx.key, version_param(ctx), tags={})
    return web.Response(status=204, headers=await version_headers(ctx, info))


async def put_bucket_tagging(ctx: Context) -> web.Response:
    """PUT /{bucket}?tagging"""
    await ctx.store.bucket_config(ctx.bucket, "tagging")  # NoSuchBucket first
    tags = parse_tagging(await read_verified_body(ctx), limit=BUCKET_TAG_LIMIT)
    await ctx.store.set_bucket_config(ctx.bucket, "tagging", msgpack.packb(tags) if tags else None)
    return web.Response(status=204)


async def bucket_tags(store: Any, bucket: str) -> dict[str, str]:
    raw = await store.bucket_config(bucket, "tagging")
    return dict(msgpack.unpackb(raw)) if raw else {}


async def get_bucket_tagging(ctx: Context) -> web.Response:
    """GET /{bucket}?tagging"""
    tags = await bucket_tags(ctx.store, ctx.bucket)
    if not tags:
        raise NoSuchTagSet(BucketName=ctx.bucket)
    return xml_response(render_tagging(tags))


async def delete_bucket_tagging(ctx: Context) -> web.Response:
    """DELETE /{bucket}?tagging"""
    await ctx.store.bucket_config(ctx.bucket, "tagging")  # NoSuchBucket
    await ctx.store.set_bucket_config(ctx.bucket, "tagging", None)
    return web.Response(status=204)
