"""The one place where engine errors become S3 errors."""

from __future__ import annotations

from email.utils import formatdate

import storaged

from .errors import (
    AccessDenied,
    BadDigest,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    EntityTooSmall,
    IncompleteBody,
    InternalError,
    InvalidBucketState,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    MethodNotAllowed,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NoSuchVersion,
    PreconditionFailed,
    S3Error,
    ServiceUnavailable,
)


class StorageFull(S3Error):
    code = "XBasaltStorageFull"
    status = 507
    message = "Storage backend has reached its minimum free drive threshold."


_MAP: list[tuple[type[Exception], type[S3Error]]] = [
    (storaged.NoSuchBucket, NoSuchBucket),
    (storaged.NoSuchKey, NoSuchKey),
    (storaged.NoSuchUpload, NoSuchUpload),
    (storaged.InvalidPartOrder, InvalidPartOrder),
    (storaged.BucketExists, BucketAlreadyOwnedByYou),
    (storaged.BucketNotEmpty, BucketNotEmpty),
    (storaged.PreconditionFailed, PreconditionFailed),
    (storaged.IncompleteBody, IncompleteBody),
    (storaged.DiskFull, StorageFull),
    (storaged.QuorumError, ServiceUnavailable),
]


def s3_error(exc: BaseException) -> S3Error:
    """The S3 error to answer ``exc`` with (InternalError for the unexpected)."""
    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, storaged.InvalidRange):
        return InvalidRange(headers={"Content-Range": f"bytes */{exc.size}"},
                            ActualObjectSize=exc.size)
    if isinstance(exc, storaged.InvalidPart):
        return InvalidPart(PartNumber=exc.number)
    if isinstance(exc, storaged.EntityTooSmall):
        return EntityTooSmall(ProposedSize=exc.size, MinSizeAllowed=5 << 20,
                              PartNumber=exc.number)
    if isinstance(exc, storaged.DeleteMarker):
        headers = {"x-amz-delete-marker": "true", "x-amz-version-id": exc.version_id}
        if not exc.by_id:
            return NoSuchKey(headers=headers, Key=exc.key)
        headers["Last-Modified"] = formatdate(exc.mtime_ns / 1e9, usegmt=True)
        headers["Allow"] = "DELETE"
        return MethodNotAllowed(headers=headers, Method="GET", ResourceType="DeleteMarker")
    if isinstance(exc, storaged.NoSuchVersion):
        return NoSuchVersion(Key=exc.key, VersionId=exc.version_id)
    if isinstance(exc, storaged.ObjectLocked):
        return AccessDenied("Access Denied because object protected by object lock.")
    if isinstance(exc, storaged.InvalidBucketState):
        return InvalidBucketState(str(exc))
    if isinstance(exc, storaged.ReadOnly):
        return ServiceUnavailable(f"Basalt is read-only for now: {exc}")
    if isinstance(exc, storaged.DigestMismatch):
        return BadDigest(ExpectedDigest=exc.expected, CalculatedDigest=exc.actual)
    for storage_type, s3_type in _MAP:
        if isinstance(exc, storage_type):
            if s3_type is ServiceUnavailable:
                return ServiceUnavailable(f"Too few disks are available: {exc}")
            return s3_type()
    return InternalError()
