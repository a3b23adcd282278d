"""S3 access control lists as data: grants, canned ACLs, the ``x-amz-grant-*``
headers and the AccessControlPolicy document (no I/O here; gateway.acl uses it).

An ACL is its owner's canonical id and a list of grants; a grantee is a
canonical user (an account, named by its canonical id) or one of S3's groups.
Grants by e-mail address are resolved to the account when the ACL is set, as
S3 does, so a stored ACL only ever names canonical ids and group URIs.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import Mapping

import msgpack

from .errors import InvalidArgument, InvalidRequest, MalformedXML, S3Error, S3NotImplemented, xml_text
from .s3xml import _children, _document, _local, _parse, _text

FULL_CONTROL, WRITE, WRITE_ACP, READ, READ_ACP = "FULL_CONTROL", "WRITE", "WRITE_ACP", "READ", "READ_ACP"
PERMISSIONS = (FULL_CONTROL, WRITE, WRITE_ACP, READ, READ_ACP)

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"
GROUPS = (ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY)
PUBLIC_GROUPS = frozenset((ALL_USERS, AUTHENTICATED_USERS))

CANONICAL_USER, GROUP, BY_EMAIL = "CanonicalUser", "Group", "AmazonCustomerByEmail"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
MAX_GRANTS = 100  # S3's limit on the grants of one ACL
MAX_BODY = 64 * 1024

# x-amz-grant-* header → the permission it grants (in the order S3 documents them)
GRANT_HEADERS = {"x-amz-grant-read": READ, "x-amz-grant-write": WRITE,
                 "x-amz-grant-read-acp": READ_ACP, "x-amz-grant-write-acp": WRITE_ACP,
                 "x-amz-grant-full-control": FULL_CONTROL}
CANNED = ("private", "public-read", "public-read-write", "authenticated-read",
          "bucket-owner-read", "bucket-owner-full-control", "log-delivery-write")


class MalformedACLError(S3Error):
    status = 400
    message = ("The XML you provided was not well-formed or did not validate against our "
               "published schema")


class UnresolvableGrantByEmailAddress(S3Error):
    status = 400
    message = "The email address you provided does not match any account on record."


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """One grant: ``kind`` CanonicalUser (``value`` a canonical id) or Group (a group
    URI), or, before resolution only, AmazonCustomerByEmail (an address)."""

    kind: str
    value: str
    permission: str


def user_grant(canonical_id: str, permission: str) -> Grant:
    return Grant(CANONICAL_USER, canonical_id, permission)


def group_grant(uri: str, permission: str) -> Grant:
    return Grant(GROUP, uri, permission)


_KIND_CODES = {CANONICAL_USER: 0, GROUP: 1}
_CODE_KINDS = {0: CANONICAL_USER, 1: GROUP}


@dataclasses.dataclass(frozen=True, slots=True)
class Acl:
    """An owner (canonical id) and its grants, in the order they were given."""

    owner: str
    grants: tuple[Grant, ...]

    @classmethod
    def default(cls, owner: str) -> Acl:
        """What every bucket and object starts with: the owner has FULL_CONTROL."""
        return cls(owner, (user_grant(owner, FULL_CONTROL),))

    def is_default(self, owner: str) -> bool:
        return self == Acl.default(owner)

    @property
    def public(self) -> bool:
        """Grants something to everyone or to every authenticated user (S3's "public")."""
        return any(g.kind == GROUP and g.value in PUBLIC_GROUPS for g in self.grants)

    def only_full_control_to(self, canonical_ids: set[str], required: str) -> bool:
        """Every grant is FULL_CONTROL to one of ``canonical_ids``, and ``required`` has one."""
        return (all(g.kind == CANONICAL_USER and g.value in canonical_ids
                    and g.permission == FULL_CONTROL for g in self.grants)
                and user_grant(required, FULL_CONTROL) in self.grants)

    def pack(self) -> bytes:
        return msgpack.packb([self.owner, [[_KIND_CODES[g.kind], g.value, g.permission]
                                           for g in self.grants]])

    @classmethod
    def unpack(cls, raw: bytes) -> Acl:
        owner, grants = msgpack.unpackb(raw)
        return cls(owner, tuple(Grant(_CODE_KINDS[k], v, p) for k, v, p in grants))


# --- canned ACLs and grant headers ---------------------------------------------------------

def canned_grants(name: str, owner: str, bucket_owner: str) -> tuple[Grant, ...]:
    """The grants of a canned ACL, as S3's table gives them (``bucket-owner-*`` add
    nothing when the owner is the bucket owner, as on a bucket itself)."""
    own = user_grant(owner, FULL_CONTROL)
    if name == "private":
        return (own,)
    if name == "public-read":
        return own, group_grant(ALL_USERS, READ)
    if name == "public-read-write":
        return own, group_grant(ALL_USERS, READ), group_grant(ALL_USERS, WRITE)
    if name == "authenticated-read":
        return own, group_grant(AUTHENTICATED_USERS, READ)
    if name == "log-delivery-write":
        return own, group_grant(LOG_DELIVERY, WRITE), group_grant(LOG_DELIVERY, READ_ACP)
    if name in ("bucket-owner-read", "bucket-owner-full-control"):
        if bucket_owner == owner:
            return (own,)
        return own, user_grant(bucket_owner, READ if name == "bucket-owner-read" else FULL_CONTROL)
    if name == "aws-exec-read":  # a grant to Amazon EC2, which Basalt has not
        raise S3NotImplemented("The aws-exec-read canned ACL is not supported.",
                               Header="x-amz-acl")
    raise InvalidArgument(None, ArgumentName="x-amz-acl", ArgumentValue=name)


@dataclasses.dataclass(frozen=True, slots=True)
class AclRequest:
    """What a request asks an ACL to be: a canned ACL, grants (from x-amz-grant-*
    headers or an AccessControlPolicy body, not yet resolved), or nothing."""

    canned: str | None = None
    grants: tuple[Grant, ...] | None = None
    owner: str | None = None        # the body's Owner/ID
    from_body: bool = False

    @property
    def empty(self) -> bool:
        return self.canned is None and self.grants is None


def acl_headers(headers: Mapping[str, str]) -> AclRequest:
    """The ACL the ``x-amz-acl`` / ``x-amz-grant-*`` headers ask for (both at once:
    InvalidRequest, as S3 answers)."""
    canned = headers.get("x-amz-acl")
    grants: list[Grant] = []
    named = False
    for header, permission in GRANT_HEADERS.items():
        value = headers.get(header)
        if value is not None:
            named = True
            grants.extend(parse_grant_header(header, value, permission))
    if canned is not None and named:
        raise InvalidRequest("Specifying both Canned ACLs and Header Grants is not allowed")
    if canned is not None:
        canned = canned.strip()
    return AclRequest(canned=canned, grants=tuple(grants) if named else None)


_HEADER_KINDS = {"id": CANONICAL_USER, "emailaddress": BY_EMAIL, "uri": GROUP}


def parse_grant_header(header: str, value: str, permission: str) -> list[Grant]:
    """``id="..."``, ``emailAddress="..."`` and ``uri="..."`` grantees, comma separated."""
    grants = []
    for item in value.split(","):
        name, eq, raw = item.strip().partition("=")
        kind = _HEADER_KINDS.get(name.strip().lower())
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]
        if not eq or kind is None or not raw:
            raise InvalidArgument(None, ArgumentName=header, ArgumentValue=value)
        grants.append(Grant(kind, raw, permission))
    return grants


# --- the AccessControlPolicy document -------------------------------------------------------

def parse_access_control_policy(body: bytes) -> AclRequest:
    """The owner and grants of a PutBucketAcl / PutObjectAcl body (MalformedACLError for
    anything that is not a valid AccessControlPolicy)."""
    if len(body) > MAX_BODY:
        raise MalformedACLError()
    try:
        root = _parse(body, "AccessControlPolicy")
    except MalformedXML:
        raise MalformedACLError() from None
    if root is None:
        raise MalformedACLError()
    owners = _children(root, "Owner")
    lists = _children(root, "AccessControlList")
    if len(owners) != 1 or len(lists) != 1:
        raise MalformedACLError()
    owner = _leaf(owners[0], "ID", required=True)
    grants = tuple(_grant(g) for g in _children(lists[0], "Grant"))
    if len(grants) > MAX_GRANTS or len(lists[0]) != len(grants):
        raise MalformedACLError()
    return AclRequest(grants=grants, owner=owner, from_body=True)


def _leaf(element: ET.Element, name: str, *, required: bool = False) -> str | None:
    try:
        value = _text(element, name, required=required)
    except MalformedXML:
        raise MalformedACLError() from None
    return None if value is None else value.strip()


def _grant(element: ET.Element) -> Grant:
    grantees = _children(element, "Grantee")
    permission = _leaf(element, "Permission", required=True)
    if len(grantees) != 1 or permission not in PERMISSIONS:
        raise MalformedACLError()
    grantee = grantees[0]
    kind = grantee.get(f"{{{XSI}}}type")
    field = {CANONICAL_USER: "ID", BY_EMAIL: "EmailAddress", GROUP: "URI"}.get(kind or "")
    if kind is None or field is None:
        raise MalformedACLError()
    value = _leaf(grantee, field, required=True)
    if not value or any(_local(c.tag) not in ("ID", "DisplayName", "EmailAddress", "URI")
                        for c in grantee):
        raise MalformedACLError()
    return Grant(kind, value, permission)


def render_access_control_policy(acl: Acl, names: Mapping[str, str]) -> bytes:
    """GetBucketAcl / GetObjectAcl as S3 writes it (``names``: canonical id → display name)."""
    def user(cid: str) -> str:
        name = names.get(cid)
        return f"<ID>{xml_text(cid)}</ID>" + (
            f"<DisplayName>{xml_text(name)}</DisplayName>" if name else "")

    grants = []
    for g in acl.grants:
        inner = user(g.value) if g.kind == CANONICAL_USER else f"<URI>{xml_text(g.value)}</URI>"
        grants.append(f'<Grant><Grantee xmlns:xsi="{XSI}" xsi:type="{g.kind}">{inner}</Grantee>'
                      f"<Permission>{g.permission}</Permission></Grant>")
    return _document("AccessControlPolicy", (
        "<Owner>", user(acl.owner), "</Owner><AccessControlList>", "".join(grants),
        "</AccessControlList>"))
