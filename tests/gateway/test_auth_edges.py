"""Authentication edge cases as S3 answers them: partial and malformed Authorization
headers and query strings, presigned expiry bounds, dates in the past and the future,
x-amz-date against Date, and presigned SigV2 URLs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from s3_testkit import ACCESS_KEY, SECRET_KEY, secret_for, stubbed_s3

from gateway import errors
from gateway.sigv2 import sign, verify_presigned
from gateway.sigv4 import verify_request

NOW = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
EPOCH_NOW = int(NOW.timestamp())


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    def clock(remove_tzinfo: bool = True) -> datetime:
        return NOW.replace(tzinfo=None) if remove_tzinfo else NOW
    monkeypatch.setattr(botocore.auth, "get_current_datetime", clock)
    monkeypatch.setattr(botocore.auth.time, "time", lambda: float(EPOCH_NOW))


def v4(method: str, url: str, headers: dict[str, str] | None = None, *, query_auth=False,
       expires: int = 3600):
    """(method, path, query, headers) of a request signed by botocore's SigV4 signers."""
    request = AWSRequest(method=method, url=url, headers=headers or {})
    credentials = Credentials(ACCESS_KEY, SECRET_KEY)
    if query_auth:
        botocore.auth.S3SigV4QueryAuth(credentials, "s3", "us-east-1", expires=expires).add_auth(
            request)
    else:
        botocore.auth.S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    parts = urlsplit(request.url)
    return method, parts.path, parts.query, [*request.headers.items(), ("Host", parts.netloc)]


def error_of(method, path, query, headers, now=NOW) -> errors.S3Error:
    with pytest.raises(errors.S3Error) as info:
        verify_request(method, path, query, headers, secret_for, now)
    return info.value


def with_header(headers, name, value):
    return [(k, v) for k, v in headers if k.lower() != name.lower()] + (
        [(name, value)] if value is not None else [])


def with_param(query, name, value):
    pairs = [p for p in query.split("&") if p.split("=")[0].lower() != name.lower()]
    return "&".join(pairs + ([f"{name}={value}"] if value is not None else []))


# --- the Authorization header ---------------------------------------------------------------

@pytest.mark.parametrize("value", ["garbage", "AWS4-HMAC-SHA256", "Bearer"])
def test_authorization_without_a_space(value):
    method, path, query, headers = v4("GET", "http://h/b/k")
    error = error_of(method, path, query, with_header(headers, "Authorization", value))
    assert isinstance(error, errors.InvalidArgument) and error.status == 400
    assert error.message == "Authorization header is invalid -- one and only one ' ' (space) required"
    assert error.extra == {"ArgumentName": "Authorization", "ArgumentValue": value}


@pytest.mark.parametrize("scheme", ["Bearer", "AWS4-HMAC-SHA512", "Basic", "Digest"])
def test_unknown_scheme(scheme):
    method, path, query, headers = v4("GET", "http://h/b/k")
    error = error_of(method, path, query, with_header(headers, "Authorization", f"{scheme} x=y"))
    assert isinstance(error, errors.InvalidArgument) and error.status == 400
    assert error.message == "Unsupported Authorization Type"


def _authorization(headers) -> str:
    return dict(headers)["Authorization"]


@pytest.mark.parametrize("edit,message", [
    (lambda a: a.split(",")[0], "requires three components"),  # Credential alone
    (lambda a: a.replace("Credential=", "").replace("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA256 x="),
     "requires three components"),
    (lambda a: a.replace("/us-east-1/", "//"), "a non-empty region must be provided"),
    (lambda a: a.replace("/s3/aws4_request", "/s3"), "the Credential is mal-formed"),
    (lambda a: a.replace("/s3/", "/S3/"), 'incorrect service "S3"'),
    (lambda a: a.replace("aws4_request", "aws4_request2"), 'incorrect terminal "aws4_request2"'),
    (lambda a: a.replace("/20240301/", "/20240229/"), 'Invalid credential date "20240229"'),
])
def test_partial_or_wrong_credential(edit, message):
    method, path, query, headers = v4("GET", "http://h/b/k")
    error = error_of(method, path, query,
                     with_header(headers, "Authorization", edit(_authorization(headers))))
    assert isinstance(error, errors.AuthorizationHeaderMalformed) and error.status == 400
    assert error.message.startswith("The authorization header is malformed; ")
    assert message in error.message


def test_duplicated_parts_still_need_a_matching_signature():
    method, path, query, headers = v4("GET", "http://h/b/k")
    authorization = _authorization(headers)
    duplicated = authorization + ", Signature=" + "0" * 64
    assert isinstance(error_of(method, path, query, with_header(headers, "Authorization",
                                                                  duplicated)),
                      errors.SignatureDoesNotMatch)


def test_content_md5_must_be_signed():
    method, path, query, headers = v4("PUT", "http://h/b/k")
    error = error_of(method, path, query, headers + [("Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg==")])
    assert isinstance(error, errors.AccessDenied)
    assert error.message == "There were headers present in the request which were not signed"
    assert error.extra == {"HeadersNotSigned": "content-md5"}
    signed = v4("PUT", "http://h/b/k", {"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="})
    assert verify_request(*signed, secret_for, NOW)


def test_header_and_query_authentication_together():
    method, path, query, headers = v4("GET", "http://h/b/k", query_auth=True)
    for value in ("AWS4-HMAC-SHA256 Credential=x", ""):  # an empty header too
        error = error_of(method, path, query, headers + [("Authorization", value)])
        assert isinstance(error, errors.InvalidArgument)
        assert error.message.startswith("Only one auth mechanism allowed")
    # An empty header alone is anonymous, refused as such.
    error = error_of("GET", "/b/k", "", [("Host", "h"), ("Authorization", "")])
    assert isinstance(error, errors.AccessDenied) and error.message == "Access Denied"


def test_sigv2_and_sigv4_query_parameters_together():
    method, path, query, headers = v4("GET", "http://h/b/k", query_auth=True)
    error = error_of(method, path, query + "&Signature=abc&AWSAccessKeyId=" + ACCESS_KEY, headers)
    assert isinstance(error, errors.InvalidArgument)
    assert error.message.startswith("Only one auth mechanism allowed")
    assert error.extra == {"ArgumentName": "Authorization"}


# --- dates of a header-signed request -------------------------------------------------------

def test_x_amz_date_wins_over_date():
    method, path, query, headers = v4("GET", "http://h/b/k")
    assert verify_request(method, path, query, headers + [("Date", "not a date")], secret_for, NOW)
    error = error_of(method, path, query, with_header(headers, "x-amz-date", "2024-03-01"))
    assert isinstance(error, errors.AccessDenied)
    assert error.message == "AWS authentication requires a valid Date or x-amz-date header"


@pytest.mark.parametrize("moment,code", [
    (datetime(2010, 7, 7, 21, 53, 4, tzinfo=UTC), "RequestTimeTooSkewed"),
    (datetime(2099, 7, 7, 21, 53, 4, tzinfo=UTC), "RequestTimeTooSkewed"),
    (datetime(1950, 7, 7, 21, 53, 4, tzinfo=UTC), "AccessDenied"),  # before 1970: no date at all
])
def test_date_header_far_away(moment, code):
    signed = _signed_at(moment, {"Date": "set by the signer"})
    assert not any(k.lower() == "x-amz-date" for k, _ in signed[3])
    error = error_of(*signed)
    assert error.code == code and error.status == 403
    if code == "AccessDenied":
        assert error.message == "AWS authentication requires a valid Date or x-amz-date header"
    else:
        assert error.extra["RequestTime"] == moment.strftime("%Y%m%dT%H%M%SZ")


def _signed_at(moment: datetime, headers: dict[str, str]):
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda remove_tzinfo=True: moment.replace(tzinfo=None)
    try:
        signed = v4("GET", "http://h/b/k", headers)
    finally:
        botocore.auth.get_current_datetime = original
    return signed


def test_scope_date_must_be_the_request_day():
    # Signed just before midnight, scope of the day after: refused for the scope, not skew.
    method, path, query, headers = v4("GET", "http://h/b/k")
    edited = _authorization(headers).replace("/20240301/", "/20240302/")
    error = error_of(method, path, query, with_header(headers, "Authorization", edited))
    assert isinstance(error, errors.AuthorizationHeaderMalformed)
    assert 'This date is not the same as X-Amz-Date: "20240301"' in error.message


# --- presigned SigV4 --------------------------------------------------------------------------

@pytest.fixture
def presigned():
    return v4("GET", "http://h/b/k", query_auth=True, expires=60)


@pytest.mark.parametrize("value,accepted", [
    ("1", True), ("604800", True), ("+60", True), ("0060", True),
    ("604801", False), ("-1", False), ("99999999999999999999", False), ("6e1", False),
    ("", False), (" 60", False),
])
def test_presigned_expires_bounds(value, accepted):
    method, path, query, headers = v4("GET", "http://h/b/k", query_auth=True, expires=60)
    query = with_param(query, "X-Amz-Expires", quote(value))
    error = error_of(method, path, query, headers)
    if accepted:  # well-formed and in bounds: the signature (over 60) is what fails
        assert isinstance(error, errors.SignatureDoesNotMatch)
        return
    assert isinstance(error, errors.AuthorizationQueryParametersError) and error.status == 400


@pytest.mark.parametrize("value,message", [
    ("604801", "X-Amz-Expires must be less than a week (in seconds); that is, the given "
               "X-Amz-Expires must be less than 604800 seconds"),
    ("-1", "X-Amz-Expires must be non-negative"),
    ("99999999999999999999", "X-Amz-Expires should be a number"),
])
def test_presigned_expires_messages(presigned, value, message):
    method, path, query, headers = presigned
    error = error_of(method, path, with_param(query, "X-Amz-Expires", value), headers)
    assert error.message == message


def test_presigned_week_long_url_works_for_a_week():
    request = v4("GET", "http://h/b/k", query_auth=True, expires=604800)
    assert verify_request(*request, secret_for, NOW + timedelta(days=7))
    error = error_of(*request, now=NOW + timedelta(days=7, seconds=1))
    assert error.message == "Request has expired"


def test_presigned_expired_is_refused_before_the_key_and_signature(presigned):
    method, path, query, headers = presigned
    later = NOW + timedelta(seconds=61)
    for tampered in (with_param(query, "X-Amz-Signature", "0" * 64),
                     query.replace(ACCESS_KEY, "AKIAUNKNOWN")):
        error = error_of(method, path, tampered, headers, later)
        assert isinstance(error, errors.AccessDenied) and error.message == "Request has expired"
        assert error.extra == {"X-Amz-Expires": "60", "Expires": "2024-03-01T12:01:00Z",
                               "ServerTime": "2024-03-01T12:01:01Z"}


def test_presigned_in_the_future():
    ahead = _presigned_at(NOW + timedelta(hours=1))
    error = error_of(*ahead)
    assert isinstance(error, errors.AccessDenied) and error.status == 403
    assert error.message == "Request is not yet valid"
    assert error.extra == {"X-Amz-Date": str(int((NOW + timedelta(hours=1)).timestamp()) * 1000),
                           "Expires": "2024-03-01T13:01:00Z",
                           "ServerTime": "2024-03-01T12:00:00Z"}
    # Within the skew a URL from a clock slightly ahead is served.
    assert verify_request(*_presigned_at(NOW + timedelta(minutes=15)), secret_for, NOW)
    # Checked before the signature too.
    method, path, query, headers = ahead
    error = error_of(method, path, with_param(query, "X-Amz-Signature", "0" * 64), headers)
    assert error.message == "Request is not yet valid"


def _presigned_at(moment: datetime):
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda remove_tzinfo=True: moment.replace(tzinfo=None)
    try:
        return v4("GET", "http://h/b/k", query_auth=True, expires=60)
    finally:
        botocore.auth.get_current_datetime = original


@pytest.mark.parametrize("algorithm,code,message", [
    ("AWS4-HMAC-SHA1", "AuthorizationQueryParametersError",
     'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256 and AWS4-ECDSA-P256-SHA256"'),
    ("AWS4-ECDSA-P256-SHA256", "NotImplemented", "Signature Version 4A is not implemented."),
])
def test_presigned_algorithm(presigned, algorithm, code, message):
    method, path, query, headers = presigned
    # The algorithm is judged before the other parameters are looked for.
    query = with_param(with_param(query, "X-Amz-Algorithm", algorithm), "X-Amz-Date", None)
    error = error_of(method, path, query, headers)
    assert (error.code, error.message) == (code, message)


@pytest.mark.parametrize("missing", ["X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date",
                                     "X-Amz-SignedHeaders", "X-Amz-Expires"])
def test_presigned_partial_parameter_sets(presigned, missing):
    method, path, query, headers = presigned
    error = error_of(method, path, with_param(query, missing, None), headers)
    assert isinstance(error, errors.AuthorizationQueryParametersError)
    assert error.message.startswith("Query-string authentication version 4 requires")


@pytest.mark.parametrize("credential,message", [
    (f"{ACCESS_KEY}/20240301/us-east-1/s3", "the Credential is mal-formed"),
    (f"{ACCESS_KEY}/20240301//s3/aws4_request", "a non-empty region must be provided"),
    (f"{ACCESS_KEY}/2024-03-01/us-east-1/s3/aws4_request", 'incorrect date format "2024-03-01"'),
    (f"{ACCESS_KEY}/20240301/us-east-1/s3/aws4", 'incorrect terminal "aws4"'),
    (f"{ACCESS_KEY}/20240302/us-east-1/s3/aws4_request",
     'Invalid credential date "20240302". This date is not the same as X-Amz-Date: "20240301".'),
])
def test_presigned_bad_credential(presigned, credential, message):
    method, path, query, headers = presigned
    error = error_of(method, path, with_param(query, "X-Amz-Credential", quote(credential, safe="")),
                     headers)
    assert isinstance(error, errors.AuthorizationQueryParametersError)
    if message.startswith("Invalid credential date"):  # a message of its own, as S3 sends it
        assert error.message == message
    else:
        assert error.message.startswith("Error parsing the X-Amz-Credential parameter; ")
        assert message in error.message


def test_presigned_malformed_date(presigned):
    method, path, query, headers = presigned
    error = error_of(method, path, with_param(query, "X-Amz-Date", "20240301T120000"), headers)
    assert isinstance(error, errors.AuthorizationQueryParametersError)
    assert "ISO8601 Long Format" in error.message


# --- presigned SigV2 ---------------------------------------------------------------------------

def v2_presigned(method: str = "GET", key: str = "k", expires_in: int = 60, **params):
    stub = stubbed_s3("http://127.0.0.1:9000", signature_version="s3")
    url = stub.client.generate_presigned_url(
        "get_object" if method == "GET" else "put_object",
        Params={"Bucket": "b", "Key": key, **params}, ExpiresIn=expires_in)
    parts = urlsplit(url)
    return method, parts.path, parts.query, [("Host", parts.netloc)]


def v2_error(method, path, query, headers, now=NOW) -> errors.S3Error:
    with pytest.raises(errors.S3Error) as info:
        verify_presigned(method, path, query, headers, secret_for, now)
    return info.value


def test_v2_presigned_urls_verify():
    request = v2_presigned()
    auth = verify_presigned(*request, secret_for, NOW)
    assert auth.presigned and auth.access_key == ACCESS_KEY
    put = v2_presigned("PUT", ContentType="text/plain", Metadata={"a": "1"})
    assert "x-amz-meta-a=1" in put[2]
    # Sent with or without the Content-Type the URL was signed for.
    assert verify_presigned(*put, secret_for, NOW)
    assert verify_presigned(*put[:3], put[3] + [("Content-Type", "text/plain")], secret_for, NOW)


def test_v2_presigned_expiry_has_no_skew():
    request = v2_presigned(expires_in=10 * 365 * 86400)  # ten years ahead is served
    assert verify_presigned(*request, secret_for, NOW)


def test_v2_presigned_expired_before_key_and_signature():
    method, path, query, headers = v2_presigned(expires_in=60)
    later = NOW + timedelta(seconds=61)
    for tampered in (query.replace("Signature=", "Signature=AA"),
                     query.replace(ACCESS_KEY, "AKIAUNKNOWN")):
        error = v2_error(method, path, tampered, headers, later)
        assert isinstance(error, errors.AccessDenied) and error.message == "Request has expired"
        assert error.extra == {"Expires": "2024-03-01T12:01:00Z",
                               "ServerTime": "2024-03-01T12:01:01Z"}
    assert verify_presigned(method, path, query, headers, secret_for, NOW + timedelta(seconds=60))


@pytest.mark.parametrize("value,message", [
    (None, "Query-string authentication requires the Signature, Expires and AWSAccessKeyId "
           "parameters"),
    ("soon", "Invalid date (should be seconds since epoch): soon"),
    ("2147483648", "Invalid date (should be seconds since epoch): 2147483648"),
])
def test_v2_presigned_bad_expires(value, message):
    method, path, query, headers = v2_presigned()
    error = v2_error(method, path, with_param(query, "Expires", value), headers)
    assert isinstance(error, errors.AccessDenied) and error.message == message


def test_v2_presigned_mismatch_and_unknown_key():
    method, path, query, headers = v2_presigned()
    error = v2_error(method, path + "x", query, headers)
    assert isinstance(error, errors.SignatureDoesNotMatch)
    assert error.extra["StringToSign"] == (
        f"GET\n\n\n{with_expires(query)}\n/b/kx")
    assert error.extra["StringToSignBytes"] == error.extra["StringToSign"].encode().hex(" ")
    unknown = v2_error(method, path, query.replace(ACCESS_KEY, "AKIAUNKNOWN"), headers)
    assert isinstance(unknown, errors.InvalidAccessKeyId)


def with_expires(query: str) -> str:
    return next(p.split("=")[1] for p in query.split("&") if p.startswith("Expires="))


def test_v2_presigned_beside_sigv4_parameters():
    method, path, query, headers = v2_presigned()
    error = v2_error(method, path, query + "&X-Amz-Algorithm=AWS4-HMAC-SHA256", headers)
    assert isinstance(error, errors.InvalidArgument)
    assert error.extra == {"ArgumentName": "Authorization"}


def test_v2_presigned_hand_built():
    expires = EPOCH_NOW + 30
    sts = f"GET\n\n\n{expires}\n/b/k?versionId=v1"
    query = (f"versionId=v1&AWSAccessKeyId={ACCESS_KEY}&Expires={expires}"
             f"&Signature={quote(sign(SECRET_KEY, sts), safe='')}")
    assert verify_presigned("GET", "/b/k", query, {}, secret_for, NOW)
