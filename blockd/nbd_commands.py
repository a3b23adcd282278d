"""Transmission-phase commands: validation, execution against the export, replies.

:class:`Commands` serves one connection's session. :meth:`Commands.check`
applies every rule the spec sets on a request before the export sees it (flags
the command accepts, read-only, bounds, block-size limits); :meth:`Commands.run`
calls the export and sends the reply. Each reply is handed to the transport in
one call, so a reply's header and payload never interleave with another's.

Small READs and WRITEs the export can serve without awaiting
(:meth:`Commands.read_now`, :meth:`Commands.write_now`) are answered at once,
from the connection's parse loop: no task, no coroutine chain per request.
Large payloads live in reused buffers (:mod:`blockd.nbd_buffers`). A large
READ of an export that lends views of its verified bytes (``read_ranges``: a
plaintext volume, its page cache mapped) is sent from those views
(``send_views``), without reading them into a buffer first.
"""

from __future__ import annotations

import asyncio
import errno as _errno
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from . import protocol as p
from .export import NBDError
from .nbd_buffers import Buffers
from .nbd_handshake import Session

__all__ = ["Commands"]

log = logging.getLogger("blockd.nbd")

# Reads at least this long ask the export for its allocation map first, so
# zero runs travel as 12-byte OFFSET_HOLE chunks; shorter ones are not worth
# the extra call.
SPARSE_READ_MIN = 64 * 1024
# Keeps one BLOCK_STATUS reply small on a badly fragmented export; clients ask
# again from where the reply stopped.
MAX_EXTENTS = 2048
_STATE_MASK = p.STATE_HOLE | p.STATE_ZERO

_KNOWN = {
    p.CMD_READ,
    p.CMD_WRITE,
    p.CMD_FLUSH,
    p.CMD_TRIM,
    p.CMD_CACHE,
    p.CMD_WRITE_ZEROES,
    p.CMD_BLOCK_STATUS,
}
_WRITES = {p.CMD_WRITE, p.CMD_TRIM, p.CMD_WRITE_ZEROES}
# Past the end, writes fail with ENOSPC and everything else with EINVAL.
_PAST_END = {p.CMD_WRITE: p.ENOSPC, p.CMD_WRITE_ZEROES: p.ENOSPC}
# Commands whose length becomes a payload, and so obeys the maximum block size.
_PAYLOAD = {p.CMD_READ, p.CMD_WRITE, p.CMD_CACHE}

# send(reply buffers, owned): ``owned`` are reused buffers to take back once sent
Send = Callable[..., None]
# await send_views(reply pieces): once it returns, no piece is needed any more
# (sent, or copied)
SendViews = Callable[[list], Awaitable[None]]
_ZEROS = memoryview(bytes(64 * 1024))  # a hole's bytes (a volume's pieces are <= 64 KiB)

_OPS = {p.CMD_READ: "read", p.CMD_WRITE: "write", p.CMD_FLUSH: "flush", p.CMD_TRIM: "trim",
        p.CMD_CACHE: "cache", p.CMD_WRITE_ZEROES: "write_zeroes",
        p.CMD_BLOCK_STATUS: "block_status"}


@functools.cache
def _metrics():
    # Made on first use, after the server has set PROMETHEUS_MULTIPROC_DIR, so
    # the main process's NBD figures land in the same scrape as the workers'.
    from prometheus_client import Counter
    labels = ["volume", "op"]
    return (Counter("basalt_nbd_requests_total", "NBD requests by volume and operation", labels),
            Counter("basalt_nbd_bytes_total", "NBD payload bytes by volume and operation",
                    labels),
            Counter("basalt_nbd_request_seconds_total",
                    "Time spent serving NBD requests (divided by requests: mean latency)",
                    labels))


METER_FLUSH_SECONDS = 1.0


class _Meter:
    """One connection's NBD metrics: summed in plain numbers per request and
    published at most once a second (and when the connection ends). In
    multiprocess mode each Prometheus update takes a lock and writes an mmap;
    per request that cost a quarter of the 4 KiB IOPS (nbd_bench.py)."""

    def __init__(self, volume: str) -> None:
        self.volume = volume
        self._pending: dict[int, list] = {}  # cmd -> [requests, bytes, seconds]
        self._timer: asyncio.TimerHandle | None = None

    def observe(self, cmd: int, nbytes: int, seconds: float) -> None:
        acc = self._pending.get(cmd)
        if acc is None:
            acc = self._pending[cmd] = [0, 0, 0.0]
        acc[0] += 1
        acc[1] += nbytes
        acc[2] += seconds
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(METER_FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Publish what was counted since the last flush."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        requests, nbd_bytes, seconds = _metrics()
        for cmd, (n, nb, secs) in self._pending.items():
            op = _OPS.get(cmd, str(cmd))
            requests.labels(self.volume, op).inc(n)
            if nb:
                nbd_bytes.labels(self.volume, op).inc(nb)
            seconds.labels(self.volume, op).inc(secs)
        self._pending.clear()


def _allowed_flags(flags: int) -> dict[int, int]:
    """Command flags each command accepts, given the transmission flags."""
    fua = p.CMD_FLAG_FUA if flags & p.FLAG_SEND_FUA else 0
    zero = p.CMD_FLAG_NO_HOLE
    if flags & p.FLAG_SEND_FAST_ZERO:
        zero |= p.CMD_FLAG_FAST_ZERO
    return {
        p.CMD_READ: fua | (p.CMD_FLAG_DF if flags & p.FLAG_SEND_DF else 0),
        p.CMD_WRITE: fua,
        p.CMD_FLUSH: fua,
        p.CMD_TRIM: fua,
        p.CMD_CACHE: fua,
        p.CMD_WRITE_ZEROES: fua | zero,
        p.CMD_BLOCK_STATUS: fua | p.CMD_FLAG_REQ_ONE,
    }


class Commands:
    """Runs one session's requests against its export."""

    def __init__(self, session: Session, send: Send, buffers: Buffers | None = None,
                 send_views: SendViews | None = None, later: list | None = None) -> None:
        self.session = session
        self.export = export = session.export
        self.send = send
        self.send_views = send_views
        # Steps that complete queued replies (see Export.read_now); whoever
        # passes this list runs them before those replies leave. None: the
        # export completes each reply itself.
        self.later = later
        self.buffers = buffers or Buffers()
        self.structured = session.structured
        self.errors = 0
        self.meter = _Meter(export.name)
        flags = session.flags
        self._allowed = _allowed_flags(flags)
        self._advertised = {
            p.CMD_FLUSH: bool(flags & p.FLAG_SEND_FLUSH),
            p.CMD_TRIM: bool(flags & p.FLAG_SEND_TRIM),
            p.CMD_WRITE_ZEROES: bool(flags & p.FLAG_SEND_WRITE_ZEROES),
            p.CMD_BLOCK_STATUS: session.meta_context is not None,
        }
        self._read_only = export.read_only
        self._native_fua = export.can_fua
        self._min_block = max(1, export.minimum_block_size)
        self._max_block = export.maximum_block_size

    # --- validation -----------------------------------------------------------

    def check(self, cmd: int, flags: int, offset: int, length: int) -> tuple[int, str] | None:
        """Why the request must be refused (wire errno, message), or None."""
        if cmd not in _KNOWN:
            return p.EINVAL, f"unknown command {cmd}"
        if flags & ~self._allowed[cmd]:
            return p.EINVAL, f"flags {flags:#x} not valid for {p.COMMAND_NAMES[cmd]}"
        if self._read_only and cmd in _WRITES:
            return p.EPERM, "export is read-only"
        if not self._advertised.get(cmd, True):
            return p.EINVAL, f"{p.COMMAND_NAMES[cmd]} was not negotiated"
        if cmd == p.CMD_FLUSH:
            return (p.EINVAL, "flush offset and length must be zero") if offset or length else None
        if length == 0:
            return p.EINVAL, "zero-length request"
        end = offset + length
        size = self.export.size
        if end > size:
            err = _PAST_END.get(cmd, p.EINVAL)
            return err, f"request ends at {end}, past the export size {size}"
        if cmd in _PAYLOAD and length > self._max_block:
            return p.EINVAL, f"request of {length} bytes exceeds the maximum block size"
        m = self._min_block
        if m > 1 and (offset % m or (length % m and end != size)):
            return p.EINVAL, f"request not aligned to the minimum block size {m}"
        return None

    # --- replies --------------------------------------------------------------

    def reply_ok(self, handle: int) -> None:
        """Acknowledge a command that carries no reply payload."""
        self.send((p.simple_reply(handle),))

    def reply_error(self, handle: int, err: int, message: str) -> None:
        """Fail a request with ``err``, with a message where structured replies allow one."""
        self.errors += 1
        if self.structured:
            self.send((p.error_chunk(handle, err, message),))
        else:
            # A failed simple READ reply carries no payload, like any other.
            self.send((p.simple_reply(handle, err),))

    def _fail(self, handle: int, cmd: int, offset: int, length: int, exc: Exception) -> None:
        if isinstance(exc, (NBDError, OSError)) and exc.errno:
            # An OSError from the storage below says what went wrong as well.
            err = p.wire_errno(exc.errno)
            message = str(exc) if isinstance(exc, NBDError) else exc.strerror or str(exc)
            log.warning("nbd request failed", extra={"fields": {
                "export": self.export.name, "cmd": p.COMMAND_NAMES[cmd], "offset": offset,
                "length": length, "errno": err, "error": message,
            }})
        else:
            err, message = p.EIO, "internal server error"
            log.error("nbd backend raised", exc_info=exc, extra={"fields": {
                "export": self.export.name, "cmd": p.COMMAND_NAMES[cmd], "offset": offset,
                "length": length,
            }})
        self.reply_error(handle, err, message)

    # --- execution ------------------------------------------------------------

    async def run(
        self, cmd: int, flags: int, handle: int, offset: int, length: int, data: memoryview | None
    ) -> None:
        """Execute a request that passed :meth:`check`, send its reply, count it."""
        started = time.monotonic()
        try:
            await self._run(cmd, flags, handle, offset, length, data)
        finally:
            nbytes = length if cmd in (p.CMD_READ, p.CMD_WRITE) else 0
            self.meter.observe(cmd, nbytes, time.monotonic() - started)

    async def _run(
        self, cmd: int, flags: int, handle: int, offset: int, length: int, data: memoryview | None
    ) -> None:
        try:
            if cmd == p.CMD_READ:
                await self._read(handle, flags, offset, length)
                return
            if cmd == p.CMD_BLOCK_STATUS:
                await self._block_status(handle, flags, offset, length)
                return
            export = self.export
            fua = bool(flags & p.CMD_FLAG_FUA)
            native_fua = fua and self._native_fua
            if cmd == p.CMD_WRITE:
                await export.pwrite(offset, data, native_fua)
            elif cmd == p.CMD_WRITE_ZEROES:
                await export.zero(
                    offset,
                    length,
                    may_trim=not flags & p.CMD_FLAG_NO_HOLE,
                    fast_only=bool(flags & p.CMD_FLAG_FAST_ZERO),
                    fua=native_fua,
                )
            elif cmd == p.CMD_TRIM:
                await export.trim(offset, length, native_fua)
            elif cmd == p.CMD_FLUSH:
                await export.flush()
            elif cmd == p.CMD_CACHE:
                if export.can_cache:
                    await export.cache(offset, length)
            if fua and not self._native_fua and cmd in _WRITES:
                await export.flush()  # FUA emulated by the export's flush
        except NBDError as exc:
            if exc.errno == _errno.ENOTSUP and flags & p.CMD_FLAG_FAST_ZERO:
                # The expected answer to a fast-zero probe: not worth a log line.
                self.reply_error(handle, p.ENOTSUP, str(exc))
            else:
                self._fail(handle, cmd, offset, length, exc)
            return
        except Exception as exc:
            self._fail(handle, cmd, offset, length, exc)
            return
        self.reply_ok(handle)

    # --- without a task -------------------------------------------------------

    def read_now(self, handle: int, flags: int, offset: int, length: int) -> bool:
        """Serve a READ that passed :meth:`check` at once if the export can; False
        when it must run as a task (:meth:`run`)."""
        if self.structured and length >= SPARSE_READ_MIN and not flags & p.CMD_FLAG_DF:
            return False
        started = time.monotonic()
        buf = self.buffers.get(length)
        try:
            if not self.export.read_now(offset, memoryview(buf), self.later):
                self.buffers.put(buf)
                return False
        except Exception as exc:
            self._fail(handle, p.CMD_READ, offset, length, exc)
        else:
            self.send((self._data_header(handle, offset, length), buf), (buf,))
        self.meter.observe(p.CMD_READ, length, time.monotonic() - started)
        return True

    def write_now(self, handle: int, flags: int, offset: int, data: memoryview) -> bool:
        """Serve a WRITE that passed :meth:`check` at once if the export can (FUA
        never: it waits for a flush); False when it must run as a task. ``data``
        is only read during the call."""
        if flags & p.CMD_FLAG_FUA:
            return False
        started = time.monotonic()
        try:
            if not self.export.write_now(offset, data):
                return False
        except Exception as exc:
            self._fail(handle, p.CMD_WRITE, offset, len(data), exc)
        else:
            self.reply_ok(handle)
        self.meter.observe(p.CMD_WRITE, len(data), time.monotonic() - started)
        return True

    # --- reads ------------------------------------------------------------------

    def _data_header(self, handle: int, offset: int, length: int) -> bytes:
        if self.structured:
            return p.data_chunk_header(handle, offset, length, p.REPLY_FLAG_DONE)
        return p.simple_reply(handle)

    async def _pread(self, offset: int, length: int) -> bytearray:
        buf = self.buffers.get(length)
        await self.export.pread_into(offset, memoryview(buf))
        return buf

    async def _read(self, handle: int, flags: int, offset: int, length: int) -> None:
        try:
            if (self.send_views is not None and length >= SPARSE_READ_MIN
                    and getattr(self.export, "lends_views", False)):
                await self._read_ranges(handle, flags, offset, length)
                return
            if self.structured and length >= SPARSE_READ_MIN and not flags & p.CMD_FLAG_DF:
                chunks, owned = await self._sparse_read(handle, offset, length)
                self.send(chunks, owned)
                return
            data = await self._pread(offset, length)
        except Exception as exc:
            self._fail(handle, p.CMD_READ, offset, length, exc)
            return
        self.send((self._data_header(handle, offset, length), data), (data,))

    async def _read_ranges(self, handle: int, flags: int, offset: int, length: int) -> None:
        """A large READ sent from the views the export lends of its verified
        bytes, holes as OFFSET_HOLE chunks (structured replies) or zeros; sent
        while the export holds the views valid."""
        async with self.export.read_ranges(offset, length) as pieces:
            if self.structured and not flags & p.CMD_FLAG_DF:
                items: list = []
                headers = []  # [index in items, start, length, is a hole]
                at = offset
                for n, piece in pieces:
                    hole = piece is None
                    if headers and headers[-1][3] == hole:
                        headers[-1][2] += n
                    else:
                        headers.append([len(items), at, n, hole])
                        items.append(None)  # the chunk's header, made below
                    if not hole:
                        items.append(piece)
                    at += n
                last = len(headers) - 1
                for i, (index, start, n, hole) in enumerate(headers):
                    flag = p.REPLY_FLAG_DONE if i == last else 0
                    items[index] = (p.hole_chunk(handle, start, n, flag) if hole
                                    else p.data_chunk_header(handle, start, n, flag))
            else:
                items = [self._data_header(handle, offset, length)]
                items += [_ZEROS[:n] if piece is None else piece for n, piece in pieces]
            await self.send_views(items)

    async def _sparse_read(self, handle: int, offset: int, length: int
                           ) -> tuple[list, list[bytearray]]:
        """The chunks of a structured read (zero runs as holes, the rest as data)
        and the buffers they send."""
        runs: list[list[int]] = []  # [start, length, is_zero], merged by kind
        try:
            extents = await self.export.block_status(offset, length)
        except Exception:
            extents = []  # the map is only an optimisation; read everything instead
        pos, end = offset, offset + length
        for n, state in extents:
            if pos >= end:
                break
            n = min(n, end - pos)
            if n <= 0:
                break
            zero = bool(state & p.STATE_ZERO)
            if runs and runs[-1][2] == zero:
                runs[-1][1] += n
            else:
                runs.append([pos, n, zero])
            pos += n
        if pos < end:
            if runs and not runs[-1][2]:
                runs[-1][1] += end - pos
            else:
                runs.append([pos, end - pos, False])
        data_runs = [(start, n) for start, n, zero in runs if not zero]
        if len(data_runs) == 1:
            datas = [await self._pread(*data_runs[0])]
        else:
            # A remote backend serves scattered runs faster in parallel.
            datas = await asyncio.gather(*(self._pread(start, n) for start, n in data_runs))
        chunks: list = []
        last = len(runs) - 1
        pieces = iter(datas)
        for i, (start, n, zero) in enumerate(runs):
            flag = p.REPLY_FLAG_DONE if i == last else 0
            if zero:
                chunks.append(p.hole_chunk(handle, start, n, flag))
            else:
                chunks.append(p.data_chunk_header(handle, start, n, flag))
                chunks.append(next(pieces))
        return chunks, datas

    async def _block_status(self, handle: int, flags: int, offset: int, length: int) -> None:
        try:
            extents = await self.export.block_status(offset, length)
        except Exception as exc:
            self._fail(handle, p.CMD_BLOCK_STATUS, offset, length, exc)
            return
        out: list[tuple[int, int]] = []
        remaining = length
        for n, state in extents:
            n = min(n, remaining)
            if n <= 0:
                break
            state &= _STATE_MASK
            if out and out[-1][1] == state:
                out[-1] = (out[-1][0] + n, state)
            elif len(out) == MAX_EXTENTS:
                break
            else:
                out.append((n, state))
            remaining -= n
        if not out:
            # Status 0 ("allocated, contents unknown") is always true.
            out.append((length, 0))
        if flags & p.CMD_FLAG_REQ_ONE:
            del out[1:]
        assert self.session.meta_context is not None
        self.send((p.block_status_chunk(handle, self.session.meta_context, out),))
