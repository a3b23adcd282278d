"""The backend side of the NBD server: what an export must provide.

An :class:`Export` is one byte range the server can serve (a volume, a
snapshot, a test buffer) described by capability flags and a handful of async
callbacks, the way nbdkit's plugin API separates backends from its protocol
engine. The server validates every request (bounds, alignment, flags,
read-only) before it reaches a callback, so callbacks see only requests that
lie inside the export and that its capabilities allow.

Callbacks report failures by raising :class:`NBDError` with an errno (EIO,
ENOSPC, EPERM, ...); the server sends that number to the client. Any other
exception is logged and answered with EIO, and the connection carries on.
"""

from __future__ import annotations

import errno
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable

from . import protocol as _p

__all__ = [
    "NBDError",
    "FastZeroUnsupported",
    "Export",
    "ExportRegistry",
    "StaticRegistry",
]

Buffer = bytes | bytearray | memoryview
_ZERO_PIECE = 1 << 20  # bytes per pwrite when zero() falls back to writing zeroes


class NBDError(Exception):
    """A request failed with ``errno`` (a host errno; mapped to NBD's values on the wire)."""

    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(message or os.strerror(err))
        self.errno = err


class FastZeroUnsupported(NBDError):
    """``zero(fast_only=True)`` cannot be done faster than writing zeroes (ENOTSUP)."""

    def __init__(self, message: str = "fast zero not supported here") -> None:
        super().__init__(errno.ENOTSUP, message)


class Export(ABC):
    """One exported byte range and its capabilities.

    Subclasses provide ``name`` and ``size`` (plain attributes or properties;
    ``size`` may change while clients are connected: online resize is checked
    against the current value on every request) and override the callbacks
    their ``can_*`` flags announce. A single instance serves every connection
    to the export at once, so callbacks must tolerate concurrent calls.
    """

    name: str
    size: int
    description: str = ""
    read_only: bool = False
    # Flush/FUA on one connection cover writes completed on every connection
    # (a shared cache or none): lets clients such as nbdcopy open several.
    can_multi_conn: bool = False
    can_flush: bool = False
    # Native FUA. Without it, but with can_flush, the server emulates FUA by
    # flushing after the write.
    can_fua: bool = False
    can_trim: bool = False
    # WRITE_ZEROES is advertised on every writable export: the default zero()
    # below writes zero-filled buffers, so only override it to do better.
    can_zero: bool = True
    can_fast_zero: bool = False
    can_cache: bool = False
    # pwrite may keep the payload it is given; False lets the server reuse
    # payload buffers once pwrite returned.
    keeps_write_data: bool = True
    # Block-size constraints, advertised with NBD_INFO_BLOCK_SIZE. Requests
    # not aligned to the minimum, or READ/WRITE/CACHE longer than the maximum,
    # are refused with EINVAL before reaching the export. Clients that never
    # ask for these (older kernels) send 512-byte-aligned requests: a minimum
    # above 512 would fail them, so keep 1 and read-modify-write inside.
    minimum_block_size: int = _p.DEFAULT_MIN_BLOCK
    preferred_block_size: int = _p.DEFAULT_PREF_BLOCK
    maximum_block_size: int = _p.DEFAULT_MAX_BLOCK

    async def open(self) -> None:
        """Called when a connection enters transmission on this export; may raise NBDError."""

    async def close(self) -> None:
        """Called once per successful :meth:`open`, when that connection ends."""

    @abstractmethod
    async def pread(self, offset: int, length: int) -> Buffer:
        """Return exactly ``length`` bytes at ``offset`` (bytes, bytearray or memoryview).

        The transport may still hold the buffer after the reply is queued:
        never modify it once returned.
        """

    async def pread_into(self, offset: int, dest: memoryview) -> None:
        """Fill ``dest`` with the bytes at ``offset`` (the server's reused buffers)."""
        dest[:] = await self.pread(offset, len(dest))

    def read_now(self, offset: int, dest: memoryview, later: list | None = None) -> bool:
        """Fill ``dest`` without awaiting, or return False (then :meth:`pread_into`
        serves it). For small reads an export can serve at once: no task per request.

        ``later``, when given, is a list of steps ``(fn, a, b)`` the export may
        append to (only when it returns True): ``fn(a, b)`` completes ``dest``
        (an encrypted volume decrypts it) before the reply is sent, one after
        another with the other replies' of the same event-loop turn, while
        their code and keys are in the CPU's caches."""
        return False

    def write_now(self, offset: int, data: memoryview) -> bool:
        """Write ``data`` without awaiting (not durable yet, as pwrite without FUA),
        or return False (then :meth:`pwrite` serves it). ``data`` is only valid
        during the call."""
        return False

    async def pwrite(self, offset: int, data: memoryview, fua: bool) -> None:
        """Write ``data`` at ``offset``; durable before returning when ``fua``.

        ``data`` views a buffer that belongs to this request alone: the export
        may keep it without copying.
        """
        raise NBDError(errno.EPERM, "export is read-only")

    async def flush(self) -> None:
        """Make every write completed so far, on any connection, durable."""

    async def trim(self, offset: int, length: int, fua: bool) -> None:
        """Discard the range (advisory: later reads may return anything until rewritten)."""

    async def zero(
        self, offset: int, length: int, *, may_trim: bool, fast_only: bool, fua: bool
    ) -> None:
        """Make the range read as zeroes.

        ``may_trim``: the range may be deallocated instead of written.
        ``fast_only``: raise :class:`FastZeroUnsupported` at once, changing
        nothing, unless this is faster than writing the zeroes.
        """
        if fast_only:
            raise FastZeroUnsupported()
        zeroes = memoryview(bytes(min(length, _ZERO_PIECE)))
        end = offset + length
        while offset < end:
            n = min(end - offset, len(zeroes))
            await self.pwrite(offset, zeroes[:n], fua)
            offset += n

    async def block_status(self, offset: int, length: int) -> list[tuple[int, int]]:
        """Allocation runs from ``offset``: ``[(length, STATE_HOLE|STATE_ZERO flags), ...]``.

        The runs are consecutive, cover at least one byte and may stop short of
        ``length``. Reporting everything as allocated data (flags 0) is always
        correct.
        """
        return [(length, 0)]

    async def cache(self, offset: int, length: int) -> None:
        """Hint that the range will be read soon."""


class ExportRegistry(ABC):
    """Where the server finds exports by name."""

    @abstractmethod
    async def lookup(self, name: str) -> Export | None:
        """The export called ``name`` (``""`` is the default export), or None."""

    @abstractmethod
    async def names(self) -> list[str]:
        """Export names to advertise in reply to NBD_OPT_LIST."""

    async def listing(self) -> list[tuple[str, str]]:
        """``(name, description)`` pairs for NBD_OPT_LIST.

        Looks every name up; override when descriptions are cheaper to get
        in bulk.
        """
        out = []
        for name in await self.names():
            export = await self.lookup(name)
            if export is not None:
                out.append((name, export.description))
        return out


class StaticRegistry(ExportRegistry):
    """A fixed set of exports, optionally one of them as the default (empty name)."""

    def __init__(self, exports: Iterable[Export] = (), default: str | None = None) -> None:
        self._exports = {e.name: e for e in exports}
        self.default = default

    def add(self, export: Export) -> None:
        """Serve ``export`` under its name (replacing any export of that name)."""
        self._exports[export.name] = export

    def remove(self, name: str) -> None:
        """Stop offering ``name`` to new connections (open ones keep it)."""
        self._exports.pop(name, None)

    async def lookup(self, name: str) -> Export | None:
        if not name and self.default is not None:
            name = self.default
        return self._exports.get(name)

    async def names(self) -> list[str]:
        return list(self._exports)
