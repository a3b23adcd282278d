"""Shared helpers of the storage engine tests."""

import random


async def chunks(data: bytes, size: int = 65536):
    """An async body yielding ``data`` in pieces, like a network stream."""
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def read(store, bucket, key, offset=0, length=None):
    reader = await store.get_object(bucket, key, offset, length)
    return await reader.read()


def sizes_around(*points):
    out = set()
    for p in points:
        out.update({p - 1, p, p + 1})
    return sorted(s for s in out if s >= 0)


def payload(seed: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes (cheap to regenerate for checks)."""
    return random.Random(seed).randbytes(size)


