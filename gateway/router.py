"""Which S3 operation a request is: bucket, key and operation name.

Path style (``/bucket/key``) and virtual-hosted style (``bucket.DOMAIN/key``)
are both understood. The key is the percent-decoded path exactly as sent:
no dot-segment removal, no slash merging (``a//b`` and ``./x`` are keys).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from urllib.parse import unquote

from .errors import InvalidURI, MethodNotAllowed, PreconditionFailed, S3NotImplemented

ADMIN_PREFIX = "/_basalt/"


@dataclasses.dataclass(frozen=True)
class Route:
    op: str
    bucket: str | None = None
    key: str | None = None

    @property
    def resource(self) -> str:
        if self.bucket is None:
            return "/"
        return f"/{self.bucket}" + (f"/{self.key}" if self.key is not None else "")


# Sub-resources we answer; any other one is refused rather than ignored, so a
# client never believes (say) a lifecycle rule was stored when it was not.
_BUCKET_GET = {"location": "GetBucketLocation", "versioning": "GetBucketVersioning",
               "acl": "GetBucketAcl", "uploads": "ListMultipartUploads",
               "versions": "ListObjectVersions", "object-lock": "GetObjectLockConfiguration",
               "lifecycle": "GetBucketLifecycleConfiguration", "tagging": "GetBucketTagging",
               "policy": "GetBucketPolicy", "policyStatus": "GetBucketPolicyStatus",
               "cors": "GetBucketCors", "ownershipControls": "GetBucketOwnershipControls",
               "publicAccessBlock": "GetPublicAccessBlock", "encryption": "GetBucketEncryption"}
_BUCKET_PUT = {"acl": "PutBucketAcl", "versioning": "PutBucketVersioning",
               "object-lock": "PutObjectLockConfiguration",
               "lifecycle": "PutBucketLifecycleConfiguration", "tagging": "PutBucketTagging",
               "policy": "PutBucketPolicy", "cors": "PutBucketCors",
               "ownershipControls": "PutBucketOwnershipControls",
               "publicAccessBlock": "PutPublicAccessBlock", "encryption": "PutBucketEncryption"}
_BUCKET_DELETE = {"lifecycle": "DeleteBucketLifecycle", "tagging": "DeleteBucketTagging",
                  "policy": "DeleteBucketPolicy", "cors": "DeleteBucketCors",
                  "ownershipControls": "DeleteBucketOwnershipControls",
                  "publicAccessBlock": "DeletePublicAccessBlock",
                  "encryption": "DeleteBucketEncryption"}
_OBJECT_GET = {"acl": "GetObjectAcl", "tagging": "GetObjectTagging",
               "retention": "GetObjectRetention", "legal-hold": "GetObjectLegalHold",
               "attributes": "GetObjectAttributes"}
_OBJECT_PUT = {"acl": "PutObjectAcl", "tagging": "PutObjectTagging",
               "retention": "PutObjectRetention", "legal-hold": "PutObjectLegalHold"}
_UNSUPPORTED = {"website", "replication", "logging",
                "notification", "accelerate", "requestPayment", "analytics", "metrics",
                "inventory", "intelligent-tiering", "restore", "select", "torrent"}


def is_post_upload(method: str, key: str | None, query: Mapping[str, str],
                   headers: Mapping[str, str]) -> bool:
    """An HTML-form (POST policy) upload: a POST of multipart/form-data to a bucket."""
    return (method == "POST" and key is None and "delete" not in query
            and headers.get("Content-Type", "").lower().startswith("multipart/form-data"))


def split_path(raw_path: str, host: str, domain: str | None) -> tuple[str | None, str | None]:
    """(bucket, key) from the raw request path and Host header."""
    try:
        path = unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        raise InvalidURI("Couldn't parse the specified URI.") from None
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    hostname = hostname.lower()
    if domain and hostname.endswith("." + domain):
        bucket = hostname[: -len(domain) - 1]
        key = path[1:] if path.startswith("/") else path
        return bucket, (key if key else None)
    trimmed = path[1:] if path.startswith("/") else path
    if not trimmed:
        return None, None
    bucket, sep, key = trimmed.partition("/")
    return bucket, (key if sep and key else None)


def route(method: str, raw_path: str, query: Mapping[str, str], headers: Mapping[str, str],
          domain: str | None = None) -> Route:
    """Classify a request. Raises S3 errors for methods and sub-resources we refuse."""
    bucket, key = split_path(raw_path, headers.get("Host", ""), domain)
    unsupported = _UNSUPPORTED.intersection(query)
    if bucket is None:
        if method in ("GET", "HEAD"):
            return Route("ListBuckets")
        raise MethodNotAllowed()
    if method == "OPTIONS":
        # A CORS preflight: answered from the bucket's CORS rules, never signed.
        return Route("PreflightCors", bucket, key)
    if unsupported:
        raise S3NotImplemented(f"The {sorted(unsupported)[0]} sub-resource is not supported.")
    if is_post_upload(method, key, query, headers):
        # Its signature is inside the form: the handler authenticates it.
        return Route("PostObject", bucket)
    if key is None:
        op = _bucket_op(method, query)
    else:
        op = _object_op(method, query)
        if "x-amz-copy-source" in headers and op in ("PutObject", "UploadPart"):
            op = "CopyObject" if op == "PutObject" else "UploadPartCopy"
    return Route(op, bucket, key)


def _sub_resource(ops: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    for name, op in ops.items():
        if name in query:
            return op
    return None


def _bucket_op(method: str, query: Mapping[str, str]) -> str:
    if method == "GET":
        return _sub_resource(_BUCKET_GET, query) or (
            "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects")
    if method == "HEAD":
        return "HeadBucket"
    if method == "PUT":
        return _sub_resource(_BUCKET_PUT, query) or "CreateBucket"
    if method == "DELETE":
        return _sub_resource(_BUCKET_DELETE, query) or "DeleteBucket"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if method == "POST":
        raise PreconditionFailed(
            "At least one of the pre-conditions you specified did not hold",
            Condition="Bucket POST must be of the enclosure-type multipart/form-data")
    raise MethodNotAllowed()


def _object_op(method: str, query: Mapping[str, str]) -> str:
    upload = "uploadId" in query
    if method == "GET":
        return _sub_resource(_OBJECT_GET, query) or ("ListParts" if upload else "GetObject")
    if method == "HEAD":
        return "HeadObject"
    if method == "PUT":
        sub = _sub_resource(_OBJECT_PUT, query)
        if sub:
            return sub
        if upload or "partNumber" in query:
            return "UploadPart"
        return "PutObject"
    if method == "DELETE":
        if "tagging" in query:
            return "DeleteObjectTagging"
        return "AbortMultipartUpload" if upload else "DeleteObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if upload:
            return "CompleteMultipartUpload"
    raise MethodNotAllowed()
