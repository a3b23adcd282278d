"""Reusable stripe buffers.

Every put and get works through a few *batches* of consecutive blocks. Their
buffers come from this pool, pre-faulted once and reused, so steady-state I/O
allocates nothing and memory per request stays at a few MiB. When the pool is
exhausted, requests wait: that is the engine's back-pressure.
"""

from __future__ import annotations

import asyncio
import dataclasses

from erasure import allocate

from .layout import Geometry


@dataclasses.dataclass(eq=False)
class Batch:
    """Buffers for ``blocks`` consecutive blocks: data (joined shards) and parity."""

    blocks: int
    data: memoryview
    parity: memoryview


class BufferPool:
    """A bounded free list of :class:`Batch` buffers for one geometry."""

    def __init__(self, geometry: Geometry, batch_blocks: int, limit: int) -> None:
        self.geometry = geometry
        self.batch_blocks = batch_blocks
        self.limit = limit
        self._free: list[Batch] = []
        self._created = 0
        self._waiters: asyncio.Condition | None = None

    @property
    def batch_bytes(self) -> int:
        return self.batch_blocks * self.geometry.block_size

    def _new(self) -> Batch:
        g = self.geometry
        shard = g.shard_len(g.block_size)
        # k spare bytes: the zero padding of a short last block's last shard
        data = allocate(self.batch_blocks * g.block_size + g.k)
        parity = allocate(max(1, self.batch_blocks * g.m * shard))
        self._created += 1
        return Batch(self.batch_blocks, data, parity)

    async def acquire(self) -> Batch:
        if self._free:
            return self._free.pop()
        if self._created < self.limit:
            return self._new()
        if self._waiters is None:
            self._waiters = asyncio.Condition()
        async with self._waiters:
            await self._waiters.wait_for(lambda: bool(self._free))
            return self._free.pop()

    def release(self, batch: Batch) -> None:
        self._free.append(batch)
        if self._waiters is not None:
            asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        assert self._waiters is not None
        async with self._waiters:
            self._waiters.notify()
