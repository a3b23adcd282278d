"""ACLs, object ownership controls and the public access block through boto3, aws-cli,
unsigned boto3 and plain HTTP (urllib, as curl): canned ACLs and grants stored and
rendered as AWS does, public-read objects served to anyone, bad input refused with
nothing changed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from gateway.identity import ROOT_ACCOUNT, canonical_id
from tests.e2e.conftest import ACCESS, SECRET
from tests.e2e.conftest import anonymous_fetch as fetch

ROOT_CID = canonical_id(ROOT_ACCOUNT)
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"
XSI = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'


@pytest.fixture
def s3(basalt_http):
    return basalt_http.client()


def new_bucket(s3, ownership: str | None = "ObjectWriter", **kwargs) -> str:
    name = f"acl-{uuid.uuid4().hex[:12]}"
    if ownership:
        kwargs["ObjectOwnership"] = ownership
    s3.create_bucket(Bucket=name, **kwargs)
    return name


@pytest.fixture
def writer_bucket(s3):
    """A bucket with ACLs enabled (ObjectWriter), holding a private object."""
    name = new_bucket(s3)
    s3.put_object(Bucket=name, Key="obj", Body=b"hello")
    return name


def signed(server, method: str, path: str, body: bytes = b"",
           headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A request signed with the root key exactly as given (body untouched)."""
    request = AWSRequest(method, server.endpoint + path, data=body, headers={
        "x-amz-content-sha256": hashlib.sha256(body).hexdigest(), **(headers or {})})
    S3SigV4Auth(Credentials(ACCESS, SECRET), "s3", "us-east-1").add_auth(request)
    raw = urllib.request.Request(request.url, data=body or None, method=method,
                                 headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(raw, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def code(err: pytest.ExceptionInfo) -> tuple[int, str]:
    response = err.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def grants(response: dict) -> list[tuple[str, str, str]]:
    out = []
    for g in response["Grants"]:
        grantee = g["Grantee"]
        out.append((grantee["Type"], grantee.get("ID") or grantee.get("URI"), g["Permission"]))
    return out


OWNER_FC = ("CanonicalUser", ROOT_CID, "FULL_CONTROL")
CANNED = {
    "private": [OWNER_FC],
    "public-read": [OWNER_FC, ("Group", ALL_USERS, "READ")],
    "public-read-write": [OWNER_FC, ("Group", ALL_USERS, "READ"), ("Group", ALL_USERS, "WRITE")],
    "authenticated-read": [OWNER_FC, ("Group", AUTHENTICATED, "READ")],
    "bucket-owner-read": [OWNER_FC],           # the owner is the bucket owner here
    "bucket-owner-full-control": [OWNER_FC],
}


def test_canned_acls_round_trip_on_objects_and_buckets(s3, writer_bucket):
    for canned, expected in CANNED.items():
        s3.put_object_acl(Bucket=writer_bucket, Key="obj", ACL=canned)
        got = s3.get_object_acl(Bucket=writer_bucket, Key="obj")
        assert grants(got) == expected, canned
        assert got["Owner"] == {"ID": ROOT_CID, "DisplayName": "root"}
    for canned, expected in {**CANNED, "log-delivery-write": [
            OWNER_FC, ("Group", LOG_DELIVERY, "WRITE"), ("Group", LOG_DELIVERY, "READ_ACP")]}.items():
        s3.put_bucket_acl(Bucket=writer_bucket, ACL=canned)
        assert grants(s3.get_bucket_acl(Bucket=writer_bucket)) == expected, canned


def test_acl_xml_is_rendered_as_aws_does(basalt_http, s3, writer_bucket):
    s3.put_object_acl(Bucket=writer_bucket, Key="obj", ACL="public-read")
    status, body = signed(basalt_http, "GET", f"/{writer_bucket}/obj?acl")
    owner = f"<ID>{ROOT_CID}</ID><DisplayName>root</DisplayName>"
    assert status == 200
    assert body.decode() == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Owner>{owner}</Owner><AccessControlList>"
        f'<Grant><Grantee {XSI} xsi:type="CanonicalUser">{owner}</Grantee>'
        "<Permission>FULL_CONTROL</Permission></Grant>"
        f'<Grant><Grantee {XSI} xsi:type="Group"><URI>{ALL_USERS}</URI></Grantee>'
        "<Permission>READ</Permission></Grant>"
        "</AccessControlList></AccessControlPolicy>")


def test_public_read_objects_are_served_to_anyone(basalt_http, s3, anon, writer_bucket):
    s3.put_object(Bucket=writer_bucket, Key="page.html", Body=b"<h1>hi</h1>", ACL="public-read")
    assert fetch(basalt_http, f"/{writer_bucket}/page.html") == (200, b"<h1>hi</h1>")
    assert fetch(basalt_http, f"/{writer_bucket}/page.html", "HEAD")[0] == 200
    assert anon.get_object(Bucket=writer_bucket, Key="page.html")["Body"].read() == b"<h1>hi</h1>"
    with pytest.raises(ClientError) as err:  # READ is not READ_ACP
        anon.get_object_acl(Bucket=writer_bucket, Key="page.html")
    assert code(err) == (403, "AccessDenied")
    # Private objects, missing keys, listing and writing stay closed to strangers.
    status, body = fetch(basalt_http, f"/{writer_bucket}/obj")
    assert status == 403 and b"<Code>AccessDenied</Code>" in body
    assert fetch(basalt_http, f"/{writer_bucket}/missing")[0] == 403
    assert fetch(basalt_http, f"/{writer_bucket}")[0] == 403
    assert fetch(basalt_http, f"/{writer_bucket}/new", "PUT", b"x")[0] == 403
    # Made private again: closed again.
    s3.put_object_acl(Bucket=writer_bucket, Key="page.html", ACL="private")
    assert fetch(basalt_http, f"/{writer_bucket}/page.html")[0] == 403
    # Overwritten without an ACL: the new version is private.
    s3.put_object(Bucket=writer_bucket, Key="page.html", Body=b"v2", ACL="public-read")
    assert fetch(basalt_http, f"/{writer_bucket}/page.html") == (200, b"v2")
    s3.put_object(Bucket=writer_bucket, Key="page.html", Body=b"v3")
    assert fetch(basalt_http, f"/{writer_bucket}/page.html")[0] == 403


def test_bucket_acls_open_listing_and_writing(basalt_http, s3, anon, writer_bucket):
    assert fetch(basalt_http, f"/{writer_bucket}?list-type=2")[0] == 403
    s3.put_bucket_acl(Bucket=writer_bucket, ACL="public-read")
    assert [o["Key"] for o in anon.list_objects_v2(Bucket=writer_bucket)["Contents"]] == ["obj"]
    assert fetch(basalt_http, f"/{writer_bucket}/obj")[0] == 403   # the object is still private
    assert fetch(basalt_http, f"/{writer_bucket}/dropped", "PUT", b"x")[0] == 403
    s3.put_bucket_acl(Bucket=writer_bucket, ACL="public-read-write")
    assert fetch(basalt_http, f"/{writer_bucket}/dropped", "PUT", b"x")[0] == 200
    assert s3.get_object(Bucket=writer_bucket, Key="dropped")["Body"].read() == b"x"
    s3.put_bucket_acl(Bucket=writer_bucket, ACL="authenticated-read")  # not anonymous
    assert fetch(basalt_http, f"/{writer_bucket}?list-type=2")[0] == 403


def test_grants_by_header_and_by_xml(s3, writer_bucket):
    s3.put_object_acl(Bucket=writer_bucket, Key="obj", GrantRead=f'uri="{ALL_USERS}"',
                      GrantFullControl=f'id="{ROOT_CID}"')
    assert grants(s3.get_object_acl(Bucket=writer_bucket, Key="obj")) == [
        ("Group", ALL_USERS, "READ"), OWNER_FC]
    s3.put_bucket_acl(Bucket=writer_bucket, GrantReadACP=f"uri={AUTHENTICATED}",
                      GrantWrite=f'uri="{LOG_DELIVERY}", id="{ROOT_CID}"')
    assert grants(s3.get_bucket_acl(Bucket=writer_bucket)) == [
        ("Group", LOG_DELIVERY, "WRITE"), ("CanonicalUser", ROOT_CID, "WRITE"),
        ("Group", AUTHENTICATED, "READ_ACP")]
    policy = {"Owner": {"ID": ROOT_CID}, "Grants": [
        {"Grantee": {"Type": "CanonicalUser", "ID": ROOT_CID}, "Permission": "FULL_CONTROL"},
        {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"}]}
    s3.put_object_acl(Bucket=writer_bucket, Key="obj", AccessControlPolicy=policy)
    assert grants(s3.get_object_acl(Bucket=writer_bucket, Key="obj")) == [
        OWNER_FC, ("Group", ALL_USERS, "READ")]
    s3.put_bucket_acl(Bucket=writer_bucket, AccessControlPolicy={**policy, "Grants": []})
    assert s3.get_bucket_acl(Bucket=writer_bucket)["Grants"] == []   # revoked all, as S3 allows
    s3.put_bucket_acl(Bucket=writer_bucket, ACL="private")            # the owner still may


def test_bad_acls_are_refused_and_change_nothing(basalt_http, s3, writer_bucket):
    s3.put_object_acl(Bucket=writer_bucket, Key="obj", ACL="public-read")
    before = grants(s3.get_object_acl(Bucket=writer_bucket, Key="obj"))
    bad_policies = [
        ({"Owner": {"ID": ROOT_CID}, "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": "a" * 64},
                                                 "Permission": "READ"}]}, (400, "InvalidArgument")),
        ({"Owner": {"ID": ROOT_CID}, "Grants": [{"Grantee": {"Type": "AmazonCustomerByEmail",
                                                             "EmailAddress": "nobody@example.com"},
                                                 "Permission": "READ"}]},
         (400, "UnresolvableGrantByEmailAddress")),
        ({"Owner": {"ID": ROOT_CID}, "Grants": [{"Grantee": {"Type": "Group", "URI": "http://x/y"},
                                                 "Permission": "READ"}]}, (400, "InvalidArgument")),
        ({"Owner": {"ID": ROOT_CID}, "Grants": [{"Grantee": {"Type": "Group", "URI": ALL_USERS},
                                                 "Permission": "EVERYTHING"}]},
         (400, "MalformedACLError")),
        ({"Owner": {"ID": "b" * 64}, "Grants": []}, (403, "AccessDenied")),  # giving it away
    ]
    for policy, expected in bad_policies:
        with pytest.raises(ClientError) as err:
            s3.put_object_acl(Bucket=writer_bucket, Key="obj", AccessControlPolicy=policy)
        assert code(err) == expected, policy
    for kwargs, expected in [
            ({"GrantRead": 'id="' + "c" * 64 + '"'}, (400, "InvalidArgument")),
            ({"GrantRead": "nonsense"}, (400, "InvalidArgument")),
            ({"GrantRead": 'emailAddress="nobody@example.com"'},
             (400, "UnresolvableGrantByEmailAddress")),
            ({"ACL": "private", "GrantRead": f'uri="{ALL_USERS}"'}, (400, "InvalidRequest")),
            ({"ACL": "world-writable"}, (400, "InvalidArgument"))]:
        with pytest.raises(ClientError) as err:
            s3.put_object_acl(Bucket=writer_bucket, Key="obj", **kwargs)
        assert code(err) == expected, kwargs
    for body in (b"<AccessControlPolicy><Owner>", b"not xml at all",
                 b"<AccessControlPolicy><AccessControlList/></AccessControlPolicy>",
                 f'<AccessControlPolicy><Owner><ID>{ROOT_CID}</ID></Owner><AccessControlList>'
                 f'<Grant><Grantee><URI>{ALL_USERS}</URI></Grantee><Permission>READ</Permission>'
                 f'</Grant></AccessControlList></AccessControlPolicy>'.encode(),  # no xsi:type
                 b"<Other/>"):
        status, answer = signed(basalt_http, "PUT", f"/{writer_bucket}/obj?acl", body)
        assert (status, b"<Code>MalformedACLError</Code>" in answer) == (400, True), body
        status, answer = signed(basalt_http, "PUT", f"/{writer_bucket}?acl", body)
        assert (status, b"<Code>MalformedACLError</Code>" in answer) == (400, True), body
    good = (f'<AccessControlPolicy><Owner><ID>{ROOT_CID}</ID></Owner><AccessControlList>'
            f'</AccessControlList></AccessControlPolicy>').encode()
    status, answer = signed(basalt_http, "PUT", f"/{writer_bucket}/obj?acl", good,
                            {"x-amz-acl": "private"})
    assert status == 400 and b"<Code>UnexpectedContent</Code>" in answer
    assert grants(s3.get_object_acl(Bucket=writer_bucket, Key="obj")) == before
    assert grants(s3.get_bucket_acl(Bucket=writer_bucket)) == [OWNER_FC]
    # A refused upload stores nothing.
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=writer_bucket, Key="never", Body=b"x", GrantRead="id=nobody")
    assert code(err) == (400, "InvalidArgument")
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=writer_bucket, Key="never")
    assert code(err)[0] == 404
    with pytest.raises(ClientError) as err:
        s3.get_object_acl(Bucket=writer_bucket, Key="missing")
    assert code(err) == (404, "NoSuchKey")


def test_new_buckets_enforce_bucket_ownership(basalt_http, s3):
    bucket = new_bucket(s3, ownership=None)
    rules = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
    assert rules == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    for acl in ("public-read", "authenticated-read", "log-delivery-write"):
        with pytest.raises(ClientError) as err:
            s3.put_object(Bucket=bucket, Key="k", Body=b"x", ACL=acl)
        assert code(err) == (400, "AccessControlListNotSupported")
        assert err.value.response["Error"]["Message"] == "The bucket does not allow ACLs"
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", GrantRead=f'uri="{ALL_USERS}"')
    assert code(err) == (400, "AccessControlListNotSupported")
    with pytest.raises(ClientError) as err:
        s3.create_multipart_upload(Bucket=bucket, Key="k", ACL="public-read")
    assert code(err) == (400, "AccessControlListNotSupported")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # What the bucket owner sends today keeps working.
    for acl in ("private", "bucket-owner-full-control", "bucket-owner-read"):
        s3.put_object(Bucket=bucket, Key=acl, Body=b"x", ACL=acl)
        assert grants(s3.get_object_acl(Bucket=bucket, Key=acl)) == [OWNER_FC]
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    for call in (lambda: s3.put_bucket_acl(Bucket=bucket, ACL="private"),
                 lambda: s3.put_object_acl(Bucket=bucket, Key="plain", ACL="public-read")):
        with pytest.raises(ClientError) as err:
            call()
        assert code(err) == (400, "AccessControlListNotSupported")
    assert grants(s3.get_bucket_acl(Bucket=bucket)) == [OWNER_FC]
    with pytest.raises(ClientError) as err:   # a public bucket ACL cannot come with enforcement
        s3.create_bucket(Bucket=f"acl-{uuid.uuid4().hex[:12]}", ACL="public-read")
    assert code(err) == (400, "InvalidBucketAclWithObjectOwnership")


def test_ownership_controls(basalt_http, s3):
    bucket = new_bucket(s3, ACL="public-read")
    assert grants(s3.get_bucket_acl(Bucket=bucket)) == CANNED["public-read"]
    s3.put_object(Bucket=bucket, Key="pub", Body=b"p", ACL="public-read")
    assert fetch(basalt_http, f"/{bucket}/pub") == (200, b"p")
    enforced = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    with pytest.raises(ClientError) as err:  # the bucket ACL grants everyone something
        s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=enforced)
    assert code(err) == (400, "InvalidBucketAclWithObjectOwnership")
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=enforced)
    assert s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"] == enforced
    # ACLs disabled: the public object is the owner's alone, its ACL reads as such.
    assert fetch(basalt_http, f"/{bucket}/pub")[0] == 403
    assert grants(s3.get_object_acl(Bucket=bucket, Key="pub")) == [OWNER_FC]
    preferred = {"Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]}
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=preferred)
    assert s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"] == preferred
    assert fetch(basalt_http, f"/{bucket}/pub") == (200, b"p")  # enabled again: as it was
    s3.delete_bucket_ownership_controls(Bucket=bucket)
    with pytest.raises(ClientError) as err:
        s3.get_bucket_ownership_controls(Bucket=bucket)
    assert code(err) == (404, "OwnershipControlsNotFoundError")
    s3.put_object(Bucket=bucket, Key="pub2", Body=b"q", ACL="public-read")  # as ObjectWriter
    assert fetch(basalt_http, f"/{bucket}/pub2") == (200, b"q")
    for body in (b"<OwnershipControls><Rule><ObjectOwnership>Nobody</ObjectOwnership></Rule>"
                 b"</OwnershipControls>", b"<OwnershipControls/>", b"garbage"):
        status, answer = signed(basalt_http, "PUT", f"/{bucket}?ownershipControls", body)
        assert status == 400 and b"<Code>MalformedXML</Code>" in answer
    with pytest.raises(ClientError) as err:
        s3.get_bucket_ownership_controls(Bucket=bucket)
    assert code(err) == (404, "OwnershipControlsNotFoundError")


def test_public_access_block(basalt_http, s3, anon, writer_bucket):
    with pytest.raises(ClientError) as err:
        s3.get_public_access_block(Bucket=writer_bucket)
    assert code(err) == (404, "NoSuchPublicAccessBlockConfiguration")
    s3.put_object(Bucket=writer_bucket, Key="pub", Body=b"p", ACL="public-read")
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{writer_bucket}/obj"}]})
    s3.put_bucket_policy(Bucket=writer_bucket, Policy=policy)
    assert fetch(basalt_http, f"/{writer_bucket}/obj") == (200, b"hello")

    def block(**switches):
        config = {"BlockPublicAcls": False, "IgnorePublicAcls": False, "BlockPublicPolicy": False,
                  "RestrictPublicBuckets": False, **switches}
        s3.put_public_access_block(Bucket=writer_bucket, PublicAccessBlockConfiguration=config)
        assert s3.get_public_access_block(Bucket=writer_bucket)[
            "PublicAccessBlockConfiguration"] == config

    block(BlockPublicAcls=True)
    for call in (lambda: s3.put_object(Bucket=writer_bucket, Key="new", Body=b"x", ACL="public-read"),
                 lambda: s3.put_object(Bucket=writer_bucket, Key="new", Body=b"x",
                                       GrantRead=f'uri="{AUTHENTICATED}"'),
                 lambda: s3.put_object_acl(Bucket=writer_bucket, Key="obj", ACL="public-read-write"),
                 lambda: s3.put_bucket_acl(Bucket=writer_bucket, ACL="public-read")):
        with pytest.raises(ClientError) as err:
            call()
        assert code(err) == (403, "AccessDenied")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=writer_bucket, Key="new")
    s3.put_object(Bucket=writer_bucket, Key="new", Body=b"x", ACL="private")
    assert fetch(basalt_http, f"/{writer_bucket}/pub") == (200, b"p")  # existing ACLs still count

    block(IgnorePublicAcls=True)
    assert fetch(basalt_http, f"/{writer_bucket}/pub")[0] == 403
    assert fetch(basalt_http, f"/{writer_bucket}/obj") == (200, b"hello")  # the policy still does

    block(RestrictPublicBuckets=True)
    assert fetch(basalt_http, f"/{writer_bucket}/obj")[0] == 403
    assert fetch(basalt_http, f"/{writer_bucket}/pub") == (200, b"p")
    assert s3.get_object(Bucket=writer_bucket, Key="obj")["Body"].read() == b"hello"

    block(BlockPublicPolicy=True)
    s3.delete_bucket_policy(Bucket=writer_bucket)
    with pytest.raises(ClientError) as err:
        s3.put_bucket_policy(Bucket=writer_bucket, Policy=policy)
    assert code(err) == (403, "AccessDenied")
    with pytest.raises(ClientError):
        s3.get_bucket_policy(Bucket=writer_bucket)
    pinned = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{writer_bucket}/*",
        "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.1/32"}}}]})
    s3.put_bucket_policy(Bucket=writer_bucket, Policy=pinned)  # not public: allowed

    status, answer = signed(basalt_http, "PUT", f"/{writer_bucket}?publicAccessBlock",
                            b"<PublicAccessBlockConfiguration><BlockPublicAcls>maybe"
                            b"</BlockPublicAcls></PublicAccessBlockConfiguration>")
    assert status == 400 and b"<Code>MalformedXML</Code>" in answer
    assert s3.get_public_access_block(Bucket=writer_bucket)["PublicAccessBlockConfiguration"][
        "BlockPublicPolicy"] is True
    s3.delete_public_access_block(Bucket=writer_bucket)
    with pytest.raises(ClientError) as err:
        s3.get_public_access_block(Bucket=writer_bucket)
    assert code(err) == (404, "NoSuchPublicAccessBlockConfiguration")
    assert fetch(basalt_http, f"/{writer_bucket}/pub") == (200, b"p")


def test_uploads_copies_and_versions_carry_their_own_acls(basalt_http, s3, writer_bucket):
    upload = s3.create_multipart_upload(Bucket=writer_bucket, Key="multi", ACL="public-read")
    part = s3.upload_part(Bucket=writer_bucket, Key="multi", UploadId=upload["UploadId"],
                          PartNumber=1, Body=b"m" * 10)
    s3.complete_multipart_upload(Bucket=writer_bucket, Key="multi", UploadId=upload["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1,
                                                             "ETag": part["ETag"]}]})
    assert fetch(basalt_http, f"/{writer_bucket}/multi") == (200, b"m" * 10)
    s3.copy_object(Bucket=writer_bucket, Key="copy", CopySource=f"{writer_bucket}/multi")
    assert fetch(basalt_http, f"/{writer_bucket}/copy")[0] == 403  # S3 does not copy ACLs
    s3.copy_object(Bucket=writer_bucket, Key="copy2", CopySource=f"{writer_bucket}/obj",
                   ACL="public-read")
    assert fetch(basalt_http, f"/{writer_bucket}/copy2") == (200, b"hello")

    s3.put_bucket_versioning(Bucket=writer_bucket, VersioningConfiguration={"Status": "Enabled"})
    old = s3.put_object(Bucket=writer_bucket, Key="v", Body=b"old")["VersionId"]
    s3.put_object(Bucket=writer_bucket, Key="v", Body=b"new")
    s3.put_object_acl(Bucket=writer_bucket, Key="v", VersionId=old, ACL="public-read")
    assert grants(s3.get_object_acl(Bucket=writer_bucket, Key="v", VersionId=old)) \
        == CANNED["public-read"]
    assert grants(s3.get_object_acl(Bucket=writer_bucket, Key="v")) == [OWNER_FC]
    assert fetch(basalt_http, f"/{writer_bucket}/v?versionId={old}") == (200, b"old")
    assert fetch(basalt_http, f"/{writer_bucket}/v")[0] == 403
    with pytest.raises(ClientError) as err:
        s3.put_object_acl(Bucket=writer_bucket, Key="v", VersionId="0" * 32, ACL="private")
    assert code(err) == (404, "NoSuchVersion")


def test_aws_cli_sets_public_read(basalt_http, writer_bucket, tmp_path):
    env = dict(basalt_http.env, AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET)
    aws = ["aws", "--endpoint-url", basalt_http.endpoint]
    subprocess.run(aws + ["s3api", "put-object-acl", "--bucket", writer_bucket, "--key", "obj",
                          "--acl", "public-read"], env=env, check=True, capture_output=True,
                   timeout=60)
    assert fetch(basalt_http, f"/{writer_bucket}/obj") == (200, b"hello")
    out = subprocess.run(aws + ["s3api", "get-object-acl", "--bucket", writer_bucket, "--key", "obj",
                                "--output", "json"], env=env, check=True, capture_output=True,
                         text=True, timeout=60)
    assert json.loads(out.stdout)["Grants"][1] == {
        "Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"}
    path = tmp_path / "site.html"
    path.write_bytes(b"<p>site</p>")
    subprocess.run(aws + ["s3", "cp", "--acl", "public-read", str(path),
                          f"s3://{writer_bucket}/site.html"], env=env, check=True,
                   capture_output=True, timeout=60)
    assert fetch(basalt_http, f"/{writer_bucket}/site.html") == (200, b"<p>site</p>")
    curl = subprocess.run(["curl", "-s", "-o", "-", "-w", " %{http_code}",
                           f"{basalt_http.endpoint}/{writer_bucket}/site.html"],
                          capture_output=True, timeout=30)
    assert curl.stdout == b"<p>site</p> 200"
