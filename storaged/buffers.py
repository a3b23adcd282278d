"""Reusable stripe buffers, bounded per process.

Every large put and get works through a few *batches* of consecutive blocks.
Their buffers come from this pool, pre-faulted once and reused, so steady-state
I/O allocates nothing. A request first *leases* the number of batches it will
ever hold at once (a put 3, a get 2); leasing waits while the pool is full, so
a process never holds more than ``limit`` batches, and a request never waits
again once it runs — no two half-served requests can deadlock on the last
buffers. Requests beyond the limit wait before reading their body: their bytes
stay in the kernel's socket buffers, not in this process.

Parity is computed into scratch buffers (:class:`Scratch`) taken for one
coding call: it is written out within that call, so it never outlives it. Direct
shard writes stage their bytes the same way (:attr:`BufferPool.stage`).

Once no lease has been open for ``idle_seconds``, the free batches and parity
buffers are unmapped: a burst of large requests does not leave its buffers
resident for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Iterator

from erasure import allocate

from .layout import Geometry

BATCH_BYTES = 1 << 20  # one block: 2 MiB batches were no faster and held twice the memory
POOL_BATCHES = 8       # per process: two puts (3 each) and a get (2) streaming at once
IDLE_SECONDS = 2.0
STAGE_BYTES = 256 * 1024  # per direct shard write in flight; 512 KiB or 1 MiB were no faster


@dataclasses.dataclass(eq=False)
class Batch:
    """The data of ``blocks`` consecutive blocks (a full block's K shards are its slices)."""

    blocks: int
    data: memoryview


class Lease:
    """Up to ``size`` batches reserved for one request."""

    def __init__(self, pool: BufferPool, size: int) -> None:
        self.pool, self.size = pool, size
        self.held: list[Batch] = []

    def acquire(self) -> Batch:
        if len(self.held) >= self.size:
            raise RuntimeError("lease exhausted")  # a bug: the lease was sized wrong
        batch = self.pool._take()
        self.held.append(batch)
        return batch

    def release(self, batch: Batch) -> None:
        self.held.remove(batch)
        self.pool._give(batch)

    def close(self) -> None:
        for batch in self.held:
            self.pool._give(batch)
        self.held.clear()
        self.pool._unreserve(self.size)


class BufferPool:
    """Batches for one geometry, at most ``limit`` of them leased at a time.

    ``mapped`` (batches allocated now), ``peak`` (most at once) and
    ``allocations`` (ever made) are what tests assert on: memory per process
    is ``peak * batch_bytes`` plus the parity scratch, whatever the traffic.
    """

    def __init__(self, geometry: Geometry, batch_blocks: int, limit: int,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        self.geometry = geometry
        self.batch_blocks = batch_blocks
        self.limit = limit
        self.idle_seconds = idle_seconds
        g = geometry
        self.scratch = Scratch(batch_blocks * g.m * g.shard_len(g.block_size))
        self.stage = Scratch(STAGE_BYTES)  # aligned copies for direct shard writes
        self.mapped = self.peak = self.allocations = 0
        self._free: list[Batch] = []
        self._reserved = 0
        self._cond: asyncio.Condition | None = None
        self._trim: asyncio.TimerHandle | None = None

    @property
    def batch_bytes(self) -> int:
        return self.batch_blocks * self.geometry.block_size

    async def lease(self, size: int) -> Lease:
        size = min(size, self.limit)
        if self._reserved + size > self.limit:
            if self._cond is None:
                self._cond = asyncio.Condition()
            async with self._cond:
                await self._cond.wait_for(lambda: self._reserved + size <= self.limit)
        self._reserved += size
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        return Lease(self, size)

    def _take(self) -> Batch:
        if self._free:
            return self._free.pop()
        g = self.geometry
        self.mapped += 1
        self.allocations += 1
        self.peak = max(self.peak, self.mapped)
        # k spare bytes: the zero padding of a short last block's last shard
        return Batch(self.batch_blocks, allocate(self.batch_blocks * g.block_size + g.k))

    def _give(self, batch: Batch) -> None:
        self._free.append(batch)

    def _unreserve(self, size: int) -> None:
        self._reserved -= size
        loop = asyncio.get_running_loop()
        if self._reserved == 0 and self._trim is None:
            self._trim = loop.call_later(self.idle_seconds, self.trim)
        if self._cond is not None:
            loop.create_task(self._wake())

    def trim(self) -> None:
        """Unmap the free batches and parity buffers (views still in use keep theirs)."""
        self._trim = None
        if self._reserved == 0:
            self.mapped -= len(self._free)
            self._free.clear()
            self.scratch.trim()
            self.stage.trim()

    async def _wake(self) -> None:
        assert self._cond is not None
        async with self._cond:
            self._cond.notify_all()


class Scratch:
    """Buffers of ``size`` bytes for threads (parity, aligned copies): taken for
    one call, then given back, so there are only as many as calls at the same
    moment; at most ``keep`` (None: any number) are kept idle."""

    def __init__(self, size: int, keep: int | None = None) -> None:
        self.size, self.keep = size, keep
        self.made = 0  # buffers allocated (tests check that calls reuse them)
        self._free: list[memoryview] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def use(self) -> Iterator[memoryview]:
        """A buffer, given back only when the block returned: one whose user
        raised may still be read by a write that failed elsewhere."""
        with self._lock:
            buf = self._free.pop() if self._free else None
            if buf is None:
                self.made += 1
        if buf is None:
            buf = allocate(max(1, self.size))
        yield buf
        with self._lock:
            if self.keep is None or len(self._free) < self.keep:
                self._free.append(buf)

    def trim(self) -> None:
        with self._lock:
            self._free.clear()
