"""Object ownership controls and the public access block of a bucket.

Both are bucket settings. Ownership (kind ``ownership``) is BucketOwnerEnforced
(ACLs disabled: the bucket owner owns every object and ACLs grant nothing),
BucketOwnerPreferred (an upload with ``bucket-owner-full-control`` becomes the
bucket owner's) or ObjectWriter (the uploader owns what it uploads). A bucket
created now starts with BucketOwnerEnforced, as in AWS since April 2023. A
bucket made before ownership controls existed has no setting: it answers
OwnershipControlsNotFoundError and behaves as ObjectWriter, as AWS's buckets of
before 2023 do, so whatever worked on it keeps working.

The public access block (kind ``pab``) has four switches: BlockPublicAcls
(a request setting a public ACL gets AccessDenied), IgnorePublicAcls (public
grants count for nothing), BlockPublicPolicy (a public bucket policy is refused
with AccessDenied) and RestrictPublicBuckets (a public policy opens the bucket
to nobody outside the owner's account). No bucket gets one by default: AWS
gives new buckets all four, but Basalt's public bucket policies predate this
and must keep working for the root key as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from aiohttp import web

from . import checksums
from .acl_xml import Acl
from .errors import MalformedXML, S3Error, checksum_mismatch
from .identity import OWNER_KIND, ROOT_ACCOUNT, canonical_id
from .request import Context
from .s3xml import _children, _document, _parse, _text

OWNERSHIP_KIND = "ownership"
PAB_KIND = "pab"
ACL_KIND = "acl"  # the bucket's ACL (gateway.acl)
ENFORCED, PREFERRED, WRITER = "BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter"
OWNERSHIPS = (ENFORCED, PREFERRED, WRITER)
DEFAULT_OWNERSHIP = ENFORCED  # of a bucket created now
_SWITCHES = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


class OwnershipControlsNotFoundError(S3Error):
    status = 404
    message = "The bucket ownership controls were not found"


class NoSuchPublicAccessBlockConfiguration(S3Error):
    status = 404
    message = "The public access block configuration was not found"


class InvalidBucketAclWithObjectOwnership(S3Error):
    status = 400
    message = "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting"


@dataclasses.dataclass(frozen=True, slots=True)
class PublicAccessBlock:
    block_public_acls: bool = False
    ignore_public_acls: bool = False
    block_public_policy: bool = False
    restrict_public_buckets: bool = False

    def pack(self) -> bytes:
        return "".join("1" if v else "0" for v in dataclasses.astuple(self)).encode()

    @classmethod
    def unpack(cls, raw: bytes | None) -> PublicAccessBlock:
        return NO_BLOCK if not raw else cls(*(c == ord("1") for c in raw))


NO_BLOCK = PublicAccessBlock()


async def public_access_block(store: Any, bucket: str) -> PublicAccessBlock:
    """The bucket's public access block (all off without one). Reads the bucket's
    settings, which a request reads once (NoSuchBucket when there is no bucket)."""
    return PublicAccessBlock.unpack(await store.bucket_config(bucket, PAB_KIND))


async def ownership(store: Any, bucket: str) -> str:
    """The bucket's object ownership; ObjectWriter for a bucket without controls."""
    raw = await store.bucket_config(bucket, OWNERSHIP_KIND)
    return raw.decode() if raw else WRITER


def settings_ownership(configs: dict[str, bytes]) -> str:
    raw = configs.get(OWNERSHIP_KIND)
    return raw.decode() if raw else WRITER


def settings_pab(configs: dict[str, bytes]) -> PublicAccessBlock:
    return PublicAccessBlock.unpack(configs.get(PAB_KIND))


def policy_restricted(pab: PublicAccessBlock, policy_is_public: bool) -> bool:
    """RestrictPublicBuckets: a public policy then grants nothing outside the owner's account."""
    return pab.restrict_public_buckets and policy_is_public


async def read_xml_body(ctx: Context, limit: int = 64 * 1024) -> bytes:
    """A small XML body, checked against Content-MD5 / x-amz-checksum-* when sent."""
    length = ctx.request.content_length
    if length is not None and length > limit:
        raise MalformedXML()
    body = await ctx.request.read() if ctx.request.can_read_body else b""
    if len(body) > limit:
        raise MalformedXML()
    md5 = checksums.content_md5(ctx.headers)
    if md5 is not None:
        checksums.verify_content_md5(md5, hashlib.md5(body).digest())
    declared = checksums.requested_checksum(ctx.headers)
    if declared is not None and declared.expected is not None \
            and checksums.checksum(declared.algorithm, body) != declared.expected:
        raise checksum_mismatch(declared.algorithm)
    return body


# --- ownership controls --------------------------------------------------------------------

def parse_ownership_controls(body: bytes) -> str:
    """The ObjectOwnership of an OwnershipControls document (exactly one rule)."""
    root = _parse(body, "OwnershipControls")
    if root is None:
        raise MalformedXML()
    rules = _children(root, "Rule")
    if len(rules) != 1 or len(root) != 1:
        raise MalformedXML()
    value = _text(rules[0], "ObjectOwnership", required=True)
    if value not in OWNERSHIPS or len(rules[0]) != 1:
        raise MalformedXML()
    return value


def xml_response(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/xml")


def render_ownership_controls(value: str) -> bytes:
    return _document("OwnershipControls",
                     ("<Rule><ObjectOwnership>", value, "</ObjectOwnership></Rule>"))


async def put_ownership_controls(ctx: Context) -> web.Response:
    """PUT /{bucket}?ownershipControls"""
    await ctx.store.require_bucket(ctx.bucket)
    value = parse_ownership_controls(await read_xml_body(ctx))
    if value == ENFORCED:
        # ACLs are about to be disabled: the bucket's must grant nobody but its owner.
        raw = await ctx.store.bucket_config(ctx.bucket, ACL_KIND)
        owner = canonical_id((await ctx.store.bucket_config(ctx.bucket, OWNER_KIND)
                              or ROOT_ACCOUNT.encode()).decode())
        if raw and not Acl.unpack(raw).only_full_control_to({owner}, owner):
            raise InvalidBucketAclWithObjectOwnership()
    await ctx.store.set_bucket_config(ctx.bucket, OWNERSHIP_KIND, value.encode())
    return web.Response(status=200)


async def get_ownership_controls(ctx: Context) -> web.Response:
    """GET /{bucket}?ownershipControls"""
    raw = await ctx.store.bucket_config(ctx.bucket, OWNERSHIP_KIND)
    if raw is None:
        raise OwnershipControlsNotFoundError(BucketName=ctx.bucket)
    return xml_response(render_ownership_controls(raw.decode()))


async def delete_ownership_controls(ctx: Context) -> web.Response:
    """DELETE /{bucket}?ownershipControls (the bucket then behaves as ObjectWriter)"""
    await ctx.store.require_bucket(ctx.bucket)
    await ctx.store.set_bucket_config(ctx.bucket, OWNERSHIP_KIND, None)
    return web.Response(status=204)


# --- public access block -------------------------------------------------------------------

def parse_public_access_block(body: bytes) -> PublicAccessBlock:
    """A PublicAccessBlockConfiguration document (a switch left out is off)."""
    root = _parse(body, "PublicAccessBlockConfiguration")
    if root is None:
        raise MalformedXML()
    values = []
    for name in _SWITCHES:
        text = _text(root, name)
        if text is not None and text.strip().lower() not in ("true", "false"):
            raise MalformedXML()
        values.append(text is not None and text.strip().lower() == "true")
    if sum(len(_children(root, name)) for name in _SWITCHES) != len(root):
        raise MalformedXML()  # an element S3 does not know
    return PublicAccessBlock(*values)


def render_public_access_block(pab: PublicAccessBlock) -> bytes:
    return _document("PublicAccessBlockConfiguration", (
        f"<{name}>{'true' if value else 'false'}</{name}>"
        for name, value in zip(_SWITCHES, dataclasses.astuple(pab), strict=True)))


async def put_public_access_block(ctx: Context) -> web.Response:
    """PUT /{bucket}?publicAccessBlock"""
    await ctx.store.require_bucket(ctx.bucket)
    pab = parse_public_access_block(await read_xml_body(ctx))
    await ctx.store.set_bucket_config(ctx.bucket, PAB_KIND, pab.pack())
    return web.Response(status=200)


async def get_public_access_block(ctx: Context) -> web.Response:
    """GET /{bucket}?publicAccessBlock"""
    raw = await ctx.store.bucket_config(ctx.bucket, PAB_KIND)
    if raw is None:
        raise NoSuchPublicAccessBlockConfiguration(BucketName=ctx.bucket)
    return xml_response(render_public_access_block(PublicAccessBlock.unpack(raw)))


async def delete_public_access_block(ctx: Context) -> web.Response:
    """DELETE /{bucket}?publicAccessBlock"""
    await ctx.store.require_bucket(ctx.bucket)
    await ctx.store.set_bucket_config(ctx.bucket, PAB_KIND, None)
    return web.Response(status=204)
