"""Bucket operations: create, head, delete, list, location."""

from __future__ import annotations

import re

from aiohttp import web

from storaged import BucketExists, NoSuchBucket
from storaged.object_lock import LockConfig

from . import s3xml
from .errors import (
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    InvalidBucketName,
    MalformedXML,
)
from .identity import OWNER_KIND, ROOT_ACCOUNT, bucket_owner, canonical_id, owned_buckets
from .request import Context

_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
XML = "application/xml"


def validate_bucket_name(name: str) -> None:
    """S3's bucket naming rules (InvalidBucketName otherwise)."""
    if (not _NAME.match(name) or ".." in name or ".-" in name or "-." in name
            or _IP.match(name) or name.startswith(("xn--", "sthree-"))
            or name.endswith(("-s3alias", "--ol-s3"))):
        raise InvalidBucketName(BucketName=name)


def xml_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=XML)


async def create_bucket(ctx: Context) -> web.Response:
    validate_bucket_name(ctx.bucket)
    body = await ctx.request.read() if ctx.request.can_read_body else b""
    if len(body) > s3xml.MAX_BODY_SIZE:
        raise MalformedXML()
    s3xml.parse_create_bucket(body)  # any region is ours: we are single-region
    account = ctx.principal.account if ctx.principal is not None else ROOT_ACCOUNT
    if await ctx.store.bucket_info(ctx.bucket) is not None:
        await _refuse_existing(ctx, account)
    settings = {OWNER_KIND: account.encode()}
    if ctx.headers.get("x-amz-bucket-object-lock-enabled", "").strip().lower() == "true":
        # Object lock needs versions: the bucket starts with versioning on.
        settings.update({"versioning": b"Enabled", "lock": LockConfig(enabled=True).pack()})
    from .acl import new_bucket_settings  # here: gateway.acl needs bucket_policy, which needs us
    settings.update(new_bucket_settings(ctx, account))  # object ownership and ACL
    try:
        await ctx.store.make_bucket(ctx.bucket, settings)
    except BucketExists:
        await _refuse_existing(ctx, account)

    return web.Response(status=200, headers={"Location": f"/{ctx.bucket}"})


async def bucket_owner_xml(ctx: Context) -> s3xml.Owner:
    """The bucket's owning account as listings name owners (canonical id and
    account name, as its ACL does)."""
    account = await bucket_owner(ctx.store, ctx.bucket)
    found = ctx.request["directory"].account_by_id(account)
    return s3xml.Owner(canonical_id(account), found.name if found is not None else account)


async def _refuse_existing(ctx: Context, account: str) -> None:
    """Bucket names are global: yours, or someone else's."""
    try:
        owner = await bucket_owner(ctx.store, ctx.bucket)
    except NoSuchBucket:  # another creator won the name and is still making it
        raise BucketAlreadyExists(BucketName=ctx.bucket) from None
    if owner == account:
        raise BucketAlreadyOwnedByYou(BucketName=ctx.bucket)
    raise BucketAlreadyExists(BucketName=ctx.bucket)


async def head_bucket(ctx: Context) -> web.Response:
    await ctx.store.require_bucket(ctx.bucket)
    return web.Response(status=200, headers={"x-amz-bucket-region": ctx.config.region})


async def delete_bucket(ctx: Context) -> web.Response:
    await ctx.store.delete_bucket(ctx.bucket)
    return web.Response(status=204)


async def list_buckets(ctx: Context) -> web.Response:
    account = ctx.principal.account if ctx.principal is not None else ROOT_ACCOUNT
    entries = [s3xml.BucketEntry(b.name, b.created_ns / 1e9)
               for b in await owned_buckets(ctx.store, account)]
    prefix = ctx.query.get("prefix")
    if prefix:
        entries = [e for e in entries if e.name.startswith(prefix)]
    owner = ctx.config.owner if ctx.principal is None else s3xml.Owner(
        ctx.principal.canonical_id, ctx.principal.account_name)
    return xml_response(s3xml.list_buckets(owner, entries, prefix=prefix))


async def get_bucket_location(ctx: Context) -> web.Response:
    await ctx.store.require_bucket(ctx.bucket)
    return xml_response(s3xml.location_constraint(ctx.config.region))
