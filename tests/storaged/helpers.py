"""Shared helpers of the storage engine tests."""

import os
import random
import subprocess


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


def cached_bytes(path) -> int:
    """Bytes of the file at ``path`` (or an fd, as an int) in the page cache
    (util-linux fincore)."""
    if isinstance(path, int):
        path = f"/proc/{os.getpid()}/fd/{path}"
    out = subprocess.run(["fincore", "-nbr", "-o", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out)


def direct_capable(root: str) -> bool:
    """Whether the filesystem holding directory ``root`` takes O_DIRECT (tmpfs does not)."""
    import tempfile
    with tempfile.NamedTemporaryFile(dir=root) as probe:
        try:
            os.close(os.open(probe.name, os.O_WRONLY | os.O_DIRECT))
            return True
        except OSError:
            return False


def need_direct(disk) -> None:
    """Skip the test unless ``disk`` (a LocalDisk) is on a filesystem with O_DIRECT."""
    import pytest
    if not direct_capable(disk.root):
        pytest.skip("no O_DIRECT on this filesystem")
