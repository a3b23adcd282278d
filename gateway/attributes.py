"""GetObjectAttributes: the attributes ``x-amz-object-attributes`` names, of one version.

The ETag comes without quotes, as S3 writes it here; ``Checksum`` only when the
object has one; ``ObjectParts`` only for an object uploaded in parts, and its
``Part`` list (paged by ``x-amz-max-parts`` and ``x-amz-part-number-marker``) only
when the parts carry checksums — otherwise S3 answers the part count alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from storaged.errors import DeleteMarker

from . import conditions, sse, sse_objects
from .bucket import xml_response
from .errors import InvalidArgument, NoSuchKey
from .request import Context, version_param
from .s3xml import _document, _el
from .versioning import version_headers

ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")
ATTRIBUTES_HEADER = "x-amz-object-attributes"
MAX_PARTS = 1000
_CHECKSUM_ELEMENTS = {"CRC32": "ChecksumCRC32", "CRC32C": "ChecksumCRC32C",
                      "CRC64NVME": "ChecksumCRC64NVME", "SHA1": "ChecksumSHA1",
                      "SHA256": "ChecksumSHA256"}


def parse_object_attributes(values: Iterable[str]) -> set[str]:
    """The attribute names of the ``x-amz-object-attributes`` header(s), comma-separated.

    None named, or a name S3 does not know (they are case-sensitive): InvalidArgument.
    """
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    for name in names or [""]:
        if name not in ATTRIBUTES:
            raise InvalidArgument("Invalid attribute name specified.", ArgumentName=ATTRIBUTES_HEADER,
                                  ArgumentValue=name)
    return set(names)


def _integer_header(headers: Mapping[str, str], name: str, default: int) -> int:
    raw = headers.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or int(text) > 2**31 - 1:
        raise InvalidArgument(f"Provided {name} not an integer or within integer range",
                              ArgumentName=name, ArgumentValue=raw)
    return int(text)


def parts_paging(headers: Mapping[str, str]) -> tuple[int, int]:
    """(max parts, part number marker) of ``x-amz-max-parts`` and ``x-amz-part-number-marker``."""
    max_parts = min(_integer_header(headers, "x-amz-max-parts", MAX_PARTS), MAX_PARTS)
    return max_parts, _integer_header(headers, "x-amz-part-number-marker", 0)


def _checksum_elements(sums: Mapping[str, str] | None) -> str:
    """The checksum elements; a composite checksum without its ``-N`` part count (base64 has
    no "-"): GetObjectAttributes answers it so, where HeadObject and CompleteMultipartUpload
    keep the suffix."""
    out = []
    for algorithm, value in (sums or {}).items():
        element = _CHECKSUM_ELEMENTS.get(algorithm.upper())
        if element is not None:
            out.append(_el(element, value.split("-", 1)[0]))
    return "".join(out)


def is_multipart(info: Any) -> bool:
    return "-" in info.etag or len(getattr(info, "parts", ())) > 1


def _object_parts(info: Any, max_parts: int, marker: int) -> str:
    parts = sorted(getattr(info, "parts", ()), key=lambda p: p.number)
    count = _el("PartsCount", len(parts))
    if not any(p.checksums for p in parts):
        return f"<ObjectParts>{count}</ObjectParts>"
    after = [p for p in parts if p.number > marker]
    page, truncated = after[:max_parts], len(after) > max_parts
    items = "".join("<Part>" + _el("PartNumber", p.number) + _el("Size", p.size)
                    + _checksum_elements(p.checksums) + "</Part>" for p in page)
    return ("<ObjectParts>" + count + _el("PartNumberMarker", marker)
            + (_el("NextPartNumberMarker", page[-1].number) if truncated and page else "")
            + _el("MaxParts", max_parts) + _el("IsTruncated", truncated) + items + "</ObjectParts>")


def render_attributes(info: Any, wanted: Iterable[str], *, max_parts: int = MAX_PARTS,
                      part_number_marker: int = 0) -> bytes:
    """The GetObjectAttributes document for an object version (``info`` as ObjectInfo)."""
    wanted = set(wanted)
    body = []
    if "ETag" in wanted:
        body.append(_el("ETag", info.etag.strip('"')))
    if "Checksum" in wanted and info.checksums:
        body.append("<Checksum>" + _checksum_elements(info.checksums)
                    + _el("ChecksumType", info.checksum_type or "FULL_OBJECT") + "</Checksum>")
    if "ObjectParts" in wanted and is_multipart(info):
        body.append(_object_parts(info, max_parts, part_number_marker))
    if "StorageClass" in wanted:
        body.append(_el("StorageClass", info.headers.get("x-amz-storage-class") or "STANDARD"))
    if "ObjectSize" in wanted:
        body.append(_el("ObjectSize", info.size))
    return _document("GetObjectAttributesResponse", body)


async def get_object_attributes(ctx: Context) -> web.Response:
    """GET /{bucket}/{key}?attributes[&versionId=]"""
    wanted = parse_object_attributes(ctx.headers.getall(ATTRIBUTES_HEADER, []))
    max_parts, marker = parts_paging(ctx.headers)
    try:
        info = await ctx.store.head_object(ctx.bucket, ctx.key, version_param(ctx))
    except DeleteMarker as exc:
        if exc.by_id:
            raise
        raise NoSuchKey(headers={"x-amz-delete-marker": "true",
                                 "x-amz-version-id": exc.version_id}) from None
    # An SSE-C object's attributes need its key, as its HEAD does (AWS); other
    # encrypted objects' need no key (nothing here is decrypted).
    if not info.encryption or sse.Encryption.from_json(info.encryption).is_customer:
        await sse_objects.object_key(ctx, info.encryption, ctx.bucket, ctx.key)
    resp = xml_response(render_attributes(info, wanted, max_parts=max_parts,
                                          part_number_marker=marker))
    resp.headers["Last-Modified"] = conditions.http_date(info.last_modified)
    resp.headers.update(await version_headers(ctx, info))
    return resp
