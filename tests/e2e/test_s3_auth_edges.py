"""Authentication edge cases against a running `basalt serve`: boto3 signing with
SigV2 (HmacV1, ``signature_version="s3"``) for everyday work, and raw requests signed
by botocore's signers, or by hand, that S3 refuses: skewed or missing dates,
malformed Authorization headers, presigned URLs outside their window. Each refusal is
S3's status, code and details, and stores nothing.

aws-cli is not covered for SigV2: it logs the ``s3.signature_version = s3`` override of
its config file but still signs with SigV4 (aws-cli 1.46 / botocore 1.43), and has no
option for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from io import BytesIO
from urllib.parse import quote, urlsplit

import boto3
import botocore.auth
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.e2e.conftest import ACCESS, SECRET
from tests.e2e.test_s3_hostile import Raw, Resp, assert_absent, assert_content, assert_error

MIB = 1 << 20


def v2_client(server, secret: str = SECRET, access: str = ACCESS):
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=access,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(signature_version="s3", retries={"max_attempts": 1}),
                        verify=server.ca_path or True)


def details(resp: Resp) -> dict[str, str]:
    return {child.tag: child.text or "" for child in ET.fromstring(resp.body)}


# --- boto3 with SigV2 ---------------------------------------------------------------------

def test_boto3_sigv2_everyday_work(basalt):
    s3 = v2_client(basalt)
    bucket = f"v2-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    key = "dir/a b+ü.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"hello v2", ContentType="text/plain",
                  Metadata={"color": "red"})
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == b"hello v2"
    assert got["Metadata"] == {"color": "red"} and got["ContentType"] == "text/plain"
    assert s3.get_object(Bucket=bucket, Key=key, Range="bytes=6-7")["Body"].read() == b"v2"
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == 8
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket, Prefix="dir/")["Contents"]] == [key]
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]

    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": key})
    assert s3.get_object(Bucket=bucket, Key="copy")["Body"].read() == b"hello v2"
    s3.put_object_tagging(Bucket=bucket, Key="copy",
                          Tagging={"TagSet": [{"Key": "t", "Value": "1"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="copy")["TagSet"] == [{"Key": "t",
                                                                           "Value": "1"}]

    data = os.urandom(11 * MIB)  # three parts through s3transfer's multipart upload
    s3.upload_fileobj(BytesIO(data), bucket, "big", Config=TransferConfig(
        multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB))
    assert s3.head_object(Bucket=bucket, Key="big")["ETag"].endswith('-3"')
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == data
    upload = s3.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="parts", UploadId=upload, PartNumber=1,
                          Body=b"only part")["ETag"]
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="parts",
                                                   UploadId=upload)["Parts"]] == [1]
    s3.complete_multipart_upload(Bucket=bucket, Key="parts", UploadId=upload, MultipartUpload={
        "Parts": [{"ETag": etag, "PartNumber": 1}]})
    assert s3.get_object(Bucket=bucket, Key="parts")["Body"].read() == b"only part"

    deleted = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "copy"},
                                                                   {"Key": "big"}]})["Deleted"]
    assert sorted(d["Key"] for d in deleted) == ["big", "copy"]
    for name in (key, "parts"):
        s3.delete_object(Bucket=bucket, Key=name)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3.delete_bucket(Bucket=bucket)


def test_boto3_sigv2_refusals(basalt_http):
    s3 = v2_client(basalt_http)
    bucket = f"v2-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    raw = Raw(basalt_http)
    with pytest.raises(ClientError) as err:  # the body is checked against Content-MD5
        s3.put_object(Bucket=bucket, Key="k", Body=b"body",
                      ContentMD5=base64.b64encode(hashlib.md5(b"other").digest()).decode())
    assert err.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(ClientError) as err:
        v2_client(basalt_http, secret="wrong").put_object(Bucket=bucket, Key="k", Body=b"x")
    error = err.value.response["Error"]
    assert error["Code"] == "SignatureDoesNotMatch"
    assert error["StringToSign"].startswith("PUT\n") and error["StringToSign"].endswith(
        f"\n/{bucket}/k")
    with pytest.raises(ClientError) as err:
        v2_client(basalt_http, access="AKIANOBODY").put_object(Bucket=bucket, Key="k", Body=b"x")
    assert err.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    assert_absent(raw, bucket, "k")


def test_sigv2_presigned_urls_from_the_v2_client(basalt_http):
    s3 = v2_client(basalt_http)
    bucket = f"v2-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="shared", Body=b"shared body")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared"})
    assert "AWSAccessKeyId=" in url
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b"shared body"
    parts = urlsplit(url)
    expired = parts.query.replace(f"Expires={_param(parts.query, 'Expires')}", "Expires=1000")
    resp = Raw(basalt_http).send("GET", parts.path, expired)
    assert_error(resp, 403, "AccessDenied")
    assert details(resp)["Message"] == "Request has expired"
    assert details(resp)["Expires"] == "1970-01-01T00:16:40Z"
    resp = Raw(basalt_http).send("GET", parts.path, parts.query.replace("Expires=", "Expires=x"))
    assert_error(resp, 403, "AccessDenied")
    assert details(resp)["Message"].startswith("Invalid date (should be seconds since epoch)")


def _param(query: str, name: str) -> str:
    return next(p.split("=", 1)[1] for p in query.split("&") if p.startswith(name + "="))


# --- raw SigV2 in the header --------------------------------------------------------------------

@pytest.fixture(scope="module")
def raw(basalt_http):
    return Raw(basalt_http)


@pytest.fixture(scope="module")
def bkt(raw, basalt_http):
    name = f"auth-{uuid.uuid4().hex[:10]}"
    v2_client(basalt_http).create_bucket(Bucket=name)
    return name


@pytest.fixture
def key():
    return f"k-{uuid.uuid4().hex[:12]}"


class DatedHmacV1(botocore.auth.HmacV1Auth):
    """botocore's SigV2 header signer with the Date it is told."""

    def __init__(self, date: str) -> None:
        super().__init__(Credentials(ACCESS, SECRET))
        self.date = date

    def _get_date(self) -> str:
        return self.date


def v2_headers(method: str, path: str, query: str = "", headers: dict | None = None,
               date: datetime | None = None) -> dict[str, str]:
    request = AWSRequest(method=method, url=f"http://h{path}" + (f"?{query}" if query else ""),
                         headers=headers or {})
    DatedHmacV1(format_datetime(date or datetime.now(UTC), usegmt=True)).add_auth(request)
    return dict(request.headers.items())


def hand_signed_v2(method: str, resource: str, amz: dict[str, str], secret: str = SECRET,
                   content_type: str = "") -> dict[str, str]:
    """A SigV2 header over AWS's documented StringToSign with x-amz-date: Date line empty."""
    lines = "".join(f"{k}:{amz[k]}\n" for k in sorted(amz))
    sts = f"{method}\n\n{content_type}\n\n{lines}{resource}"
    signature = base64.b64encode(hmac.new(secret.encode(), sts.encode(), "sha1").digest()).decode()
    headers = {**amz, "Authorization": f"AWS {ACCESS}:{signature}"}
    if content_type:
        headers["Content-Type"] = content_type
    return headers


def test_v2_raw_put_with_x_amz_date_and_no_date(raw, bkt, key):
    when = format_datetime(datetime.now(UTC), usegmt=True)
    headers = hand_signed_v2("PUT", f"/{bkt}/{key}", {"x-amz-date": when,
                                                       "x-amz-meta-hand": "made"},
                             content_type="text/plain")
    resp = raw.send("PUT", f"/{bkt}/{key}", headers=headers, body=b"hand signed")
    assert resp.status == 200, resp.body
    assert_content(raw, bkt, key, b"hand signed")
    # Signed over the Date header's value instead of an empty line: not S3's string.
    request = v2_headers("PUT", f"/{bkt}/{key}", headers={"x-amz-date": when})
    resp = raw.send("PUT", f"/{bkt}/{key}", headers=request, body=b"other")
    assert_error(resp, 403, "SignatureDoesNotMatch")
    assert details(resp)["StringToSign"] == f"PUT\n\n\n\nx-amz-date:{when}\n/{bkt}/{key}"
    assert_content(raw, bkt, key, b"hand signed")


@pytest.mark.parametrize("moment", [datetime(2010, 7, 7, 21, 53, 4, tzinfo=UTC),
                                    datetime(2099, 7, 7, 21, 53, 4, tzinfo=UTC)])
def test_v2_skewed_date(raw, bkt, key, moment):
    headers = v2_headers("PUT", f"/{bkt}/{key}", date=moment)
    resp = raw.send("PUT", f"/{bkt}/{key}", headers=headers, body=b"late")
    assert_error(resp, 403, "RequestTimeTooSkewed")
    found = details(resp)
    assert found["RequestTime"] == format_datetime(moment, usegmt=True)
    assert found["MaxAllowedSkewMilliseconds"] == "900000"
    server_time = datetime.strptime(found["ServerTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(server_time - datetime.now(UTC)) < timedelta(minutes=1)
    assert_absent(raw, bkt, key)


def test_v2_within_the_skew_is_served(raw, bkt, key):
    headers = v2_headers("PUT", f"/{bkt}/{key}", date=datetime.now(UTC) - timedelta(minutes=14))
    assert raw.send("PUT", f"/{bkt}/{key}", headers=headers, body=b"ok").status == 200


@pytest.mark.parametrize("amz_date", ["Bad Date", "", "Fri, 07 Jul 1950 21:53:04 GMT"])
def test_v2_unreadable_x_amz_date(raw, bkt, key, amz_date):
    headers = v2_headers("PUT", f"/{bkt}/{key}", headers={"x-amz-date": amz_date})
    resp = raw.send("PUT", f"/{bkt}/{key}", headers=headers, body=b"x")
    assert_error(resp, 403, "AccessDenied")
    assert details(resp)["Message"] == "AWS authentication requires a valid Date or x-amz-date header"
    assert_absent(raw, bkt, key)


def test_v2_without_any_date(raw, bkt, key):
    headers = v2_headers("GET", f"/{bkt}/{key}")
    del headers["Date"]
    # http.client sends no Date of its own.
    resp = raw.send("GET", f"/{bkt}/{key}", headers=headers)
    assert_error(resp, 403, "AccessDenied")
    assert details(resp)["Message"] == "AWS authentication requires a valid Date or x-amz-date header"


@pytest.mark.parametrize("authorization,message", [
    ("AWS HAHAHA", "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature"),
    (f"AWS  {ACCESS}:c2ln", "Authorization header is invalid -- one and only one ' ' (space) "
                            "required"),
])
def test_v2_malformed_header(raw, bkt, key, authorization, message):
    headers = {"Date": format_datetime(datetime.now(UTC), usegmt=True),
               "Authorization": authorization}
    resp = raw.send("PUT", f"/{bkt}/{key}", headers=headers, body=b"x")
    assert_error(resp, 400, "InvalidArgument")
    found = details(resp)
    assert found["Message"] == message
    assert (found["ArgumentName"], found["ArgumentValue"]) == ("Authorization", authorization)
    assert_absent(raw, bkt, key)


def test_v2_header_beside_a_presigned_query(raw, bkt, key):
    headers = v2_headers("GET", f"/{bkt}/{key}", "X-Amz-Algorithm=AWS4-HMAC-SHA256")
    resp = raw.send("GET", f"/{bkt}/{key}", "X-Amz-Algorithm=AWS4-HMAC-SHA256", headers)
    assert_error(resp, 400, "InvalidArgument")
    assert details(resp)["Message"].startswith("Only one auth mechanism allowed")


# --- SigV4 in the header --------------------------------------------------------------------------

@pytest.fixture
def at(monkeypatch):
    """Sign with botocore's clock set to a moment."""
    def set_clock(moment: datetime) -> None:
        monkeypatch.setattr(botocore.auth, "get_current_datetime",
                            lambda remove_tzinfo=True: moment.replace(tzinfo=None))
    return set_clock


def _sign_for(raw: Raw, method: str, path: str, query: str = "", headers: dict | None = None,
              body: bytes = b"", *, presign: int | None = None) -> tuple[str, dict[str, str]]:
    """(query, headers) of a request to ``raw``'s server signed by botocore's SigV4 signers
    (in the header, or presigned for ``presign`` seconds)."""
    url = f"http://{raw.hostport}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, headers=headers or {}, data=body)
    credentials = Credentials(ACCESS, SECRET)
    if presign is None:
        botocore.auth.S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    else:
        botocore.auth.S3SigV4QueryAuth(credentials, "s3", "us-east-1",
                                       expires=presign).add_auth(request)
    return urlsplit(request.url).query, dict(request.headers.items())


@pytest.mark.parametrize("authorization,status,code,message", [
    ("garbage", 400, "InvalidArgument",
     "Authorization header is invalid -- one and only one ' ' (space) required"),
    ("Bearer token", 400, "InvalidArgument", "Unsupported Authorization Type"),
    (f"AWS4-HMAC-SHA256 Credential={ACCESS}/{{day}}/us-east-1/s3/aws4_request", 400,
     "AuthorizationHeaderMalformed", "The authorization header is malformed; the authorization "
     "header requires three components: Credential, SignedHeaders, and Signature."),
    (f"AWS4-HMAC-SHA256 Credential={ACCESS}/{{day}}//s3/aws4_request, SignedHeaders=host, "
     "Signature=00", 400, "AuthorizationHeaderMalformed",
     "The authorization header is malformed; a non-empty region must be provided in the "
     "credential."),
    (f"AWS4-HMAC-SHA256 Credential={ACCESS}/20200101/us-east-1/s3/aws4_request, "
     "SignedHeaders=host, Signature=00", 400, "AuthorizationHeaderMalformed", None),
])
def test_v4_malformed_header(raw, bkt, key, authorization, status, code, message):
    query, headers = _sign_for(raw, "PUT", f"/{bkt}/{key}", body=b"x")
    headers["Authorization"] = authorization.replace("{day}", headers["X-Amz-Date"][:8])
    resp = raw.send("PUT", f"/{bkt}/{key}", query, headers, b"x")
    assert_error(resp, status, code)
    if message:
        assert details(resp)["Message"] == message
    assert_absent(raw, bkt, key)


def test_v4_unsigned_content_md5(raw, bkt, key):
    query, headers = _sign_for(raw, "PUT", f"/{bkt}/{key}", body=b"x")
    headers["Content-MD5"] = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    resp = raw.send("PUT", f"/{bkt}/{key}", query, headers, b"x")
    assert_error(resp, 403, "AccessDenied")
    assert details(resp)["HeadersNotSigned"] == "content-md5"
    assert_absent(raw, bkt, key)
    query, headers = _sign_for(raw, "PUT", f"/{bkt}/{key}", body=b"x", headers={
        "Content-MD5": base64.b64encode(hashlib.md5(b"x").digest()).decode()})
    assert raw.send("PUT", f"/{bkt}/{key}", query, headers, b"x").status == 200


def test_v4_header_and_query_together(raw, bkt, key):
    query, _ = _sign_for(raw, "GET", f"/{bkt}/{key}", presign=60)
    _, headers = _sign_for(raw, "GET", f"/{bkt}/{key}")
    resp = raw.send("GET", f"/{bkt}/{key}", query, headers)
    assert_error(resp, 400, "InvalidArgument")
    assert details(resp)["Message"].startswith("Only one auth mechanism allowed")


def test_v4_date_header_instead_of_x_amz_date(raw, bkt, key, at):
    # botocore signs with Date (and sends no x-amz-date) when the request carries one.
    query, headers = _sign_for(raw, "PUT", f"/{bkt}/{key}", headers={"Date": "x"}, body=b"d")
    assert "X-Amz-Date" not in headers
    assert raw.send("PUT", f"/{bkt}/{key}", query, headers, b"d").status == 200
    at(datetime.now(UTC) - timedelta(hours=2))
    query, headers = _sign_for(raw, "PUT", f"/{bkt}/{key}", headers={"Date": "x"}, body=b"e")
    resp = raw.send("PUT", f"/{bkt}/{key}", query, headers, b"e")
    assert_error(resp, 403, "RequestTimeTooSkewed")
    assert_content(raw, bkt, key, b"d")


def test_v4_x_amz_date_wins_over_date(raw, bkt, key):
    query, headers = _sign_for(raw, "GET", f"/{bkt}/{key}")
    headers["Date"] = "Tue, 07 Jul 2010 21:53:04 GMT"  # unsigned, and ignored
    assert raw.send("GET", f"/{bkt}/{key}", query, headers).status == 404
    headers["X-Amz-Date"] = "not-a-date"
    resp = raw.send("GET", f"/{bkt}/{key}", query, headers)
    assert_error(resp, 403, "AccessDenied")


# --- presigned SigV4 --------------------------------------------------------------------------------

def _with(query: str, name: str, value: str) -> str:
    return "&".join(p if not p.startswith(name + "=") else f"{name}={value}"
                    for p in query.split("&"))


@pytest.mark.parametrize("expires,message", [
    ("604801", "X-Amz-Expires must be less than a week (in seconds); that is, the given "
               "X-Amz-Expires must be less than 604800 seconds"),
    ("-1", "X-Amz-Expires must be non-negative"),
    ("soon", "X-Amz-Expires should be a number"),
])
def test_presigned_expires_out_of_bounds(raw, bkt, key, expires, message):
    query, _ = _sign_for(raw, "PUT", f"/{bkt}/{key}", presign=3600)
    resp = raw.send("PUT", f"/{bkt}/{key}", _with(query, "X-Amz-Expires", expires), body=b"x")
    assert_error(resp, 400, "AuthorizationQueryParametersError")
    assert details(resp)["Message"] == message
    assert_absent(raw, bkt, key)


def test_presigned_a_week_is_accepted(raw, bkt, key):
    query, _ = _sign_for(raw, "PUT", f"/{bkt}/{key}", presign=604800)
    assert raw.send("PUT", f"/{bkt}/{key}", query, body=b"week").status == 200
    assert_content(raw, bkt, key, b"week")


def test_presigned_expired(raw, bkt, key, at):
    signed_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    at(signed_at)
    query, _ = _sign_for(raw, "PUT", f"/{bkt}/{key}", presign=3600)
    resp = raw.send("PUT", f"/{bkt}/{key}", query, body=b"late")
    assert_error(resp, 403, "AccessDenied")
    found = details(resp)
    assert found["Message"] == "Request has expired"
    assert found["X-Amz-Expires"] == "3600"
    assert found["Expires"] == (signed_at + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "ServerTime" in found
    assert_absent(raw, bkt, key)


def test_presigned_not_yet_valid(raw, bkt, key, at):
    signed_at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    at(signed_at)
    query, _ = _sign_for(raw, "PUT", f"/{bkt}/{key}", presign=60)
    resp = raw.send("PUT", f"/{bkt}/{key}", query, body=b"early")
    assert_error(resp, 403, "AccessDenied")
    found = details(resp)
    assert found["Message"] == "Request is not yet valid"
    assert found["X-Amz-Date"] == str(int(signed_at.timestamp()) * 1000)
    assert found["Expires"] == (signed_at + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert_absent(raw, bkt, key)


@pytest.mark.parametrize("missing", ["X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date",
                                     "X-Amz-SignedHeaders", "X-Amz-Expires"])
def test_presigned_partial_parameters(raw, bkt, key, missing):
    query, _ = _sign_for(raw, "GET", f"/{bkt}/{key}", presign=60)
    partial = "&".join(p for p in query.split("&") if not p.startswith(missing + "="))
    resp = raw.send("GET", f"/{bkt}/{key}", partial)
    assert_error(resp, 400, "AuthorizationQueryParametersError")


def test_presigned_scope_of_another_day(raw, bkt, key):
    query, _ = _sign_for(raw, "GET", f"/{bkt}/{key}", presign=60)
    credential = f"{ACCESS}/20200101/us-east-1/s3/aws4_request"
    resp = raw.send("GET", f"/{bkt}/{key}", _with(query, "X-Amz-Credential",
                                                  quote(credential, safe="")))
    assert_error(resp, 400, "AuthorizationQueryParametersError")
    assert details(resp)["Message"].startswith(
        'Invalid credential date "20200101". This date is not the same as X-Amz-Date: "')


def test_presigned_v2_and_v4_together(raw, bkt, key):
    query, _ = _sign_for(raw, "GET", f"/{bkt}/{key}", presign=60)
    resp = raw.send("GET", f"/{bkt}/{key}", query + f"&AWSAccessKeyId={ACCESS}&Signature=c2ln")
    assert_error(resp, 400, "InvalidArgument")
    assert details(resp)["Message"].startswith("Only one auth mechanism allowed")


def test_presigned_url_still_works_through_urllib(basalt_http, raw, bkt, key):
    v2_client(basalt_http).put_object(Bucket=bkt, Key=key, Body=b"via v4 url")
    query, _ = _sign_for(raw, "GET", f"/{bkt}/{key}", presign=60)
    with urllib.request.urlopen(f"{basalt_http.endpoint}/{bkt}/{key}?{query}", timeout=10) as r:
        assert r.read() == b"via v4 url"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{basalt_http.endpoint}/{bkt}/{key}x?{query}", timeout=10)
    assert err.value.code == 403
