"""CopyObject: server-side copy with metadata directive and copy-source conditions."""

from __future__ import annotations

from urllib.parse import unquote

from aiohttp import web

from storaged import ObjectAttrs, ObjectInfo

from . import checksums, conditions, s3xml
from .bucket import xml_response
from .errors import InvalidArgument, InvalidRequest
from .put import write_condition
from .request import MAX_KEY_BYTES, Context, object_attrs

MAX_COPY_SIZE = 5 << 30


def parse_copy_source(value: str) -> tuple[str, str]:
    """``/bucket/key`` or ``bucket/key`` (URL-encoded, maybe ``?versionId=``)."""
    path, _, query = value.partition("?")
    if query and not query.startswith("versionId="):
        raise InvalidArgument("Invalid copy source", ArgumentName="x-amz-copy-source")
    path = unquote(path)
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket or not key or len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidArgument("Copy Source must mention the source bucket and key: "
                              "sourcebucket/sourcekey", ArgumentName="x-amz-copy-source",
                              ArgumentValue=value)
    return bucket, key


def copy_source(ctx: Context) -> tuple[str, str, ObjectInfo]:
    """The copy source named by the request, its conditions checked (412 otherwise)."""
    bucket, key = parse_copy_source(ctx.headers["x-amz-copy-source"])
    info = ctx.store.head_object(bucket, key)
    conditions.check(ctx.headers, info, prefix="x-amz-copy-source-if-")
    return bucket, key, info


def _kept_checksums(source: ObjectInfo) -> dict[str, str]:
    # A full-object checksum still describes the copied bytes; a composite one
    # described the source's parts, which the copy does not have.
    return dict(source.checksums) if source.checksum_type in ("", "FULL_OBJECT") else {}


async def copy_object(ctx: Context) -> web.Response:
    src_bucket, src_key, source = copy_source(ctx)
    directive = ctx.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise InvalidArgument("Unknown metadata directive.",
                              ArgumentName="x-amz-metadata-directive", ArgumentValue=directive)
    if (src_bucket, src_key) == (ctx.bucket, ctx.key) and directive == "COPY" \
            and "x-amz-storage-class" not in ctx.headers:
        raise InvalidRequest(
            "This copy request is illegal because it is trying to copy an object to itself "
            "without changing the object's metadata, storage class, website redirect location "
            "or encryption attributes.")
    if source.size > MAX_COPY_SIZE:
        raise InvalidRequest("The specified copy source is larger than the maximum allowable "
                             f"size for a copy source: {MAX_COPY_SIZE}")
    if directive == "REPLACE":
        attrs = object_attrs(ctx.headers)
    else:
        attrs = ObjectAttrs(source.content_type, dict(source.headers), dict(source.user_meta))
    wanted = ctx.headers.get("x-amz-checksum-algorithm")
    hashers, keep = [], _kept_checksums(source)
    if wanted:
        algorithm = checksums.normalize_algorithm(wanted)
        hasher = checksums.new_hasher(algorithm)
        hashers = [hasher]
        finalize = lambda md5: {algorithm: checksums.b64(hasher.digest())}  # noqa: E731
    else:
        finalize = lambda md5: keep  # noqa: E731
    reader = await ctx.store.get_object(src_bucket, src_key, info=source)
    try:
        info = await ctx.store.put_object(ctx.bucket, ctx.key, reader, size=source.size,
                                          attrs=attrs, hashers=hashers, finalize=finalize,
                                          condition=write_condition(ctx))
    finally:
        await reader.aclose()
    body = s3xml.copy_object_result(info.etag, info.last_modified,
                                    checksums=info.checksums or None,
                                    checksum_type="FULL_OBJECT" if info.checksums else None)
    return xml_response(body)
