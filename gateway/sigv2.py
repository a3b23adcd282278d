"""AWS Signature Version 2 in presigned query strings.

boto3 still presigns S3 URLs with SigV2 (``AWSAccessKeyId``, ``Expires``,
``Signature``) when no signature version is configured, and S3 accepts them,
so browsers handed such a URL must work here too. Header-signed SigV2 is not
accepted: no current SDK sends it.
"""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl

from .errors import AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch
from .sigv4 import UNSIGNED_PAYLOAD, AuthContext, SecretLookup

# The query parameters that are part of the signed resource (botocore's list).
SIGNED_PARAMS = frozenset((
    "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber",
    "policy", "requestPayment", "torrent", "versioning", "versionId", "versions", "website",
    "uploads", "uploadId", "response-content-type", "response-content-language",
    "response-expires", "response-cache-control", "response-content-disposition",
    "response-content-encoding", "delete", "lifecycle", "tagging", "restore", "storageClass",
    "notification", "replication", "analytics", "metrics", "inventory", "select",
    "select-type", "object-lock"))


def is_header_signed(headers: Mapping[str, str]) -> bool:
    """An ``Authorization: AWS AKID:signature`` request (header-signed SigV2)."""
    return False  # not accepted yet: such requests go to SigV4's check and are refused


def verify_header(method: str, resource_path: str, raw_query: str,
                  headers: Mapping[str, str], secret_for: SecretLookup) -> AuthContext:
    """Verify a header-signed SigV2 request; ``resource_path`` is ``/bucket/key``."""
    raise AccessDenied("Header-signed SigV2 is not accepted.")


def is_presigned_v2(raw_query: str) -> bool:
    return "Signature=" in raw_query and "AWSAccessKeyId=" in raw_query


def string_to_sign(method: str, resource_path: str, raw_query: str,
                   headers: Mapping[str, str]) -> str:
    params = parse_qsl(raw_query, keep_blank_values=True)
    query = {k: v for k, v in params}
    lowered = {k.lower(): v for k, v in headers.items()}

    def value(name: str) -> str:
        return (query.get(name) if name in query else lowered.get(name, "")).strip()

    amz = {k.lower(): v.strip() for k, v in list(lowered.items()) + params
           if k.lower().startswith("x-amz-")}
    sub = sorted((k, v) for k, v in params if k in SIGNED_PARAMS)
    resource = resource_path
    if sub:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in sub)
    lines = [method.upper(), value("content-md5"), value("content-type"), query.get("Expires", "")]
    lines += [f"{k}:{amz[k]}" for k in sorted(amz)]
    return "\n".join(lines + [resource])


def verify_presigned(method: str, resource_path: str, raw_query: str,
                     headers: Mapping[str, str], secret_for: SecretLookup,
                     now: float | None = None) -> AuthContext:
    """Verify a SigV2 presigned request; ``resource_path`` is ``/bucket/key`` as sent."""
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    access = query.get("AWSAccessKeyId", "")
    secret = secret_for(access)
    if secret is None:
        raise InvalidAccessKeyId(AWSAccessKeyId=access)
    sts = string_to_sign(method, resource_path, raw_query, headers)
    expected = base64.b64encode(hmac.new(secret.encode(), sts.encode(), "sha1").digest()).decode()
    if not hmac.compare_digest(expected, query.get("Signature", "")):
        raise SignatureDoesNotMatch(AWSAccessKeyId=access, StringToSign=sts,
                                    SignatureProvided=query.get("Signature", ""))
    try:
        expires = int(query.get("Expires", ""))
    except ValueError:
        raise AccessDenied("Query-string authentication requires the Signature, Expires and "
                           "AWSAccessKeyId parameters") from None
    if expires < (now if now is not None else time.time()):
        raise AccessDenied("Request has expired", Expires=expires)
    return AuthContext(access, "us-east-1", "", "", b"", "", UNSIGNED_PAYLOAD, True)
