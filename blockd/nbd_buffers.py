"""Reused payload buffers for large NBD reads and writes.

A fresh ``bytearray`` is zero-filled before anything is read into it: at
1 MiB writes that memset cost a sixth of the event loop's time. Large
payloads (READ replies, WRITE payloads) take their buffer from here instead
and give it back once nothing can use it any more: a WRITE's when the export
returned without keeping the data, a READ's once the transport has sent
everything queued up to it. Used from the event loop only.
"""

from __future__ import annotations

__all__ = ["Buffers", "POOLED_MIN"]

POOLED_MIN = 64 * 1024  # smaller buffers cost less to make than to keep
IDLE_LIMIT = 32 << 20  # idle bytes kept (32 in-flight 1 MiB requests)


class Buffers:
    """Idle buffers by size, at most ``idle_limit`` bytes of them."""

    def __init__(self, idle_limit: int = IDLE_LIMIT) -> None:
        self.idle_limit = idle_limit
        self._free: dict[int, list[bytearray]] = {}
        self._idle = 0
        self.allocated = 0  # large buffers made (tests check it stays flat)

    def get(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes, its content undefined."""
        if size < POOLED_MIN:
            return bytearray(size)
        free = self._free.get(size)
        if free:
            self._idle -= size
            return free.pop()
        self.allocated += 1
        return bytearray(size)

    def put(self, buf: bytearray) -> None:
        """Take back a buffer nothing refers to any more (small ones are dropped)."""
        size = len(buf)
        if size < POOLED_MIN or self._idle + size > self.idle_limit:
            return
        self._free.setdefault(size, []).append(buf)
        self._idle += size
