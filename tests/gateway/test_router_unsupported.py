"""The router refuses headers that ask for features Basalt lacks, instead of ignoring them."""

from __future__ import annotations

import pytest

from gateway import router
from gateway.errors import PreconditionFailed


def route(method="PUT", path="/b/k", headers=None, query=None):
    return router.route(method, path, query or {}, {"Host": "127.0.0.1", **(headers or {})})


@pytest.mark.parametrize("header,value", [
    ("x-amz-server-side-encryption", "AES256"),
    ("x-amz-server-side-encryption", "aws:kms"),
    ("x-amz-server-side-encryption-aws-kms-key-id", "k1"),
    ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
    ("x-amz-copy-source-server-side-encryption-customer-key", "a2V5"),
])
@pytest.mark.parametrize("method,path,query,op", [
    ("PUT", "/b/k", {}, "PutObject"), ("POST", "/b/k", {"uploads": ""}, "CreateMultipartUpload"),
    ("GET", "/b/k", {}, "GetObject"),
])
def test_sse_headers_reach_the_handler(header, value, method, path, query, op):
    # Issue 16: the handlers encrypt (gateway.sse_objects) and judge the headers.
    assert route(method, path, {header: value}, query).op == op


@pytest.mark.parametrize("method,op", [
    ("GET", "GetBucketEncryption"), ("PUT", "PutBucketEncryption"),
    ("DELETE", "DeleteBucketEncryption"),
])
def test_bucket_encryption_is_routed(method, op):
    assert route(method, "/b", {}, {"encryption": ""}).op == op


@pytest.mark.parametrize("header,value", [
    ("x-amz-object-lock-mode", "GOVERNANCE"), ("x-amz-object-lock-legal-hold", "ON"),
    ("x-amz-tagging", "a=b"),
])
def test_lock_and_tagging_headers_reach_the_handler(header, value):
    assert route("PUT", "/b/k", {header: value}).op == "PutObject"
    assert route("PUT", "/b", {"x-amz-bucket-object-lock-enabled": "true"}).op == "CreateBucket"


@pytest.mark.parametrize("method,path,query,op", [
    ("GET", "/b", {"versions": ""}, "ListObjectVersions"),
    ("PUT", "/b", {"versioning": ""}, "PutBucketVersioning"),
    ("PUT", "/b", {"object-lock": ""}, "PutObjectLockConfiguration"),
    ("GET", "/b", {"lifecycle": ""}, "GetBucketLifecycleConfiguration"),
    ("DELETE", "/b", {"lifecycle": ""}, "DeleteBucketLifecycle"),
    ("DELETE", "/b", {"tagging": ""}, "DeleteBucketTagging"),
    ("PUT", "/b/k", {"tagging": ""}, "PutObjectTagging"),
    ("DELETE", "/b/k", {"tagging": ""}, "DeleteObjectTagging"),
    ("PUT", "/b/k", {"retention": ""}, "PutObjectRetention"),
    ("GET", "/b/k", {"legal-hold": ""}, "GetObjectLegalHold"),
    ("GET", "/b/k", {"attributes": ""}, "GetObjectAttributes"),
    ("DELETE", "/b/k", {"versionId": "null"}, "DeleteObject"),
])
def test_versioning_lock_lifecycle_tagging_routes(method, path, query, op):
    assert route(method, path, {}, query).op == op


@pytest.mark.parametrize("header,value", [
    ("x-amz-acl", "private"), ("x-amz-acl", "public-read"),
    ("x-amz-grant-read", "uri=http://acs.amazonaws.com/groups/global/AllUsers"),
])
def test_acl_headers_reach_the_handler(header, value):
    # gateway.acl judges them (AccessControlListNotSupported, AccessDenied, ...).
    assert route("PUT", "/b/k", {header: value}).op == "PutObject"
    assert route("POST", "/b/k", {header: value}, {"uploads": ""}).op == "CreateMultipartUpload"
    assert route("PUT", "/b/k", {header: value}, {"acl": ""}).op == "PutObjectAcl"
    assert route("PUT", "/b", {header: value}).op == "CreateBucket"


def test_form_upload_and_preflight_routes():
    assert route("POST", "/b", {"Content-Type": "multipart/form-data; boundary=x"}).op \
        == "PostObject"
    assert route("OPTIONS", "/b/k", {"Origin": "http://a"}).op == "PreflightCors"
    with pytest.raises(PreconditionFailed) as err:  # a bucket POST that is not a form
        route("POST", "/b", {"Content-Type": "application/json"})
    assert err.value.status == 412
    assert route("POST", "/b", {"Content-Type": "application/xml"}, {"delete": ""}).op \
        == "DeleteObjects"
