"""Multipart uploads: create, upload part (and part copy), complete, abort, list."""

from __future__ import annotations

import base64
import re

from aiohttp import web

from storaged import PartRecord, Seal, UploadInfo

from . import checksums, quota, s3xml, sse, sse_objects
from .bucket import bucket_owner_xml, xml_response
from .copy import copy_source, source_reader
from .errors import InvalidArgument, InvalidPart, InvalidRequest, MalformedXML, checksum_mismatch
from .listing import encoding_param
from .object_lock import has_integrity_header
from .put import upload_attrs, write_condition
from .request import Context, Payload, part_number
from .versioning import version_headers

MAX_PART_SIZE = 5 << 30
_COPY_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")


def _upload_headers(upload: UploadInfo) -> dict[str, str]:
    if not upload.checksum_algorithm:
        return {}
    return {"x-amz-checksum-algorithm": upload.checksum_algorithm,
            "x-amz-checksum-type": upload.checksum_type}


def _int_param(ctx: Context, name: str, default: int, limit: int) -> int:
    raw = ctx.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidArgument(f"Argument {name} must be a non-negative integer",
                              ArgumentName=name, ArgumentValue=raw)
    return min(value, limit)


async def create_multipart_upload(ctx: Context) -> web.Response:
    attrs = await upload_attrs(ctx, with_body=False)
    algorithm = ctx.headers.get("x-amz-checksum-algorithm", "")
    kind = ""
    if algorithm:
        algorithm = checksums.normalize_algorithm(algorithm)
        kind = checksums.multipart_checksum_type(algorithm, ctx.headers.get("x-amz-checksum-type"))
    elif ctx.headers.get("x-amz-checksum-type"):
        raise InvalidRequest("x-amz-checksum-type requires x-amz-checksum-algorithm")
    sealing = await sse_objects.for_write(ctx)
    if sealing is not None:  # one object key for every part (stream = part number)
        attrs = sealing.attrs(attrs)
    upload = await ctx.store.create_upload(ctx.bucket, ctx.key, attrs, algorithm, kind)
    return web.Response(body=s3xml.initiate_multipart_upload_result(ctx.bucket, ctx.key,
                                                                    upload.upload_id),
                        content_type="application/xml",
                        headers={**_upload_headers(upload), **_sse_headers(upload)})


def _sse_headers(upload: UploadInfo) -> dict[str, str]:
    return sse_objects.response_headers(encryption=upload.attrs.encryption)


async def _part_seal(ctx: Context, upload: UploadInfo, number: int) -> Seal | None:
    """The Seal of part ``number`` of an encrypted upload (SSE-C: the request
    carries the upload's key, as AWS requires on every part)."""
    key = await sse_objects.object_key(ctx, upload.attrs.encryption, ctx.bucket, ctx.key)
    if key is None:
        return None
    return sse_objects.Sealing(sse.Encryption.from_json(upload.attrs.encryption),
                               key).seal_part(number)


def _part_response(part: PartRecord) -> dict[str, str]:
    headers = {"ETag": f'"{part.etag}"'}
    for algorithm, value in part.checksums.items():
        headers[checksums.header_name(algorithm)] = value
    return headers


def _part_checksum(upload: UploadInfo, payload: Payload) -> None:
    """The upload's checksum algorithm applies to every part: compute it when the
    client sent none; refuse a part declaring a different one."""
    if not upload.checksum_algorithm:
        return
    if payload.checksum is None:
        algorithm = upload.checksum_algorithm
        hasher = checksums.new_hasher(algorithm)
        payload.hashers.append(hasher)
        finalize = payload.finalize

        def with_checksum(md5_hex: str) -> dict[str, str]:
            return {**finalize(md5_hex), algorithm: checksums.b64(hasher.digest())}
        payload.finalize = with_checksum  # type: ignore[method-assign]
    elif payload.checksum.algorithm != upload.checksum_algorithm:
        raise InvalidRequest(f"Checksum Type mismatch occurred, expected checksum Type: "
                             f"{upload.checksum_algorithm.lower()}, actual checksum Type: "
                             f"{payload.checksum.algorithm.lower()}")


async def upload_part(ctx: Context) -> web.Response:
    number = part_number(ctx)
    upload = await ctx.store.get_upload(ctx.bucket, ctx.key, ctx.query.get("uploadId", ""))
    if (upload.attrs.lock_mode or upload.attrs.legal_hold) and not has_integrity_header(ctx.headers):
        raise InvalidRequest("Content-MD5 OR x-amz-checksum- HTTP header is required for Put Part "
                             "requests with Object Lock parameters")
    seal = await _part_seal(ctx, upload, number)
    payload = Payload(ctx, max_size=MAX_PART_SIZE)
    _part_checksum(upload, payload)
    part = await ctx.store.upload_part(
        ctx.bucket, ctx.key, upload.upload_id, number, payload.stream, size=payload.size,
        content_md5=payload.content_md5, hashers=payload.hashers, finalize=payload.finalize,
        seal=seal, upload=upload)
    ctx.request["bytes_in"] = part.size
    return web.Response(status=200, headers={**_part_response(part), **_sse_headers(upload)})


async def upload_part_copy(ctx: Context) -> web.Response:
    number = part_number(ctx)
    upload = await ctx.store.get_upload(ctx.bucket, ctx.key, ctx.query.get("uploadId", ""))
    src_bucket, src_key, source = await copy_source(ctx)
    offset, length = 0, source.size
    rng = ctx.headers.get("x-amz-copy-source-range")
    if rng is not None:
        m = _COPY_RANGE.match(rng.strip())
        if not m or int(m.group(1)) > int(m.group(2)) or int(m.group(2)) >= source.size:
            raise InvalidArgument(f"Range specified is not valid for source object of size: "
                                  f"{source.size}", ArgumentName="x-amz-copy-source-range",
                                  ArgumentValue=rng)
        offset, length = int(m.group(1)), int(m.group(2)) - int(m.group(1)) + 1
    if length > MAX_PART_SIZE:
        raise InvalidRequest("The specified copy source is larger than the maximum allowable "
                             f"size for a copy source: {MAX_PART_SIZE}")
    hashers, finalize = [], None
    if upload.checksum_algorithm:
        algorithm = upload.checksum_algorithm
        hasher = checksums.new_hasher(algorithm)
        hashers = [hasher]
        finalize = lambda md5: {algorithm: checksums.b64(hasher.digest())}  # noqa: E731
    seal = await _part_seal(ctx, upload, number)
    reader = await source_reader(ctx, src_bucket, src_key, source, offset, length)
    try:
        part = await ctx.store.upload_part(ctx.bucket, ctx.key, upload.upload_id, number, reader,
                                           size=length, hashers=hashers, finalize=finalize,
                                           seal=seal, upload=upload)
    finally:
        await reader.aclose()
    body = s3xml.copy_part_result(part.etag, part.mtime_ns / 1e9,
                                  checksums=part.checksums or None)
    response = xml_response(body)
    response.headers.update(_sse_headers(upload))
    return response


def _composer(upload: UploadInfo, requested: dict[int, dict[str, str]], full: bytes | None):
    """The checksum of the whole object from its parts' (COMPOSITE or FULL_OBJECT)."""
    def compose(parts: list[PartRecord]) -> dict[str, str]:
        algorithm = upload.checksum_algorithm
        for part in parts:
            for alg, value in requested.get(part.number, {}).items():
                if part.checksums.get(alg.upper()) != value:
                    raise InvalidPart(f"The checksum of part {part.number} does not match "
                                      "the one uploaded", PartNumber=part.number)
        if not algorithm:
            return {}
        digests = [base64.b64decode(p.checksums[algorithm]) for p in parts]
        if upload.checksum_type == checksums.FULL_OBJECT:
            digest = checksums.full_object_checksum(
                algorithm, [(d, p.size) for d, p in zip(digests, parts)])
            if full is not None and full != digest:
                raise checksum_mismatch(algorithm)
            return {algorithm: checksums.b64(digest)}
        return {algorithm: checksums.composite_checksum(algorithm, digests)}
    return compose


async def complete_multipart_upload(ctx: Context) -> web.Response:
    body = await ctx.request.read()
    upload = await ctx.store.get_upload(ctx.bucket, ctx.key, ctx.query.get("uploadId", ""))
    chosen = s3xml.parse_complete_multipart_upload(body)
    if not chosen:
        raise MalformedXML()
    full = None
    if upload.checksum_algorithm:
        value = ctx.headers.get(checksums.header_name(upload.checksum_algorithm))
        if value is not None and upload.checksum_type == checksums.FULL_OBJECT:
            full = checksums.parse_checksum_value(upload.checksum_algorithm, value)
    requested = {p.part_number: p.checksums for p in chosen}
    async with quota.admit(ctx, lambda: quota.upload_size(ctx.store, ctx.bucket, ctx.key,
                                                          upload.upload_id, set(requested))):
        info = await ctx.store.complete_upload(
            ctx.bucket, ctx.key, upload.upload_id, [(p.part_number, p.etag) for p in chosen],
            finalize=_composer(upload, requested, full), checksum_type=upload.checksum_type,
            condition=write_condition(ctx))
    location = f"{ctx.request.scheme}://{ctx.request.host}/{ctx.bucket}/{ctx.key}"
    response = xml_response(s3xml.complete_multipart_upload_result(
        location, ctx.bucket, ctx.key, info.etag, checksums=info.checksums or None,
        checksum_type=info.checksum_type or None))
    response.headers.update(await version_headers(ctx, info))
    response.headers.update(sse_objects.response_headers(info))
    return response


async def abort_multipart_upload(ctx: Context) -> web.Response:
    await ctx.store.abort_upload(ctx.bucket, ctx.key, ctx.query.get("uploadId", ""))
    return web.Response(status=204)


async def list_parts(ctx: Context) -> web.Response:
    upload = await ctx.store.get_upload(ctx.bucket, ctx.key, ctx.query.get("uploadId", ""))
    marker = _int_param(ctx, "part-number-marker", 0, 10000)
    max_parts = _int_param(ctx, "max-parts", 1000, 1000)
    parts, truncated = await ctx.store.list_parts(ctx.bucket, ctx.key, upload.upload_id, marker,
                                            max_parts)
    entries = [s3xml.PartEntry(p.number, p.size, p.etag, p.mtime_ns / 1e9, p.checksums)
               for p in parts]
    owner = await bucket_owner_xml(ctx)
    return xml_response(s3xml.list_parts_result(
        ctx.bucket, ctx.key, upload.upload_id, entries, part_number_marker=marker,
        next_part_number_marker=parts[-1].number if parts else None, max_parts=max_parts,
        is_truncated=truncated, initiator=owner, owner=owner,
        checksum_algorithm=upload.checksum_algorithm or None,
        checksum_type=upload.checksum_type or None))


async def list_multipart_uploads(ctx: Context) -> web.Response:
    q = ctx.query
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    key_marker, id_marker = q.get("key-marker", ""), q.get("upload-id-marker", "")
    max_uploads = _int_param(ctx, "max-uploads", 1000, 1000)
    encoding = encoding_param(ctx)
    page = await ctx.store.list_uploads(ctx.bucket, prefix=prefix, delimiter=delimiter,
                                  key_marker=key_marker, upload_id_marker=id_marker,
                                  max_uploads=max_uploads)
    owner = await bucket_owner_xml(ctx)
    entries = [s3xml.UploadEntry(u.key, u.upload_id, u.initiated_ns / 1e9, owner=owner,
                                 initiator=owner,
                                 checksum_algorithm=u.checksum_algorithm or None,
                                 checksum_type=u.checksum_type or None) for u in page.uploads]
    return xml_response(s3xml.list_multipart_uploads_result(
        ctx.bucket, entries, page.prefixes, key_marker=key_marker, upload_id_marker=id_marker,
        next_key_marker=page.next_key or None, next_upload_id_marker=page.next_upload_id or None,
        max_uploads=max_uploads, is_truncated=page.truncated, prefix=prefix,
        delimiter=delimiter or None, encoding_type=encoding))
