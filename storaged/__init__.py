"""The storage engine: erasure-coded objects on a set of disks with an LMDB index.

Public API::

    store = ObjectStore.open(["/d1", "/d2", "/d3", "/d4"])   # formats new disks
    await store.start()                                      # settle, heal in background
    await store.make_bucket("b")
    info = await store.put_object("b", "k", body_chunks, attrs=ObjectAttrs("text/plain"))
    reader = await store.get_object("b", "k", offset=0, length=100)
    async for chunk in reader: ...
    page = await store.list_objects("b", prefix="a/", delimiter="/")
    report = await store.heal()
    await store.close()
"""

from .block_file import BlockFile
from .errors import (
    BucketExists,
    BucketNotEmpty,
    DeleteMarker,
    DigestMismatch,
    DiskFull,
    EntityTooSmall,
    FormatError,
    IncompleteBody,
    InvalidBucketState,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NoSuchVersion,
    ObjectLocked,
    PreconditionFailed,
    QuorumError,
    ReadOnly,
    ReadQuorumError,
    StorageError,
    WriteQuorumError,
)
from .healing import HealReport
from .listing import ListPage
from .locks import InUse, Locks, lock_server
from .meta import ObjectInfo, PartInfo
from .multipart import PartRecord, UploadInfo, UploadPage, multipart_etag
from .reader import ObjectReader
from .request_memo import request_scope
from .store import BLOCK_SIZE, INLINE_LIMIT, BucketInfo, ObjectStore, default_ec
from .writer import Condition, ObjectAttrs, Seal

__all__ = [
    "ObjectStore", "ObjectInfo", "PartInfo", "ObjectAttrs", "Condition", "ObjectReader",
    "Seal", "ListPage", "BucketInfo", "HealReport", "default_ec", "BLOCK_SIZE", "INLINE_LIMIT",
    "StorageError", "NoSuchBucket", "NoSuchKey", "BucketExists", "BucketNotEmpty",
    "InvalidRange", "PreconditionFailed", "DigestMismatch", "IncompleteBody", "QuorumError",
    "ReadQuorumError", "WriteQuorumError", "DiskFull", "FormatError", "NoSuchUpload",
    "InvalidPart", "InvalidPartOrder", "EntityTooSmall", "PartRecord", "UploadInfo", "UploadPage",
    "multipart_etag", "InUse", "Locks", "lock_server", "NoSuchVersion", "DeleteMarker",
    "ObjectLocked", "InvalidBucketState", "BlockFile", "ReadOnly", "request_scope",
]
