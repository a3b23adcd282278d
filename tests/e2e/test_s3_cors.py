"""Bucket CORS end to end: Put/Get/DeleteBucketCors with boto3 and raw signed requests,
preflight OPTIONS and actual requests with an Origin header over plain HTTP, checked
against what S3 answers (status, code, message, Method/ResourceType, every header)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.e2e.conftest import ACCESS, SECRET

ORIGIN = "https://app.example.com"
VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
NOT_ALLOWED = ("CORSResponse: This CORS request is not allowed. This is usually because the "
               "evalution of Origin, request method / Access-Control-Request-Method or "
               "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.")


@pytest.fixture
def s3(basalt_http):
    return basalt_http.client()


@pytest.fixture
def bkt(s3):
    name = f"cors-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="hello.txt", Body=b"hello cors")
    return name


class Reply:
    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self.body = resp.read()

    def cors(self) -> dict[str, str]:
        """The Access-Control-* and Vary headers of the response."""
        return {k: v for k, v in self.headers.items()
                if k.lower().startswith("access-control-") or k.lower() == "vary"}

    def error(self) -> dict[str, str]:
        root = ET.fromstring(self.body)
        return {child.tag: child.text or "" for child in root}


def send(server, method: str, path_or_url: str, headers: dict[str, str] | None = None,
         body: bytes | None = None) -> Reply:
    """One raw HTTP request (a URL from generate_presigned_url or a path)."""
    url = urllib.parse.urlsplit(path_or_url if "://" in path_or_url
                                else server.endpoint + path_or_url)
    conn = http.client.HTTPConnection(url.netloc, timeout=30)
    try:
        target = url.path + (f"?{url.query}" if url.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        return Reply(conn.getresponse())
    finally:
        conn.close()


def signed(server, method: str, path: str, body: bytes = b"",
           headers: dict[str, str] | None = None) -> Reply:
    """A SigV4-signed request with any body (bad XML included)."""
    request = AWSRequest(method=method, url=server.endpoint + path, data=body,
                         headers=dict(headers or {}))
    request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    S3SigV4Auth(Credentials(ACCESS, SECRET), "s3", "us-east-1").add_auth(request)
    return send(server, method, path, dict(request.headers.items()), body)


def md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def put_cors_xml(server, bucket: str, xml: str, *, with_md5: bool = True) -> Reply:
    body = xml.encode()
    return signed(server, "PUT", f"/{bucket}?cors", body,
                  {"Content-MD5": md5(body)} if with_md5 else {})


def rule(**fields) -> dict:
    return {"AllowedOrigins": [ORIGIN], "AllowedMethods": ["GET"], **fields}


def code(err: ClientError) -> tuple[str, str]:
    return err.response["Error"]["Code"], err.response["Error"].get("Message", "")


# --- configuration ------------------------------------------------------------

def test_put_get_delete_round_trip(s3, bkt):
    with pytest.raises(ClientError) as err:
        s3.get_bucket_cors(Bucket=bkt)
    assert code(err.value) == ("NoSuchCORSConfiguration", "The CORS configuration does not exist")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert err.value.response["Error"]["BucketName"] == bkt

    rules = [
        {"ID": "uploads", "AllowedHeaders": ["Content-Type", "x-amz-*"],
         "AllowedMethods": ["PUT", "POST", "DELETE"],
         "AllowedOrigins": ["https://www.example.com", "https://*.example.org"],
         "ExposeHeaders": ["ETag", "x-amz-request-id"], "MaxAgeSeconds": 3000},
        {"AllowedMethods": ["GET", "HEAD"], "AllowedOrigins": ["*"]},
        {"AllowedMethods": ["GET"], "AllowedOrigins": [""]},   # S3 keeps an empty origin
    ]
    put = s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": rules})
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_bucket_cors(Bucket=bkt)["CORSRules"] == rules

    replaced = [rule(MaxAgeSeconds=0)]
    s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": replaced})
    assert s3.get_bucket_cors(Bucket=bkt)["CORSRules"] == replaced

    assert s3.delete_bucket_cors(Bucket=bkt)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as err:
        s3.get_bucket_cors(Bucket=bkt)
    assert code(err.value)[0] == "NoSuchCORSConfiguration"
    # Deleting what is not there is no error.
    assert s3.delete_bucket_cors(Bucket=bkt)["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_cors_of_a_missing_bucket(s3):
    missing = f"cors-none-{uuid.uuid4().hex[:8]}"
    for call in (lambda: s3.get_bucket_cors(Bucket=missing),
                 lambda: s3.delete_bucket_cors(Bucket=missing),
                 lambda: s3.put_bucket_cors(Bucket=missing,
                                            CORSConfiguration={"CORSRules": [rule()]})):
        with pytest.raises(ClientError) as err:
            call()
        assert code(err.value)[0] == "NoSuchBucket"


@pytest.mark.parametrize(("rules", "expected"), [
    ([rule(AllowedMethods=["GET", "PUT", "HEAD", "MYMETHOD"])],
     ("InvalidRequest",
      "Found unsupported HTTP method in CORS config. Unsupported method is MYMETHOD")),
    ([rule(AllowedMethods=["get"])],
     ("InvalidRequest", "Found unsupported HTTP method in CORS config. Unsupported method is get")),
    ([rule(AllowedMethods=["OPTIONS"])],
     ("InvalidRequest",
      "Found unsupported HTTP method in CORS config. Unsupported method is OPTIONS")),
    ([rule(AllowedOrigins=["http://*.*.example.com"])],
     ("InvalidRequest", 'AllowedOrigin "http://*.*.example.com" can not have more than one '
                        "wildcard.")),
    ([rule(AllowedHeaders=["*-amz-*"])],
     ("InvalidRequest", 'AllowedHeader "*-amz-*" can not have more than one wildcard.')),
    ([rule(ExposeHeaders=["x-amz-meta-*"])],
     ("InvalidRequest", 'ExposeHeader "x-amz-meta-*" contains wildcard. We currently do not '
                        "support wildcard for ExposeHeader.")),
    ([rule()] * 101,
     ("InvalidRequest", "The number of CORS rules should not exceed allowed limit of 100 rules.")),
    ([], ("MalformedXML", "The XML you provided was not well-formed or did not validate against "
                          "our published schema")),
    ([rule(AllowedOrigins=[])], ("MalformedXML", None)),
    ([rule(AllowedMethods=[])], ("MalformedXML", None)),
])
def test_invalid_rules_are_refused_and_nothing_is_stored(s3, bkt, rules, expected):
    kept = [rule(ID="kept")]
    s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": kept})
    with pytest.raises(ClientError) as err:
        s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": rules})
    got = code(err.value)
    assert got[0] == expected[0]
    if expected[1] is not None:
        assert got[1] == expected[1]
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert s3.get_bucket_cors(Bucket=bkt)["CORSRules"] == kept


GOOD_RULE = ("<CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"
             "</CORSRule>")


@pytest.mark.parametrize("xml", [
    "<CORSConfiguration><CORSRule>",                                           # not XML
    "<NotCORS>" + GOOD_RULE + "</NotCORS>",                                    # wrong root
    "<CORSConfiguration><Rule/>" + GOOD_RULE + "</CORSConfiguration>",         # unknown element
    "<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET"
    "</AllowedMethod><Colour>red</Colour></CORSRule></CORSConfiguration>",
    "<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET"
    "</AllowedMethod><MaxAgeSeconds>soon</MaxAgeSeconds></CORSRule></CORSConfiguration>",
    "<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET"
    "</AllowedMethod><ID>a</ID><ID>b</ID></CORSRule></CORSConfiguration>",
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "GET">]><CORSConfiguration><CORSRule>'
    "<AllowedOrigin>*</AllowedOrigin><AllowedMethod>&e;</AllowedMethod></CORSRule>"
    "</CORSConfiguration>",
    "",
])
def test_malformed_xml_is_refused_and_nothing_is_stored(basalt_http, s3, bkt, xml):
    reply = put_cors_xml(basalt_http, bkt, xml)
    assert reply.status == 400, reply.body
    assert reply.error()["Code"] == "MalformedXML"
    with pytest.raises(ClientError) as err:
        s3.get_bucket_cors(Bucket=bkt)
    assert code(err.value)[0] == "NoSuchCORSConfiguration"


def test_put_needs_content_md5_and_checks_it(basalt_http, s3, bkt):
    xml = f'<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{GOOD_RULE}' \
          "</CORSConfiguration>"
    reply = put_cors_xml(basalt_http, bkt, xml, with_md5=False)
    assert reply.status == 400
    assert reply.error()["Code"] == "InvalidRequest"
    assert reply.error()["Message"] == "Missing required header for this request: Content-MD5"
    reply = signed(basalt_http, "PUT", f"/{bkt}?cors", xml.encode(), {"Content-MD5": md5(b"x")})
    assert reply.status == 400 and reply.error()["Code"] == "BadDigest"
    with pytest.raises(ClientError):
        s3.get_bucket_cors(Bucket=bkt)
    assert put_cors_xml(basalt_http, bkt, xml).status == 200
    assert s3.get_bucket_cors(Bucket=bkt)["CORSRules"] == [
        {"AllowedMethods": ["GET"], "AllowedOrigins": ["*"]}]


def test_cors_configuration_needs_the_owner(basalt_http, bkt):
    for method in ("GET", "PUT", "DELETE"):
        reply = send(basalt_http, method, f"/{bkt}?cors")
        assert reply.status == 403 and reply.error()["Code"] == "AccessDenied"


# --- preflight ----------------------------------------------------------------

def preflight(server, path: str, origin: str | None = ORIGIN, method: str | None = "GET",
              headers: str | None = None) -> Reply:
    sent = {}
    if origin is not None:
        sent["Origin"] = origin
    if method is not None:
        sent["Access-Control-Request-Method"] = method
    if headers is not None:
        sent["Access-Control-Request-Headers"] = headers
    return send(server, "OPTIONS", path, sent)


def forbidden(reply: Reply, message: str, method: str, resource_type: str) -> None:
    assert reply.status == 403, reply.body
    error = reply.error()
    assert (error["Code"], error["Message"]) == ("AccessForbidden", message)
    assert (error["Method"], error["ResourceType"]) == (method, resource_type)
    assert reply.cors() == {}


def test_preflight_without_origin_is_a_bad_request(basalt_http, bkt):
    for path in (f"/{bkt}/hello.txt", f"/{bkt}", "/no-such-bucket-cors/x"):
        reply = preflight(basalt_http, path, origin=None)
        assert reply.status == 400
        assert reply.error()["Code"] == "BadRequest"
        assert reply.error()["Message"] == "Insufficient information. Origin request header needed."


def test_preflight_without_configuration_or_bucket(basalt_http, bkt):
    not_enabled = "CORSResponse: CORS is not enabled for this bucket."
    forbidden(preflight(basalt_http, f"/{bkt}/hello.txt", method="PUT"), not_enabled, "PUT",
              "BUCKET")
    forbidden(preflight(basalt_http, f"/{bkt}/hello.txt", method=None), not_enabled, "OPTIONS",
              "BUCKET")
    forbidden(preflight(basalt_http, "/no-such-bucket-cors/x", method=None),
              "CORSResponse: Bucket not found", "OPTIONS", "BUCKET")


def test_preflight_allowed_answers_with_the_rule(basalt_http, s3, bkt):
    s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": [rule(
        AllowedMethods=["GET", "PUT"], AllowedHeaders=["Content-Type", "x-amz-*"],
        ExposeHeaders=["ETag", "x-amz-version-id"], MaxAgeSeconds=3000)]})
    reply = preflight(basalt_http, f"/{bkt}/new.txt", method="PUT",
                      headers="Content-Type, X-Amz-Meta-Colour,,x-amz-date")
    assert reply.status == 200 and reply.body == b""
    assert reply.cors() == {
        "Access-Control-Allow-Origin": ORIGIN, "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Headers": "content-type, x-amz-meta-colour, x-amz-date",
        "Access-Control-Allow-Methods": "GET, PUT",
        "Access-Control-Expose-Headers": "ETag, x-amz-version-id",
        "Access-Control-Max-Age": "3000", "Vary": VARY}
    assert reply.headers["x-amz-request-id"]
    # The bucket itself answers the same rules.
    assert preflight(basalt_http, f"/{bkt}").status == 200


def test_preflight_refusals(basalt_http, s3, bkt):
    s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": [rule(
        AllowedHeaders=["x-amz-date"])]})
    obj = f"/{bkt}/hello.txt"
    forbidden(preflight(basalt_http, obj, origin="http://app.example.com"), NOT_ALLOWED, "GET",
              "OBJECT")
    forbidden(preflight(basalt_http, f"/{bkt}", origin=ORIGIN + "/"), NOT_ALLOWED, "GET",
              "BUCKET")
    forbidden(preflight(basalt_http, obj, method="DELETE"), NOT_ALLOWED, "DELETE", "OBJECT")
    forbidden(preflight(basalt_http, obj, headers="x-amz-date, content-type"), NOT_ALLOWED,
              "GET", "OBJECT")
    for method, shown in ((None, "null"), ("PATCH", "PATCH")):
        reply = preflight(basalt_http, obj, method=method)
        assert reply.status == 400
        assert reply.error()["Code"] == "BadRequest"
        assert reply.error()["Message"] == f"Invalid Access-Control-Request-Method: {shown}"


def test_preflight_wildcards_and_first_matching_rule(basalt_http, s3, bkt):
    s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["http://*.example.net"], "AllowedMethods": ["GET"],
         "AllowedHeaders": ["X-Amz-*"], "MaxAgeSeconds": 10},
        {"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "HEAD"], "MaxAgeSeconds": 20},
    ]})
    obj = f"/{bkt}/hello.txt"
    first = preflight(basalt_http, obj, origin="http://a.b.example.net", headers="x-amz-date")
    assert first.cors()["Access-Control-Max-Age"] == "10"
    assert first.cors()["Access-Control-Allow-Origin"] == "http://a.b.example.net"
    # A header the first rule does not allow: the second rule has no AllowedHeader either.
    forbidden(preflight(basalt_http, obj, origin="http://a.example.net", headers="range"),
              NOT_ALLOWED, "GET", "OBJECT")
    # Another origin: the "*" rule, which answers "*" and no credentials.
    any_origin = preflight(basalt_http, obj, origin="https://elsewhere.test", method="HEAD")
    assert any_origin.cors() == {"Access-Control-Allow-Origin": "*",
                                 "Access-Control-Allow-Methods": "GET, HEAD",
                                 "Access-Control-Max-Age": "20", "Vary": VARY}
    # The wildcard stands for something between the two fixed parts only.
    assert preflight(basalt_http, obj, origin="https://a.example.net").cors()[
        "Access-Control-Max-Age"] == "20"


# --- actual requests ----------------------------------------------------------

def test_actual_requests_get_the_matching_rule_headers(basalt_http, s3, bkt):
    s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": [rule(
        AllowedMethods=["GET", "PUT", "HEAD"], ExposeHeaders=["ETag"], MaxAgeSeconds=60)]})
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bkt, "Key": "hello.txt"})
    expected = {"Access-Control-Allow-Origin": ORIGIN, "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": "GET, PUT, HEAD",
                "Access-Control-Expose-Headers": "ETag", "Access-Control-Max-Age": "60",
                "Vary": VARY}

    reply = send(basalt_http, "GET", get_url, {"Origin": ORIGIN})
    assert (reply.status, reply.body) == (200, b"hello cors")
    assert reply.cors() == expected

    head_url = s3.generate_presigned_url("head_object", Params={"Bucket": bkt, "Key": "hello.txt"})
    assert send(basalt_http, "HEAD", head_url, {"Origin": ORIGIN}).cors() == expected

    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bkt, "Key": "up.txt"})
    reply = send(basalt_http, "PUT", put_url, {"Origin": ORIGIN}, b"uploaded")
    assert reply.status == 200 and reply.cors() == expected
    assert s3.get_object(Bucket=bkt, Key="up.txt")["Body"].read() == b"uploaded"

    # No Origin, another origin, a method the rule lacks: no CORS headers (and no Vary),
    # the request itself served as usual.
    for headers in ({}, {"Origin": "https://evil.example.com"},
                    {"Origin": ORIGIN, "Access-Control-Request-Method": "DELETE"},
                    {"Origin": ORIGIN, "Access-Control-Request-Headers": "x-amz-date"}):
        reply = send(basalt_http, "GET", get_url, headers)
        assert (reply.status, reply.body) == (200, b"hello cors")
        assert reply.cors() == {}
    delete_url = s3.generate_presigned_url("delete_object", Params={"Bucket": bkt, "Key": "up.txt"})
    reply = send(basalt_http, "DELETE", delete_url, {"Origin": ORIGIN})
    assert reply.status == 204 and reply.cors() == {}


def test_error_and_streamed_responses_carry_cors_headers(basalt_http, s3, bkt):
    s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]})
    big = bytes(range(256)) * (12 * 1024)  # 3 MiB: several blocks, streamed out
    s3.put_object(Bucket=bkt, Key="big.bin", Body=big)
    expected = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET",
                "Vary": VARY}

    url = s3.generate_presigned_url("get_object", Params={"Bucket": bkt, "Key": "big.bin"})
    reply = send(basalt_http, "GET", url, {"Origin": ORIGIN})
    assert reply.status == 200 and reply.body == big and reply.cors() == expected

    missing = s3.generate_presigned_url("get_object", Params={"Bucket": bkt, "Key": "nope"})
    reply = send(basalt_http, "GET", missing, {"Origin": ORIGIN})
    assert reply.status == 404 and reply.error()["Code"] == "NoSuchKey"
    assert reply.cors() == expected

    # Refused (anonymous, no policy): the browser may still read why.
    reply = send(basalt_http, "GET", f"/{bkt}/hello.txt", {"Origin": ORIGIN})
    assert reply.status == 403 and reply.error()["Code"] == "AccessDenied"
    assert reply.cors() == expected

    # Without a configuration nothing is added, whatever the origin.
    s3.delete_bucket_cors(Bucket=bkt)
    assert send(basalt_http, "GET", url, {"Origin": ORIGIN}).cors() == {}
