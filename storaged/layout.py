"""Where the bytes of an object go: blocks, shards, frames and disk order.

An object body is cut into blocks of ``block_size`` bytes (the last one may be
shorter). Each block becomes K data shards plus M parity shards of
``shard_len(block_len)`` bytes. On disk every shard is stored as a *frame*:
an 8-byte xxh3 checksum followed by the shard bytes, frames of one part
appended in block order. Offsets therefore follow from the block index alone.
"""

from __future__ import annotations

import dataclasses

import xxhash

HASH_LEN = 8


def aligned_block_size(block_size: int, k: int) -> int:
    """``block_size`` rounded down so that each of K shards is a multiple of 64 bytes.

    Equal shards keep a full block's data shards contiguous in the block (no
    copy to split or join), and 64-byte multiples keep ISA-L on aligned loads.
    """
    shard = max(64, block_size // k // 64 * 64)
    return shard * k


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Block and shard sizes of one erasure-coded part."""

    k: int
    m: int
    block_size: int

    def __post_init__(self) -> None:
        if self.block_size % self.k:
            raise ValueError(f"block size {self.block_size} is not a multiple of k={self.k}")

    @property
    def n(self) -> int:
        return self.k + self.m

    def shard_len(self, block_len: int) -> int:
        return -(-block_len // self.k)

    @property
    def frame_size(self) -> int:
        """Bytes of one full block's frame in a shard file."""
        return HASH_LEN + self.shard_len(self.block_size)

    def block_count(self, size: int) -> int:
        return -(-size // self.block_size)

    def block_len(self, size: int, index: int) -> int:
        return min(self.block_size, size - index * self.block_size)

    def frame_offset(self, index: int) -> int:
        return index * self.frame_size

    def shard_file_size(self, size: int) -> int:
        """Size of each shard file of a part holding ``size`` body bytes."""
        if size == 0:
            return 0
        full, last = divmod(size, self.block_size)
        total = full * self.frame_size
        if last:
            total += HASH_LEN + self.shard_len(last)
        return total


def distribution(bucket: str, key: str, n: int) -> list[int]:
    """Disk position of each shard index, rotated per object.

    Shard i of every block goes to disk ``dist[i]``; rotating by a hash of the
    name spreads parity (the last M shards) evenly over the disks.
    """
    start = xxhash.xxh3_64_intdigest(f"{bucket}/{key}".encode()) % n
    return [(start + i) % n for i in range(n)]


def write_quorum(k: int, m: int) -> int:
    """Disks that must commit a write.

    At least K (to read it back) and more than N-K (so that any K disks that
    answer a read include one that saw the write — and two writes can never
    both reach quorum on disjoint disks when K = M).
    """
    return max(k, m + 1)


def checksum(shard: bytes | memoryview) -> bytes:
    """The bitrot checksum stored in front of every shard."""
    return xxhash.xxh3_64_digest(shard)
