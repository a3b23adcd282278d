"""ACLs: canned ACLs, grant headers, the AccessControlPolicy document (botocore as the
reader of what we render and the writer of what we parse), grantee resolution, and
what an ACL grants whom (without reading objects when the bucket can tell)."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace

import pytest
from botocore.serialize import create_serializer
from botocore.session import get_session

from gateway import acl
from gateway.acl_xml import (
    ALL_USERS,
    AUTHENTICATED_USERS,
    FULL_CONTROL,
    LOG_DELIVERY,
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
    group_grant,
    parse_access_control_policy,
    render_access_control_policy,
    user_grant,
)
from gateway.errors import AccessDenied, InvalidArgument, InvalidRequest, S3NotImplemented
from gateway.identity import ROOT_ACCOUNT, Principal, canonical_id
from gateway.router import Route
from tests.gateway.s3_testkit import stubbed_s3

OTHER = "111111111111"
ROOT, ALICE = canonical_id(ROOT_ACCOUNT), canonical_id(OTHER)


@dataclasses.dataclass
class Account:
    id: str
    name: str


class Directory:
    """Two accounts: root, and 'alice' with an e-mail address."""

    accounts = [Account(ROOT_ACCOUNT, "root"), Account(OTHER, "alice")]

    def account_by_id(self, account_id):
        return next((a for a in self.accounts if a.id == account_id), None)

    def account_by_canonical_id(self, cid):
        return next((a for a in self.accounts if canonical_id(a.id) == cid), None)

    def account_by_email(self, email):
        return self.accounts[1] if email.lower() == "alice@example.com" else None


# --- canned ACLs and headers ------------------------------------------------------------------

def test_canned_acls_follow_aws_table():
    own = user_grant(ROOT, FULL_CONTROL)
    assert canned_grants("private", ROOT, ROOT) == (own,)
    assert canned_grants("public-read", ROOT, ROOT) == (own, group_grant(ALL_USERS, READ))
    assert canned_grants("public-read-write", ROOT, ROOT) == (
        own, group_grant(ALL_USERS, READ), group_grant(ALL_USERS, WRITE))
    assert canned_grants("authenticated-read", ROOT, ROOT) == (
        own, group_grant(AUTHENTICATED_USERS, READ))
    assert canned_grants("log-delivery-write", ROOT, ROOT) == (
        own, group_grant(LOG_DELIVERY, WRITE), group_grant(LOG_DELIVERY, READ_ACP))
    # bucket-owner-*: the object's writer keeps FULL_CONTROL, the bucket owner gets its part
    alice = user_grant(ALICE, FULL_CONTROL)
    assert canned_grants("bucket-owner-read", ALICE, ROOT) == (alice, user_grant(ROOT, READ))
    assert canned_grants("bucket-owner-full-control", ALICE, ROOT) == (
        alice, user_grant(ROOT, FULL_CONTROL))
    assert canned_grants("bucket-owner-full-control", ROOT, ROOT) == (own,)
    with pytest.raises(InvalidArgument):
        canned_grants("everyone-please", ROOT, ROOT)
    with pytest.raises(S3NotImplemented):
        canned_grants("aws-exec-read", ROOT, ROOT)


def test_grant_headers():
    request = acl_headers({"x-amz-grant-read": f'uri="{ALL_USERS}", id={ALICE}',
                           "x-amz-grant-full-control": 'emailAddress="alice@example.com"'})
    assert request.grants == (Grant("Group", ALL_USERS, READ), Grant("CanonicalUser", ALICE, READ),
                              Grant("AmazonCustomerByEmail", "alice@example.com", FULL_CONTROL))
    assert acl_headers({}).empty and acl_headers({"x-amz-acl": " private "}).canned == "private"
    with pytest.raises(InvalidRequest):
        acl_headers({"x-amz-acl": "private", "x-amz-grant-read": f"id={ALICE}"})
    for bad in ("", "id", 'name="x"', 'id=""', f"id={ALICE},"):
        with pytest.raises(InvalidArgument) as err:
            acl_headers({"x-amz-grant-write": bad})
        assert err.value.extra["ArgumentName"] == "x-amz-grant-write"


def test_resolution_of_grantees():
    directory = Directory()
    grants = (Grant("CanonicalUser", ALICE.upper(), READ),
              Grant("AmazonCustomerByEmail", "Alice@Example.com", WRITE_ACP),
              Grant("Group", LOG_DELIVERY, WRITE))
    assert acl.resolve(grants, directory) == (
        user_grant(ALICE, READ), user_grant(ALICE, WRITE_ACP), group_grant(LOG_DELIVERY, WRITE))
    with pytest.raises(InvalidArgument) as err:
        acl.resolve([Grant("CanonicalUser", "f" * 64, READ)], directory)
    assert (err.value.message, err.value.extra["ArgumentName"]) == ("Invalid id", "CanonicalUser/ID")
    with pytest.raises(UnresolvableGrantByEmailAddress):
        acl.resolve([Grant("AmazonCustomerByEmail", "bob@example.com", READ)], directory)
    with pytest.raises(UnresolvableGrantByEmailAddress):  # the root-only directory knows no e-mail
        acl.resolve([Grant("AmazonCustomerByEmail", "alice@example.com", READ)], acl.ROOT_ONLY)
    with pytest.raises(InvalidArgument):
        acl.resolve([Grant("Group", "http://acs.amazonaws.com/groups/global/Everyone", READ)],
                    directory)
    assert acl.resolve([Grant("CanonicalUser", ROOT, READ)], acl.ROOT_ONLY) == (
        user_grant(ROOT, READ),)


# --- the document ------------------------------------------------------------------------------

def serialized(operation: str, params: dict) -> bytes:
    """The body botocore sends for ``operation`` (its own XML serializer)."""
    model = get_session().get_service_model("s3")
    return create_serializer("rest-xml").serialize_to_request(
        params, model.operation_model(operation))["body"]


def test_botocore_documents_parse():
    body = serialized("PutObjectAcl", {"Bucket": "b", "Key": "k", "AccessControlPolicy": {
        "Owner": {"ID": ROOT, "DisplayName": "root"}, "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": ALICE, "DisplayName": "x"},
             "Permission": "FULL_CONTROL"},
            {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"},
            {"Grantee": {"Type": "AmazonCustomerByEmail", "EmailAddress": "alice@example.com"},
             "Permission": "READ_ACP"}]}})
    assert parse_access_control_policy(body) == AclRequest(
        owner=ROOT, from_body=True, grants=(
            Grant("CanonicalUser", ALICE, FULL_CONTROL), Grant("Group", ALL_USERS, READ),
            Grant("AmazonCustomerByEmail", "alice@example.com", READ_ACP)))
    empty = serialized("PutBucketAcl", {"Bucket": "b", "AccessControlPolicy": {
        "Owner": {"ID": ROOT}, "Grants": []}})
    assert parse_access_control_policy(empty).grants == ()


GRANT = ('<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
         'xsi:type="Group"><URI>{uri}</URI></Grantee><Permission>{perm}</Permission></Grant>')


@pytest.mark.parametrize("body", [
    b"", b"not xml", b"<AccessControlPolicy>", b"<Other/>",
    b"<AccessControlPolicy><AccessControlList/></AccessControlPolicy>",          # no owner
    f"<AccessControlPolicy><Owner><ID>{ROOT}</ID></Owner></AccessControlPolicy>".encode(),
    b"<AccessControlPolicy><Owner/><AccessControlList/></AccessControlPolicy>",
    f"<AccessControlPolicy><Owner><ID>{ROOT}</ID></Owner><AccessControlList>"
    f"{GRANT.format(uri=ALL_USERS, perm='ALL')}</AccessControlList></AccessControlPolicy>".encode(),
    f"<AccessControlPolicy><Owner><ID>{ROOT}</ID></Owner><AccessControlList>"
    f"<Grant><Grantee><ID>{ROOT}</ID></Grantee><Permission>READ</Permission></Grant>"
    f"</AccessControlList></AccessControlPolicy>".encode(),                      # no xsi:type
    f"<AccessControlPolicy><Owner><ID>{ROOT}</ID></Owner><AccessControlList>"
    f'<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group">'
    f"<ID>{ROOT}</ID></Grantee><Permission>READ</Permission></Grant>"
    f"</AccessControlList></AccessControlPolicy>".encode(),                      # group without URI
    f"<AccessControlPolicy><Owner><ID>{ROOT}</ID></Owner><AccessControlList><Bogus/>"
    f"</AccessControlList></AccessControlPolicy>".encode(),
    (f"<AccessControlPolicy><Owner><ID>{ROOT}</ID></Owner><AccessControlList>"
     + GRANT.format(uri=ALL_USERS, perm="READ") * 101
     + "</AccessControlList></AccessControlPolicy>").encode(),                   # over 100 grants
    b'<!DOCTYPE x [<!ENTITY e "e">]><AccessControlPolicy/>',
])
def test_malformed_documents(body):
    with pytest.raises(MalformedACLError) as err:
        parse_access_control_policy(body)
    assert err.value.status == 400


def test_rendered_document_reads_back_in_botocore():
    rendered = render_access_control_policy(
        Acl(ROOT, (user_grant(ROOT, FULL_CONTROL), user_grant(ALICE, READ_ACP),
                   group_grant(ALL_USERS, READ))),
        {ROOT: "root"})
    stub = stubbed_s3()
    stub.responder = lambda _: (200, {}, rendered)
    got = stub.client.get_object_acl(Bucket="b", Key="k")
    assert got["Owner"] == {"ID": ROOT, "DisplayName": "root"}
    assert got["Grants"] == [
        {"Grantee": {"Type": "CanonicalUser", "ID": ROOT, "DisplayName": "root"},
         "Permission": "FULL_CONTROL"},
        {"Grantee": {"Type": "CanonicalUser", "ID": ALICE}, "Permission": "READ_ACP"},
        {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"}]
    # ... and parses back into the same ACL.
    again = parse_access_control_policy(rendered)
    assert Acl(again.owner, again.grants) == Acl.unpack(Acl(
        ROOT, (user_grant(ROOT, FULL_CONTROL), user_grant(ALICE, READ_ACP),
               group_grant(ALL_USERS, READ))).pack())


def test_acl_model():
    public = Acl(ROOT, (user_grant(ROOT, FULL_CONTROL), group_grant(AUTHENTICATED_USERS, READ)))
    assert Acl.unpack(public.pack()) == public and public.public
    assert not Acl(ROOT, (group_grant(LOG_DELIVERY, WRITE),)).public
    assert Acl.default(ROOT).is_default(ROOT) and not Acl.default(ALICE).is_default(ROOT)
    both = Acl(ALICE, (user_grant(ALICE, FULL_CONTROL), user_grant(ROOT, FULL_CONTROL)))
    assert both.only_full_control_to({ROOT, ALICE}, ROOT)
    assert not Acl.default(ALICE).only_full_control_to({ROOT, ALICE}, ROOT)
    assert not public.only_full_control_to({ROOT}, ROOT)


# --- judging -------------------------------------------------------------------------------

ROOT_P = Principal(ROOT_ACCOUNT, "root")
ROOT_USER = Principal(ROOT_ACCOUNT, "root", user="carol")
ALICE_P = Principal(OTHER, "alice")
ALICE_USER = Principal(OTHER, "alice", user="dave")


def test_grants_permission():
    public = Acl(ROOT, (user_grant(ROOT, FULL_CONTROL), group_grant(ALL_USERS, READ),
                        group_grant(AUTHENTICATED_USERS, WRITE), user_grant(ALICE, READ_ACP)))
    allows = acl.grants_permission
    assert allows(public, READ, None, ROOT_ACCOUNT)
    assert not allows(public, READ, None, ROOT_ACCOUNT, ignore_public=True)
    assert not allows(public, WRITE, None, ROOT_ACCOUNT)              # authenticated only
    assert allows(public, WRITE, ALICE_USER, ROOT_ACCOUNT)
    assert allows(public, READ_ACP, ALICE_P, ROOT_ACCOUNT)
    assert allows(public, READ_ACP, ALICE_USER, ROOT_ACCOUNT)           # then their policy decides
    assert not allows(public, WRITE_ACP, ALICE_P, ROOT_ACCOUNT)
    assert allows(public, WRITE_ACP, ROOT_P, ROOT_ACCOUNT)
    assert not allows(public, WRITE_ACP, ROOT_USER, ROOT_ACCOUNT)       # the owner's users need a policy
    revoked = Acl(ROOT, ())
    assert allows(revoked, WRITE_ACP, ROOT_P, ROOT_ACCOUNT)             # the owner may always fix it
    assert not allows(revoked, READ, ROOT_P, ROOT_ACCOUNT)


class FakeStore:
    def __init__(self, configs=None, info=None):
        self.configs = {"owner": ROOT_ACCOUNT.encode(), **(configs or {})}
        self.info, self.heads, self.sets = info, 0, []

    async def bucket_configs(self, bucket):
        return dict(self.configs)

    async def bucket_config(self, bucket, kind):
        return self.configs.get(kind)

    async def set_bucket_config(self, bucket, kind, value):
        self.sets.append((kind, value))
        self.configs[kind] = value

    async def head_object(self, bucket, key, version_id=None):
        self.heads += 1
        return self.info


def run(coro):
    return asyncio.run(coro)


def test_acl_allows_reads_an_object_only_when_the_bucket_says_it_may_matter():
    route = Route("GetObject", "b", "k")
    plain = FakeStore()
    assert not run(acl.acl_allows(plain, route, "s3:GetObject", None))
    assert run(acl.acl_allows(plain, route, "s3:GetObject", ROOT_P))
    assert plain.heads == 0
    info = SimpleNamespace(acl=Acl(ROOT, canned_grants("public-read", ROOT, ROOT)).pack())
    marked = FakeStore({"objacls": b"1"}, info)
    assert run(acl.acl_allows(marked, route, "s3:GetObject", None))
    assert run(acl.acl_allows(marked, route, "s3:GetObjectVersion", None, "0" * 32))
    assert not run(acl.acl_allows(marked, route, "s3:GetObjectAcl", None))
    assert not run(acl.acl_allows(marked, route, "s3:PutObjectTagging", None))  # no ACL permission
    assert marked.heads == 3
    ignoring = FakeStore({"objacls": b"1", "pab": b"0100"}, info)
    assert not run(acl.acl_allows(ignoring, route, "s3:GetObject", None))
    enforced = FakeStore({"objacls": b"1", "ownership": b"BucketOwnerEnforced"}, info)
    assert not run(acl.acl_allows(enforced, route, "s3:GetObject", None))
    assert enforced.heads == 0


def test_acl_allows_bucket_permissions():
    writable = FakeStore({"acl": Acl(ROOT, canned_grants("public-read-write", ROOT, ROOT)).pack()})
    for action in ("s3:ListBucket", "s3:ListBucketVersions", "s3:PutObject", "s3:DeleteObject"):
        assert run(acl.acl_allows(writable, Route("X", "b", "k"), action, None)), action
    assert not run(acl.acl_allows(writable, Route("X", "b"), "s3:GetBucketAcl", None))
    assert not run(acl.acl_allows(writable, Route("X", "b"), "s3:GetBucketPolicy", None))
    assert not run(acl.acl_allows(FakeStore(), Route("X", "b"), "s3:ListBucket", None))
    assert not run(acl.acl_allows(FakeStore(), Route("ListBuckets"), "s3:ListAllMyBuckets", None))


def new_acl(store, writer, **headers):
    return run(acl.new_object_acl(store, "b", writer, acl_headers(headers), Directory()))


def test_new_object_acl_under_each_ownership():
    # The bucket owner with no ACL headers: nothing stored, nothing read beyond settings.
    for mode in (b"BucketOwnerEnforced", b"ObjectWriter", b""):
        assert new_acl(FakeStore({"ownership": mode}), ROOT_ACCOUNT) == b""
    enforced = FakeStore({"ownership": b"BucketOwnerEnforced"})
    for ok in ({"x-amz-acl": "bucket-owner-full-control"}, {"x-amz-acl": "private"},
               {"x-amz-grant-full-control": f"id={ROOT}"}):
        assert new_acl(enforced, ROOT_ACCOUNT, **ok) == b""
    assert new_acl(enforced, OTHER, **{"x-amz-acl": "bucket-owner-full-control"}) == b""
    assert new_acl(enforced, OTHER) == b""   # the bucket owner owns it
    for refused, writer in (({"x-amz-acl": "public-read"}, ROOT_ACCOUNT),
                            ({"x-amz-acl": "private"}, OTHER),
                            ({"x-amz-grant-read": f"id={ALICE}"}, ROOT_ACCOUNT)):
        with pytest.raises(acl.AccessControlListNotSupported):
            new_acl(enforced, writer, **refused)
    assert enforced.sets == []

    writer = FakeStore({"ownership": b"ObjectWriter"})
    assert Acl.unpack(new_acl(writer, OTHER)) == Acl.default(ALICE)
    assert Acl.unpack(new_acl(writer, OTHER, **{"x-amz-acl": "bucket-owner-full-control"})) == Acl(
        ALICE, (user_grant(ALICE, FULL_CONTROL), user_grant(ROOT, FULL_CONTROL)))
    assert writer.sets == [("objacls", b"1")]
    preferred = FakeStore({"ownership": b"BucketOwnerPreferred"})
    assert new_acl(preferred, OTHER, **{"x-amz-acl": "bucket-owner-full-control"}) == b""
    assert Acl.unpack(new_acl(preferred, OTHER, **{"x-amz-acl": "private"})).owner == ALICE
    legacy = FakeStore()  # no ownership setting: as ObjectWriter
    assert Acl.unpack(new_acl(legacy, ROOT_ACCOUNT, **{"x-amz-acl": "public-read"})).public
    blocked = FakeStore({"pab": b"1000"})
    with pytest.raises(AccessDenied):
        new_acl(blocked, ROOT_ACCOUNT, **{"x-amz-grant-read": f'uri="{AUTHENTICATED_USERS}"'})
    assert new_acl(blocked, ROOT_ACCOUNT, **{"x-amz-acl": "private"}) == b""
    assert blocked.sets == []
