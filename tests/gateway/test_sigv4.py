"""SigV4 verification: AWS's documented examples, botocore as the signing oracle,
tampering, and every error S3 returns for a bad signature or authorization."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import botocore.auth
import botocore.crt.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDict
from s3_testkit import ACCESS_KEY, DOC_NOW, SECRET_KEY, secret_for, stubbed_s3

from gateway import errors
from gateway.sigv4 import (
    EMPTY_SHA256,
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    canonical_query,
    canonical_uri,
    signing_key,
    verify_request,
)

NOW = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
HOST = "examplebucket.s3.amazonaws.com"


def freeze(monkeypatch, moment: datetime = NOW) -> None:
    """Pin botocore's clock, for both its Python signer and the CRT one."""
    def clock(remove_tzinfo: bool = True) -> datetime:
        return moment.replace(tzinfo=None) if remove_tzinfo else moment
    monkeypatch.setattr(botocore.auth, "get_current_datetime", clock)
    monkeypatch.setattr(botocore.crt.auth, "get_current_datetime", clock)


@pytest.fixture(params=["crt", "python"])
def signer(request, monkeypatch):
    """boto3 signs with awscrt (aws-c-auth) when it is installed, else in Python: test both."""
    if request.param == "python":
        for name, cls in (("s3v4", botocore.auth.S3SigV4Auth),
                          ("s3v4-query", botocore.auth.S3SigV4QueryAuth)):
            monkeypatch.setitem(botocore.auth.AUTH_TYPE_MAPS, name, cls)
    return request.param


def doc_headers(signed: str, signature: str, **extra: str) -> dict[str, str]:
    headers = {"Host": HOST, "x-amz-date": "20130524T000000Z", "x-amz-content-sha256": EMPTY_SHA256}
    headers.update(extra)
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20130524/us-east-1/s3/"
                                f"aws4_request,SignedHeaders={signed},Signature={signature}")
    return headers


# --- the examples of the AWS documentation ------------------------------------

DOC_EXAMPLES = [
    ("GET", "/test.txt", "", doc_headers(
        "host;range;x-amz-content-sha256;x-amz-date",
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41", Range="bytes=0-9")),
    ("PUT", "/test%24file.text", "", doc_headers(
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
        Date="Fri, 24 May 2013 00:00:00 GMT", **{
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
            "x-amz-content-sha256": "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"})),
    ("GET", "/", "lifecycle", doc_headers(
        "host;x-amz-content-sha256;x-amz-date",
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")),
    ("GET", "/", "max-keys=2&prefix=J", doc_headers(
        "host;x-amz-content-sha256;x-amz-date",
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")),
    ("PUT", "/examplebucket/chunkObject.txt", "", doc_headers(
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        "x-amz-decoded-content-length;x-amz-storage-class",
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
        Host="s3.amazonaws.com", **{
            "x-amz-storage-class": "REDUCED_REDUNDANCY", "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": "66560", "Content-Length": "66824",
            "x-amz-content-sha256": STREAMING_PAYLOAD})),
    ("PUT", "/examplebucket/chunkObject.txt", "", doc_headers(
        "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
        "x-amz-storage-class;x-amz-trailer",
        "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e",
        Host="s3.amazonaws.com", **{
            "x-amz-storage-class": "REDUCED_REDUNDANCY", "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": "66560", "x-amz-trailer": "x-amz-checksum-crc32c",
            "x-amz-content-sha256": STREAMING_PAYLOAD_TRAILER})),
]


@pytest.mark.parametrize("method,path,query,headers", DOC_EXAMPLES)
def test_aws_documentation_examples(method, path, query, headers):
    auth = verify_request(method, path, query, headers, secret_for, DOC_NOW)
    assert auth.access_key == ACCESS_KEY
    assert auth.scope == "20130524/us-east-1/s3/aws4_request"
    assert auth.seed_signature == headers["Authorization"][-64:]
    assert not auth.presigned


def test_aws_documentation_presigned_example():
    query = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={ACCESS_KEY}%2F20130524%2Fus-east-1"
             "%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&"
             "X-Amz-SignedHeaders=host&X-Amz-Signature="
             "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    auth = verify_request("GET", "/test.txt", query, {"Host": HOST}, secret_for, DOC_NOW)
    assert auth.presigned and auth.content_sha256 == UNSIGNED_PAYLOAD
    assert auth.expected_sha256 is None


def test_the_context_exposes_the_payload_digest_and_mode():
    method, path, query, headers = DOC_EXAMPLES[1]
    auth = verify_request(method, path, query, headers, secret_for, DOC_NOW)
    assert auth.expected_sha256 == bytes.fromhex(headers["x-amz-content-sha256"])
    assert not auth.streaming
    assert verify_request(*DOC_EXAMPLES[4][:4], secret_for, DOC_NOW).streaming


# --- canonical forms -----------------------------------------------------------

@pytest.mark.parametrize("raw,expected", [
    ("/test-bucket/a%20b/a+b", "/test-bucket/a%20b/a%2Bb"),
    ("/test-bucket/%c3%bc/%E4%B8%AD", "/test-bucket/%C3%BC/%E4%B8%AD"),
    ("/test-bucket/!*'()~=&:@$,;", "/test-bucket/%21%2A%27%28%29~%3D%26%3A%40%24%2C%3B"),
    ("/test-bucket/%21%2A%27%28%29%7E%3D%26%3A", "/test-bucket/%21%2A%27%28%29~%3D%26%3A"),
    ("/test-bucket/100%25/100%", "/test-bucket/100%25/100%25"),
    ("/test-bucket//a//b/", "/test-bucket//a//b/"),
    ("/a/./b/../c", "/a/./b/../c"),
    ("", "/"),
])
def test_canonical_uri_is_reencoded_not_normalized(raw, expected):
    assert canonical_uri(raw) == expected


@pytest.mark.parametrize("raw,expected", [
    ("b=2&a=1", "a=1&b=2"),
    ("a=2&a=1&a=&A=3", "A=3&a=&a=1&a=2"),
    ("acl&b=", "acl=&b="),
    ("a=b+c&d=e%2Bf&g=%20", "a=b%20c&d=e%2Bf&g=%20"),
    ("k=1&k-x=2&k.y=3&k0=4", "k=1&k-x=2&k.y=3&k0=4"),
    ("k=%c3%bc~!*'()&l=a=b&m=a:b/c", "k=%C3%BC~%21%2A%27%28%29&l=a%3Db&m=a%3Ab%2Fc"),
    ("", ""),
])
def test_canonical_query(raw, expected):
    assert canonical_query(raw) == expected


# --- botocore as the oracle ------------------------------------------------------

KEYS = ["plain.txt", "dir/sub/file", "a b", "a+b", "a=b&c", "100%", "tilde~x", "ü/中文/😀",
        "!*'()", "a:b@c$d,e;f", "a//b", "a?b#c", " lead and trail ", "dots/../x", "~/.x"]


@pytest.mark.parametrize("key", KEYS)
def test_boto3_requests_verify(key, signer, monkeypatch):
    freeze(monkeypatch)
    for endpoint, path_style in (("http://127.0.0.1:9000", True), ("https://s3.example.com", False)):
        s3 = stubbed_s3(endpoint, path_style=path_style)
        s3.client.put_object(Bucket="bucket", Key=key, Body=b"hello", Metadata={"color": "red"})
        s3.client.get_object(Bucket="bucket", Key=key, Range="bytes=0-1")
        s3.client.list_objects_v2(Bucket="bucket", Prefix=key, Delimiter="/", StartAfter=key)
        s3.client.delete_objects(Bucket="bucket", Delete={"Objects": [{"Key": key}]})
        for request in s3.requests:
            auth = request.verify(NOW)
            assert auth.access_key == ACCESS_KEY


def test_boto3_plain_http_put_signs_the_body_hash(monkeypatch):
    freeze(monkeypatch)
    s3 = stubbed_s3("http://127.0.0.1:9000")
    s3.client.put_object(Bucket="bucket", Key="k", Body=b"hello")
    auth = s3.requests[0].verify(NOW)
    import hashlib
    assert auth.expected_sha256 == hashlib.sha256(b"hello").digest()


def test_boto3_https_put_is_streaming_unsigned_trailer(monkeypatch):
    freeze(monkeypatch)
    s3 = stubbed_s3("https://s3.example.com")
    s3.client.put_object(Bucket="bucket", Key="k", Body=b"hello")
    auth = s3.requests[0].verify(NOW)
    assert auth.content_sha256 == STREAMING_UNSIGNED_TRAILER and auth.streaming


def sign_with_botocore(method: str, url: str, headers: list[tuple[str, str]] | None = None,
                       body: bytes = b"", query_auth: bool = False, expires: int = 3600):
    # The presigner would move a body into the query string: presigned URLs have none.
    request = AWSRequest(method=method, url=url, data=b"" if query_auth else body)
    for name, value in headers or []:
        request.headers[name] = value  # HTTPHeaders appends: repeated names stay repeated
    credentials = Credentials(ACCESS_KEY, SECRET_KEY)
    if query_auth:
        botocore.auth.S3SigV4QueryAuth(credentials, "s3", "eu-west-3", expires=expires).add_auth(request)
    else:
        botocore.auth.S3SigV4Auth(credentials, "s3", "eu-west-3").add_auth(request)
    parts = urlsplit(request.url)
    wire_headers = list(request.headers.items())
    if not any(k.lower() == "host" for k, _ in wire_headers):
        wire_headers.append(("Host", parts.netloc))
    return method, parts.path, parts.query, wire_headers


ENCODED_URLS = [
    "http://127.0.0.1:9000/bucket/" + quote("ü 中+=&%~", safe="/~"),
    "http://127.0.0.1:9000/bucket/a%2Fb",
    "http://127.0.0.1:9000/bucket//double//slash",
    "http://bucket.s3.localhost:9000/key?uploads",
    "http://bucket.s3.localhost:9000/?list-type=2&prefix=&delimiter=%2F&encoding-type=url",
    "http://127.0.0.1:9000/bucket?a=2&a=1&a=&empty=",
    "http://127.0.0.1:9000/bucket/k?response-content-disposition=attachment%3B%20filename%3D%22a%20b%22",
]


@pytest.mark.parametrize("url", ENCODED_URLS)
@pytest.mark.parametrize("query_auth", [False, True])
def test_botocore_signers_on_raw_urls(url, query_auth, monkeypatch):
    freeze(monkeypatch)
    headers = [("X-Amz-Meta-Tag", "one"), ("X-Amz-Meta-Tag", "  two   words "),
               ("Content-Type", "text/plain")]
    method, path, query, wire = sign_with_botocore("PUT", url, headers, b"body", query_auth)
    auth = verify_request(method, path, query, wire, secret_for, NOW)
    assert auth.region == "eu-west-3" and auth.presigned is query_auth
    # The same request through an aiohttp-like case-insensitive multidict.
    assert verify_request(method, path, query, CIMultiDict(wire), secret_for, NOW)


def test_repeated_headers_are_all_signed(monkeypatch):
    freeze(monkeypatch)
    headers = [("X-Amz-Meta-Tag", "one"), ("X-Amz-Meta-Tag", "two")]
    method, path, query, wire = sign_with_botocore("GET", "http://h/b/k", headers)
    wire = [(k, v) for k, v in wire if v != "two"]
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify_request(method, path, query, wire, secret_for, NOW)


@pytest.mark.parametrize("key", KEYS)
def test_boto3_presigned_urls(key, signer, monkeypatch):
    freeze(monkeypatch)
    # Without signature_version boto3 presigns us-east-1 URLs with SigV2, which S3 refuses.
    s3 = stubbed_s3("http://127.0.0.1:9000", signature_version="s3v4")
    for method, params in (("get_object", {"ResponseContentType": "text/x b"}), ("put_object", {}),
                           ("head_object", {}), ("delete_object", {})):
        url = s3.client.generate_presigned_url(method, Params={"Bucket": "b", "Key": key, **params},
                                               ExpiresIn=600)
        parts = urlsplit(url)
        verb = {"get_object": "GET", "put_object": "PUT", "head_object": "HEAD",
                "delete_object": "DELETE"}[method]
        auth = verify_request(verb, parts.path, parts.query, {"Host": parts.netloc}, secret_for, NOW)
        assert auth.presigned and auth.content_sha256 == UNSIGNED_PAYLOAD
        with pytest.raises(errors.AccessDenied, match="expired"):
            verify_request(verb, parts.path, parts.query, {"Host": parts.netloc}, secret_for,
                           NOW + timedelta(seconds=601))


def test_presigned_url_with_signed_metadata_header(monkeypatch):
    freeze(monkeypatch)
    s3 = stubbed_s3("http://127.0.0.1:9000", signature_version="s3v4")
    url = s3.client.generate_presigned_url(
        "put_object", Params={"Bucket": "b", "Key": "k", "Metadata": {"color": "red"}})
    parts = urlsplit(url)
    headers = {"Host": parts.netloc, "x-amz-meta-color": "red"}
    assert verify_request("PUT", parts.path, parts.query, headers, secret_for, NOW)
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify_request("PUT", parts.path, parts.query, {**headers, "x-amz-meta-color": "blue"},
                       secret_for, NOW)
    with pytest.raises(errors.AccessDenied) as info:
        verify_request("PUT", parts.path, parts.query, {**headers, "x-amz-meta-size": "1"},
                       secret_for, NOW)
    assert info.value.extra["HeadersNotSigned"] == "x-amz-meta-size"


def test_boto3_default_presigned_url_is_sigv2_and_refused():
    s3 = stubbed_s3("http://127.0.0.1:9000")
    parts = urlsplit(s3.client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}))
    with pytest.raises(errors.InvalidRequest, match="Please use AWS4-HMAC-SHA256"):
        verify_request("GET", parts.path, parts.query, {"Host": parts.netloc}, secret_for, NOW)


def test_presigned_parameter_names_are_case_insensitive():
    date = "20130524T000000Z"
    scope = f"{ACCESS_KEY}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    query = (f"x-amz-algorithm=AWS4-HMAC-SHA256&X-AMZ-CREDENTIAL={scope}&x-amz-date={date}"
             "&x-amz-expires=60&X-Amz-Signedheaders=host")
    import hashlib
    import hmac
    canonical = f"GET\n/\n{canonical_query(query)}\nhost:{HOST}\n\nhost\nUNSIGNED-PAYLOAD"
    sts = ("AWS4-HMAC-SHA256\n" + date + "\n20130524/us-east-1/s3/aws4_request\n"
           + hashlib.sha256(canonical.encode()).hexdigest())
    signature = hmac.new(signing_key(SECRET_KEY, "20130524", "us-east-1"), sts.encode(),
                         hashlib.sha256).hexdigest()
    auth = verify_request("GET", "/", query + "&x-amz-SIGNATURE=" + signature, {"Host": HOST},
                          secret_for, DOC_NOW)
    assert auth.presigned


# --- tampering -------------------------------------------------------------------

@pytest.fixture
def signed(monkeypatch):
    freeze(monkeypatch)
    return sign_with_botocore("PUT", "http://h:9000/bucket/key?x-id=PutObject",
                              [("X-Amz-Meta-Color", "red"), ("Content-Type", "text/plain")], b"body")


def _replace(headers, name, value):
    out = [(k, v) for k, v in headers if k.lower() != name.lower()]
    return out + ([(name, value)] if value is not None else [])


@pytest.mark.parametrize("tamper", [
    lambda m, p, q, h: ("POST", p, q, h),
    lambda m, p, q, h: (m, p + "x", q, h),
    lambda m, p, q, h: (m, p, q.replace("PutObject", "GetObject"), h),
    lambda m, p, q, h: (m, p, q + "&versionId=null", h),
    lambda m, p, q, h: (m, p, "X-Id=PutObject", h),
    lambda m, p, q, h: (m, p, q, _replace(h, "X-Amz-Meta-Color", "blue")),
    lambda m, p, q, h: (m, p, q, _replace(h, "X-Amz-Meta-Color", None)),
    lambda m, p, q, h: (m, p, q, _replace(h, "Host", "other:9000")),
    lambda m, p, q, h: (m, p, q, _replace(h, "X-Amz-Content-SHA256", EMPTY_SHA256)),
    lambda m, p, q, h: (m, p, q, _replace(h, "Authorization", dict(h)["Authorization"][:-2] + "00")),
])
def test_tampered_requests_do_not_match(signed, tamper):
    with pytest.raises(errors.SignatureDoesNotMatch) as info:
        verify_request(*tamper(*signed), secret_for, NOW)
    extra = info.value.extra
    assert extra["AWSAccessKeyId"] == ACCESS_KEY
    assert extra["StringToSign"].startswith("AWS4-HMAC-SHA256\n")
    assert extra["CanonicalRequest"].split("\n")[0] in ("PUT", "POST")
    assert extra["StringToSignBytes"].startswith("41 57 53 34")
    assert info.value.status == 403


def test_unchanged_request_verifies_and_uppercase_signature_is_accepted(signed):
    method, path, query, headers = signed
    assert verify_request(method, path, query, headers, secret_for, NOW)
    authorization = dict(headers)["Authorization"]
    upper = authorization[:-64] + authorization[-64:].upper()
    assert verify_request(method, path, query, _replace(headers, "Authorization", upper), secret_for, NOW)


def test_the_signing_key_is_derived_once_per_day_not_per_request(signed):
    # Regression guard (counted, not timed): deriving the key is four HMACs.
    method, path, query, headers = signed
    verify_request(method, path, query, headers, secret_for, NOW)
    before = signing_key.cache_info()
    for _ in range(20):
        verify_request(method, path, query, headers, secret_for, NOW)
    after = signing_key.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 20


@pytest.mark.parametrize("form", [
    "AWS4-HMAC-SHA256 Credential={c},SignedHeaders={s},Signature={g}",
    "AWS4-HMAC-SHA256 Credential={c}, SignedHeaders={s}, Signature={g}",
    "AWS4-HMAC-SHA256   Credential = {c} ,  SignedHeaders= {s},Signature ={g}  ",
])
def test_authorization_header_spacing_variants(signed, form):
    method, path, query, headers = signed
    fields = dict(part.strip().split("=", 1) for part in dict(headers)["Authorization"][17:].split(","))
    value = form.format(c=fields["Credential"], s=fields["SignedHeaders"], g=fields["Signature"])
    assert verify_request(method, path, query, _replace(headers, "Authorization", value), secret_for, NOW)


# --- errors ----------------------------------------------------------------------

def _auth_error(signed, authorization=None, now=NOW, **header_changes):
    method, path, query, headers = signed
    if authorization is not None:
        headers = _replace(headers, "Authorization", authorization)
    for name, value in header_changes.items():
        headers = _replace(headers, name.replace("_", "-"), value)
    with pytest.raises(errors.S3Error) as info:
        verify_request(method, path, query, headers, secret_for, now)
    return info.value


def _edit_authorization(signed, old, new):
    return dict(signed[3])["Authorization"].replace(old, new)


@pytest.mark.parametrize("old,new,message", [
    ("Credential=", "Cred=", "requires three components"),
    ("SignedHeaders=", "Signed=", "requires three components"),
    (", Signature=", ", Sig=", "requires three components"),
    ("/20240301/eu-west-3/", "/20240301/", "the Credential is mal-formed"),
    ("/20240301/", "/2024031/", 'incorrect date format "2024031"'),
    ("/s3/", "/ec2/", 'incorrect service "ec2"'),
    ("aws4_request", "aws4_reques", 'incorrect terminal "aws4_reques"'),
    ("/20240301/", "/20240302/", 'Invalid credential date "20240302"'),
])
def test_malformed_authorization_header(signed, old, new, message):
    error = _auth_error(signed, _edit_authorization(signed, old, new))
    assert isinstance(error, errors.AuthorizationHeaderMalformed) and error.status == 400
    assert error.message.startswith("The authorization header is malformed; ")
    assert message in error.message


def test_unknown_access_key(signed):
    error = _auth_error(signed, _edit_authorization(signed, ACCESS_KEY, "AKIAUNKNOWN"))
    assert isinstance(error, errors.InvalidAccessKeyId)
    assert error.extra == {"AWSAccessKeyId": "AKIAUNKNOWN"}


def test_other_authorization_schemes(signed):
    v2 = _auth_error(signed, f"AWS {ACCESS_KEY}:frJIUN8DYpKDtOLCwo//yllqDzg=")
    assert isinstance(v2, errors.InvalidRequest) and "AWS4-HMAC-SHA256" in v2.message
    bearer = _auth_error(signed, "Bearer token")
    assert isinstance(bearer, errors.InvalidArgument) and bearer.extra["ArgumentValue"] == "Bearer token"
    assert isinstance(_auth_error(signed, "AWS4-ECDSA-P256-SHA256 Credential=x"),
                      errors.S3NotImplemented)


def test_anonymous_and_empty_authorization_are_denied():
    for headers in ({"Host": HOST}, {"Host": HOST, "Authorization": ""}):
        with pytest.raises(errors.AccessDenied):
            verify_request("GET", "/b/k", "", headers, secret_for, NOW)
    with pytest.raises(errors.InvalidRequest, match="not supported"):
        verify_request("GET", "/b/k", "AWSAccessKeyId=AKIA&Signature=x&Expires=1", {"Host": HOST},
                       secret_for, NOW)


def test_only_one_auth_mechanism(signed):
    method, path, query, headers = signed
    with pytest.raises(errors.InvalidArgument, match="Only one auth mechanism"):
        verify_request(method, path, query + "&X-Amz-Algorithm=AWS4-HMAC-SHA256", headers,
                       secret_for, NOW)


def test_payload_hash_header_rules(signed):
    missing = _auth_error(signed, x_amz_content_sha256=None)
    assert isinstance(missing, errors.InvalidRequest)
    assert missing.message == "Missing required header for this request: x-amz-content-sha256"
    bad = _auth_error(signed, x_amz_content_sha256=EMPTY_SHA256[1:])
    assert isinstance(bad, errors.InvalidArgument)
    assert bad.extra == {"ArgumentName": "x-amz-content-sha256", "ArgumentValue": EMPTY_SHA256[1:]}
    assert isinstance(_auth_error(signed, x_amz_content_sha256="STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"),
                      errors.S3NotImplemented)


def test_date_rules(signed):
    for value in (None, "2024-03-01T12:00:00Z", "20241301T000000Z"):
        error = _auth_error(signed, x_amz_date=value)
        assert isinstance(error, errors.AccessDenied)
        assert error.message == "AWS authentication requires a valid Date or x-amz-date header"


def test_date_header_instead_of_x_amz_date(monkeypatch):
    freeze(monkeypatch)
    # botocore signs with Date when the request already carries one.
    method, path, query, headers = sign_with_botocore(
        "GET", "http://h/b/k", [("Date", "Fri, 01 Mar 2024 12:00:00 GMT")])
    assert not any(k.lower() == "x-amz-date" for k, _ in headers)
    assert verify_request(method, path, query, headers, secret_for, NOW).amz_date == "20240301T120000Z"


@pytest.mark.parametrize("seconds,ok", [(-900, True), (900, True), (-901, False), (901, False)])
def test_clock_skew(signed, seconds, ok):
    now = NOW + timedelta(seconds=seconds)
    if ok:
        assert verify_request(*signed, secret_for, now)
        return
    error = _auth_error(signed, now=now)
    assert isinstance(error, errors.RequestTimeTooSkewed)
    assert error.extra["RequestTime"] == "20240301T120000Z"
    assert error.extra["ServerTime"] == now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert error.extra["MaxAllowedSkewMilliseconds"] == "900000"


def test_signature_and_key_are_checked_before_time(signed):
    late = NOW + timedelta(hours=1)
    assert isinstance(_auth_error(signed, _edit_authorization(signed, ACCESS_KEY, "AKIAX"), now=late),
                      errors.InvalidAccessKeyId)
    auth = dict(signed[3])["Authorization"]
    assert isinstance(_auth_error(signed, auth[:-1] + ("0" if auth[-1] != "0" else "1"), now=late),
                      errors.SignatureDoesNotMatch)


def test_unsigned_amz_headers_and_host(signed):
    error = _auth_error(signed, x_amz_meta_size="1")
    assert isinstance(error, errors.AccessDenied)
    assert error.extra == {"HeadersNotSigned": "x-amz-meta-size"}
    no_host = _auth_error(signed, _edit_authorization(signed, "host;", ""))
    assert no_host.extra["HeadersNotSigned"].startswith("host")


# --- presigned errors ------------------------------------------------------------

@pytest.fixture
def presigned(monkeypatch):
    freeze(monkeypatch)
    return sign_with_botocore("GET", "http://h:9000/bucket/key", query_auth=True, expires=60)


def _query_error(presigned, name, value, now=NOW):
    method, path, query, headers = presigned
    pairs = [p for p in query.split("&") if p.split("=")[0].lower() != name.lower()]
    if value is not None:
        pairs.append(f"{name}={value}")
    with pytest.raises(errors.S3Error) as info:
        verify_request(method, path, "&".join(pairs), headers, secret_for, now)
    return info.value


@pytest.mark.parametrize("name", ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature",
                                  "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Expires"])
def test_presigned_missing_parameter(presigned, name):
    error = _query_error(presigned, name, None)
    assert isinstance(error, errors.AuthorizationQueryParametersError)
    assert "requires the X-Amz-Algorithm" in error.message


@pytest.mark.parametrize("name,value,message", [
    ("X-Amz-Algorithm", "AWS4-HMAC-SHA1", "X-Amz-Algorithm only supports"),
    ("X-Amz-Date", "2024-03-01T12:00:00Z", "ISO8601 Long Format"),
    ("X-Amz-Expires", "604801", "must be less than a week"),
    ("X-Amz-Expires", "-1", "must be non-negative"),
    ("X-Amz-Expires", "1h", "should be a number"),
    ("X-Amz-Credential", f"{ACCESS_KEY}%2F20240301%2Fus-east-1%2Fec2%2Faws4_request",
     'Error parsing the X-Amz-Credential parameter; incorrect service "ec2"'),
])
def test_presigned_bad_parameters(presigned, name, value, message):
    error = _query_error(presigned, name, value)
    assert isinstance(error, errors.AuthorizationQueryParametersError) and error.status == 400
    assert message in error.message


def test_presigned_unknown_key_and_tampering(presigned):
    error = _query_error(presigned, "X-Amz-Credential",
                         "AKIAUNKNOWN%2F20240301%2Feu-west-3%2Fs3%2Faws4_request")
    assert isinstance(error, errors.InvalidAccessKeyId)
    assert isinstance(_query_error(presigned, "x-id", "GetObject"), errors.SignatureDoesNotMatch)
    assert isinstance(_query_error(presigned, "X-Amz-Expires", "3600"), errors.SignatureDoesNotMatch)


@pytest.mark.parametrize("offset,expired", [(60, False), (60.001, True), (-900, False)])
def test_presigned_expiry(presigned, offset, expired):
    now = NOW + timedelta(seconds=offset)
    if not expired:
        assert verify_request(*presigned, secret_for, now).presigned
        return
    with pytest.raises(errors.AccessDenied) as info:
        verify_request(*presigned, secret_for, now)
    assert info.value.message == "Request has expired"
    assert info.value.extra["X-Amz-Expires"] == "60"
    assert info.value.extra["Expires"] == "2024-03-01T12:01:00Z"


def test_presigned_not_yet_valid_and_zero_expiry(monkeypatch):
    freeze(monkeypatch)
    request = sign_with_botocore("GET", "http://h/b/k", query_auth=True, expires=60)
    with pytest.raises(errors.AccessDenied, match="not yet valid"):
        verify_request(*request, secret_for, NOW - timedelta(seconds=901))
    zero = sign_with_botocore("GET", "http://h/b/k", query_auth=True, expires=0)
    with pytest.raises(errors.AccessDenied, match="expired"):
        verify_request(*zero, secret_for, NOW)


def test_signing_keys_are_cached():
    signing_key.cache_clear()
    for _ in range(3):
        verify_request(*DOC_EXAMPLES[0][:4], secret_for, DOC_NOW)
    info = signing_key.cache_info()
    assert info.misses == 1 and info.hits == 2
    other_day = signing_key(SECRET_KEY, "20130525", "us-east-1")
    assert signing_key(SECRET_KEY, "20130524", "us-east-1") != other_day


def test_error_xml_of_a_mismatch_carries_the_strings(signed):
    error = _auth_error(signed, x_amz_meta_color="green")
    document = error.to_xml("/bucket/key", "REQ1").decode()
    assert "<Code>SignatureDoesNotMatch</Code>" in document
    assert "<CanonicalRequest>PUT\n/bucket/key\nx-id=PutObject\n" in document
