"""One NBD client connection: receive buffering, request parsing, flow control.

The connection is an :class:`asyncio.BufferedProtocol`: the event loop reads
straight into buffers owned here. Requests are parsed from a fixed receive
buffer, many per ``recv``; a large WRITE payload is read directly into a
reused buffer of its own, which the export then gets as a memoryview without
another copy.

Small READs and WRITEs the export serves without awaiting are answered right
in the parse loop (a small WRITE straight from the receive buffer); every
other request runs as its own task, so slow ones are pipelined and replies
go out in completion order. A client that sends faster than the export
answers is slowed down, not buffered without end: past a bound on requests
or bytes in flight, or when the transport's send buffer is full, the
connection stops reading the socket until things drain.

A large READ of a plaintext volume is sent from views of the volume's
mapped files (:meth:`NBDConnection._send_views`: one writev straight to the
socket when nothing is queued before it): not read into a buffer first (the
read copy was ~a quarter of the server's CPU per byte read).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import socket
import time
from typing import TYPE_CHECKING

from . import protocol as p
from .nbd_buffers import Buffers
from .nbd_commands import Commands
from .nbd_handshake import Handshake, ProtocolViolation

if TYPE_CHECKING:
    from .nbd_server import NBDServer

__all__ = ["NBDConnection"]

log = logging.getLogger("blockd.nbd")

RECV_BUFFER = 256 * 1024
# Compact the receive buffer when less than this is free at its end. Larger
# than anything kept pending in it (an option, or a header plus a small
# write), so compaction always leaves room to read into.
MIN_FREE = 128 * 1024
# WRITE payloads up to this size wait in the receive buffer; bigger ones get a
# buffer of their own that the socket fills directly.
SMALL_WRITE = 64 * 1024
WRITE_BUFFER_HIGH = 4 * 1024 * 1024
# Seconds a READ's reply may wait for the socket while sent from views of the
# volume's files (freed slots wait for it); then the views are copied.
VIEW_HOLD = 1.0
_IOV_MAX = 1024
_HEADER = p.S_REQUEST.size
_unpack_request = p.S_REQUEST.unpack_from
_DATA_CMDS = (p.CMD_READ, p.CMD_WRITE)


class NBDConnection(asyncio.BufferedProtocol):
    """Serves one client from the greeting to the hang-up."""

    def __init__(self, server: NBDServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._buf = bytearray(RECV_BUFFER)
        self._view = memoryview(self._buf)
        self._start = self._end = 0  # unconsumed bytes are _buf[_start:_end]
        self._transport: asyncio.Transport | None = None
        self._lost = False
        self._waiter: asyncio.Future | None = None  # handshake reads
        self._want = 0
        self._cmds: Commands | None = None  # set once in transmission
        self._payload: bytearray | None = None  # large WRITE being received (reused buffer)
        self._payload_pos = 0
        self._header_next = False  # read only a request header next (see get_buffer)
        self._payload_req: tuple[int, int, int, int] = (0, 0, 0, 0)
        self._discard = 0  # payload bytes of a refused WRITE still to skip
        self._discard_reply: tuple[int, int, str] | None = None  # handle, errno, message
        self._tasks: set[asyncio.Task] = set()
        self._buffers: Buffers = server.buffers
        self._outq: list = []  # reply buffers not yet handed to the transport
        # Steps (fn, a, b) that complete replies in _outq (decryption): run
        # together just before _outq leaves (see Export.read_now).
        self._later: list = []
        self._outq_bytes = 0
        self._queued = 0  # reply bytes handed to the transport so far
        # Reused buffers the transport may still be sending, as (where their
        # reply ends in the byte stream, buffer), oldest first.
        self._held: collections.deque[tuple[int, bytearray]] = collections.deque()
        self._flush_pending = False
        self._inflight = 0
        self._inflight_bytes = 0
        self._max_requests = server.max_inflight_requests
        self._max_bytes = server.max_inflight_bytes
        self._over_limits = False
        self._write_blocked = False
        self._backlog = False  # handshake bytes piling up unread
        self._stopped = False  # no more requests will be parsed
        self._reading = True
        self._idle: asyncio.Future | None = None
        self._finished = self._loop.create_future()
        self._reason = ""
        self.task: asyncio.Task | None = None
        self.peer = "-"
        self.export_name = "-"
        self.requests = 0
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.rx_copied = 0  # WRITE payload bytes copied out of the receive buffer
        self.tx_copied = 0  # borrowed reply bytes copied to be sent later (not straight)
        self._sock: socket.socket | None = None  # for _send_views (None: not a plain socket)
        # Reply pieces (and, after each reply, a future to complete) waiting
        # for the socket: see _send_views.
        self._vq: list = []
        self._vq_bytes = 0
        self._vq_full = False
        self._watching = False

    # --- asyncio protocol callbacks ---------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  (uvloop's is no asyncio.Transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else (peer or "unix")
        sock = transport.get_extra_info("socket")
        if (sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
                and transport.get_extra_info("sslcontext") is None):
            # Our own descriptor of the socket: replies sent from views go
            # straight to it, and the loop will not watch the transport's own.
            self._sock = socket.socket(sock.family, sock.type, sock.proto,
                                       fileno=os.dup(sock.fileno()))
            self._sock.settimeout(0)
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # Notice clients that vanished without a FIN, so their
                # connections (and open exports) do not linger forever.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:
                pass
        # Room for a few 1 MiB replies before the transport asks us to stop
        # reading: at 1 MiB the pauses of a lower mark starved the pipeline.
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self.task = self._loop.create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._close_socket()
        self._wake()
        self._finish("client hung up" if exc is None else f"connection lost: {exc}")

    def eof_received(self) -> bool:
        return False  # close our side too; in-flight requests still complete

    def pause_writing(self) -> None:
        self._write_blocked = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._release_sent()
        self._write_blocked = False
        self._resume()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._payload is not None:
            return memoryview(self._payload)[self._payload_pos :]
        start, end = self._start, self._end
        if start == end:
            self._start = self._end = 0
        elif RECV_BUFFER - end < MIN_FREE:
            n = end - start
            self._buf[:n] = bytes(self._view[start:end])  # rare, and at most MIN_FREE
            self._start, self._end = 0, n
        if self._header_next and self._start == self._end:
            # Right after a large WRITE's payload: read just the next header,
            # so a next large payload lands in its own buffer, not here to be
            # copied (a quarter of each 1 MiB WRITE was, in 256 KiB reads).
            return self._view[self._end : self._end + _HEADER]
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.rx_bytes += nbytes
        if self._payload is not None:
            self._payload_pos += nbytes
            if self._payload_pos == len(self._payload):
                data, self._payload = self._payload, None
                self._header_next = True
                flags, handle, offset, length = self._payload_req
                self._begin(p.CMD_WRITE, flags, handle, offset, length, memoryview(data), data)
                self._process()
            return
        self._end += nbytes
        self._header_next = False
        if self._cmds is None:
            if self._end - self._start >= self._want:
                self._wake()
            if RECV_BUFFER - (self._end - self._start) < MIN_FREE:
                # Options sent without waiting for replies: stop reading
                # until the handshake catches up, or the buffer overflows.
                self._backlog = True
                self._update_reading()
        else:
            self._process()

    # --- handshake I/O (the Channel that nbd_handshake reads from) ----------

    async def read(self, n: int) -> bytes:
        """The next ``n`` bytes from the client (n ≤ the handshake's option limit)."""
        while self._end - self._start < n:
            await self._wait_for(n)
        start = self._start
        self._start = start + n
        self._consumed()
        return bytes(self._view[start : start + n])

    async def skip(self, n: int) -> None:
        """Discard the next ``n`` bytes from the client."""
        while n:
            if self._start == self._end:
                await self._wait_for(1)
            k = min(n, self._end - self._start)
            self._start += k
            n -= k
            self._consumed()

    def write(self, data: bytes) -> None:
        """Send handshake bytes."""
        if self._transport is not None and not self._transport.is_closing():
            self.tx_bytes += len(data)
            self._transport.write(data)

    def _consumed(self) -> None:
        if self._backlog:
            self._backlog = False
            self._update_reading()

    async def _wait_for(self, n: int) -> None:
        if self._lost:
            raise ConnectionResetError("client hung up")
        self._want = n
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- lifecycle ----------------------------------------------------------------

    async def _serve(self) -> None:
        began = time.monotonic()
        session = None
        handshake = Handshake(self, self._server.registry)
        try:
            session = await handshake.run()
            if session is None:
                self._finish("client aborted the handshake")
            else:
                self.export_name = session.export.name
                self._cmds = Commands(session, self._send, self._buffers, self._send_views,
                                      self._later)
                self._process()  # requests that arrived with the last option
            await self._finished
            if self._inflight:
                self._idle = self._loop.create_future()
                await self._idle
        except ProtocolViolation as exc:
            self._finish(f"protocol violation: {exc}")
            self._log_violation(str(exc))
        except ConnectionError:
            self._finish("client hung up during the handshake")
        except Exception:
            self._finish("server error")
            log.exception("nbd connection failed", extra={"fields": {"client": self.peer}})
        finally:
            if session is None:
                self.export_name = handshake.requested
            self._flush()
            self._unqueue()
            if self._transport is not None:
                self._transport.close()
            self._close_socket()
            if session is not None:
                try:
                    await session.export.close()
                except Exception:
                    log.exception("nbd export close failed",
                                  extra={"fields": {"export": session.export.name}})
            if self._cmds is not None:
                self._cmds.meter.flush()
            self._server.connection_closed(self)
            log.info("nbd connection closed", extra={"fields": {
                "client": self.peer, "export": self.export_name,
                "duration": round(time.monotonic() - began, 3), "requests": self.requests,
                "errors": self._cmds.errors if self._cmds else 0,
                "rx_bytes": self.rx_bytes, "tx_bytes": self.tx_bytes, "reason": self._reason,
            }})

    def _finish(self, reason: str) -> None:
        if not self._finished.done():
            self._reason = reason
            self._finished.set_result(None)

    def shutdown(self) -> None:
        """Stop taking requests; in-flight ones complete before the connection closes."""
        if self._cmds is None:
            self._finish("server shutdown")
            if self._transport is not None:
                self._transport.close()
            return
        self._stop("server shutdown")

    def abort(self) -> None:
        """Drop the connection now, cancelling requests still running."""
        for task in list(self._tasks):
            task.cancel()
        if self._transport is not None:
            self._transport.abort()
        if self.task is not None:
            self.task.cancel()

    def _stop(self, reason: str) -> None:
        self._stopped = True
        self._update_reading()
        self._finish(reason)

    # --- transmission -------------------------------------------------------------

    def _send(self, buffers, owned=()) -> None:
        # Replies finished in the same loop iteration leave in one writelines:
        # one syscall for many replies instead of one each. Each reply's
        # buffers stay together, so replies never interleave. ``owned`` are
        # reused buffers, taken back once the transport has sent them.
        self._outq.extend(buffers)
        for b in buffers:
            self._outq_bytes += len(b)
        if owned:
            end = self._queued + self._outq_bytes
            self._held.extend([(end, buf) for buf in owned])
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self._later and not self._complete_replies():
            return
        self._flush_pending = False
        queue, self._outq = self._outq, []
        nbytes, self._outq_bytes = self._outq_bytes, 0
        self._queued += nbytes
        transport = self._transport
        if not queue or transport is None or transport.is_closing():
            return  # the client is gone; the requests still ran
        self.tx_bytes += nbytes
        if self._vq:  # after the replies waiting for the socket
            self._vq.extend(queue)
            self._vq_bytes += nbytes
            self._watch_socket()
            return
        transport.writelines(queue)
        self._release_sent()

    def _complete_replies(self) -> bool:
        """Run the steps that complete the queued replies; False when one
        failed: then no reply of this batch may leave (it would carry bytes
        that are not what was asked for), and the connection is dropped."""
        later = self._later
        try:
            for fn, a, b in later:
                fn(a, b)
        except Exception:
            log.exception("nbd reply could not be completed; dropping the connection",
                          extra={"fields": {"client": self.peer, "export": self.export_name}})
            self._outq.clear()
            self._outq_bytes = 0
            self._flush_pending = False
            self._stop("internal error completing a reply")
            self.abort()
            return False
        finally:
            later.clear()
        return True

    async def _send_views(self, items: list) -> None:
        """Send a reply whose pieces are borrowed (memoryviews: the export's
        views of its files) or owned (bytes); return once no borrowed piece is
        needed any more (written to the socket, or copied): the caller keeps
        them valid until then.

        Replies queued before it go first; if nothing is left to send before
        it, straight to the socket in one writev. What the socket does not
        take at once waits in the view queue until it drains; a reply still
        waiting after VIEW_HOLD seconds (a client that stopped reading) has
        the queue copied into the transport, so that the slots the views are
        in can be reused."""
        done = self._send_views_now(items)
        if done is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(done), VIEW_HOLD)
        except TimeoutError:
            self._unqueue()
        except BaseException:
            self._unqueue()
            raise

    def _send_views_now(self, items: list) -> asyncio.Future | None:
        """Write what the socket takes now; a future done once the rest is
        written (None: nothing is left)."""
        self._flush()  # earlier replies first
        transport = self._transport
        if transport is None or transport.is_closing():
            return None  # the client is gone; the request still ran
        total = sum(len(it) for it in items)
        self.tx_bytes += total
        self._queued += total
        if self._sock is None:  # no socket to write to: through the transport
            self.tx_copied += sum(len(it) for it in items if isinstance(it, memoryview))
            transport.writelines([_owned(it) for it in items])
            return None
        if not self._vq and not transport.get_write_buffer_size():
            items = self._write_some(items)
            if not items:
                self._release_sent()
                return None
        done = self._loop.create_future()
        self._vq.extend(items)
        self._vq.append(done)
        self._vq_bytes += sum(len(it) for it in items)
        self._watch_socket()
        return done

    def _write_some(self, items: list) -> list:
        """Write pieces to the socket until it is full, completing the futures
        among them; what is left (the first piece cut to what is left of it).
        A failure other than a full socket ends the connection (nothing left)."""
        fd = self._sock.fileno()
        i = 0
        try:
            while i < len(items):
                batch = []
                j = i
                while j < len(items) and len(batch) < _IOV_MAX:
                    item = items[j]
                    if isinstance(item, asyncio.Future):
                        if batch:
                            break
                        if not item.done():
                            item.set_result(None)
                        i = j = j + 1
                        continue
                    batch.append(item)
                    j += 1
                if not batch:
                    continue
                try:
                    n = os.writev(fd, batch)
                except BlockingIOError:
                    n = 0
                for item in batch:
                    if n < len(item):
                        return [memoryview(item)[n:], *items[i + 1:]]
                    n -= len(item)
                    i += 1
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                log.warning("nbd reply send failed", extra={"fields": {
                    "client": self.peer, "error": str(exc)}})
            for item in items:
                if isinstance(item, asyncio.Future) and not item.done():
                    item.set_result(None)
            if self._transport is not None:
                self._transport.abort()
            return []
        return []

    def _watch_socket(self) -> None:
        """Drain the view queue as the socket takes it."""
        if not self._watching:
            self._watching = True
            self._loop.add_writer(self._sock.fileno(), self._drain)
        if self._vq_bytes > WRITE_BUFFER_HIGH and not self._vq_full:
            self._vq_full = True  # a client not reading: stop taking requests
            self._update_reading()

    def _drain(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._drop_queued()
            return
        if transport.get_write_buffer_size():
            return  # the transport's bytes go first
        self._vq = self._write_some(self._vq)
        self._vq_bytes = sum(len(it) for it in self._vq if not isinstance(it, asyncio.Future))
        self._release_sent()
        if not self._vq:
            self._loop.remove_writer(self._sock.fileno())
            self._watching = False
        if self._vq_full and self._vq_bytes <= WRITE_BUFFER_HIGH // 4:
            self._vq_full = False
            self._resume()

    def _unqueue(self) -> None:
        """Hand the view queue to the transport (after what it holds: the order
        stays), its borrowed pieces copied, and complete its futures."""
        queue, self._vq, self._vq_bytes = self._vq, [], 0
        if self._watching:
            self._watching = False
            self._loop.remove_writer(self._sock.fileno())
        transport = self._transport
        pieces = [it for it in queue if not isinstance(it, asyncio.Future)]
        if pieces and transport is not None and not transport.is_closing():
            self.tx_copied += sum(len(it) for it in pieces if isinstance(it, memoryview))
            transport.writelines([_owned(it) for it in pieces])
        for item in queue:
            if isinstance(item, asyncio.Future) and not item.done():
                item.set_result(None)
        if self._vq_full:
            self._vq_full = False
            self._resume()

    def _drop_queued(self) -> None:
        """The connection is gone: forget the view queue, wake who waits on it."""
        for item in self._vq:
            if isinstance(item, asyncio.Future) and not item.done():
                item.set_result(None)
        self._vq, self._vq_bytes = [], 0
        if self._watching:
            self._watching = False
            self._loop.remove_writer(self._sock.fileno())

    def _close_socket(self) -> None:
        """Close our descriptor of the socket (the transport closes its own)."""
        self._drop_queued()
        if self._sock is not None:
            self._sock.close()

    def _release_sent(self) -> None:
        """Take back the reused buffers whose replies the transport has sent:
        it may keep unsent data by reference, and only the last
        get_write_buffer_size() bytes queued (and the view queue's) are unsent."""
        held = self._held
        if not held or self._transport is None:
            return
        sent = self._queued - self._transport.get_write_buffer_size() - self._vq_bytes
        while held and held[0][0] <= sent:
            self._buffers.put(held.popleft()[1])

    def _process(self) -> None:
        """Parse and start every complete request in the receive buffer."""
        cmds = self._cmds
        buf, view = self._buf, self._view
        start, end = self._start, self._end
        while not self._stopped:
            if self._discard_reply is not None:
                k = min(self._discard, end - start)
                start += k
                self._discard -= k
                if self._discard:
                    break
                handle, err, message = self._discard_reply
                self._discard_reply = None
                cmds.reply_error(handle, err, message)
                continue
            if self._inflight >= self._max_requests or self._inflight_bytes >= self._max_bytes:
                self._over_limits = True
                self._update_reading()
                break
            if end - start < _HEADER:
                break
            magic, flags, cmd, handle, offset, length = _unpack_request(buf, start)
            if magic != p.REQUEST_MAGIC:
                self._log_violation(f"bad request magic {magic:#x}")
                self._stop(f"protocol violation: bad request magic {magic:#x}")
                break
            start += _HEADER
            if cmd == p.CMD_DISC:
                self._stop("client disconnected")
                break
            self.requests += 1
            refusal = cmds.check(cmd, flags, offset, length)
            if cmd == p.CMD_WRITE:
                if refusal is not None:
                    # Skip the payload as it streams in, without storing it.
                    self._discard = length
                    self._discard_reply = (handle, *refusal)
                    self._log_refusal(cmd, refusal[1])
                    continue
                have = end - start
                if have >= length:
                    data = view[start : start + length]
                    start += length
                    if not cmds.write_now(handle, flags, offset, data):
                        # The task outlives this receive buffer's content.
                        copy = self._buffers.get(length)
                        copy[:] = data
                        self.rx_copied += length
                        self._begin(cmd, flags, handle, offset, length, memoryview(copy), copy)
                    continue
                if length <= SMALL_WRITE:
                    start -= _HEADER  # parse the header again once the payload is in
                    self.requests -= 1
                    break
                payload = self._buffers.get(length)
                payload[:have] = view[start:end]
                self.rx_copied += have
                self._payload, self._payload_pos = payload, have
                self._payload_req = (flags, handle, offset, length)
                start = end = 0
                break
            if refusal is not None:
                self._log_refusal(cmd, refusal[1])
                cmds.reply_error(handle, *refusal)
                continue
            if cmd == p.CMD_READ and cmds.read_now(handle, flags, offset, length):
                continue
            self._begin(cmd, flags, handle, offset, length, None)
        self._start, self._end = start, end

    def _log_violation(self, error: str) -> None:
        log.warning("nbd protocol violation", extra={"fields": {"client": self.peer, "error": error}})

    def _log_refusal(self, cmd: int, error: str) -> None:
        # Client mistakes are counted in the connection's line; per request
        # only at debug level, or a broken client would flood the log.
        log.debug("nbd request refused", extra={"fields": {
            "client": self.peer, "cmd": p.COMMAND_NAMES.get(cmd, cmd), "error": error,
        }})

    def _begin(self, cmd, flags, handle, offset, length, data, payload=None) -> None:
        nbytes = length if cmd in _DATA_CMDS else 0
        self._inflight += 1
        self._inflight_bytes += nbytes
        task = self._loop.create_task(
            self._run(cmd, flags, handle, offset, length, data, nbytes, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, cmd, flags, handle, offset, length, data, nbytes, payload) -> None:
        try:
            await self._cmds.run(cmd, flags, handle, offset, length, data)
            # Returned (not cancelled): the export is done with the payload.
            if payload is not None and not self._cmds.export.keeps_write_data:
                self._buffers.put(payload)
        finally:
            self._inflight -= 1
            self._inflight_bytes -= nbytes
            if self._over_limits:
                self._resume()
            if not self._inflight and self._idle is not None and not self._idle.done():
                self._idle.set_result(None)

    def _resume(self) -> None:
        if self._over_limits and (
            self._inflight > self._max_requests // 2 or self._inflight_bytes > self._max_bytes // 2
        ):
            return
        self._over_limits = False
        if (not self._write_blocked and not self._vq_full and not self._stopped
                and self._cmds is not None):
            self._process()  # requests already buffered go first
        self._update_reading()

    def _update_reading(self) -> None:
        want = not (self._stopped or self._over_limits or self._write_blocked or self._backlog
                    or self._vq_full)
        transport = self._transport
        if want == self._reading or transport is None or transport.is_closing():
            return
        self._reading = want
        if want:
            transport.resume_reading()
        else:
            transport.pause_reading()


def _owned(piece):
    """A reply piece the transport may keep: a borrowed view is copied."""
    return bytes(piece) if isinstance(piece, memoryview) else piece
