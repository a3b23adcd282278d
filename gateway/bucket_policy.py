"""Bucket policies: Put/Get/DeleteBucketPolicy, GetBucketPolicyStatus, and what a
request is judged as (its IAM action, resource ARN and condition keys).

A bucket's policy is kept as the JSON text the owner sent, in the bucket's
settings (replicated and healed with the bucket record); it is validated and
compiled (gateway.policy) when stored and compiled again, once per process and
text, when read; gateway.access judges every request by it.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from . import s3xml
from .bucket import xml_response
from .errors import AccessDenied, NoSuchBucketPolicy
from .policy import MalformedPolicy, Policy, is_public, parse_policy
from .public_access import public_access_block
from .request import Context
from .router import Route

KIND = "policy"

# The IAM action each S3 operation is authorised as (AWS's "Actions, resources,
# and condition keys for Amazon S3"); operations on a version name its version action.
ACTIONS = {
    "ListObjects": "s3:ListBucket", "ListObjectsV2": "s3:ListBucket", "HeadBucket": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "GetBucketLocation": "s3:GetBucketLocation", "GetBucketVersioning": "s3:GetBucketVersioning",
    "PutBucketVersioning": "s3:PutBucketVersioning", "GetBucketAcl": "s3:GetBucketAcl",
    "PutBucketAcl": "s3:PutBucketAcl", "GetBucketTagging": "s3:GetBucketTagging",
    "PutBucketTagging": "s3:PutBucketTagging", "DeleteBucketTagging": "s3:PutBucketTagging",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "DeleteBucketLifecycle": "s3:PutLifecycleConfiguration",
    "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "PutObjectLockConfiguration": "s3:PutBucketObjectLockConfiguration",
    "GetBucketPolicy": "s3:GetBucketPolicy", "PutBucketPolicy": "s3:PutBucketPolicy",
    "DeleteBucketPolicy": "s3:DeleteBucketPolicy",
    "GetBucketPolicyStatus": "s3:GetBucketPolicyStatus",
    "CreateBucket": "s3:CreateBucket", "DeleteBucket": "s3:DeleteBucket",
    "DeleteObjects": "s3:DeleteObject",
    "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject", "PutObject": "s3:PutObject",
    "CopyObject": "s3:PutObject", "DeleteObject": "s3:DeleteObject",
    "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject", "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "GetObjectAcl": "s3:GetObjectAcl", "PutObjectAcl": "s3:PutObjectAcl",
    "GetObjectTagging": "s3:GetObjectTagging", "PutObjectTagging": "s3:PutObjectTagging",
    "DeleteObjectTagging": "s3:DeleteObjectTagging",
    "GetObjectRetention": "s3:GetObjectRetention", "PutObjectRetention": "s3:PutObjectRetention",
    "GetObjectLegalHold": "s3:GetObjectLegalHold", "PutObjectLegalHold": "s3:PutObjectLegalHold",
    "GetObjectAttributes": "s3:GetObjectAttributes",
    "GetBucketCors": "s3:GetBucketCORS", "PutBucketCors": "s3:PutBucketCORS",
    "DeleteBucketCors": "s3:PutBucketCORS", "PostObject": "s3:PutObject",
    "GetBucketOwnershipControls": "s3:GetBucketOwnershipControls",
    "PutBucketOwnershipControls": "s3:PutBucketOwnershipControls",
    "DeleteBucketOwnershipControls": "s3:PutBucketOwnershipControls",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "DeletePublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "DeleteBucketEncryption": "s3:PutEncryptionConfiguration",
    "ListBuckets": "s3:ListAllMyBuckets",
}
_VERSIONED = {"s3:GetObject": "s3:GetObjectVersion", "s3:DeleteObject": "s3:DeleteObjectVersion",
              "s3:GetObjectAcl": "s3:GetObjectVersionAcl",
              "s3:PutObjectAcl": "s3:PutObjectVersionAcl",
              "s3:GetObjectTagging": "s3:GetObjectVersionTagging",
              "s3:PutObjectTagging": "s3:PutObjectVersionTagging",
              "s3:DeleteObjectTagging": "s3:DeleteObjectVersionTagging",
              "s3:GetObjectAttributes": "s3:GetObjectVersionAttributes"}
def action_of(route: Route, query: Any) -> str:
    """The IAM action ``route`` is authorised as."""
    action = ACTIONS.get(route.op, "s3:" + route.op)
    if "versionId" in query:
        action = _VERSIONED.get(action, action)
    return action


def resource_of(route: Route) -> str:
    if route.key is None:
        return f"arn:aws:s3:::{route.bucket}"
    return f"arn:aws:s3:::{route.bucket}/{route.key}"


def condition_keys(request: web.Request, route: Route) -> dict[str, str | list[str]]:
    """The condition keys an anonymous request carries (global and S3 ones)."""
    second = int(time.time())
    headers, query = request.headers, request.query
    keys: dict[str, str | list[str]] = {
        "aws:SourceIp": request.remote or "",
        "aws:SecureTransport": "true" if request.secure else "false",
        "aws:CurrentTime": _iso_second(second),
        "aws:EpochTime": str(second),
    }
    for header, key in (("User-Agent", "aws:UserAgent"), ("Referer", "aws:Referer"),
                        ("x-amz-acl", "s3:x-amz-acl"),
                        ("x-amz-server-side-encryption", "s3:x-amz-server-side-encryption"),
                        ("x-amz-server-side-encryption-aws-kms-key-id",
                         "s3:x-amz-server-side-encryption-aws-kms-key-id"),
                        ("x-amz-server-side-encryption-customer-algorithm",
                         "s3:x-amz-server-side-encryption-customer-algorithm"),
                        ("x-amz-content-sha256", "s3:x-amz-content-sha256")):
        if header in headers:
            keys[key] = headers[header]
    if route.key is None and route.op in ("ListObjects", "ListObjectsV2",
                                          "ListObjectVersions"):
        for name in ("prefix", "delimiter", "max-keys"):
            if name in query:
                keys["s3:" + name] = query[name]
    if "versionId" in query:
        keys["s3:VersionId"] = query["versionId"]
    if "x-amz-tagging" in headers:
        for tag, value in parse_qsl(headers["x-amz-tagging"], keep_blank_values=True):
            keys[f"s3:RequestObjectTag/{tag}"] = value
    return keys


@functools.lru_cache(maxsize=4)
def _iso_second(second: int) -> str:
    """aws:CurrentTime of a second (formatted once per second, not per request)."""
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=256)
def _compiled(text: bytes) -> Policy:
    return parse_policy(text, "resource")


async def stored_policy(store: Any, bucket: str) -> Policy | None:
    raw = await store.bucket_config(bucket, KIND)
    return None if raw is None else _compiled(raw)


async def put_bucket_policy(ctx: Context) -> web.Response:
    body = await ctx.request.read()  # aiohttp's client_max_size bounds it
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPolicy("Policies must be valid JSON and the first byte must be '{'") \
            from None
    policy = parse_policy(text, "resource", bucket=ctx.bucket)  # raises MalformedPolicy
    directory = ctx.request.get("directory")
    if directory is not None:
        await directory.fresh(0)  # a user made a moment ago may be named
        check_principals(policy, directory)
    await ctx.store.require_bucket(ctx.bucket)
    if is_public(policy) and (await public_access_block(ctx.store, ctx.bucket)).block_public_policy:
        raise AccessDenied()  # BlockPublicPolicy
    await ctx.store.set_bucket_config(ctx.bucket, KIND, text.encode())
    return web.Response(status=204)


def check_principals(policy: Policy, directory: Any) -> None:
    """MalformedPolicy for a principal that names no account or user, as AWS answers."""
    for statement in policy.statements:
        for arn in statement.principal.arns if statement.principal is not None else ():
            account, _, rest = arn.removeprefix("arn:aws:iam::").partition(":")
            found = directory.account_by_id(account)
            user = rest.removeprefix("user/").rsplit("/", 1)[-1] if rest != "root" else None
            if found is None or (user is not None
                                 and (found.id, user) not in directory.snapshot.users):
                raise MalformedPolicy("Invalid principal in policy")


async def get_bucket_policy(ctx: Context) -> web.Response:
    raw = await ctx.store.bucket_config(ctx.bucket, KIND)
    if raw is None:
        raise NoSuchBucketPolicy(BucketName=ctx.bucket)
    return web.Response(body=raw, content_type="application/json")


async def delete_bucket_policy(ctx: Context) -> web.Response:
    await ctx.store.require_bucket(ctx.bucket)
    await ctx.store.set_bucket_config(ctx.bucket, KIND, None)
    return web.Response(status=204)


async def get_bucket_policy_status(ctx: Context) -> web.Response:
    policy = await stored_policy(ctx.store, ctx.bucket)
    if policy is None:
        raise NoSuchBucketPolicy(BucketName=ctx.bucket)
    return xml_response(s3xml.policy_status(is_public(policy)))
