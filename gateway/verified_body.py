"""The small XML body of a configuration request, read and checked.

S3 requires Content-MD5 (or a checksum header) on DeleteObjects and on the
bucket and object configuration PUTs (lifecycle, CORS, object lock, encryption):
the body is read whole (they are small, at most ``s3xml.MAX_BODY_SIZE``) and
refused unless one of them is sent and matches. A module of its own, below
every handler, so any handler can use it without an import cycle.
"""

from __future__ import annotations

import hashlib

from . import checksums, s3xml
from .errors import InvalidRequest, MalformedXML, checksum_mismatch
from .request import Context


async def verified_body(ctx: Context) -> bytes:
    """The request's body, after its Content-MD5 or checksum header was checked."""
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
