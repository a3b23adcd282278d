"""Bucket and object ACLs: Get/Put Bucket/Object ACL, the ACL a new object or bucket
gets from its request's headers, and what an ACL grants a request.

A bucket's ACL is its ``acl`` setting; an object's is kept in its version's
record (``ObjectInfo.acl``), with its owner. Both are left empty while they are
the default (the bucket owner has FULL_CONTROL), so most buckets and objects
carry nothing and are judged without reading anything more. The first object
of a bucket to get anything else sets the bucket's ``objacls`` setting: until
then an object's ACL is known from the bucket's settings alone (which a request
reads once), so an anonymous GET does not read the object twice to be refused.

Grantees are resolved when an ACL is set, as S3 does: an e-mail address to
its account, a canonical id checked against the known accounts, through an
:class:`AccountDirectory` (the request's ``request["directory"]``, else one
that knows only the root account).

With BucketOwnerEnforced (gateway.public_access) ACLs are disabled: they grant
nothing, read as the bucket owner's FULL_CONTROL, and requests that would set
one other than "bucket owner full control" get AccessControlListNotSupported.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from aiohttp import web

from storaged import DeleteMarker, NoSuchKey, NoSuchVersion

from .acl_xml import (
    ALL_USERS,
    AUTHENTICATED_USERS,
    BY_EMAIL,
    CANONICAL_USER,
    FULL_CONTROL,
    GROUP,
    GROUPS,
    MAX_BODY,
    PUBLIC_GROUPS,
    READ,
    READ_ACP,
    WRITE,
    WRITE_ACP,
    Acl,
    AclRequest,
    Grant,
    MalformedACLError,
    UnresolvableGrantByEmailAddress,
    acl_headers,
    canned_grants,
    parse_access_control_policy,
    render_access_control_policy,
    user_grant,
)
from .errors import AccessDenied, InvalidArgument, MalformedXML, S3Error, UnexpectedContent
from .identity import OWNER_KIND, ROOT_ACCOUNT, ROOT_ACCOUNT_NAME, canonical_id
from .public_access import (
    ACL_KIND,
    DEFAULT_OWNERSHIP,
    ENFORCED,
    OWNERSHIP_KIND,
    OWNERSHIPS,
    PREFERRED,
    InvalidBucketAclWithObjectOwnership,
    read_xml_body,
    settings_ownership,
    settings_pab,
)
from .request import Context, version_param
from .router import Route

OBJECT_ACLS_KIND = "objacls"  # bucket setting: some object here has a non-default ACL


class AccessControlListNotSupported(S3Error):
    status = 400
    message = "The bucket does not allow ACLs"


# --- accounts ----------------------------------------------------------------------------

class AccountDirectory(Protocol):
    """Who the accounts are, for resolving grantees and naming them. Each method
    answers an object with ``.id`` (12 digits) and ``.name``, or None."""

    def account_by_id(self, account_id: str) -> Any | None: ...
    def account_by_canonical_id(self, canonical_id: str) -> Any | None: ...
    def account_by_email(self, email: str) -> Any | None: ...


class _RootAccount:
    id, name = ROOT_ACCOUNT, ROOT_ACCOUNT_NAME


class RootOnlyDirectory:
    """Knows the root account only (no e-mail address)."""

    _ROOT_CID = canonical_id(ROOT_ACCOUNT)

    def account_by_id(self, account_id: str) -> Any | None:
        return _RootAccount if account_id == ROOT_ACCOUNT else None

    def account_by_canonical_id(self, cid: str) -> Any | None:
        return _RootAccount if cid.lower() == self._ROOT_CID else None

    def account_by_email(self, email: str) -> Any | None:
        return None


ROOT_ONLY = RootOnlyDirectory()


def directory_of(request: Any) -> AccountDirectory:
    return request.get("directory") or ROOT_ONLY


def resolve(grants: Iterable[Grant], directory: AccountDirectory) -> tuple[Grant, ...]:
    """Grants naming only known accounts (by canonical id) and S3's groups."""
    resolved = []
    for g in grants:
        if g.kind == CANONICAL_USER:
            account = directory.account_by_canonical_id(g.value.lower())
            if account is None:
                raise InvalidArgument("Invalid id", ArgumentName="CanonicalUser/ID",
                                      ArgumentValue=g.value)
            resolved.append(user_grant(canonical_id(account.id), g.permission))
        elif g.kind == BY_EMAIL:
            account = directory.account_by_email(g.value)
            if account is None:
                raise UnresolvableGrantByEmailAddress(EmailAddress=g.value)
            resolved.append(user_grant(canonical_id(account.id), g.permission))
        else:
            if g.value not in GROUPS:
                raise InvalidArgument("Invalid group uri", ArgumentName="Group/URI",
                                      ArgumentValue=g.value)
            resolved.append(g)
    return tuple(resolved)


def build_acl(request: AclRequest, owner: str, bucket_owner: str,
              directory: AccountDirectory) -> Acl:
    """The ACL ``request`` asks for on something ``owner`` owns (canonical ids)."""
    if request.canned is not None:
        return Acl(owner, canned_grants(request.canned, owner, bucket_owner))
    return Acl(owner, resolve(request.grants or (), directory))


def display_names(acl: Acl, directory: AccountDirectory) -> dict[str, str]:
    names = {}
    for cid in {acl.owner, *(g.value for g in acl.grants if g.kind == CANONICAL_USER)}:
        account = directory.account_by_canonical_id(cid)
        if account is not None:
            names[cid] = account.name
    return names


# --- what is stored ------------------------------------------------------------------------

def owner_account(configs: dict[str, bytes]) -> str:
    raw = configs.get(OWNER_KIND)
    return raw.decode() if raw else ROOT_ACCOUNT


def bucket_acl(configs: dict[str, bytes]) -> Acl:
    raw = configs.get(ACL_KIND)
    return Acl.unpack(raw) if raw else Acl.default(canonical_id(owner_account(configs)))


def object_acl(info: Any, bucket_owner: str) -> Acl:
    """An object version's ACL (``bucket_owner`` a canonical id: the default's owner)."""
    return Acl.unpack(info.acl) if info.acl else Acl.default(bucket_owner)


async def note_object_acls(store: Any, bucket: str, configs: dict[str, bytes]) -> None:
    """Mark the bucket as holding an object whose ACL must be read to be known."""
    if OBJECT_ACLS_KIND not in configs:
        await store.set_bucket_config(bucket, OBJECT_ACLS_KIND, b"1")


async def new_object_acl(store: Any, bucket: str, writer: str | None, request: AclRequest,
                         directory: AccountDirectory) -> bytes:
    """The packed ACL (b"": the default) of an object ``writer`` (an account id; None:
    anonymous, owned by the bucket owner) uploads with ``request``'s ACL headers.
    AccessControlListNotSupported / AccessDenied as the bucket's ownership and public
    access block decide."""
    configs = await store.bucket_configs(bucket)
    bucket_account = owner_account(configs)
    if request.empty and writer in (None, bucket_account):
        return b""
    bo = canonical_id(bucket_account)
    writer_cid = canonical_id(writer or bucket_account)
    mode = settings_ownership(configs)
    if mode == ENFORCED:
        if not request.empty and request.canned != "bucket-owner-full-control":
            wanted = build_acl(request, writer_cid, bo, directory)
            if not wanted.only_full_control_to({bo, writer_cid}, bo):
                raise AccessControlListNotSupported()
        return b""
    to_bucket_owner = mode == PREFERRED and request.canned == "bucket-owner-full-control"
    owner = bo if to_bucket_owner else writer_cid
    acl = Acl.default(owner) if request.empty else build_acl(request, owner, bo, directory)
    if acl.public and settings_pab(configs).block_public_acls:
        raise AccessDenied()
    if acl.is_default(bo):
        return b""
    await note_object_acls(store, bucket, configs)
    return acl.pack()


async def acl_for_upload(ctx: Context) -> bytes:
    """:func:`new_object_acl` for a PutObject, CopyObject or CreateMultipartUpload
    (a copy does not keep its source's ACL: it gets the request's, as in S3)."""
    request = acl_headers(ctx.headers)
    principal = ctx.principal
    return await new_object_acl(ctx.store, ctx.bucket,
                                None if principal is None else principal.account, request,
                                directory_of(ctx.request))


def new_bucket_settings(ctx: Context, account: str) -> dict[str, bytes]:
    """CreateBucket's ownership (``x-amz-object-ownership``, BucketOwnerEnforced by
    default) and ACL (``x-amz-acl`` / ``x-amz-grant-*``) settings."""
    value = ctx.headers.get("x-amz-object-ownership", DEFAULT_OWNERSHIP)
    if value not in OWNERSHIPS:
        raise InvalidArgument(f"Invalid x-amz-object-ownership header: {value}",
                              ArgumentName="x-amz-object-ownership", ArgumentValue=value)
    settings = {OWNERSHIP_KIND: value.encode()}
    request = acl_headers(ctx.headers)
    if not request.empty:
        owner = canonical_id(account)
        acl = build_acl(request, owner, owner, directory_of(ctx.request))
        if not acl.is_default(owner):
            if value == ENFORCED:
                raise InvalidBucketAclWithObjectOwnership()
            settings[ACL_KIND] = acl.pack()
    return settings


# --- handlers ------------------------------------------------------------------------------

async def _requested(ctx: Context) -> AclRequest:
    """A Put*Acl request's ACL: headers or a body, never both (UnexpectedContent)."""
    headers = acl_headers(ctx.headers)
    try:
        body = await read_xml_body(ctx, MAX_BODY)
    except MalformedXML:
        raise MalformedACLError() from None
    if body.strip():
        if not headers.empty:
            raise UnexpectedContent()
        return parse_access_control_policy(body)
    if headers.empty:
        raise MalformedACLError()
    return headers


def _acl_response(acl: Acl, ctx: Context) -> web.Response:
    body = render_access_control_policy(acl, display_names(acl, directory_of(ctx.request)))
    return web.Response(body=body, content_type="application/xml")


async def get_bucket_acl(ctx: Context) -> web.Response:
    """GET /{bucket}?acl"""
    await ctx.store.require_bucket(ctx.bucket)
    configs = await ctx.store.bucket_configs(ctx.bucket)
    acl = bucket_acl(configs)
    if settings_ownership(configs) == ENFORCED:
        acl = Acl.default(canonical_id(owner_account(configs)))
    return _acl_response(acl, ctx)


async def put_bucket_acl(ctx: Context) -> web.Response:
    """PUT /{bucket}?acl"""
    await ctx.store.require_bucket(ctx.bucket)
    configs = await ctx.store.bucket_configs(ctx.bucket)
    if settings_ownership(configs) == ENFORCED:
        raise AccessControlListNotSupported()
    request = await _requested(ctx)
    owner = canonical_id(owner_account(configs))
    if request.owner is not None and request.owner.lower() != owner:
        raise AccessDenied()  # an ACL cannot give the bucket away
    acl = build_acl(request, owner, owner, directory_of(ctx.request))
    if acl.public and settings_pab(configs).block_public_acls:
        raise AccessDenied()
    await ctx.store.set_bucket_config(ctx.bucket, ACL_KIND,
                                      None if acl.is_default(owner) else acl.pack())
    return web.Response(status=200)


async def get_object_acl(ctx: Context) -> web.Response:
    """GET /{bucket}/{key}?acl[&versionId=]"""
    info = await ctx.store.head_object(ctx.bucket, ctx.key, version_param(ctx))
    configs = await ctx.store.bucket_configs(ctx.bucket)
    bo = canonical_id(owner_account(configs))
    acl = Acl.default(bo) if settings_ownership(configs) == ENFORCED else object_acl(info, bo)
    return _acl_response(acl, ctx)


async def put_object_acl(ctx: Context) -> web.Response:
    """PUT /{bucket}/{key}?acl[&versionId=]"""
    version_id = version_param(ctx)
    await ctx.store.require_bucket(ctx.bucket)
    configs = await ctx.store.bucket_configs(ctx.bucket)
    if settings_ownership(configs) == ENFORCED:
        raise AccessControlListNotSupported()
    request = await _requested(ctx)
    info = await ctx.store.head_object(ctx.bucket, ctx.key, version_id)
    bo = canonical_id(owner_account(configs))
    owner = object_acl(info, bo).owner
    if request.owner is not None and request.owner.lower() != owner:
        raise AccessDenied()  # an ACL cannot give the object away
    acl = build_acl(request, owner, bo, directory_of(ctx.request))
    if acl.public and settings_pab(configs).block_public_acls:
        raise AccessDenied()
    packed = b"" if acl.is_default(bo) else acl.pack()
    if packed:
        await note_object_acls(ctx.store, ctx.bucket, configs)
    await ctx.store.update_object(ctx.bucket, ctx.key, version_id, acl=packed)
    return web.Response(status=200)


# --- judging requests ----------------------------------------------------------------------

# The permission each action needs, on the bucket's ACL or on the object's (AWS's
# "Mapping of ACL permissions and access policy permissions"); a bucket's WRITE also
# covers managing the uploads it lets one make.
BUCKET_PERMISSIONS = {
    "s3:ListBucket": READ, "s3:ListBucketVersions": READ, "s3:ListBucketMultipartUploads": READ,
    "s3:PutObject": WRITE, "s3:DeleteObject": WRITE, "s3:DeleteObjectVersion": WRITE,
    "s3:AbortMultipartUpload": WRITE, "s3:ListMultipartUploadParts": WRITE,
    "s3:GetBucketAcl": READ_ACP, "s3:PutBucketAcl": WRITE_ACP,
}
OBJECT_PERMISSIONS = {
    "s3:GetObject": READ, "s3:GetObjectVersion": READ,
    "s3:GetObjectAcl": READ_ACP, "s3:GetObjectVersionAcl": READ_ACP,
    "s3:PutObjectAcl": WRITE_ACP, "s3:PutObjectVersionAcl": WRITE_ACP,
}


def grants_permission(acl: Acl, permission: str, principal: Any, bucket_account: str,
                      ignore_public: bool = False) -> bool:
    """Whether ``acl`` grants ``permission`` to ``principal`` (None: anonymous).

    A grant to an account counts for its root, and for its users when it is not
    the bucket owner's account (across accounts the requester's own policies must
    allow too: gateway.policy.decide); a bucket owner's users need a policy, as in
    AWS. The owner's root may always read and change the ACL itself.
    """
    if principal is not None and principal.user is None and principal.canonical_id == acl.owner \
            and permission in (READ_ACP, WRITE_ACP):
        return True
    for grant in acl.grants:
        if grant.permission != permission and grant.permission != FULL_CONTROL:
            continue
        if grant.kind == GROUP:
            if ignore_public and grant.value in PUBLIC_GROUPS:
                continue
            if grant.value == ALL_USERS or (grant.value == AUTHENTICATED_USERS
                                            and principal is not None):
                return True
        elif principal is not None and grant.value == principal.canonical_id and (
                principal.user is None or principal.account != bucket_account):
            return True
    return False


async def acl_allows(store: Any, route: Route, action: str, principal: Any,
                     version_id: str | None = None) -> bool:
    """Whether the ACLs grant ``principal`` (None: anonymous) ``action`` (its IAM
    name, versioned ones included) on ``route``'s bucket or object, honouring the
    bucket's ownership controls and IgnorePublicAcls. An object's ACL is read only
    when some object of the bucket has a non-default one."""
    if route.bucket is None:
        return False
    configs = await store.bucket_configs(route.bucket)
    if settings_ownership(configs) == ENFORCED:
        return False
    bucket_account = owner_account(configs)
    ignore_public = settings_pab(configs).ignore_public_acls
    permission = BUCKET_PERMISSIONS.get(action)
    if permission is not None:
        acl = bucket_acl(configs)
    else:
        permission = OBJECT_PERMISSIONS.get(action)
        if permission is None or route.key is None:
            return False
        bo = canonical_id(bucket_account)
        if OBJECT_ACLS_KIND not in configs:
            acl = Acl.default(bo)
        else:
            try:
                info = await store.head_object(route.bucket, route.key, version_id)
            except (NoSuchKey, NoSuchVersion, DeleteMarker):
                return False
            acl = object_acl(info, bo)
    return grants_permission(acl, permission, principal, bucket_account, ignore_public)
