"""Header-signed SigV2 (``Authorization: AWS AKID:signature``): AWS's documented
examples, botocore's HmacV1 signer as the client, and every refusal in S3's order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import botocore.auth
import pytest
from s3_testkit import ACCESS_KEY, SECRET_KEY, secret_for, stubbed_s3

from gateway import errors
from gateway.sigv2 import is_header_signed, sign, string_to_sign, verify_header
from gateway.sigv4 import UNSIGNED_PAYLOAD

NOW = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
HTTP_NOW = "Fri, 01 Mar 2024 12:00:00 GMT"


def signed_headers(method: str, resource: str, query: str = "", date: str = HTTP_NOW,
                   **headers: str) -> dict[str, str]:
    """Headers of a request signed over S3's StringToSign (Date line as the rules say)."""
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    if date is not None:
        headers.setdefault("Date", date)
    lowered = {k.lower() for k in headers}
    line = "" if "x-amz-date" in lowered else headers.get("Date", "")
    sts = string_to_sign(method, resource, query, headers, line)
    headers["Authorization"] = f"AWS {ACCESS_KEY}:{sign(SECRET_KEY, sts)}"
    return headers


def refused(method, resource, query, headers, now=NOW) -> errors.S3Error:
    with pytest.raises(errors.S3Error) as info:
        verify_header(method, resource, query, headers, secret_for, now)
    return info.value


# --- AWS's documented examples (RESTAuthentication, "Authentication examples") ---------

@pytest.mark.parametrize("method,resource,date,content_type,signature", [
    ("GET", "/awsexamplebucket1/photos/puppy.jpg", "Tue, 27 Mar 2007 19:36:42 +0000", None,
     "qgk2+6Sv9/oM7G3qLEjTH1a1l1g="),
    ("PUT", "/awsexamplebucket1/photos/puppy.jpg", "Tue, 27 Mar 2007 21:15:45 +0000",
     "image/jpeg", "iqRzw+ileNPu1fhspnRs8nOjjIA="),
    ("GET", "/awsexamplebucket1/", "Tue, 27 Mar 2007 19:42:41 +0000", None,
     "m0WP8eCtspQl5Ahe6L1SozdX9YA="),
])
def test_aws_documentation_examples(method, resource, date, content_type, signature):
    headers = {"Host": "awsexamplebucket1.s3.us-west-1.amazonaws.com", "Date": date,
               "Authorization": f"AWS {ACCESS_KEY}:{signature}"}
    if content_type:
        headers["Content-Type"] = content_type
    moment = datetime.strptime(date, "%a, %d %b %Y %H:%M:%S %z")
    auth = verify_header(method, resource, "", headers, secret_for, moment)
    assert auth.access_key == ACCESS_KEY and not auth.presigned
    assert auth.content_sha256 == UNSIGNED_PAYLOAD and auth.expected_sha256 is None
    assert not auth.streaming


def test_is_header_signed():
    assert is_header_signed({"Authorization": f"AWS {ACCESS_KEY}:sig="})
    assert is_header_signed({"Authorization": "aws x:y"})
    assert not is_header_signed({"Authorization": "AWS4-HMAC-SHA256 Credential=x"})
    assert not is_header_signed({"Authorization": "AWS"})
    assert not is_header_signed({})


# --- botocore's HmacV1 signer (boto3 with signature_version="s3") ---------------------

CALLS = {
    "put_object": dict(Bucket="b", Key="dir/a b+ü.txt", Body=b"hi", ContentType="text/plain",
                       Metadata={"color": "red"}, ContentMD5="dGVzdA=="),
    "get_object": dict(Bucket="b", Key="k", VersionId="v1",
                       ResponseContentDisposition='attachment; filename="a b"'),
    "head_object": dict(Bucket="b", Key="k"),
    "delete_object": dict(Bucket="b", Key="k"),
    "list_objects_v2": dict(Bucket="b", Prefix="p/", Delimiter="/"),
    "list_buckets": {},
    "create_bucket": dict(Bucket="b"),
    "create_multipart_upload": dict(Bucket="b", Key="k"),
    "upload_part": dict(Bucket="b", Key="k", UploadId="u1", PartNumber=2, Body=b"part"),
    "complete_multipart_upload": dict(Bucket="b", Key="k", UploadId="u1", MultipartUpload={
        "Parts": [{"ETag": '"e"', "PartNumber": 1}]}),
    "copy_object": dict(Bucket="b", Key="k2", CopySource="b/k"),
    "delete_objects": dict(Bucket="b", Delete={"Objects": [{"Key": "k"}]}),
    "put_object_tagging": dict(Bucket="b", Key="k", Tagging={"TagSet": []}),
    "get_object_retention": dict(Bucket="b", Key="k"),
    "get_bucket_versioning": dict(Bucket="b"),
}


@pytest.mark.parametrize("operation", sorted(CALLS))
def test_botocore_hmacv1_requests_verify(operation):
    # boto3 with signature_version="s3" addresses buckets path-style (see the test below
    # for botocore's virtual-hosted form).
    stub = stubbed_s3("http://127.0.0.1:9000", signature_version="s3")
    try:
        getattr(stub.client, operation)(**CALLS[operation])
    except Exception:  # noqa: BLE001 - the stub answers empty bodies; the request is what counts
        pass
    request = stub.requests[-1]
    assert request.header("Authorization").startswith(f"AWS {ACCESS_KEY}:")
    resource = request.path
    auth = verify_header(request.method, resource, request.query, request.headers, secret_for)
    assert auth.access_key == ACCESS_KEY and auth.content_sha256 == UNSIGNED_PAYLOAD
    tampered = request.headers + [("x-amz-meta-extra", "1")]
    assert isinstance(refused(request.method, resource, request.query, tampered,
                              datetime.now(UTC)), errors.SignatureDoesNotMatch)


def test_botocore_signer_on_raw_request_with_query_and_amz_headers():
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    request = AWSRequest("GET", "http://h/b/k?acl&max-keys=3&versionId=x%2By",
                         headers={"x-amz-meta-b": "2", "X-Amz-Meta-A": " 1 "})
    botocore.auth.HmacV1Auth(Credentials(ACCESS_KEY, SECRET_KEY)).add_auth(request)
    parts = urlsplit(request.url)
    headers = list(request.headers.items())
    assert verify_header("GET", parts.path, parts.query, headers, secret_for)


@pytest.mark.parametrize("path,auth_path,resource", [
    ("/", "/b/", "/b/"),  # a bucket's own operation, virtual-hosted
    ("/k", "/b/k", "/b/k"),
])
def test_botocore_signer_virtual_hosted(path, auth_path, resource):
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    request = AWSRequest("GET", f"http://b.s3.example.com{path}", auth_path=auth_path)
    botocore.auth.HmacV1Auth(Credentials(ACCESS_KEY, SECRET_KEY)).add_auth(request)
    assert verify_header("GET", resource, "", list(request.headers.items()), secret_for)


# --- the StringToSign ---------------------------------------------------------------

def test_x_amz_date_empties_the_date_line_and_is_signed_as_an_amz_header():
    headers = {"x-amz-date": HTTP_NOW, "Date": "Thu, 01 Jan 2015 00:00:00 GMT"}
    sts = string_to_sign("DELETE", "/b/k", "", headers, "")
    assert sts == f"DELETE\n\n\n\nx-amz-date:{HTTP_NOW}\n/b/k"
    headers["Authorization"] = f"AWS {ACCESS_KEY}:{sign(SECRET_KEY, sts)}"
    assert verify_header("DELETE", "/b/k", "", headers, secret_for, NOW)
    # The same request signed over Date's value is not S3's string.
    wrong = string_to_sign("DELETE", "/b/k", "", headers, headers["Date"])
    headers["Authorization"] = f"AWS {ACCESS_KEY}:{sign(SECRET_KEY, wrong)}"
    assert isinstance(refused("DELETE", "/b/k", "", headers), errors.SignatureDoesNotMatch)


def test_amz_headers_are_lowercased_sorted_trimmed_and_joined():
    headers = [("X-Amz-Meta-Zeta", " z "), ("x-amz-meta-alpha", "a1"), ("X-AMZ-META-ALPHA", "a2"),
               ("Content-Type", "text/plain"), ("Content-MD5", "bWQ1"), ("Date", HTTP_NOW)]
    sts = string_to_sign("PUT", "/b/k", "", headers, HTTP_NOW)
    assert sts == (f"PUT\nbWQ1\ntext/plain\n{HTTP_NOW}\nx-amz-meta-alpha:a1,a2\n"
                   "x-amz-meta-zeta:z\n/b/k")


def test_sub_resources_in_the_resource():
    sts = string_to_sign("GET", "/b/k", "versionId=v%2B1&max-keys=2&acl&uploadId=u&x-id=GetObject",
                         {}, HTTP_NOW)
    assert sts.endswith("\n/b/k?acl&uploadId=u&versionId=v+1")
    # S3 names retention (botocore does not): both forms verify.
    for resource_line in ("/b/k?retention", "/b/k"):
        sts = f"GET\n\n\n{HTTP_NOW}\n{resource_line}"
        headers = {"Date": HTTP_NOW, "Authorization": f"AWS {ACCESS_KEY}:{sign(SECRET_KEY, sts)}"}
        assert verify_header("GET", "/b/k", "retention", headers, secret_for, NOW)


def test_bucket_resource_with_or_without_trailing_slash():
    for signed_as in ("/b", "/b/"):
        sts = f"GET\n\n\n{HTTP_NOW}\n{signed_as}"
        headers = {"Date": HTTP_NOW, "Authorization": f"AWS {ACCESS_KEY}:{sign(SECRET_KEY, sts)}"}
        assert verify_header("GET", "/b", "", headers, secret_for, NOW)
    sts = f"GET\n\n\n{HTTP_NOW}\n/b/k/"
    headers = {"Date": HTTP_NOW, "Authorization": f"AWS {ACCESS_KEY}:{sign(SECRET_KEY, sts)}"}
    assert isinstance(refused("GET", "/b/k", "", headers), errors.SignatureDoesNotMatch)


@pytest.mark.parametrize("tamper", [
    lambda m, r, q, h: ("PUT", r, q, h),
    lambda m, r, q, h: (m, r + "x", q, h),
    lambda m, r, q, h: (m, r, q.replace("1", "2"), h),
    lambda m, r, q, h: (m, r, q + "&acl", h),
    lambda m, r, q, h: (m, r, q, {**h, "Content-Type": "text/html"}),
    lambda m, r, q, h: (m, r, q, {**h, "x-amz-meta-color": "blue"}),
    lambda m, r, q, h: (m, r, q, {**h, "Date": "Fri, 01 Mar 2024 12:00:01 GMT"}),
])
def test_tampering_is_a_mismatch_with_s3s_details(tamper):
    headers = signed_headers("GET", "/b/k", "versionId=1", Content_Type="text/plain",
                             x_amz_meta_color="red")
    assert verify_header("GET", "/b/k", "versionId=1", headers, secret_for, NOW)
    error = refused(*tamper("GET", "/b/k", "versionId=1", headers))
    assert isinstance(error, errors.SignatureDoesNotMatch) and error.status == 403
    assert error.extra["AWSAccessKeyId"] == ACCESS_KEY
    assert error.extra["SignatureProvided"] == headers["Authorization"].split(":", 1)[1]
    assert error.extra["StringToSignBytes"] == error.extra["StringToSign"].encode().hex(" ")
    assert "CanonicalRequest" not in error.extra


def test_wrong_secret_is_a_mismatch():
    sts = f"GET\n\n\n{HTTP_NOW}\n/b/k"
    headers = {"Date": HTTP_NOW, "Authorization": f"AWS {ACCESS_KEY}:{sign('other', sts)}"}
    error = refused("GET", "/b/k", "", headers)
    assert isinstance(error, errors.SignatureDoesNotMatch)
    assert error.extra["StringToSign"] == sts


# --- refusals, in S3's order ----------------------------------------------------------

@pytest.mark.parametrize("authorization,message", [
    ("AWS HAHAHA", "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature"),
    (f"AWS {ACCESS_KEY}:", "Expected AwsAccessKeyId:signature"),
    (f"AWS {ACCESS_KEY}:a:b", "Expected AwsAccessKeyId:signature"),
    (f"AWS  {ACCESS_KEY}:sig", "Authorization header is invalid -- one and only one ' ' (space) "
                               "required"),
])
def test_malformed_header_is_invalid_argument(authorization, message):
    error = refused("GET", "/b/k", "", {"Date": HTTP_NOW, "Authorization": authorization})
    assert isinstance(error, errors.InvalidArgument) and error.status == 400
    assert message in error.message
    assert error.extra == {"ArgumentName": "Authorization", "ArgumentValue": authorization}


def test_empty_access_key_is_an_unknown_key():
    error = refused("GET", "/b/k", "", {"Date": HTTP_NOW, "Authorization": "AWS :c2ln"})
    assert isinstance(error, errors.InvalidAccessKeyId) and error.extra["AWSAccessKeyId"] == ""


def test_unknown_access_key():
    headers = signed_headers("GET", "/b/k")
    headers["Authorization"] = headers["Authorization"].replace(ACCESS_KEY, "AKIAUNKNOWN")
    error = refused("GET", "/b/k", "", headers)
    assert isinstance(error, errors.InvalidAccessKeyId) and error.status == 403
    assert error.extra == {"AWSAccessKeyId": "AKIAUNKNOWN"}


@pytest.mark.parametrize("headers", [
    {},  # neither Date nor x-amz-date
    {"Date": "yesterday"},
    {"Date": HTTP_NOW, "x-amz-date": "Bad Date"},  # x-amz-date wins, readable or not
    {"Date": HTTP_NOW, "x-amz-date": ""},
    {"x-amz-date": "Fri, 07 Jul 1950 21:53:04 GMT"},  # before the epoch: no date
])
def test_missing_or_unreadable_date_is_access_denied(headers):
    headers = {**headers, "Authorization": f"AWS {ACCESS_KEY}:c2ln"}
    error = refused("GET", "/b/k", "", headers)
    assert isinstance(error, errors.AccessDenied) and error.status == 403
    assert error.message == "AWS authentication requires a valid Date or x-amz-date header"


@pytest.mark.parametrize("form", [
    "Fri, 01 Mar 2024 12:00:00 GMT", "Friday, 01-Mar-24 12:00:00 GMT", "Fri Mar  1 12:00:00 2024",
    "Fri, 01 Mar 2024 13:00:00 +0100", "20240301T120000Z",
])
def test_date_forms(form):
    assert verify_header("GET", "/b/k", "", signed_headers("GET", "/b/k", date=form), secret_for,
                         NOW)
    headers = signed_headers("GET", "/b/k", date=None, x_amz_date=form)
    assert verify_header("GET", "/b/k", "", headers, secret_for, NOW)


@pytest.mark.parametrize("seconds,ok", [(-900, True), (900, True), (-901, False), (901, False)])
def test_clock_skew(seconds, ok):
    headers = signed_headers("GET", "/b/k")
    now = NOW + timedelta(seconds=seconds)
    if ok:
        assert verify_header("GET", "/b/k", "", headers, secret_for, now)
        return
    error = refused("GET", "/b/k", "", headers, now)
    assert isinstance(error, errors.RequestTimeTooSkewed) and error.status == 403
    assert error.extra == {"RequestTime": HTTP_NOW,
                           "ServerTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "MaxAllowedSkewMilliseconds": "900000"}


@pytest.mark.parametrize("date", ["Tue, 07 Jul 2010 21:53:04 GMT", "Tue, 07 Jul 9999 21:53:04 GMT"])
def test_far_dates_are_skewed_before_the_key_and_signature_are_checked(date):
    headers = {"x-amz-date": date, "Authorization": "AWS AKIAUNKNOWN:c2ln"}
    error = refused("PUT", "/b/k", "", headers)
    assert isinstance(error, errors.RequestTimeTooSkewed)
    assert error.extra["RequestTime"] == date


def test_form_is_checked_before_the_date():
    error = refused("GET", "/b/k", "", {"Authorization": "AWS nocolon"})
    assert isinstance(error, errors.InvalidArgument)


@pytest.mark.parametrize("query", ["X-Amz-Algorithm=AWS4-HMAC-SHA256",
                                   "X-Amz-Credential=x", "Signature=abc"])
def test_header_beside_query_authentication(query):
    headers = signed_headers("GET", "/b/k", query)
    error = refused("GET", "/b/k", query, headers)
    assert isinstance(error, errors.InvalidArgument)
    assert error.message.startswith("Only one auth mechanism allowed")
    assert error.extra == {"ArgumentName": "Authorization", "ArgumentValue": headers["Authorization"]}


# --- the body ---------------------------------------------------------------------------

@pytest.mark.parametrize("declared,mode", [
    (None, UNSIGNED_PAYLOAD),
    ("UNSIGNED-PAYLOAD", UNSIGNED_PAYLOAD),
    ("STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
    ("a" * 64, "a" * 64),
    ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", UNSIGNED_PAYLOAD),  # nothing to chain a V4 chunk on
    ("garbage", UNSIGNED_PAYLOAD),
])
def test_payload_mode(declared, mode):
    extra = {} if declared is None else {"x_amz_content_sha256": declared}
    auth = verify_header("PUT", "/b/k", "", signed_headers("PUT", "/b/k", **extra), secret_for, NOW)
    assert auth.content_sha256 == mode
