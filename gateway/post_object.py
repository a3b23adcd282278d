"""POST Object: browser uploads through an HTML form with a signed policy.

The form is read as a stream (:mod:`gateway.form_data`): its fields up to the
file, then the file straight into the engine. Everything is judged before a
byte of the file is stored — the signature and the policy
(:mod:`gateway.post_policy`), access to the key as for PutObject, the object's
attributes — and the file's size while it streams (``finalize`` before the
commit), so a refused upload leaves no object.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from aiohttp import web
from defusedxml import ElementTree as SafeET
from multidict import CIMultiDict

from storaged import ObjectAttrs, ObjectInfo

from . import checksums, quota, sse_objects
from .acl import directory_of, new_object_acl
from .acl_xml import acl_headers
from .errors import (
    InvalidAccessKeyId,
    InvalidArgument,
    KeyTooLongError,
    MalformedXML,
    checksum_mismatch,
    xml_text,
)
from .form_data import Form, FormReader, boundary_of
from .lifecycle import expiration_header
from .object_lock import lock_for_write
from .post_policy import PostPolicy, form_credentials, missing_field, parse_policy, too_large
from .request import MAX_KEY_BYTES, MAX_PUT_SIZE, META_PREFIX, Context, object_attrs
from .router import Route
from .tagging import parse_tagging
from .versioning import version_headers

FILENAME = "${filename}"
# Fields that carry the signature: never rewritten with the file's name.
_AUTH_FIELDS = frozenset(("policy", "signature", "awsaccesskeyid", "x-amz-signature",
                          "x-amz-credential", "x-amz-algorithm", "x-amz-date",
                          "x-amz-security-token"))
SUCCESS_STATUSES = {"200": 200, "201": 201}
MAX_TRAILER = 64 * 1024  # read away after the file (keeps the connection); more: close it
_CLOSING = len(b"\r\n--") + len(b"--\r\n")


async def post_object(ctx: Context) -> web.StreamResponse:
    boundary = boundary_of(ctx.headers.get("Content-Type", ""))
    reader = FormReader(ctx.request.content, boundary)
    form = await reader.read_form()
    if not form.has_file:
        raise InvalidArgument("POST requires exactly one file upload per request.",
                              ArgumentName="file", ArgumentValue="0")
    fields = _with_filename(form)
    values = _by_name(fields)
    key = values.get("key", "")
    if not key:
        raise missing_field("key")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise KeyTooLongError()
    policy = await _authorize(ctx, fields, values, key)
    attrs, checksum = await _attributes(ctx, values)
    sealing = await sse_objects.for_write(ctx, sse_objects.asked(ctx, CIMultiDict(values)), key)
    if sealing is not None:
        attrs = sealing.attrs(attrs)

    limit = MAX_PUT_SIZE if policy is None or policy.max_size is None \
        else min(MAX_PUT_SIZE, policy.max_size)
    length = ctx.request.content_length

    def proposed() -> int:
        # The file's size when it is the last part (as forms send it); at least what came.
        if length is None:
            return reader.file_size
        return max(reader.file_size, length - reader.file_offset - len(boundary) - _CLOSING)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in reader.file():
            if reader.file_size > limit:
                raise too_large(proposed(), limit)
            yield chunk

    def finalize(md5_hex: str) -> dict[str, str]:
        if policy is not None:
            policy.check_size(reader.file_size)
        return checksum.finalize() if checksum is not None else {}

    # The file's size before it is read: what the request holds after the fields
    # (an upper bound), or without a length the policy's maximum (else unknown).
    expected = proposed() if length is not None else (
        policy.max_size if policy is not None and policy.max_size is not None else 0)
    async with quota.admit(ctx, min(expected, limit)):
        info = await ctx.store.put_object(ctx.bucket, key, body(), attrs=attrs,
                                          hashers=checksum.hashers if checksum else (),
                                          finalize=finalize,
                                          seal=sealing.seal() if sealing else None)
    ctx.request["bytes_in"] = info.size
    response = await _response(ctx, info, values)
    if not await reader.discard_rest(MAX_TRAILER):
        response.force_close()
    return response


def _with_filename(form: Form) -> list[tuple[str, str]]:
    """The fields, ``${filename}`` replaced by the file's name (when it has one)."""
    if form.filename is None:
        return list(form.fields)
    return [(name, value if name.lower() in _AUTH_FIELDS
             else value.replace(FILENAME, form.filename)) for name, value in form.fields]


def _by_name(fields: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Field values by lower-case name (S3's names are case-insensitive); repeated
    ``x-amz-meta-*`` fields are joined with commas, as repeated headers are."""
    values: dict[str, str] = {}
    for name, value in fields:
        lname = name.lower()
        if lname.startswith(META_PREFIX) and lname in values:
            values[lname] += "," + value
        else:
            values[lname] = value
    return values


async def _authorize(ctx: Context, fields: Sequence[tuple[str, str]], values: dict[str, str],
                     key: str) -> PostPolicy | None:
    """Who uploads (the form's signer, or anonymous) and whether they may: the
    policy must hold and the key must be theirs to write, as for PutObject."""
    route = Route("PutObject", ctx.bucket, key)
    ctx.request["object_key"] = key  # the audit log's key: it is in the form, not the path
    # Condition keys PutObject takes from headers come from the form's fields here.
    ctx.request["condition_keys"] = {
        key_name: values[field] for field, key_name in (
            ("acl", "s3:x-amz-acl"),
            ("x-amz-server-side-encryption", "s3:x-amz-server-side-encryption"))
        if field in values}
    credentials = form_credentials(values)
    assert ctx.resolve_key is not None and ctx.check_access is not None
    if credentials is None:
        ctx.request["principal"] = None
        await ctx.check_access(ctx.request, route, None)
        policy = parse_policy(values["policy"]) if "policy" in values else None
    else:
        found = await ctx.resolve_key(credentials.access_key)
        if found is None:
            raise InvalidAccessKeyId(AWSAccessKeyId=credentials.access_key)
        secret, principal = found
        credentials.verify(secret)
        ctx.request["principal"] = principal
        policy = parse_policy(credentials.policy)
    if policy is not None:
        # Judged on the values stored: repeated x-amz-meta-* fields joined.
        policy.check([(name, values[name.lower()]) for name, _ in fields], ctx.bucket, key)
    if credentials is not None:
        await ctx.check_access(ctx.request, route, ctx.request["principal"])
    return policy


class _Checksum:
    """An ``x-amz-checksum-<algorithm>`` field: computed over the file and compared."""

    def __init__(self, request: checksums.ChecksumRequest) -> None:
        self.request = request
        self.hasher = checksums.new_hasher(request.algorithm)
        self.hashers = (self.hasher,)

    def finalize(self) -> dict[str, str]:
        digest = self.hasher.digest()
        if self.request.expected is not None and digest != self.request.expected:
            raise checksum_mismatch(self.request.algorithm)
        return {self.request.algorithm: checksums.b64(digest)}


async def _attributes(ctx: Context, values: dict[str, str]) -> tuple[ObjectAttrs, Any]:
    """What the form gives the object: its headers and metadata, tags, lock, ACL (the
    ``acl`` field, a canned ACL), checksum."""
    headers: CIMultiDict[str] = CIMultiDict(
        (name, _header_safe(value) if name.startswith(META_PREFIX) else value)
        for name, value in values.items() if name not in _AUTH_FIELDS)
    if "acl" in values:
        headers["x-amz-acl"] = values["acl"]  # the form's name for PutObject's header
    attrs = object_attrs(headers)
    tags = _tags(values["tagging"]) if "tagging" in values else {}
    request = checksums.requested_checksum(headers)
    # Forms cannot send Content-MD5: a lock is taken as PutObject takes it, without it.
    mode, until, hold = await lock_for_write(ctx.store, ctx.bucket, headers, time.time_ns(),
                                             with_body=False)
    principal = ctx.principal
    acl = await new_object_acl(ctx.store, ctx.bucket,
                               None if principal is None else principal.account,
                               acl_headers(headers), directory_of(ctx.request))
    attrs = dataclasses.replace(attrs, tags=tags, lock_mode=mode, lock_until_ns=until,
                                legal_hold=hold, acl=acl)
    return attrs, _Checksum(request) if request is not None else None


def _tags(text: str) -> dict[str, str]:
    """The ``tagging`` field: a Tagging document. S3 takes well-formed XML of
    another root as no tags, and refuses what is not XML (MalformedXML)."""
    try:
        root = SafeET.fromstring(text.encode(), forbid_dtd=True)
    except Exception:
        raise MalformedXML() from None
    if root.tag.rpartition("}")[2] != "Tagging":
        return {}
    return parse_tagging(text.encode())


def _header_safe(value: str) -> str:
    """User metadata from a form is UTF-8; S3 keeps non-ASCII values RFC 2047
    encoded (``=?UTF-8?Q?...?=``) so they travel as headers."""
    if value.isascii():
        return value
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        if char == " ":
            out.append("_")
        elif 33 <= byte <= 126 and char not in "=?_":
            out.append(char)
        else:
            out.append(f"={byte:02X}")
    return "=?UTF-8?Q?" + "".join(out) + "?="


def _object_url(ctx: Context, key: str) -> str:
    request = ctx.request
    path_style = request.path.rstrip("/") == "/" + ctx.bucket
    prefix = f"/{quote(ctx.bucket)}" if path_style else ""
    return f"{request.scheme}://{request.host}{prefix}/{quote(key, safe='/~')}"


def _redirect(target: str, bucket: str, key: str, etag: str) -> str | None:
    """success_action_redirect with the upload's bucket, key and ETag added;
    None when it is no absolute URL (S3 then acts as if it were not given)."""
    parts = urlsplit(target)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    added = urlencode({"bucket": bucket, "key": key, "etag": etag}, quote_via=quote)
    query = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit(parts._replace(query=query))


def post_response(location: str, bucket: str, key: str, etag: str) -> bytes:
    """The PostResponse document of success_action_status 201."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<PostResponse>'
            f"<Location>{xml_text(location)}</Location><Bucket>{xml_text(bucket)}</Bucket>"
            f"<Key>{xml_text(key)}</Key><ETag>{xml_text(etag)}</ETag></PostResponse>").encode()


async def _response(ctx: Context, info: ObjectInfo, values: dict[str, str]) -> web.Response:
    etag = f'"{info.etag}"'
    headers = {"ETag": etag, **(await version_headers(ctx, info)),
               **(await expiration_header(ctx.store, info, ctx.store.lifecycle_day_ns)),
               **sse_objects.response_headers(info)}
    for algorithm, value in info.checksums.items():
        headers[checksums.header_name(algorithm)] = value
        headers["x-amz-checksum-type"] = "FULL_OBJECT"
    target = values.get("success_action_redirect") or values.get("redirect")
    redirect = _redirect(target, ctx.bucket, info.key, etag) if target else None
    if redirect is not None:
        return web.Response(status=303, headers={**headers, "Location": redirect})
    location = _object_url(ctx, info.key)
    headers["Location"] = location
    status = SUCCESS_STATUSES.get(values.get("success_action_status", ""), 204)
    if status == 201:
        return web.Response(status=201, headers=headers, content_type="application/xml",
                            body=post_response(location, ctx.bucket, info.key, etag))
    return web.Response(status=status, headers=headers)
