"""Which S3 operation a request is: bucket, key and operation name.

Path style (``/bucket/key``) and virtual-hosted style (``bucket.DOMAIN/key``)
are both understood. The key is the percent-decoded path exactly as sent:
no dot-segment removal, no slash merging (``a//b`` and ``./x`` are keys).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from urllib.parse import unquote

from .errors import InvalidURI, MethodNotAllowed, S3NotImplemented

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
               "acl": "GetBucketAcl", "uploads": "ListMultipartUploads"}
_UNSUPPORTED = {"policy", "lifecycle", "cors", "website", "replication", "tagging",
                "encryption", "logging", "notification", "object-lock", "versions",
                "accelerate", "requestPayment", "ownershipControls", "publicAccessBlock",
                "analytics", "metrics", "inventory", "intelligent-tiering", "restore",
                "select", "retention", "legal-hold", "torrent", "attributes"}


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
    if unsupported:
        raise S3NotImplemented(f"The {sorted(unsupported)[0]} sub-resource is not supported.")
    if key is None:
        return Route(_bucket_op(method, query), bucket)
    op = _object_op(method, query)
    if "x-amz-copy-source" in headers and op in ("PutObject", "UploadPart"):
        op = "CopyObject" if op == "PutObject" else "UploadPartCopy"
    return Route(op, bucket, key)


def _bucket_op(method: str, query: Mapping[str, str]) -> str:
    if method == "GET":
        for name, op in _BUCKET_GET.items():
            if name in query:
                return op
        return "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
    if method == "HEAD":
        return "HeadBucket"
    if method == "PUT":
        if "acl" in query:
            return "PutBucketAcl"
        if "versioning" in query:
            return "PutBucketVersioning"
        return "CreateBucket"
    if method == "DELETE":
        return "DeleteBucket"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    raise MethodNotAllowed()


def _object_op(method: str, query: Mapping[str, str]) -> str:
    upload = "uploadId" in query
    if method == "GET":
        if "acl" in query:
            return "GetObjectAcl"
        return "ListParts" if upload else "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "PUT":
        if "acl" in query:
            return "PutObjectAcl"
        if upload or "partNumber" in query:
            return "UploadPart"
        return "PutObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if upload else "DeleteObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if upload:
            return "CompleteMultipartUpload"
    raise MethodNotAllowed()
