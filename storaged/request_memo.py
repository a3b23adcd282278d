"""What one request (one asyncio task) remembers of the metadata it has read.

A request reads a bucket's record and settings several times (existence,
versioning, lock defaults, lifecycle headers); :func:`request_scope` lets it
ask the disks once. A GET of a small object also brings the object's inline
shards along with its record (:meth:`storaged.store.ObjectStore.resolve`), kept
here until the reader takes them: with remote disks each query is a round trip.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_memo: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "basalt_request_memo", default=None)


@contextlib.contextmanager
def request_scope() -> Iterator[None]:
    """Remember bucket records and settings for the rest of this request (task)."""
    token = _memo.set({})
    try:
        yield
    finally:
        _memo.reset(token)


def request_memo() -> dict | None:
    """The current request's memory (None outside :func:`request_scope`)."""
    return _memo.get()


def inline_key(store: Any, bucket: str, key: str) -> tuple:
    return ("inline", id(store), bucket, key)


def take_inline(store: Any, bucket: str, key: str) -> dict[int, bytes]:
    """The inline shards (position → blob) of a key's latest version that this
    request's resolve brought along, once; {} without."""
    memo = _memo.get()
    return {} if memo is None else memo.pop(inline_key(store, bucket, key), None) or {}
