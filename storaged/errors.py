"""Errors raised by the storage engine.

The gateway maps these to S3 codes and blockd to NBD errnos; the engine itself
knows nothing of either protocol.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every engine error."""


class NoSuchBucket(StorageError):
    def __init__(self, bucket: str) -> None:
        super().__init__(f"bucket {bucket!r} does not exist")
        self.bucket = bucket


class BucketExists(StorageError):
    def __init__(self, bucket: str) -> None:
        super().__init__(f"bucket {bucket!r} already exists")
        self.bucket = bucket


class BucketNotEmpty(StorageError):
    def __init__(self, bucket: str) -> None:
        super().__init__(f"bucket {bucket!r} is not empty")
        self.bucket = bucket


class NoSuchKey(StorageError):
    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"object {bucket}/{key} does not exist")
        self.bucket, self.key = bucket, key


class InvalidRange(StorageError):
    """The requested byte range starts at or after the end of the object."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for an object of {size} bytes")
        self.size = size


class PreconditionFailed(StorageError):
    """A conditional write found a different current version than required."""


class DigestMismatch(StorageError):
    """The body's digest differs from the one the client declared."""

    def __init__(self, algorithm: str, expected: str, actual: str) -> None:
        super().__init__(f"{algorithm} mismatch: declared {expected}, computed {actual}")
        self.algorithm, self.expected, self.actual = algorithm, expected, actual


class IncompleteBody(StorageError):
    """The body ended before the declared length."""


class NoSuchUpload(StorageError):
    def __init__(self, upload_id: str) -> None:
        super().__init__(f"multipart upload {upload_id} does not exist")
        self.upload_id = upload_id


class InvalidPart(StorageError):
    """A completion names a part that was not uploaded, or with another ETag."""

    def __init__(self, message: str, number: int | None = None) -> None:
        super().__init__(message)
        self.number = number


class InvalidPartOrder(StorageError):
    """A completion lists parts out of ascending order."""


class EntityTooSmall(StorageError):
    """A part other than the last is smaller than the minimum part size."""

    def __init__(self, message: str, number: int, size: int) -> None:
        super().__init__(message)
        self.number, self.size = number, size


class QuorumError(StorageError):
    """Too few disks answered for the operation to be safe."""


class WriteQuorumError(QuorumError):
    pass


class ReadOnly(StorageError):
    """The store takes no writes now (a cluster node out of touch with etcd);
    reads go on."""


class ReadQuorumError(QuorumError):
    pass


class DiskFull(StorageError):
    """A disk ran out of space (ENOSPC) or LMDB's map is full."""


class FormatError(StorageError):
    """A disk's format.json is unreadable, foreign or inconsistent with the set."""


class NoSuchVersion(StorageError):
    def __init__(self, bucket: str, key: str, version_id: str) -> None:
        super().__init__(f"object {bucket}/{key} has no version {version_id}")
        self.bucket, self.key, self.version_id = bucket, key, version_id


class DeleteMarker(StorageError):
    """The version asked for is a delete marker (S3: 404 for the latest, 405 by id)."""

    def __init__(self, bucket: str, key: str, version_id: str, by_id: bool,
                 mtime_ns: int = 0) -> None:
        super().__init__(f"object {bucket}/{key} is deleted (delete marker {version_id})")
        self.bucket, self.key, self.version_id = bucket, key, version_id
        self.by_id, self.mtime_ns = by_id, mtime_ns


class ObjectLocked(StorageError):
    """A version protected by object lock (retention or legal hold) cannot be
    deleted, overwritten in place or have its retention shortened."""


class InvalidBucketState(StorageError):
    """The request conflicts with the bucket's versioning or object lock state."""
