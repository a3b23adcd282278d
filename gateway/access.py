"""Whether a request may do what it asks: S3's authorization of one request.

The principal (gateway.identity) comes from the signature; the decision from
gateway.policy.decide over the user's identity policy, the bucket's policy
(set aside outside the owner's account when it is public and the bucket's
public access block restricts public buckets) and the ACLs (gateway.acl,
consulted only when the policies alone do not allow), in AWS's order (explicit deny; same account: either side
allows; another account: both sides; anonymous: the bucket side only). The
root of the bucket owner's account is allowed whatever is not explicitly
denied; with no bucket policy that is decided without evaluating anything
(the common case costs no policy work).

A copy is also a read of its source, judged as GetObject (GetObjectVersion)
on it. Requests on the system bucket (``.basalt-iam``) never reach it.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from aiohttp import web

from storaged import DeleteMarker, NoSuchBucket, NoSuchKey, NoSuchVersion

from . import acl, bucket_policy
from .copy import parse_copy_source
from .errors import AccessDenied, MethodNotAllowed
from .identity import Directory, Principal, bucket_owner
from .policy import DENY, Policy, RequestContext, decide, is_public, parse_policy
from .public_access import public_access_block
from .router import Route

# Not open to anonymous requests whatever a policy says: they act on several
# objects (each would need its own judgement) or create buckets.
_NOT_ANONYMOUS = {"CreateBucket", "ListBuckets", "CopyObject", "UploadPartCopy"}
# Judged per object by its handler (each key as DeleteObject or DeleteObjectVersion).
_PER_OBJECT = {"DeleteObjects"}
_COPIES = {"CopyObject", "UploadPartCopy"}
_READS = {"GetObject", "HeadObject"}
# Operations on an existing object (version), whose tags its conditions may name.
_TAGGED = {"GetObject", "HeadObject", "GetObjectTagging", "PutObjectTagging",
           "DeleteObjectTagging", "GetObjectAcl", "PutObjectAcl", "GetObjectAttributes",
           "GetObjectRetention", "PutObjectRetention", "GetObjectLegalHold",
           "PutObjectLegalHold", "DeleteObject"}
# The policy itself is the owner account's alone; its root may always change it
# (so no policy can lock the owner out).
_POLICY_OPS = {"GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy"}


@functools.lru_cache(maxsize=1024)
def _identity_policy(text: str) -> Policy:
    return parse_policy(text, "identity")


def identity_policies(directory: Directory, principal: Principal | None) -> list[Policy]:
    """The compiled identity policies of ``principal`` (none for roots and anonymous)."""
    if principal is None:
        return []
    text = directory.identity_policy(principal)
    return [] if text is None else [_identity_policy(text)]


def request_context(request: web.Request, route: Route, principal: Principal | None,
                    action: str | None = None) -> RequestContext:
    keys = bucket_policy.condition_keys(request, route)
    keys.update(request.get("condition_keys") or ())  # a form upload's, from its fields
    auth = request.get("auth_type")
    if auth:
        keys["s3:authType"], keys["s3:signatureversion"] = auth
    return RequestContext(
        action or bucket_policy.action_of(route, request.query),
        bucket_policy.resource_of(route) if route.bucket else "*",
        None if principal is None else principal.account,
        None if principal is None else principal.user,
        None if principal is None else principal.canonical_id, keys=keys)


async def check(store: Any, directory: Directory, request: web.Request, route: Route,
                principal: Principal | None, action: str | None = None) -> None:
    """AccessDenied unless ``principal`` (None: anonymous) may do ``route`` (as
    ``action`` when given, else the action its operation names)."""
    if principal is None and route.op in _NOT_ANONYMOUS:
        raise AccessDenied()
    if route.op in _PER_OBJECT:
        if route.bucket is not None and route.bucket.startswith("."):
            raise NoSuchBucket(route.bucket)
        return
    if route.bucket is None or route.op == "CreateBucket":
        # Account-level: only the requester's own side speaks.
        assert principal is not None
        if principal.user is not None and not decide(
                identity_policies(directory, principal), None,
                request_context(request, route, principal), principal.account):
            raise AccessDenied()
        return
    await _judge(store, directory, request, route, action, principal=principal)
    if route.op in _COPIES:
        await _judge(store, directory, request, *copy_source(request), principal=principal)


async def _judge(store: Any, directory: Directory, request: web.Request, route: Route,
                 action: str | None = None, *, principal: Principal | None) -> None:
    assert route.bucket is not None
    if route.bucket.startswith("."):
        raise NoSuchBucket(route.bucket)
    if route.op in _READS and action is None and "versionId" not in request.query:
        prefetch = getattr(store, "prefetch", None)  # one query per disk for a GET
        if prefetch is not None:
            await prefetch(route.bucket, route.key, body=route.op == "GetObject")
    try:
        owner = await bucket_owner(store, route.bucket)
    except NoSuchBucket:
        if principal is None:
            raise AccessDenied() from None  # a stranger learns nothing of what exists
        raise
    request.setdefault("bucket_owner", owner)  # usage is the owner's (not a copy source's)
    if route.op in _POLICY_OPS:
        if principal is None or principal.account != owner:
            raise MethodNotAllowed() if principal is not None else AccessDenied()
        if principal.user is None:
            return
    policy = await bucket_policy.stored_policy(store, route.bucket)
    if policy is None and principal is not None and principal.user is None \
            and principal.account == owner:
        return  # the owner's root, and no policy that could deny it
    identities = identity_policies(directory, principal)
    ctx = request_context(request, route, principal, action)
    if route.key is not None and route.op in _TAGGED and any(
            p.reads_existing_tags for p in (policy, *identities) if p is not None):
        ctx = replace(ctx, keys={**ctx.keys, **await existing_tags(store, request, route)})
    if policy is not None and (principal is None or principal.account != owner) \
            and (await public_access_block(store, route.bucket)).restrict_public_buckets \
            and is_public(policy):
        # RestrictPublicBuckets: a public policy grants nothing outside the
        # owner's account; its denials still stand.
        if policy.evaluate(ctx) is DENY:
            raise AccessDenied()
        policy = None
    if decide(identities, policy, ctx, owner):
        return
    # Only now the ACLs (they may cost an object read): a grant can still allow
    # what no policy did, never what one denied.
    version = request.query.get("versionId") if action is None else None
    if not (await acl.acl_allows(store, route, ctx.action, principal, version)
            and decide(identities, policy, ctx, owner, acl_allows=True)):
        raise AccessDenied()


async def existing_tags(store: Any, request: web.Request, route: Route) -> dict[str, str]:
    """s3:ExistingObjectTag/KEY for each tag of the object (version) asked for."""
    try:
        info = await store.head_object(route.bucket, route.key, request.query.get("versionId"))
    except (NoSuchKey, NoSuchVersion, DeleteMarker):
        return {}  # nothing there: a condition on its tags finds none
    return {f"s3:ExistingObjectTag/{k}": v for k, v in (info.tags or {}).items()}


def copy_source(request: web.Request) -> tuple[Route, str]:
    """The object a copy reads, and the action that read is judged as."""
    bucket, key, version = parse_copy_source(request.headers.get("x-amz-copy-source", ""))
    return Route("GetObject", bucket, key), ("s3:GetObjectVersion" if version is not None
                                             else "s3:GetObject")
