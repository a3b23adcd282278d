"""AWS Signature Version 2: in the ``Authorization`` header and in presigned query strings.

Older SDKs and tools still sign with it (boto3 with ``signature_version="s3"``,
s3cmd's default, aws-sdk-js v2's ``s3`` signer), and boto3 presigns us-east-1
URLs with it by default. The signature is base64 HMAC-SHA1, keyed with the
secret, over::

    Method \\n Content-MD5 \\n Content-Type \\n Date \\n CanonicalizedAmzHeaders CanonicalizedResource

where Date is empty when an ``x-amz-date`` header is sent (that header is then
signed among the ``x-amz-*`` ones), and a presigned URL's ``Expires`` takes its
place. There is no payload hash: a body is checked by its Content-MD5 or
``x-amz-checksum-*`` header when the client sends one.

Checks run in S3's order: the header's form, the date and its skew (a presigned
URL's expiry), then the access key, then the signature.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from urllib.parse import parse_qsl, unquote

from .errors import AccessDenied, InvalidAccessKeyId, InvalidArgument, RequestTimeTooSkewed
from .sigv4 import (
    MAX_SKEW,
    NO_DATE,
    NO_SPACE,
    ONE_MECHANISM,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    AuthContext,
    SecretLookup,
    headers_by_name,
    iso_time,
    parse_http_date,
    query_params,
    signature_mismatch,
    v4_query_auth,
)

REGION = "us-east-1"

# The query parameters botocore's HmacV1 signers put in the resource, each as sent
# (``name`` or ``name=value``).
SIGNED_PARAMS = frozenset((
    "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber",
    "policy", "requestPayment", "torrent", "versioning", "versionId", "versions", "website",
    "uploads", "uploadId", "response-content-type", "response-content-language",
    "response-expires", "response-cache-control", "response-content-disposition",
    "response-content-encoding", "delete", "lifecycle", "tagging", "restore", "storageClass",
    "notification", "replication", "analytics", "metrics", "inventory", "select",
    "select-type", "object-lock"))

# The sub-resources S3 itself puts in the resource it signs (names matched with their
# case, each named once): these with their decoded value, every other one by name alone.
_S3_VALUED = frozenset((
    "partNumber", "uploadId", "versionId", "select-type", "response-cache-control",
    "response-content-disposition", "response-content-encoding", "response-content-language",
    "response-content-type", "response-expires"))
_S3_SUBRESOURCES = _S3_VALUED | frozenset((
    "accelerate", "acl", "analytics", "attributes", "cors", "delete", "encryption",
    "intelligent-tiering", "inventory", "legal-hold", "lifecycle", "location", "logging",
    "metrics", "notification", "object-lock", "ownershipControls", "policy", "policyStatus",
    "publicAccessBlock", "replication", "requestPayment", "restore", "retention", "select",
    "tagging", "torrent", "uploads", "versioning", "versions", "website"))

_BAD_HEADER = "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature"
_QUERY_PARAMETERS = ("Query-string authentication requires the Signature, Expires and "
                     "AWSAccessKeyId parameters")
_EXPIRES = re.compile(r"([+-]?)([0-9]+)")
_FIRST_DAY = -62135596800  # 0001-01-01T00:00:00Z, the earliest Expires a datetime can name

# Payload modes a V2-signed body may declare: none of them needs a SigV4 seed signature.
_V2_PAYLOADS = (UNSIGNED_PAYLOAD, STREAMING_UNSIGNED_TRAILER)
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def is_header_signed(headers: Mapping[str, str]) -> bool:
    """An ``Authorization: AWS AKID:signature`` request (header-signed SigV2)."""
    scheme, space, _ = (headers.get("Authorization") or "").partition(" ")
    return bool(space) and scheme.upper() == "AWS"


def is_presigned_v2(raw_query: str) -> bool:
    return "Signature=" in raw_query and "AWSAccessKeyId=" in raw_query


def verify_header(method: str, resource_path: str, raw_query: str,
                  headers: Mapping[str, str] | Iterable[tuple[str, str]],
                  secret_for: SecretLookup, now: datetime | None = None) -> AuthContext:
    """Verify a header-signed SigV2 request; ``resource_path`` is ``/bucket/key`` as sent."""
    now = _utc(now)
    lists = headers_by_name(headers)
    authorization = lists["authorization"][0].strip()
    params = query_params(raw_query) if raw_query else {}
    if v4_query_auth(params) or "signature" in params:
        raise InvalidArgument(ONE_MECHANISM, ArgumentName="Authorization",
                              ArgumentValue=authorization)
    credentials = authorization.partition(" ")[2]
    if credentials.startswith(" "):
        raise InvalidArgument(NO_SPACE, ArgumentName="Authorization", ArgumentValue=authorization)
    access_key, colon, provided = credentials.partition(":")
    if not colon or not provided or ":" in provided:
        raise InvalidArgument(_BAD_HEADER, ArgumentName="Authorization",
                              ArgumentValue=authorization)
    # x-amz-date, when sent (readable or not), is the request's time and Date's line is
    # left empty: the x-amz-date header is signed among the x-amz-* ones instead.
    if "x-amz-date" in lists:
        sent, date_line = lists["x-amz-date"][0].strip(), ""
    else:
        sent = date_line = (lists.get("date") or [""])[0].strip()
    moment = parse_http_date(sent)
    if moment is None:
        raise AccessDenied(NO_DATE)
    if abs(now - moment) > MAX_SKEW:
        raise RequestTimeTooSkewed(RequestTime=sent, ServerTime=iso_time(now),
                                   MaxAllowedSkewMilliseconds=int(MAX_SKEW.total_seconds() * 1000))
    secret = _secret(secret_for, access_key)
    standard = [(_first(lists, "content-md5"), _first(lists, "content-type"), date_line)]
    _check(secret, access_key, provided,
           _strings(method, standard, _amz_headers(lists, raw_query), resource_path, raw_query))
    return AuthContext(access_key, REGION, "", "", b"", "", _payload_mode(lists), False)


def verify_presigned(method: str, resource_path: str, raw_query: str,
                     headers: Mapping[str, str] | Iterable[tuple[str, str]],
                     secret_for: SecretLookup, now: datetime | float | None = None) -> AuthContext:
    """Verify a SigV2 presigned request; ``resource_path`` is ``/bucket/key`` as sent."""
    now = _utc(now)
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        query.setdefault(name, value)
    if v4_query_auth(query_params(raw_query)):
        raise InvalidArgument(ONE_MECHANISM, ArgumentName="Authorization")
    if "Expires" not in query or "AWSAccessKeyId" not in query:
        raise AccessDenied(_QUERY_PARAMETERS)
    expires = _expires(query["Expires"])
    # A presigned URL has no clock skew: it is good until Expires, however far ahead.
    if now.timestamp() > expires:
        raise AccessDenied("Request has expired",
                           Expires=iso_time(datetime.fromtimestamp(expires, UTC)),
                           ServerTime=iso_time(now))
    access_key = query["AWSAccessKeyId"]
    secret = _secret(secret_for, access_key)
    lists = headers_by_name(headers)
    # botocore moves Content-MD5 and Content-Type into the query of the URL it signs;
    # S3 reads them from the headers the URL is sent with.
    sent = (_first(lists, "content-md5"), _first(lists, "content-type"), query["Expires"])
    carried = (query.get("content-md5", sent[0]).strip(),
               query.get("content-type", sent[1]).strip(), query["Expires"])
    _check(secret, access_key, query.get("Signature", ""),
           _strings(method, [sent, carried], _amz_headers(lists, raw_query), resource_path,
                    raw_query))
    return AuthContext(access_key, REGION, "", "", b"", "", UNSIGNED_PAYLOAD, True)


def string_to_sign(method: str, resource_path: str, raw_query: str,
                   headers: Mapping[str, str] | Iterable[tuple[str, str]],
                   date_line: str) -> str:
    """What S3 signs for a request (``date_line``: Date, empty beside x-amz-date, or Expires)."""
    lists = headers_by_name(headers)
    return next(_strings(method, [(_first(lists, "content-md5"), _first(lists, "content-type"),
                                   date_line)],
                         _amz_headers(lists, raw_query), resource_path, raw_query))


def sign(secret: str, string_to_sign: str) -> str:
    """Base64 HMAC-SHA1 of ``string_to_sign``: a SigV2 signature."""
    digest = hmac.new(secret.encode("utf-8"), _wire(string_to_sign), "sha1").digest()
    return base64.b64encode(digest).decode()


def _utc(now: datetime | float | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if isinstance(now, int | float):
        return datetime.fromtimestamp(now, UTC)
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def _first(lists: dict[str, list[str]], name: str) -> str:
    values = lists.get(name)
    return values[0].strip() if values else ""


def _secret(secret_for: SecretLookup, access_key: str) -> str:
    secret = secret_for(access_key)
    if secret is None:
        raise InvalidAccessKeyId(AWSAccessKeyId=access_key)
    return secret


def _expires(text: str) -> int:
    """A presigned URL's Expires: seconds since the epoch, as S3 reads it (to 2**31 - 1)."""
    match = _EXPIRES.fullmatch(text)
    digits = (match[2].lstrip("0") or "0") if match else ""
    if not match or len(digits) > 19 or not _FIRST_DAY <= int(match[1] + digits) < 2**31:
        raise AccessDenied(f"Invalid date (should be seconds since epoch): {text}")
    return int(match[1] + digits)


def _payload_mode(lists: dict[str, list[str]]) -> str:
    """How the body is sent: V2 signs no payload hash, but a client may still declare one
    (checked against the body) or an unsigned aws-chunked body with trailing checksums."""
    value = _first(lists, "x-amz-content-sha256")
    return value if value in _V2_PAYLOADS or _HEX_SHA256.fullmatch(value) else UNSIGNED_PAYLOAD


def _amz_headers(lists: dict[str, list[str]], raw_query: str) -> str:
    """CanonicalizedAmzHeaders: ``name:value`` lines, sorted; repeated headers joined with
    commas; an ``x-amz-*`` query parameter is signed as a header (over one of its name)."""
    amz = {name: ",".join(value.strip() for value in values)
           for name, values in lists.items() if name.startswith("x-amz-")}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        if name.lower().startswith("x-amz-"):
            amz[name.lower()] = value.strip()
    return "".join(f"{name}:{amz[name]}\n" for name in sorted(amz))


def _resources(resource_path: str, raw_query: str) -> list[str]:
    """CanonicalizedResource as S3 builds it, and as botocore builds it.

    The two differ for sub-resources botocore does not know (``retention``, ``legal-hold``,
    ...) and for values of those S3 names alone; a bucket's own operations are signed by
    botocore as ``/bucket/`` even when sent path-style to ``/bucket``."""
    s3_named: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        if name in _S3_SUBRESOURCES:
            s3_named.setdefault(name, value)
    s3 = [f"{name}={s3_named[name]}" if name in _S3_VALUED else name for name in sorted(s3_named)]
    botocore = []
    for item in raw_query.split("&") if raw_query else ():
        name, equals, value = item.partition("=")
        if name in SIGNED_PARAMS:
            botocore.append((name, f"{name}={unquote(value)}" if equals else name))
    botocore.sort(key=lambda pair: pair[0])
    paths = [resource_path]
    if resource_path.count("/") == 1 and len(resource_path) > 1:
        paths.append(resource_path + "/")
    suffixes = [_joined(s3), _joined([text for _, text in botocore])]
    return list(dict.fromkeys(path + suffix for suffix in suffixes for path in paths))


def _joined(parts: list[str]) -> str:
    return "?" + "&".join(parts) if parts else ""


def _strings(method: str, standard: list[tuple[str, str, str]], amz: str, resource_path: str,
             raw_query: str) -> Iterator[str]:
    """Every string the client may have signed, S3's own first."""
    resources = _resources(resource_path, raw_query)
    seen = set()
    for md5, content_type, date_line in standard:
        head = f"{method.upper()}\n{md5}\n{content_type}\n{date_line}\n{amz}"
        for resource in resources:
            if head + resource not in seen:
                seen.add(head + resource)
                yield head + resource


def _check(secret: str, access_key: str, provided: str, strings: Iterator[str]) -> None:
    first = None
    for candidate in strings:
        if hmac.compare_digest(sign(secret, candidate).encode(), _wire(provided)):
            return
        first = first if first is not None else candidate
    raise signature_mismatch(access_key, first or "", provided)


def _wire(text: str) -> bytes:
    # Frameworks hand non-ASCII request bytes over as surrogate escapes; get them back.
    return text.encode("utf-8", "surrogateescape")
