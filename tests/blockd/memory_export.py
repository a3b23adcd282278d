"""A sparse in-memory export for the NBD server's tests.

Data lives in a dict of 64 KiB chunks: a chunk exists only once written, TRIM
and WRITE_ZEROES drop whole chunks, and ``block_status`` reports exactly which
ranges are holes, as a thin volume would.
"""

from __future__ import annotations

import errno

from blockd.export import Export, FastZeroUnsupported, NBDError
from blockd.protocol import STATE_HOLE, STATE_ZERO

CHUNK = 64 * 1024
_ZERO_CHUNK = bytes(CHUNK)


class MemoryExport(Export):
    """Every capability on by default; tests switch some off per instance."""

    can_multi_conn = True
    can_flush = True
    can_fua = True
    can_trim = True
    can_zero = True
    can_fast_zero = True
    can_cache = True

    def __init__(
        self,
        name: str,
        size: int,
        *,
        read_only: bool = False,
        description: str = "",
        capacity: int | None = None,
        **caps: object,
    ) -> None:
        self.name = name
        self.size = size
        self.read_only = read_only
        self.description = description
        self.capacity = capacity  # max allocated chunks, for ENOSPC tests
        for key, value in caps.items():
            if not hasattr(Export, key):
                raise TypeError(f"unknown export attribute {key}")
            setattr(self, key, value)
        self.chunks: dict[int, bytearray] = {}
        self.fail: dict[str, BaseException] = {}  # method name -> exception to raise
        self.calls: dict[str, int] = {}
        self.opened = 0
        self.closed = 0

    def _enter(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        exc = self.fail.get(method)
        if exc is not None:
            raise exc

    async def open(self) -> None:
        self._enter("open")
        self.opened += 1

    async def close(self) -> None:
        self.closed += 1

    def _pieces(self, offset: int, length: int):
        end = offset + length
        while offset < end:
            index, within = divmod(offset, CHUNK)
            n = min(CHUNK - within, end - offset)
            yield index, within, n
            offset += n

    async def pread(self, offset: int, length: int) -> bytearray:
        self._enter("pread")
        out = bytearray(length)
        pos = 0
        for index, within, n in self._pieces(offset, length):
            chunk = self.chunks.get(index)
            if chunk is not None:
                out[pos : pos + n] = chunk[within : within + n]
            pos += n
        return out

    def _chunk(self, index: int) -> bytearray:
        chunk = self.chunks.get(index)
        if chunk is None:
            if self.capacity is not None and len(self.chunks) >= self.capacity:
                raise NBDError(errno.ENOSPC)
            chunk = self.chunks[index] = bytearray(CHUNK)
        return chunk

    async def pwrite(self, offset: int, data: memoryview, fua: bool) -> None:
        self._enter("pwrite")
        pos = 0
        for index, within, n in self._pieces(offset, len(data)):
            self._chunk(index)[within : within + n] = data[pos : pos + n]
            pos += n

    async def flush(self) -> None:
        self._enter("flush")

    def _deallocate(self, offset: int, length: int) -> None:
        for index, within, n in self._pieces(offset, length):
            chunk = self.chunks.get(index)
            if chunk is None:
                continue
            if n == CHUNK:
                del self.chunks[index]
            else:
                chunk[within : within + n] = bytes(n)
                if chunk == _ZERO_CHUNK:
                    del self.chunks[index]

    async def trim(self, offset: int, length: int, fua: bool) -> None:
        self._enter("trim")
        self._deallocate(offset, length)

    async def zero(self, offset, length, *, may_trim, fast_only, fua) -> None:
        self._enter("zero")
        if fast_only and not may_trim:
            raise FastZeroUnsupported()  # allocating zeroes is a plain write here
        if may_trim:
            self._deallocate(offset, length)
            return
        for index, within, n in self._pieces(offset, length):
            self._chunk(index)[within : within + n] = bytes(n)

    async def block_status(self, offset: int, length: int) -> list[tuple[int, int]]:
        self._enter("block_status")
        runs: list[tuple[int, int]] = []
        for index, _within, n in self._pieces(offset, length):
            state = 0 if index in self.chunks else STATE_HOLE | STATE_ZERO
            if runs and runs[-1][1] == state:
                runs[-1] = (runs[-1][0] + n, state)
            else:
                runs.append((n, state))
        return runs

    async def cache(self, offset: int, length: int) -> None:
        self._enter("cache")
