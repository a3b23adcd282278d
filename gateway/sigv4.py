"""AWS Signature Version 4 verification for S3, independent of the HTTP framework.

:func:`verify_request` checks a request signed in the ``Authorization`` header or
in a presigned query string and returns an :class:`AuthContext`; the streaming
body decoder (``gateway.chunked``) continues the signature chain from it.

The canonical URI is the path exactly as sent (what the SDKs sign), falling back
to the form S3 itself computes: percent-decoded and re-encoded with the SigV4
rules. Neither removes dot segments or merges slashes. Query parameters are
re-encoded likewise, with ``+`` read as a space, and sorted. Error codes and
messages follow what S3 returns. A header-signed request is checked for syntax,
access key, signature, then time; a presigned one for its parameters and its
validity window before the scope, the access key and the signature, as S3 does.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from urllib.parse import quote, unquote_to_bytes

from gateway.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidRequest,
    RequestTimeTooSkewed,
    S3NotImplemented,
    SignatureDoesNotMatch,
)

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
MAX_SKEW = timedelta(minutes=15)
MAX_EXPIRES = 7 * 24 * 3600

_PAYLOAD_MODES = {UNSIGNED_PAYLOAD, STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER,
                  STREAMING_UNSIGNED_TRAILER}
_SIGV4A_MODES = {"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
                 "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER"}
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_SCOPE_DATE = re.compile(r"\d{8}")
_EXPIRES = re.compile(r"([+-]?)(\d+)")
_SPACES = re.compile(r"[ \t]+")
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/_.~-]+")  # what canonical_uri leaves as it is
_QUERY_AUTH = ("x-amz-algorithm", "x-amz-credential", "x-amz-signature", "x-amz-date",
               "x-amz-signedheaders", "x-amz-expires")

_MALFORMED_PREFIX = "The authorization header is malformed; "
_QUERY_PREFIX = "Error parsing the X-Amz-Credential parameter; "
NO_DATE = "AWS authentication requires a valid Date or x-amz-date header"
_VERSION_2 = ("The authorization mechanism you have provided is not supported. "
              "Please use AWS4-HMAC-SHA256.")
NO_SPACE = "Authorization header is invalid -- one and only one ' ' (space) required"
ONE_MECHANISM = ("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                  "Signature query string parameter or the Authorization header should be specified")
_BAD_PAYLOAD_HASH = ("x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
                     "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER "
                     "or a valid sha256 value.")
_ALGORITHM_ONLY = 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256 and AWS4-ECDSA-P256-SHA256"'
_MISSING_QUERY = ("Query-string authentication version 4 requires the X-Amz-Algorithm, "
                  "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
                  "and X-Amz-Expires parameters.")

SecretLookup = Callable[[str], "str | None"]


@dataclass(frozen=True, slots=True)
class AuthContext:
    """What a verified request proves, and what the body decoder needs to go on."""

    access_key: str
    region: str
    amz_date: str  # "20130524T000000Z"
    scope: str  # "20130524/us-east-1/s3/aws4_request"
    signing_key: bytes
    seed_signature: str  # lower-case hex
    content_sha256: str  # the x-amz-content-sha256 value, or UNSIGNED-PAYLOAD
    presigned: bool

    @property
    def expected_sha256(self) -> bytes | None:
        """The body digest the client signed, when it sent one (check it after reading)."""
        if _HEX_SHA256.fullmatch(self.content_sha256):
            return bytes.fromhex(self.content_sha256)
        return None

    @property
    def streaming(self) -> bool:
        """The body is ``aws-chunked`` (decode it with ``gateway.chunked``)."""
        return self.content_sha256.startswith("STREAMING-")


@lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """The SigV4 key derived from ``secret`` for one day, region and service (cached)."""
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def sign(key: bytes, string_to_sign: str) -> str:
    """Hex HMAC-SHA256 of ``string_to_sign``: a signature."""
    return _hmac(key, string_to_sign).hex()


def canonical_uri(raw_path: str) -> str:
    """S3's canonical URI: decode, then percent-encode all but unreserved and ``/``."""
    return quote(unquote_to_bytes(_wire_bytes(raw_path or "/")), safe="/~")


def canonical_query(raw_query: str, *, exclude: str | None = None) -> str:
    """Canonical query string: pairs re-encoded, sorted by name then value."""
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        name_bytes = _decode_query(name)
        if exclude is not None and name_bytes.lower() == exclude.encode():
            continue
        pairs.append((quote(name_bytes, safe="-_.~"), quote(_decode_query(value), safe="-_.~")))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def _decode_query(text: str) -> bytes:
    return unquote_to_bytes(_wire_bytes(text).replace(b"+", b" "))


def _wire_bytes(text: str) -> bytes:
    # Frameworks hand non-ASCII request bytes over as surrogate escapes; get them back.
    return text.encode("utf-8", "surrogateescape")


def headers_by_name(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Every value of each header, by lower-case name, in the order sent."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    lists: dict[str, list[str]] = {}
    for name, value in items:
        lists.setdefault(name.lower(), []).append(value)
    return lists


def _trim(value: str) -> str:
    value = value.strip(" \t")
    return _SPACES.sub(" ", value) if "  " in value or "\t" in value else value


def _canonical_headers(header_lists: dict[str, list[str]], names: list[str]) -> str:
    return "".join(f"{name}:{','.join(map(_trim, header_lists.get(name, ())))}\n" for name in names)


def query_params(raw_query: str) -> dict[str, str]:
    """Decoded query parameters by lower-case name (first wins); S3 matches X-Amz-* in any case."""
    params: dict[str, str] = {}
    for item in raw_query.split("&"):
        name, _, value = item.partition("=")
        key = _decode_query(name).decode("utf-8", "replace").lower()
        params.setdefault(key, _decode_query(value).decode("utf-8", "replace"))
    return params


def iso_time(moment: datetime) -> str:
    """A time as S3 names it in error details (``ServerTime``, ``Expires``)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_amz_date(value: str) -> datetime | None:
    if not _AMZ_DATE.fullmatch(value):
        return None
    try:  # slicing: strptime would be most of the cost of a verification
        return datetime(int(value[0:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
                        int(value[11:13]), int(value[13:15]), tzinfo=UTC)
    except ValueError:
        return None


def verify_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    secret_for: SecretLookup,
    now: datetime | None = None,
) -> AuthContext:
    """Verify a SigV4 request (``Authorization`` header or presigned URL).

    ``raw_path`` and ``raw_query`` are exactly as sent (percent-encoded, no ``?``);
    ``headers`` is a case-insensitive multi-mapping or a list of pairs (repeated
    headers are joined with commas, as SigV4 requires). Raises an ``S3Error``.
    """
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    header_lists = headers_by_name(headers)
    params = query_params(raw_query) if raw_query else {}
    query_auth = v4_query_auth(params)
    if "authorization" in header_lists:
        authorization = header_lists["authorization"][0].strip()
        # S3 refuses a header beside query authentication even when the header is empty.
        if query_auth or "signature" in params:
            raise InvalidArgument(ONE_MECHANISM, ArgumentName="Authorization",
                                  ArgumentValue=authorization)
        if authorization:
            return _verify_header(method, raw_path, raw_query, header_lists, authorization,
                                  secret_for, now)
    if query_auth:
        if "signature" in params:  # SigV2's query parameters beside SigV4's
            raise InvalidArgument(ONE_MECHANISM, ArgumentName="Authorization")
        return _verify_query(method, raw_path, raw_query, header_lists, params, secret_for, now)
    if "awsaccesskeyid" in params and "signature" in params:
        raise InvalidRequest(_VERSION_2)
    raise AccessDenied()


def v4_query_auth(params: Mapping[str, str]) -> bool:
    """The query (lower-case names, see :func:`query_params`) carries SigV4 authentication."""
    return any(name in params for name in ("x-amz-algorithm", "x-amz-credential",
                                           "x-amz-signature"))


def _parse_authorization(value: str) -> tuple[str, str, str]:
    algorithm, space, rest = value.partition(" ")
    if not space:
        raise InvalidArgument(NO_SPACE, ArgumentName="Authorization", ArgumentValue=value)
    if algorithm != ALGORITHM:
        if algorithm == "AWS":
            raise InvalidRequest(_VERSION_2)
        if algorithm == "AWS4-ECDSA-P256-SHA256":
            raise S3NotImplemented("Signature Version 4A is not implemented.")
        raise InvalidArgument("Unsupported Authorization Type", ArgumentName="Authorization",
                              ArgumentValue=value)
    fields: dict[str, str] = {}
    for component in rest.split(","):
        name, sep, field = component.partition("=")
        if sep:
            fields[name.strip()] = field.strip()
    try:
        return fields["Credential"], fields["SignedHeaders"], fields["Signature"]
    except KeyError:
        raise AuthorizationHeaderMalformed(
            _MALFORMED_PREFIX + "the authorization header requires three components: "
            "Credential, SignedHeaders, and Signature.") from None


def _parse_scope(credential: str, amz_date: str, error: type, prefix: str,
                 date_name: str) -> tuple[str, str, str]:
    """Split ``AKID/date/region/service/aws4_request``; returns (access key, date, region)."""
    parts = credential.split("/")
    if len(parts) != 5 or not parts[0]:
        raise error(prefix + 'the Credential is mal-formed; expecting '
                    '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".')
    access_key, date, region, service, terminal = parts
    if not _SCOPE_DATE.fullmatch(date):
        raise error(prefix + f'incorrect date format "{date}". This date in the credential '
                    'must be in the format "yyyyMMdd".')
    if not region:
        raise error(prefix + "a non-empty region must be provided in the credential.")
    if service != SERVICE:
        raise error(prefix + f'incorrect service "{service}". This endpoint belongs to "s3".')
    if terminal != "aws4_request":
        raise error(prefix + f'incorrect terminal "{terminal}". This endpoint uses "aws4_request".')
    if date != amz_date[:8]:
        # The query's message stands alone, without the credential-parsing prefix.
        lead = prefix if error is AuthorizationHeaderMalformed else ""
        raise error(lead + f'Invalid credential date "{date}". This date is not the same as '
                    f'{date_name}: "{amz_date[:8]}".')
    return access_key, date, region


def _payload_hash(header_lists: dict[str, list[str]], required: bool) -> str:
    values = header_lists.get("x-amz-content-sha256")
    if not values:
        if required:
            raise InvalidRequest("Missing required header for this request: x-amz-content-sha256")
        return UNSIGNED_PAYLOAD
    value = values[0].strip()
    if value in _PAYLOAD_MODES or _HEX_SHA256.fullmatch(value):
        return value
    if value in _SIGV4A_MODES:
        raise S3NotImplemented("Signature Version 4A is not implemented.")
    raise InvalidArgument(_BAD_PAYLOAD_HASH, ArgumentName="x-amz-content-sha256",
                          ArgumentValue=value)


def _request_date(header_lists: dict[str, list[str]]) -> tuple[str, datetime]:
    """The request time from x-amz-date, else Date; as (amz_date string, datetime)."""
    if "x-amz-date" in header_lists:
        value = header_lists["x-amz-date"][0].strip()
        moment = parse_amz_date(value)
        if moment is None:
            raise AccessDenied(NO_DATE)
        return value, moment
    if "date" in header_lists:
        moment = parse_http_date(header_lists["date"][0].strip())
        if moment is not None:
            return moment.strftime("%Y%m%dT%H%M%SZ"), moment
    raise AccessDenied(NO_DATE)


def parse_http_date(value: str) -> datetime | None:
    """A ``Date`` (or SigV2 ``x-amz-date``) value in UTC: RFC 1123, RFC 850, asctime or
    ISO 8601 basic. None for anything else, and for dates before 1970, which S3 reads as
    no date at all (a date far ahead is merely skewed)."""
    moment = parse_amz_date(value)
    if moment is None:
        try:
            moment = parsedate_to_datetime(value)
            moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return moment if moment.year >= 1970 else None


def _check_signed(header_lists: dict[str, list[str]], signed: list[str]) -> None:
    """S3 requires ``host``, ``content-md5`` and every ``x-amz-*`` header present to be signed."""
    missing = [name for name in header_lists
               if (name in ("host", "content-md5") or name.startswith("x-amz-"))
               and name != "x-amz-content-sha256" and name not in signed]
    if "host" not in signed and "host" not in missing:
        missing.insert(0, "host")
    if missing:
        raise AccessDenied("There were headers present in the request which were not signed",
                           HeadersNotSigned=", ".join(missing))


def _lookup_secret(secret_for: SecretLookup, access_key: str) -> str:
    secret = secret_for(access_key)
    if secret is None:
        raise InvalidAccessKeyId(AWSAccessKeyId=access_key)
    return secret


def _check_signature(method: str, raw_path: str, query: str, header_lists: dict[str, list[str]],
                     signed: list[str], payload_hash: str, amz_date: str, scope: str,
                     key: bytes, provided: str, access_key: str) -> None:
    # SDKs sign the path exactly as they send it; S3 itself re-encodes the decoded
    # path. Both name the same key, so either form is accepted (the second costs
    # one more HMAC, and only when the first fails).
    uris = [raw_path or "/"]
    if not _PLAIN_PATH.fullmatch(uris[0]):  # else both forms are the same
        reencoded = canonical_uri(raw_path)
        if reencoded != uris[0]:
            uris.append(reencoded)
    rest = "\n".join((query, _canonical_headers(header_lists, signed), ";".join(signed),
                      payload_hash))
    first = None
    for uri in uris:
        canonical = f"{method.upper()}\n{uri}\n{rest}"
        digest = hashlib.sha256(_wire_bytes(canonical)).hexdigest()
        string_to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"
        if hmac.compare_digest(sign(key, string_to_sign), provided.lower()):
            return
        first = first or (string_to_sign, canonical)
    raise signature_mismatch(access_key, first[0], provided, first[1])


def signature_mismatch(access_key: str, string_to_sign: str, provided: str,
                       canonical_request: str | None = None) -> SignatureDoesNotMatch:
    """SignatureDoesNotMatch with the debugging fields S3 returns."""
    def spaced(text: str) -> str:
        return _wire_bytes(text).hex(" ")

    extra = {"AWSAccessKeyId": access_key, "StringToSign": string_to_sign,
             "SignatureProvided": provided, "StringToSignBytes": spaced(string_to_sign)}
    if canonical_request is not None:
        extra["CanonicalRequest"] = canonical_request
        extra["CanonicalRequestBytes"] = spaced(canonical_request)
    return SignatureDoesNotMatch(**extra)


def _signed_names(value: str) -> list[str]:
    return [name.strip().lower() for name in value.split(";") if name.strip()]


def _verify_header(method: str, raw_path: str, raw_query: str,
                   header_lists: dict[str, list[str]], authorization: str,
                   secret_for: SecretLookup, now: datetime) -> AuthContext:
    credential, signed_value, provided = _parse_authorization(authorization)
    payload_hash = _payload_hash(header_lists, required=True)
    amz_date, moment = _request_date(header_lists)
    access_key, date, region = _parse_scope(credential, amz_date, AuthorizationHeaderMalformed,
                                            _MALFORMED_PREFIX, "X-Amz-Date")
    signed = _signed_names(signed_value)
    _check_signed(header_lists, signed)
    key = signing_key(_lookup_secret(secret_for, access_key), date, region)
    scope = f"{date}/{region}/{SERVICE}/aws4_request"
    _check_signature(method, raw_path, canonical_query(raw_query), header_lists, signed,
                     payload_hash, amz_date, scope, key, provided, access_key)
    if abs(now - moment) > MAX_SKEW:
        raise RequestTimeTooSkewed(RequestTime=amz_date, ServerTime=iso_time(now),
                                   MaxAllowedSkewMilliseconds=int(MAX_SKEW.total_seconds() * 1000))
    return AuthContext(access_key, region, amz_date, scope, key, provided.lower(), payload_hash,
                       presigned=False)


def _verify_query(method: str, raw_path: str, raw_query: str,
                  header_lists: dict[str, list[str]], params: dict[str, str],
                  secret_for: SecretLookup, now: datetime) -> AuthContext:
    # S3's order: the parameters, then the validity window, then the scope, the key and
    # the signature (a presigned URL past its time is refused as expired whoever signed it).
    algorithm = params.get("x-amz-algorithm")
    if algorithm is not None and algorithm != ALGORITHM:
        if algorithm == "AWS4-ECDSA-P256-SHA256":
            raise S3NotImplemented("Signature Version 4A is not implemented.")
        raise AuthorizationQueryParametersError(_ALGORITHM_ONLY)
    if any(name not in params for name in _QUERY_AUTH):
        raise AuthorizationQueryParametersError(_MISSING_QUERY)
    amz_date = params["x-amz-date"]
    moment = parse_amz_date(amz_date)
    if moment is None:
        raise AuthorizationQueryParametersError(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    expires = _expires_seconds(params["x-amz-expires"])
    end = moment + timedelta(seconds=expires)
    if moment - now > MAX_SKEW:
        raise AccessDenied("Request is not yet valid", **{
            "X-Amz-Date": int(moment.timestamp()) * 1000, "Expires": iso_time(end),
            "ServerTime": iso_time(now)})
    if expires == 0 or now > end:
        raise AccessDenied("Request has expired", **{"X-Amz-Expires": params["x-amz-expires"],
                                                      "Expires": iso_time(end),
                                                      "ServerTime": iso_time(now)})
    access_key, date, region = _parse_scope(params["x-amz-credential"], amz_date,
                                            AuthorizationQueryParametersError, _QUERY_PREFIX,
                                            "X-Amz-Date")
    payload_hash = _payload_hash(header_lists, required=False)
    signed = _signed_names(params["x-amz-signedheaders"])
    _check_signed(header_lists, signed)
    key = signing_key(_lookup_secret(secret_for, access_key), date, region)
    scope = f"{date}/{region}/{SERVICE}/aws4_request"
    provided = params["x-amz-signature"]
    _check_signature(method, raw_path, canonical_query(raw_query, exclude="x-amz-signature"),
                     header_lists, signed, payload_hash, amz_date, scope, key, provided,
                     access_key)
    return AuthContext(access_key, region, amz_date, scope, key, provided.lower(), payload_hash,
                       presigned=True)


def _expires_seconds(text: str) -> int:
    """X-Amz-Expires as S3 reads it: a signed decimal that fits a 64-bit integer, 0..604800."""
    match = _EXPIRES.fullmatch(text)
    digits = match[2].lstrip("0") or "0" if match else ""
    if not match or len(digits) > 19 or not -2**63 <= int(match[1] + digits) < 2**63:
        raise AuthorizationQueryParametersError("X-Amz-Expires should be a number")
    expires = int(match[1] + digits)
    if expires < 0:
        raise AuthorizationQueryParametersError("X-Amz-Expires must be non-negative")
    if expires > MAX_EXPIRES:
        raise AuthorizationQueryParametersError(
            "X-Amz-Expires must be less than a week (in seconds); that is, the given "
            "X-Amz-Expires must be less than 604800 seconds")
    return expires
