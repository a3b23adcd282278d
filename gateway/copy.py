"""CopyObject: server-side copy with metadata directive and copy-source conditions."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from aiohttp import web

from storaged import DeleteMarker, ObjectInfo

from . import checksums, conditions, quota, s3xml, sse, sse_objects
from .bucket import xml_response
from .errors import InvalidArgument, InvalidRequest
from .put import upload_attrs, write_condition
from .request import MAX_KEY_BYTES, Context, check_version_id
from .versioning import version_headers

MAX_COPY_SIZE = 5 << 30


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """(bucket, key, version id) of ``/bucket/key`` or ``bucket/key`` (URL-encoded,
    maybe ``?versionId=``)."""
    path, _, query = value.partition("?")
    if query and not query.startswith("versionId="):
        raise InvalidArgument("Invalid copy source", ArgumentName="x-amz-copy-source")
    version = check_version_id(unquote(query[len("versionId="):]), "x-amz-copy-source") \
        if query else None
    path = unquote(path)
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket or not key or len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidArgument("Copy Source must mention the source bucket and key: "
                              "sourcebucket/sourcekey", ArgumentName="x-amz-copy-source",
                              ArgumentValue=value)
    return bucket, key, version


async def copy_source(ctx: Context) -> tuple[str, str, ObjectInfo]:
    """The copy source named by the request, its conditions checked (412 otherwise).

    A delete marker as source is InvalidRequest by version id, NoSuchKey as latest.
    (An encrypted source's key: :func:`source_reader`.)
    """
    bucket, key, version = parse_copy_source(ctx.headers["x-amz-copy-source"])
    try:
        info = await ctx.store.head_object(bucket, key, version)
    except DeleteMarker as exc:
        if exc.by_id:
            raise InvalidRequest("The source of a copy request may not specifically refer to "
                                 "a delete marker by version id.") from None
        raise
    conditions.check(ctx.headers, info, prefix="x-amz-copy-source-if-")
    return bucket, key, info


async def source_reader(ctx: Context, bucket: str, key: str, source: ObjectInfo,
                        offset: int = 0, length: int | None = None) -> Any:
    """The plaintext of a copy source (bytes ``offset .. offset+length``); an
    encrypted one opened with the x-amz-copy-source-server-side-encryption-
    customer-* headers where it needs them."""
    length = source.size - offset if length is None else length
    object_key = await sse_objects.object_key(ctx, source.encryption, bucket, key,
                                              sse.COPY_CUSTOMER)
    if object_key is not None:
        return sse_objects.plaintext(ctx.store, source, object_key, offset, length)
    return await ctx.store.get_object(bucket, key, offset, length, info=source)


def _kept_checksums(source: ObjectInfo) -> dict[str, str]:
    # A full-object checksum still describes the copied bytes; a composite one
    # described the source's parts, which the copy does not have.
    return dict(source.checksums) if source.checksum_type in ("", "FULL_OBJECT") else {}


async def copy_object(ctx: Context) -> web.Response:
    src_bucket, src_key, source = await copy_source(ctx)
    directive = ctx.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise InvalidArgument("Unknown metadata directive.",
                              ArgumentName="x-amz-metadata-directive", ArgumentValue=directive)
    # Copying a named version over its key is how a previous version is restored.
    requested = sse_objects.asked(ctx)
    if (src_bucket, src_key) == (ctx.bucket, ctx.key) and directive == "COPY" \
            and "x-amz-storage-class" not in ctx.headers and "?versionId=" not in \
            ctx.headers["x-amz-copy-source"] and requested is None:
        raise InvalidRequest(
            "This copy request is illegal because it is trying to copy an object to itself "
            "without changing the object's metadata, storage class, website redirect location "
            "or encryption attributes.")
    if source.size > MAX_COPY_SIZE:
        raise InvalidRequest("The specified copy source is larger than the maximum allowable "
                             f"size for a copy source: {MAX_COPY_SIZE}")
    attrs = await upload_attrs(ctx, source, copy_meta=directive == "COPY", with_body=False)
    sealing = await sse_objects.for_write(ctx, requested)
    if sealing is not None:
        attrs = sealing.attrs(attrs)
    wanted = ctx.headers.get("x-amz-checksum-algorithm")
    hashers, keep = [], _kept_checksums(source)
    if wanted:
        algorithm = checksums.normalize_algorithm(wanted)
        hasher = checksums.new_hasher(algorithm)
        hashers = [hasher]
        finalize = lambda md5: {algorithm: checksums.b64(hasher.digest())}  # noqa: E731
    else:
        finalize = lambda md5: keep  # noqa: E731
    reader = await source_reader(ctx, src_bucket, src_key, source)
    try:
        async with quota.admit(ctx, source.size):
            info = await ctx.store.put_object(ctx.bucket, ctx.key, reader, size=source.size,
                                              attrs=attrs, hashers=hashers, finalize=finalize,
                                              condition=write_condition(ctx),
                                              seal=sealing.seal() if sealing else None)
    finally:
        await reader.aclose()
    body = s3xml.copy_object_result(info.etag, info.last_modified,
                                    checksums=info.checksums or None,
                                    checksum_type="FULL_OBJECT" if info.checksums else None)
    response = xml_response(body)
    response.headers.update(await version_headers(ctx, info))
    response.headers.update(sse_objects.response_headers(info))
    if source.versioned or await ctx.store.versioning(src_bucket):
        response.headers["x-amz-copy-source-version-id"] = source.version
    return response
