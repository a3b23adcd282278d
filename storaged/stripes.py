"""Moving batches of blocks between stripe buffers and shard files.

Both functions here are the engine's inner loops, shared by put, get and heal:

* :func:`encode_and_write` turns the data of a batch into frames (checksum +
  shard) and writes each disk's frames with a single ``pwritev``;
* :func:`read_batch` fills a batch's data buffer from the K data shards with one
  ``preadv`` per disk (on the event loop when the page cache holds them),
  verifies every frame's checksum, and rebuilds whatever is missing or corrupt
  from parity, block by block.

Shard views point straight into the batch buffers: a full block's K data shards
are the block itself, so no bytes are copied between the disks and the caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import errno
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from erasure import Codec, ErasureError

from .buffers import Batch, Scratch
from .disk import Disk, ShardWriter
from .errors import DiskFull, ReadQuorumError
from .layout import HASH_LEN, Geometry, checksum

log = logging.getLogger("basalt.storaged")

OK, MISSING, CORRUPT = 0, 1, 2


@dataclasses.dataclass
class Damage:
    """Shards found bad while reading: (disk position, state) per shard index."""

    bad: dict[int, int] = dataclasses.field(default_factory=dict)

    def add(self, shard: int, state: int) -> None:
        if state > self.bad.get(shard, OK):
            self.bad[shard] = state

    @property
    def corrupt(self) -> bool:
        return CORRUPT in self.bad.values()


def _shard_view(geo: Geometry, batch: Batch, parity: memoryview, rel: int, block_len: int,
                index: int) -> memoryview:
    s = geo.shard_len(block_len)
    if index < geo.k:
        base = rel * geo.block_size + index * s
        return batch.data[base:base + s]
    base = rel * geo.m * geo.shard_len(geo.block_size) + (index - geo.k) * s
    return parity[base:base + s]


def encode_and_write(codec: Codec, geo: Geometry, dist: Sequence[int], batch: Batch,
                     nbytes: int, first_block: int, writers: dict[int, ShardWriter],
                     scratch: Scratch) -> dict[int, BaseException]:
    """Encode ``nbytes`` of ``batch`` and append the frames to each writer.

    ``writers`` maps disk position to its shard writer; returns the positions
    whose write failed, with the error.
    """
    with scratch.use() as parity:
        iovs: dict[int, list[Any]] = {pos: [] for pos in writers}
        rel, done = 0, 0
        while done < nbytes:
            length = min(geo.block_size, nbytes - done)
            s = geo.shard_len(length)
            base = rel * geo.block_size
            if geo.k * s > length:  # zero-pad the last shard of a short block
                batch.data[base + length:base + geo.k * s] = bytes(geo.k * s - length)
            pbase = rel * geo.m * geo.shard_len(geo.block_size)
            codec.encode(batch.data[base:base + geo.k * s], parity[pbase:pbase + geo.m * s], s)
            for index in range(geo.n):
                pos = dist[index]
                if pos in iovs:
                    view = _shard_view(geo, batch, parity, rel, length, index)
                    iovs[pos] += (checksum(view), view)
            rel += 1
            done += length
        failed: dict[int, BaseException] = {}
        offset = geo.frame_offset(first_block)
        # Writes to other nodes go out together (each is a round trip, and one
        # node cut off must stall a batch once, not once per node in turn).
        remote = {pos: _remote_writes().submit(writers[pos].write, iov, offset)
                  for pos, iov in iovs.items() if writers[pos].remote}
        for pos, iov in iovs.items():
            if pos not in remote:
                try:
                    writers[pos].write(iov, offset)
                except OSError as exc:
                    failed[pos] = exc
        for pos, future in remote.items():
            try:
                future.result()
            except OSError as exc:
                failed[pos] = exc
    return {pos: DiskFull(str(exc)) if exc.errno == errno.ENOSPC else exc
            for pos, exc in failed.items()}


_writes: concurrent.futures.ThreadPoolExecutor | None = None
_writes_lock = threading.Lock()


def _remote_writes() -> concurrent.futures.ThreadPoolExecutor:
    """The threads shard writes to other nodes go out from (one pool per process)."""
    global _writes
    with _writes_lock:
        if _writes is None:
            _writes = concurrent.futures.ThreadPoolExecutor(
                32, thread_name_prefix="basalt-shard-out")
        return _writes


def _frames_iov(views: Sequence[memoryview]) -> tuple[list[bytearray], list[Any]]:
    """The buffers one ``preadv`` fills with consecutive frames: each frame's
    checksum into a small buffer of its own, its shard into its view."""
    hashes = [bytearray(HASH_LEN) for _ in views]
    iov: list[Any] = []
    for h, v in zip(hashes, views):
        iov += (h, v)
    return hashes, iov


def _frame_states(hashes: Sequence[bytes], views: Sequence[memoryview], got: int) -> list[int]:
    states = []
    for h, v in zip(hashes, views):
        need = HASH_LEN + len(v)
        if got < need:
            states.append(MISSING)
        else:
            states.append(OK if checksum(v) == h else CORRUPT)
        got -= need
    return states


def _read_frames(disk: Disk | None, vid: str, part: int, offset: int,
                 views: Sequence[memoryview]) -> list[int]:
    """Read consecutive frames into ``views``; the state of each."""
    if disk is None or not disk.online:
        return [MISSING] * len(views)
    hashes, iov = _frames_iov(views)
    try:
        got = disk.read_shard(vid, part, offset, iov)
    except OSError:
        return [MISSING] * len(views)
    return _frame_states(hashes, views, got)


def _read_cached_frames(disk: Disk | None, vid: str, part: int, offset: int,
                        views: Sequence[memoryview]) -> list[int] | None:
    """:func:`_read_frames` from the page cache, on the calling thread; None
    unless every frame was there (the blocking read then tells what is wrong)."""
    if disk is None or not disk.online:
        return [MISSING] * len(views)
    hashes, iov = _frames_iov(views)
    got = disk.read_shard_cached(vid, part, offset, iov)
    if got is None or got < len(views) * HASH_LEN + sum(len(v) for v in views):
        return None
    return _frame_states(hashes, views, got)


async def read_batch(run: Callable[..., Any], disks: Sequence[Disk | None], codec: Codec,
                     geo: Geometry, dist: Sequence[int], vid: str, part: int, part_size: int,
                     first_block: int, nblocks: int, batch: Batch, scratch: Scratch,
                     exclude: frozenset[int] = frozenset(), cached: bool = False) -> Damage:
    """Fill ``batch.data`` with blocks ``first_block..+nblocks`` of a part.

    ``run(fn, *args)`` runs blocking work in a thread; ``disks`` is indexed by
    position; shards on positions in ``exclude`` are treated as missing. Bad
    shards are rebuilt from parity; the damage found is returned so the caller
    can queue a heal. Raises ReadQuorumError when a block cannot be rebuilt.

    ``cached``: first read what the page cache holds right here, on the event
    loop (a 1 MiB batch is ~0.1 ms of copying and hashing, cheaper than the two
    thread hops per disk it saves); only the disks missing from memory are read
    in threads, in parallel. The caller passes it once the shard files were
    opened before (their path lookups are cached too).
    """
    lens = [geo.block_len(part_size, b) for b in range(first_block, first_block + nblocks)]
    offset = geo.frame_offset(first_block)

    def disk_at(index: int) -> Disk | None:
        pos = dist[index]
        return None if pos in exclude else disks[pos]

    no_parity = memoryview(b"")  # data shards only: no parity views are taken here
    views = [[_shard_view(geo, batch, no_parity, rel, n, i) for rel, n in enumerate(lens)]
             for i in range(geo.k)]
    states: list[list[int] | None] = [
        _read_cached_frames(disk_at(i), vid, part, offset, views[i]) if cached else None
        for i in range(geo.k)]
    blocking = [i for i, state in enumerate(states) if state is None]
    if blocking:
        got = await asyncio.gather(*(run(_read_frames, disk_at(i), vid, part, offset, views[i])
                                     for i in blocking))
        for i, state in zip(blocking, got):
            states[i] = state
    damage = Damage()
    bad_blocks: dict[int, list[int]] = {}
    for index, per_block in enumerate(states):
        assert per_block is not None
        for rel, state in enumerate(per_block):
            if state != OK:
                damage.add(index, state)
                bad_blocks.setdefault(rel, []).append(index)
    if bad_blocks:
        await run(_repair_blocks, disk_at, codec, geo, vid, part, first_block, lens, batch,
                  bad_blocks, damage, scratch)
    return damage


def _repair_blocks(disk_at: Callable[[int], Disk | None], codec: Codec, geo: Geometry, vid: str,
                   part: int, first_block: int, lens: Sequence[int], batch: Batch,
                   bad_blocks: dict[int, list[int]], damage: Damage, scratch: Scratch) -> None:
    with scratch.use() as parity:
        _repair(disk_at, codec, geo, vid, part, first_block, lens, batch, bad_blocks, damage,
                parity)


def _repair(disk_at: Callable[[int], Disk | None], codec: Codec, geo: Geometry, vid: str,
            part: int, first_block: int, lens: Sequence[int], batch: Batch,
            bad_blocks: dict[int, list[int]], damage: Damage, parity: memoryview) -> None:
    dead: set[int] = {i for i, state in damage.bad.items() if state == MISSING and i >= geo.k}
    for rel, bad in sorted(bad_blocks.items()):
        length = lens[rel]
        shards: list[memoryview | None] = [
            None if i in bad else _shard_view(geo, batch, parity, rel, length, i)
            for i in range(geo.k)]
        shards += [None] * geo.m
        present = geo.k - len(bad)
        for index in range(geo.k, geo.n):
            if present >= geo.k:
                break
            if index in dead:
                continue
            view = _shard_view(geo, batch, parity, rel, length, index)
            state = _read_frames(disk_at(index), vid, part,
                                 geo.frame_offset(first_block + rel), [view])[0]
            if state == OK:
                shards[index] = view
                present += 1
            else:
                damage.add(index, state)
                if state == MISSING:
                    dead.add(index)
        targets = {i: _shard_view(geo, batch, parity, rel, length, i) for i in bad}
        try:
            codec.reconstruct(shards, geo.shard_len(length), targets)
        except ErasureError as exc:
            raise ReadQuorumError(
                f"version {vid} part {part} block {first_block + rel} is unrecoverable: {exc}"
            ) from None
