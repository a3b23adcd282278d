"""Basalt's own records kept in system buckets (names starting with "."):
accounts, KMS keys, console sessions, usage. S3 never reaches them, and they
are replicated and healed like every bucket. A system bucket is made on its
first write."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .errors import BucketExists, NoSuchBucket

T = TypeVar("T")


async def _in(store: Any, bucket: str, write: Callable[[], Awaitable[T]]) -> T:
    try:
        return await write()
    except NoSuchBucket:
        try:
            await store.make_bucket(bucket)
        except BucketExists:  # made by another process meanwhile
            pass
        return await write()


async def set_config(store: Any, bucket: str, kind: str, value: bytes | None) -> None:
    """Set (None: remove) one setting of a system bucket."""
    await _in(store, bucket, lambda: store.set_bucket_config(bucket, kind, value))


async def configs(store: Any, bucket: str) -> dict[str, bytes]:
    """Every setting of a system bucket ({} before its first write)."""
    try:
        return await store.bucket_configs(bucket)
    except NoSuchBucket:
        return {}


async def put_object(store: Any, bucket: str, key: str, body: bytes) -> None:
    """Store a small object in a system bucket."""
    async def chunks():
        yield body
    await _in(store, bucket, lambda: store.put_object(bucket, key, chunks(), size=len(body)))
