"""A thin-provisioned volume: an NBD export over a chunk map into the pool.

Reads of unmapped chunks return zeros without touching a disk. The first
write to a chunk allocates a pool slot; a write to a slot another map (a
snapshot, a clone) also uses is copied first (copy-on-write). TRIM and
WRITE_ZEROES over whole chunks give them back. Map changes are durable at
the next FLUSH (or FUA write) of any connection — the manager's flush syncs
the pool, then commits the metadata — so with several connections one FLUSH
covers the writes acknowledged on all of them.

An encrypted volume's key is opened when a connection opens it (refused when
its KMS key is disabled; connections already open keep working until they
close); the pool encrypts each block it writes and decrypts what it reads,
with the block's volume address as the tweak.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from storaged.buffers import Scratch

from . import protocol as _p
from .errors import VolumeError
from .export import Export, FastZeroUnsupported, NBDError
from .pool import BLOCK, BLOCKS, CHUNK

if TYPE_CHECKING:
    from .manager import VolumeManager

INLINE_IO = 64 * 1024  # smaller I/O runs on the event loop: a thread hop costs more
ENCRYPTED_RUN = 4 << 20  # an encrypted volume's whole chunks written together, at most
_ZEROS = memoryview(bytes(CHUNK))
_LATER = object()  # a piece read_ranges leaves to a thread


def pieces(offset: int, length: int) -> Iterator[tuple[int, int, int, int]]:
    """(chunk index, offset in chunk, length, offset in request) over a range."""
    done = 0
    while done < length:
        index, within = divmod(offset + done, CHUNK)
        n = min(CHUNK - within, length - done)
        yield index, within, n, done
        done += n


class Volume(Export):
    """A writable volume (or, with ``read_only``, an exported snapshot)."""

    can_multi_conn = True
    can_flush = True
    can_fua = True
    can_trim = True
    can_zero = True
    can_fast_zero = True
    can_cache = True
    keeps_write_data = False  # pwrite copies into the pool: payload buffers are reused
    minimum_block_size = 1
    preferred_block_size = BLOCK
    maximum_block_size = 32 << 20

    def __init__(self, manager: VolumeManager, name: str, read_only: bool = False) -> None:
        self.manager, self.name, self.read_only = manager, name, read_only
        self.connections = 0
        # None: a plaintext volume; until unlock(), an encrypted one refuses I/O
        self.cipher = LOCKED if manager.record(name).encrypted else None

    @property
    def record(self):
        return self.manager.record(self.name)

    @property
    def size(self) -> int:  # re-read on every request: online resize
        return self.record.size

    @property
    def description(self) -> str:
        return f"Basalt {'snapshot' if self.read_only else 'volume'} {self.name}"

    @property
    def map(self) -> dict[int, int]:
        return self.manager.map_of(self.name)

    async def open(self) -> None:
        await self.unlock()
        self.connections += 1

    async def unlock(self) -> None:
        """Open an encrypted volume's key (checking its KMS key is enabled)."""
        if self.cipher is not None:
            try:
                self.cipher = await self.manager.unlock(self.name)
            except VolumeError as exc:  # e.g. its KMS key is disabled: say so to the client
                raise NBDError(errno.EPERM, exc.message) from None

    async def close(self) -> None:
        self.connections -= 1

    async def _io(self, total: int, fn, *args):
        if total <= INLINE_IO:
            return fn(*args)
        return await self.manager.store.run(fn, *args)

    # reads -----------------------------------------------------------------------

    def read_now(self, offset: int, dest: memoryview, later: list | None = None) -> bool:
        """Fill ``dest`` at once (on the event loop: a small read costs less than
        a thread hop); False when it is too large for that. An encrypted
        volume's blocks are decrypted by steps appended to ``later`` when it is
        given (see Export.read_now), else here."""
        if len(dest) > INLINE_IO:
            return False
        self._fill(dest, self._slots(offset, len(dest)), offset, later)
        return True

    async def pread_into(self, offset: int, dest: memoryview) -> None:
        jobs = self._slots(offset, len(dest))  # resolved now, before any await
        async with self.manager.io():
            await self._io(len(dest), self._fill, dest, jobs, offset)

    async def pread(self, offset: int, length: int) -> bytearray:
        out = bytearray(length)
        await self.pread_into(offset, memoryview(out))
        return out

    @property
    def lends_views(self) -> bool:
        """Can :meth:`read_ranges` answer (a plaintext volume: what is stored is
        what is sent)?"""
        return self.cipher is None

    @contextlib.asynccontextmanager
    async def read_ranges(self, offset: int, length: int
                          ) -> AsyncIterator[list[tuple[int, memoryview | bytes | None]]]:
        """The bytes at ``offset``, verified, as (length, piece) per chunk or run
        of chunks: None for a hole (zeros), else the bytes, as a view of the
        file they are in where that holds them intact in the page cache (one
        view per run of consecutive slots read from one replica: see
        ChunkPool.read_range). The views are valid only inside the ``async
        with``: freed slots are not reused (punched, handed out again) until it
        ends, so consume them (send them) within it.

        Chunks in the page cache are checked right here, on the event loop,
        straight from the mapped file (a thread hop per request, and the GIL
        handoffs of its system calls, cost more than the checks); a thread
        reads the others into memory (the careful path: other replicas,
        repairs)."""
        jobs = self._slots(offset, length)  # resolved now, before any await
        async with self.manager.io():
            pool = self.manager.pool
            # Chunks in consecutive slots with the same preferred replica lie
            # one after another in its slab: one check, one view for them all.
            spans: list = []  # (slot or None, offset in chunk, length, piece)
            i, count = 0, len(jobs)
            while i < count:
                slot, within, n, _ = jobs[i]
                if slot is None:
                    spans.append((None, within, n, None))
                    i += 1
                    continue
                j = i + 1
                if within + n == CHUNK:
                    end = min(count, i + pool.run_length(slot))
                    while j < end and jobs[j][0] == slot + j - i:
                        n += jobs[j][2]
                        j += 1
                view = pool.read_range(slot, within, n)
                if view is not None:
                    spans.append((slot, within, n, view))
                else:  # the careful path, chunk by chunk
                    spans += [(s, w, m, _LATER) for s, w, m, _ in jobs[i:j]]
                i = j
            pieces = [span[3] for span in spans]
            if _LATER in pieces:
                pieces = await self.manager.store.run(self._read_later, spans)
            try:
                yield [(span[2], piece) for span, piece in zip(spans, pieces)]
            finally:
                for piece in pieces:
                    if isinstance(piece, memoryview):
                        pool.release_view(piece)

    def _read_later(self, spans: list) -> list:
        """The pieces read_ranges left: read into memory, every block verified."""
        pool = self.manager.pool
        try:
            return [pool.read(slot, within, n) if piece is _LATER else piece
                    for slot, within, n, piece in spans]
        except OSError as exc:
            raise NBDError(exc.errno or errno.EIO, str(exc)) from None

    def _slots(self, offset: int, length: int) -> list[tuple[int | None, int, int, int]]:
        """(slot or None for a hole, offset in chunk, length, offset in request)."""
        mapping = self.map
        index, within = divmod(offset, CHUNK)
        if within + length <= CHUNK:  # the common case: one chunk
            return [(mapping.get(index), within, length, 0)]
        return [(mapping.get(index), within, n, at) for index, within, n, at in
                pieces(offset, length)]

    def _fill(self, dest: memoryview, jobs, offset: int, later: list | None = None) -> None:
        pool, cipher = self.manager.pool, self.cipher
        try:
            for slot, within, n, at in jobs:
                if slot is None:
                    dest[at:at + n] = _ZEROS[:n]  # a hole; dest may be a reused buffer
                elif cipher is None:
                    pool.read_into(slot, within, dest[at:at + n])
                else:
                    pool.read_into(slot, within, dest[at:at + n], cipher,
                                   (offset + at) // CHUNK * BLOCKS, later)
        except OSError as exc:
            raise NBDError(exc.errno or errno.EIO, str(exc)) from None

    async def cache(self, offset: int, length: int) -> None:
        await self.pread(offset, min(length, 32 << 20))

    # writes ----------------------------------------------------------------------

    def _writable(self) -> None:
        if self.read_only:
            raise NBDError(errno.EPERM, "snapshots are read-only")

    def write_now(self, offset: int, data: memoryview) -> bool:
        """Write ``data`` at once (on the event loop, no await: allocation,
        copy-on-write and the pwrites cannot interleave with anything); False
        when it is too large for that or the write gate is closed (a snapshot,
        resize or heal waits for writes to drain)."""
        self._writable()
        manager = self.manager
        if len(data) > INLINE_IO or manager.writes.closed:
            return False
        index, within = divmod(offset, CHUNK)
        if within + len(data) <= CHUNK:  # the common case: one chunk
            spans = [(manager.own_chunk(self.name, index), within, len(data), 0, index * BLOCKS)]
        else:
            spans = [(manager.own_chunk(self.name, index), within, n, at, index * BLOCKS)
                     for index, within, n, at in pieces(offset, len(data))]
        self._write_spans(data, spans)
        return True

    async def pwrite(self, offset: int, data: memoryview, fua: bool,
                     direct: bool = False) -> None:
        """Write ``data`` at ``offset``; ``direct`` for bulk data nobody is about
        to read (restores): whole chunks then bypass the page cache."""
        self._writable()
        manager = self.manager
        async with manager.writes.shared(), manager.io():
            # Resolving slots never awaits: allocation and copy-on-write of one
            # chunk cannot interleave with another request's.
            spans = [(manager.own_chunk(self.name, index), within, n, at, index * BLOCKS)
                     for index, within, n, at in pieces(offset, len(data))]
            await self._io(len(data), self._write_spans, data, spans, direct)
        if fua:
            await manager.flush()

    def _write_spans(self, data: memoryview, spans, direct: bool = False) -> None:
        """Write each (slot, offset in chunk, length, offset in data, tweak); whole
        chunks in consecutive slots (a sequential write to a volume filled in
        order) go to the pool together, one pwrite per run a disk holds (an
        encrypted volume's runs of up to ENCRYPTED_RUN, encrypted first into a
        reused buffer)."""
        pool, cipher = self.manager.pool, self.cipher
        most = len(spans) if cipher is None else ENCRYPTED_RUN // CHUNK
        try:
            i = 0
            while i < len(spans):
                slot, within, n, at, tweak = spans[i]
                j = i + 1
                if n == CHUNK:
                    while j < len(spans) and j - i < most and spans[j][2] == CHUNK \
                            and spans[j][0] == slot + j - i:
                        j += 1
                if j - i > 1 or (direct and n == CHUNK):
                    run = data[at:at + (j - i) * CHUNK]
                    if cipher is None:
                        pool.write_chunks(slot, run, direct)
                    else:
                        self._write_encrypted(slot, run, tweak, direct)
                else:
                    pool.write(slot, within, data[at:at + n], cipher, tweak)
                i = j
        except OSError as exc:
            raise NBDError(exc.errno or errno.EIO, str(exc)) from None

    def _write_encrypted(self, slot: int, run: memoryview, tweak: int, direct: bool) -> None:
        """Whole chunks of an encrypted volume, consecutive in the volume (so their
        blocks' tweaks are too) and in the pool, encrypted into a reused
        page-aligned buffer (a direct write can take it) and written together."""
        with _cipher_buffers.use() as buf:
            out = buf[:len(run)]
            self.cipher.encrypt_into(tweak, run, out)
            self.manager.pool.write_chunks(slot, out, direct)

    async def flush(self) -> None:
        await self.manager.flush()

    async def trim(self, offset: int, length: int, fua: bool) -> None:
        self._writable()
        await self._clear(offset, length, deallocate=True, fast_only=False)
        if fua:
            await self.manager.flush()

    async def zero(self, offset: int, length: int, *, may_trim: bool, fast_only: bool,
                   fua: bool) -> None:
        self._writable()
        await self._clear(offset, length, deallocate=may_trim, fast_only=fast_only, zero=True)
        if fua:
            await self.manager.flush()

    async def _clear(self, offset: int, length: int, *, deallocate: bool, fast_only: bool,
                     zero: bool = False) -> None:
        """Trim or zero a range: whole chunks are unmapped (or emptied), partial
        ones have their blocks punched and their edges written with zeros."""
        manager = self.manager
        async with manager.writes.shared(), manager.io():
            for index, within, n, _ in pieces(offset, length):
                slot = self.map.get(index)
                if slot is None:
                    continue  # already reads as zeros
                if within == 0 and n == CHUNK and deallocate:
                    manager.unmap(self.name, index)
                    continue
                if manager.shared(slot):
                    if not zero:
                        continue  # TRIM is advisory: leave shared data alone
                    if fast_only:
                        raise FastZeroUnsupported("zeroing a shared chunk needs a copy")
                    slot = manager.own_chunk(self.name, index)
                _zero_range(manager.pool, slot, within, n, self.cipher, index * BLOCKS)

    async def block_status(self, offset: int, length: int) -> list[tuple[int, int]]:
        runs: list[tuple[int, int]] = []
        mapping = self.map
        for index, _, n, _ in pieces(offset, length):
            flags = 0 if index in mapping else _p.STATE_HOLE | _p.STATE_ZERO
            if runs and runs[-1][1] == flags:
                runs[-1] = (runs[-1][0] + n, flags)
            else:
                runs.append((n, flags))
        return runs


def _zero_range(pool, slot: int, within: int, n: int, cipher=None, tweak: int = 0) -> None:
    """Zero ``n`` bytes of a slot: punch the whole blocks (holes read as zeros,
    encrypted or not), write zeros at the edges."""
    first = -(-within // BLOCK) * BLOCK
    last = (within + n) // BLOCK * BLOCK
    if last > first:
        pool.clear(slot, first, last - first)
        if within < first:
            pool.write(slot, within, bytes(first - within), cipher, tweak)
        if within + n > last:
            pool.write(slot, last, bytes(within + n - last), cipher, tweak)
    else:
        pool.write(slot, within, bytes(n), cipher, tweak)


# Page-aligned buffers for encrypted runs, taken by the I/O threads (a write
# that failed keeps its buffer: a disk's write may still read it). A fresh
# buffer per run would fault in fresh pages: the dearest copy on this VM.
_cipher_buffers = Scratch(ENCRYPTED_RUN, keep=2)


class _Locked:
    """An encrypted volume's cipher before its key is opened: I/O is refused."""

    def _refuse(self, *_) -> None:
        raise NBDError(errno.EACCES, "the volume's key is not open")

    encrypt = encrypt_into = decrypt_into = _refuse


LOCKED = _Locked()
