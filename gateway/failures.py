"""The one place where engine errors become S3 errors."""

from __future__ import annotations

import storaged

from .errors import (
    BadDigest,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    EntityTooSmall,
    IncompleteBody,
    InternalError,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
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
    if isinstance(exc, storaged.DigestMismatch):
        return BadDigest(ExpectedDigest=exc.expected, CalculatedDigest=exc.actual)
    for storage_type, s3_type in _MAP:
        if isinstance(exc, storage_type):
            if s3_type is ServiceUnavailable:
                return ServiceUnavailable(f"Please reduce your request rate. ({exc})")
            return s3_type()
    return InternalError()
