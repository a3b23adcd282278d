"""Bucket versioning, ListObjectVersions and the ``versionId`` of object requests."""

from __future__ import annotations

from aiohttp import web

from storaged import ObjectInfo

from . import s3xml
from .bucket import bucket_owner_xml, xml_response
from .errors import InvalidArgument, MalformedXML
from .listing import encoding_param, max_keys_param, object_entry
from .request import Context, check_version_id


async def version_headers(ctx: Context, info: ObjectInfo) -> dict[str, str]:
    """``x-amz-version-id`` as S3 sends it: for every version of a bucket that has
    (or had) versioning, "null" included; never for an unversioned bucket."""
    if info.versioned or await ctx.store.versioning(info.bucket):
        return {"x-amz-version-id": info.version}
    return {}


async def get_bucket_versioning(ctx: Context) -> web.Response:
    await ctx.store.require_bucket(ctx.bucket)
    return xml_response(s3xml.versioning_configuration(await ctx.store.versioning(ctx.bucket)))


async def put_bucket_versioning(ctx: Context) -> web.Response:
    body = await ctx.request.read()
    if len(body) > s3xml.MAX_BODY_SIZE:
        raise MalformedXML()
    status = s3xml.parse_versioning(body)
    await ctx.store.require_bucket(ctx.bucket)
    if status is not None:
        await ctx.store.set_bucket_config(ctx.bucket, "versioning", status.encode())
    return web.Response(status=200)


async def list_object_versions(ctx: Context) -> web.Response:
    q = ctx.query
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    key_marker, version_marker = q.get("key-marker", ""), q.get("version-id-marker", "")
    max_keys, encoding = max_keys_param(ctx), encoding_param(ctx)
    if version_marker:
        if not key_marker:
            raise InvalidArgument("A version-id marker cannot be specified without a key marker.",
                                  ArgumentName="version-id-marker", ArgumentValue=version_marker)
        check_version_id(version_marker, "version-id-marker")
    page = await ctx.store.list_versions(ctx.bucket, prefix, delimiter, key_marker, version_marker,
                                   max_keys)
    versions = [s3xml.VersionEntry(object_entry(e.info, None), e.info.version, e.is_latest,
                                   e.info.delete_marker) for e in page.entries]
    body = s3xml.list_versions(
        ctx.bucket, versions, page.prefixes, prefix=prefix, key_marker=key_marker,
        version_id_marker=version_marker, max_keys=max_keys, delimiter=delimiter or None,
        is_truncated=page.truncated,
        next_key_marker=page.next_key_marker if page.truncated else None,
        next_version_id_marker=(page.next_version_marker or None) if page.truncated else None,
        encoding_type=encoding, owner=await bucket_owner_xml(ctx))
    return xml_response(body)
