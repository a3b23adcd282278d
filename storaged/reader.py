"""The get path: stream a byte range of an object version.

Only the blocks the range touches are read. Each batch of blocks is read from
the K data shards straight into a stripe buffer (no decode when they are
healthy), every frame's checksum is verified, and missing or corrupt shards
are rebuilt from parity on the fly; damage is reported for healing. The next
batch is read while the caller consumes the current one. The first batch is
read in threads; the rest first from the page cache on the event loop (see
stripes.read_batch), once the first read has looked the shard files up.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from .buffers import Batch, Lease
from .errors import ReadQuorumError
from .layout import HASH_LEN, checksum
from .meta import ObjectInfo
from .request_memo import take_inline
from .stripes import CORRUPT, MISSING, Damage, read_batch

if TYPE_CHECKING:
    from .store import ObjectStore

T = TypeVar("T")


@dataclasses.dataclass
class _Job:
    data_id: str
    part: int
    part_size: int
    first_block: int
    nblocks: int
    lo: int  # slice of the batch's data to hand out
    hi: int


class ObjectReader:
    """Async iterator over the bytes ``offset .. offset+length`` of an object's
    stored body (for an encrypted object: its ciphertext, see ObjectInfo.stored_size).

    Each chunk is a memoryview valid until the next chunk is requested; copy it
    to keep it. Close with :meth:`aclose` (or iterate to the end).
    """

    def __init__(self, store: ObjectStore, info: ObjectInfo, offset: int, length: int) -> None:
        self.store, self.info, self.offset, self.length = store, info, offset, length
        self._gen: AsyncIterator[memoryview] | None = None

    def __aiter__(self) -> AsyncIterator[memoryview]:
        if self._gen is None:
            self._gen = self._chunks()
        return self._gen

    async def aclose(self) -> None:
        if self._gen is not None:
            await self._gen.aclose()  # type: ignore[attr-defined]

    async def read(self) -> bytes:
        """The whole range as bytes (for small objects and tests)."""
        out = bytearray()
        async for chunk in self:
            out += chunk
        return bytes(out)

    def _jobs(self) -> list[_Job]:
        info, bs = self.info, self.info.block_size
        step = self.store.buffers.batch_blocks
        start, end = self.offset, self.offset + self.length
        jobs, base = [], 0
        for part in info.parts:
            lo, hi = max(start - base, 0), min(end - base, part.stored)
            if lo < hi:
                for b in range(lo // bs, (hi - 1) // bs + 1, step):
                    nb = min(step, (hi - 1) // bs + 1 - b)
                    first = b * bs
                    jobs.append(_Job(info.part_data_id(part), part.number, part.stored, b, nb,
                                     max(lo - first, 0), min(hi - first, nb * bs)))
            base += part.stored
        return jobs

    async def _chunks(self) -> AsyncIterator[memoryview]:
        if self.length == 0:
            return
        if self.info.inline:
            data = await read_inline(self.store, self.info)
            yield memoryview(data)[self.offset:self.offset + self.length]
            return
        jobs = self._jobs()
        # the batch handed out + the one read ahead
        lease = await self.store.buffers.lease(min(2, len(jobs)))
        ahead: asyncio.Task | None = None
        try:
            ahead = asyncio.ensure_future(self._read(jobs[0], lease, cached=False))
            for i, job in enumerate(jobs):
                current = await ahead
                ahead = (asyncio.ensure_future(self._read(jobs[i + 1], lease, cached=True))
                         if i + 1 < len(jobs) else None)
                yield current.data[job.lo:job.hi]
                lease.release(current)
        finally:
            if ahead is not None:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
            lease.close()

    async def _read(self, job: _Job, lease: Lease, cached: bool) -> Batch:
        store, info = self.store, self.info
        batch = lease.acquire()
        try:
            damage = await with_a_second_look(store, lambda: read_batch(
                store.run, store.disks, store.codec, info.geometry, info.dist, job.data_id,
                job.part, job.part_size, job.first_block, job.nblocks, batch, store.scratch,
                exclude=store.offline_positions(), cached=cached))
        except BaseException:
            lease.release(batch)
            raise
        if damage.bad:
            store.report_damage(info, damage)
        return batch


def inline_blob(vid: str, shard: bytes) -> bytes:
    """The LMDB value holding one disk's shard of a small object."""
    return vid.encode() + checksum(shard) + shard


async def with_a_second_look(store: ObjectStore, read: Callable[[], Awaitable[T]]) -> T:
    """``await read()``, and once more when it finds too few shards while a disk
    this process holds offline may be back (replaced and healed by another
    process, or its node restarted and not yet reconnected here): the healer
    looks at the disks first."""
    try:
        return await read()
    except ReadQuorumError:
        if not store.offline_positions():
            raise
    await store.run(store.healer.watch_disks)
    return await read()


async def read_inline(store: ObjectStore, info: ObjectInfo) -> bytes:
    """Decode a small object from the inline shards in the disks' LMDB (see
    :func:`with_a_second_look`)."""
    return await with_a_second_look(store, lambda: _read_inline(store, info))


async def _read_inline(store: ObjectStore, info: ObjectInfo) -> bytes:
    k, n = info.k, info.k + info.m
    shards: list[bytes | None] = [None] * n
    damage = Damage()
    vid = info.version_id.encode()
    found = 0
    # What the request's resolve brought along, where it is this version's; the
    # rest (a newer write in between, a damaged disk, a disk the resolve did not
    # read: it may read only the K holding the data shards) is asked for once a
    # shard that is needed is not among them.
    blobs = {p: b for p, b in take_inline(store, info.bucket, info.key).items()
             if b.startswith(vid)}
    asked = False
    silent: set[int] = set()  # asked, and no answer came
    for index in range(n):
        if found == k:
            break
        if not asked and info.dist[index] not in blobs:
            asked = True
            missing = [p for p in info.dist if store.disks[p].online and p not in blobs]
            if missing:
                answers = dict((disk.position, blob) for disk, blob in await store.set.ask(
                    "version_inline", info.bucket, info.key, info.mtime_ns, info.version_id,
                    positions=missing))
                blobs.update(answers)
                silent.update(p for p in missing if p not in answers)
        blob = blobs.get(info.dist[index])
        if blob is None or not blob.startswith(vid):
            damage.add(index, MISSING)
            continue
        body = blob[len(vid):]
        shard = body[HASH_LEN:]
        if checksum(shard) != body[:HASH_LEN]:
            damage.add(index, CORRUPT)
            continue
        shards[index] = shard
        found += 1
    if damage.bad:
        store.report_damage(info, damage)
    if found < k:
        raise ReadQuorumError(f"{info.bucket}/{info.key}: {found} of {k} shards readable "
                              f"({_unreadable(store, info, damage, silent)})")
    return store.codec.decode_block(shards, info.stored_size)


def _unreadable(store: ObjectStore, info: ObjectInfo, damage: Damage, silent: set[int]) -> str:
    """Why each shard a failed inline read lacked was unreadable, by disk name."""
    reasons = []
    for index, state in sorted(damage.bad.items()):
        disk = store.disks[info.dist[index]]
        why = ("corrupt" if state == CORRUPT else "offline" if not disk.online
               else "no answer" if disk.position in silent else "no shard")
        reasons.append(f"{disk.name}: {why}")
    return ", ".join(reasons)
