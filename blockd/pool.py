"""The chunk pool: where every block volume's data lives, replicated across disks.

Volume data is cut into 64 KiB chunks; each allocated chunk occupies a *slot*
of the pool. Slot ``s`` is stored on R = M+1 distinct disks (positions
``s, s+1, ... mod N``) at offset ``s * CHUNK`` of each disk's ``slab`` file,
so losing any M disks leaves a full copy. Each 4 KiB block carries an xxh3
checksum in the disk's ``sums`` file, verified on every read; a block that
fails is read from another replica and rewritten (0 means "never written").
A slot is read from one of its replicas, the same one for every read
(:meth:`ChunkPool.preferred`): runs of up to R consecutive slots go to the
one disk holding them all, so a large read is checked and sent run by run.

Why replicas and not erasure coding for volumes: guests write 4 KiB at random
places. Erasure coding a 4 KiB write means reading and rewriting a stripe
(or journaling it); with replicas it is R independent pwrites into the page
cache, and reads touch one disk. The price is capacity: (M+1)x instead of
(K+M)/K — the trade Ceph's RBD makes by default too.

Durability: writes land in the page cache; :meth:`sync` fdatasyncs every file
written since the last sync (NBD FLUSH, FUA). Freed slots are hole-punched.

Encrypted volumes pass their :class:`~blockd.volume_cipher.VolumeCipher` and
the volume block of the slot's first block (the XTS tweak base) to
:meth:`read_into` and :meth:`write`: the pool stores, checksums, copies and
heals the ciphertext, and decrypts once a read is verified.

A disk's slab and sums are :class:`~storaged.BlockFile` objects from
``Disk.open_block_file``: the pool never touches a disk but through ``Disk``.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import errno
import logging
import math
import mmap
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import xxhash

from storaged import BlockFile, ObjectStore

if TYPE_CHECKING:
    from .volume_cipher import VolumeCipher

log = logging.getLogger("basalt.blockd.pool")

CHUNK = 64 * 1024
BLOCK = 4096
BLOCKS = CHUNK // BLOCK
SUM = 8
_NO_SUM = bytes(SUM)
_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
RELEASE_BYTES = 32 << 20  # views consumed between unmappings of the slabs' pages
_PAGE = mmap.PAGESIZE
_RESIDENT = bytes(i & 1 for i in range(256))  # mincore: bit 0 of each byte, the rest undefined
try:
    _mincore = ctypes.CDLL(None, use_errno=True).mincore
    _mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    _mincore.restype = ctypes.c_int
except (OSError, AttributeError):  # no mincore here: reads go the careful way
    _mincore = None


_digest = xxhash.xxh3_64_digest


def block_sum(block: bytes | memoryview) -> bytes:
    """The stored checksum of a 4 KiB block (never all zero: 0 means unwritten)."""
    digest = _digest(block)
    return digest if digest != _NO_SUM else b"\x00" * (SUM - 1) + b"\x01"


def block_sums(data: memoryview) -> bytes:
    """The stored checksums of whole blocks, concatenated (one join, no loop of
    slices in the common case: a zero digest is as rare as a hash collision)."""
    sums = b"".join([_digest(data[i:i + BLOCK]) for i in range(0, len(data), BLOCK)])
    if _NO_SUM in sums:  # maybe a digest of 0 (or zeros across two): redo block by block
        sums = b"".join([block_sum(data[i:i + BLOCK]) for i in range(0, len(data), BLOCK)])
    return sums


class PoolError(OSError):
    """No replica of a slot could serve or take the I/O."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


class ChunkPool:
    """Slots of 64 KiB, each on R disks, with per-block checksums."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.n = store.n
        self.replicas = min(store.n, store.m + 1)
        # pos → (generation, slab, sums)
        self._files: dict[int, tuple[int, BlockFile, BlockFile]] = {}
        self._dirty: set[int] = set()
        self._lock = threading.Lock()
        self.untrusted: set[int] = set()  # disks whose copies are not healed yet
        self.has_data: Callable[[], bool] = lambda: True  # are any slots in use?
        self.missed: set[int] = set()  # disks that missed writes (offline, failing)
        self._block_locks = [threading.Lock() for _ in range(256)]
        # The highest slot an opened file may hold data in: raised from each
        # file's size when it is opened and before every write. A whole slot
        # above it is a hole on every disk, so clear() needs no fstat for it.
        self._top = -1
        self._top_lock = threading.Lock()
        self._writers: concurrent.futures.ThreadPoolExecutor | None = None
        self.repaired = 0
        # pos → (slab file, its mapping's view, mapped length, address): see read_range
        self._maps: dict[int, tuple[BlockFile, memoryview, int, int]] = {}
        self._viewed = 0  # bytes of views consumed since the slabs' pages were unmapped
        # A slot's replica positions depend only on slot % n.
        self._replica_sets = [tuple((r + j) % self.n for j in range(self.replicas))
                              for r in range(self.n)]
        # The replica a slot's reads go to, and how many slots from it on go
        # to the same one (see _preferred_table).
        self._prefer, self._run = _preferred_table(self.n, self.replicas)
        longest = max(self._run)
        self._resident = bytearray(longest * CHUNK // _PAGE)
        self._resident_at = ctypes.addressof((ctypes.c_char * len(self._resident))
                                             .from_buffer(self._resident))
        self._sums = bytearray(longest * BLOCKS * SUM)

    def close(self) -> None:
        with self._lock:
            if self._writers is not None:
                self._writers.shutdown(wait=False)
                self._writers = None
            for _, slab, sums in self._files.values():
                _close(slab, sums)
            self._files.clear()
            self._maps.clear()

    def positions(self, slot: int) -> list[int]:
        return list(self._replica_sets[slot % self.n])

    def preferred(self, slot: int) -> int:
        """The replica a slot's reads go to (one of its positions)."""
        return self._prefer[slot % len(self._prefer)]

    def run_length(self, slot: int) -> int:
        """How many consecutive slots from ``slot`` on have its preferred
        replica: :meth:`read_range` checks and returns them as one view."""
        return self._run[slot % len(self._run)]

    def _disk_files(self, pos: int) -> tuple[BlockFile, BlockFile] | None:
        """(slab, sums) block files of a disk, None when it cannot serve now (the
        other replicas then do); reopened when the disk was replaced."""
        try:
            return self._open_files(pos)
        except OSError as exc:  # e.g. the node holding a remote disk is down
            log.warning("volume files of disk %d unavailable: %s", pos, exc)
            return None

    def _open_files(self, pos: int) -> tuple[BlockFile, BlockFile] | None:
        disk = self.store.disks[pos]
        if not disk.online:
            return None
        generation = getattr(disk, "generation", 0)
        cached = self._files.get(pos)  # the hot path takes no lock
        if cached is not None and cached[0] == generation:
            return cached[1], cached[2]
        with self._lock:
            cached = self._files.get(pos)
            if cached is not None and cached[0] == generation:
                return cached[1], cached[2]
            if cached is not None:
                del self._files[pos]
                _close(cached[1], cached[2])
            slab = disk.open_block_file("volumes.slab", create=False)
            if slab is None:
                if self.has_data():
                    # A wiped or replaced disk: its copies are missing until
                    # healed, and its holes must not pass for unwritten blocks.
                    _touch(disk, "volumes.fresh")
                slab = _created(disk, "volumes.slab")
            try:
                sums = _created(disk, "volumes.sums")
                if disk.has_file("volumes.fresh"):
                    self.untrusted.add(pos)
            except BaseException:
                slab.close()
                raise
            self._raise_top(max(-(-slab.size() // CHUNK), -(-sums.size() // (BLOCKS * SUM))) - 1)
            self._files[pos] = (generation, slab, sums)
            return slab, sums

    def _raise_top(self, slot: int) -> None:
        with self._top_lock:  # a check-then-set from two threads could lower it
            if slot > self._top:
                self._top = slot

    def open(self, pos: int) -> None:
        """Open (or reopen, after a replacement) a disk's files."""
        self._disk_files(pos)

    def trust(self, pos: int) -> None:
        """A disk's copies were healed: read from it again."""
        self.store.disks[pos].remove_file("volumes.fresh")
        self.untrusted.discard(pos)

    # reads -------------------------------------------------------------------

    def _read_replica(self, pos: int, slot: int, first: int, count: int
                      ) -> tuple[bytearray, bytes] | None:
        files = self._disk_files(pos)
        if files is None:
            return None
        slab, sums = files
        try:
            data = bytearray(slab.pread(count * BLOCK, slot * CHUNK + first * BLOCK))
            stored = sums.pread(count * SUM, (slot * BLOCKS + first) * SUM)
        except OSError as exc:
            log.warning("volume read failed on disk %d: %s", pos, exc)
            return None
        # Past the end of the file is a hole: zeros, never written.
        data.extend(bytes(count * BLOCK - len(data)))
        return data, stored + bytes(count * SUM - len(stored))

    def read(self, slot: int, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` within a slot, every block verified."""
        out = bytearray(length)
        self.read_into(slot, offset, memoryview(out))
        return bytes(out)

    def read_into(self, slot: int, offset: int, dest: memoryview,
                  cipher: VolumeCipher | None = None, tweak: int = 0,
                  later: list | None = None) -> None:
        """Fill ``dest`` from ``offset`` within a slot, every block verified (then
        decrypted with ``cipher``, the slot's first block being volume block
        ``tweak``; when ``later`` is given and the range is whole blocks, by a
        step ``(cipher.decrypt_into, first block, dest)`` appended to it, for
        the caller to run before ``dest`` is used).

        Block-aligned reads land straight in ``dest``: two system calls (the
        data, its checksums) on the replica the slot's reads go to."""
        length = len(dest)
        if offset % BLOCK or length % BLOCK:
            first = offset // BLOCK * BLOCK
            span = bytearray(-(-(offset + length) // BLOCK) * BLOCK - first)
            self.read_into(slot, first, memoryview(span), cipher, tweak)
            dest[:] = memoryview(span)[offset - first:offset - first + length]
            return
        first = offset // BLOCK
        stored = self._read_preferred(slot, first, dest)
        if stored is None:
            stored = self._read_any(slot, first, dest)
        if length == BLOCK:
            if stored != _NO_SUM and block_sum(dest) != stored:
                self._repair(slot, first, dest, stored)
        elif block_sums(dest) != stored:
            self._repair(slot, first, dest, stored)
        if cipher is not None:
            if later is None:
                cipher.decrypt_into(tweak + first, dest)
            else:
                later.append((cipher.decrypt_into, tweak + first, dest))

    def read_range(self, slot: int, offset: int, length: int) -> memoryview | None:
        """``length`` bytes at ``offset`` within a slot, every block verified, as
        a view of the preferred replica's slab file mapped into memory (no copy
        here; the socket send is the one copy), when they are in the page cache
        and intact. The range may go on into the next slots, :meth:`run_length`
        of them in all: they lie one after another in the same file, so one
        mincore, one checksum read and one view cover them (a 1 MiB read on
        2+2: 6 or 7 views, not 16). None when the careful path (:meth:`read`) must answer: not
        all cached (the event loop must not wait for a disk), damaged,
        unwritten blocks, or not a whole-block range of a local file.

        For the event loop only (it shares buffers between calls). The view
        reads the file as it is when read: hold ``VolumeManager.io()`` until
        it is consumed, so that its slot cannot be freed and reused meanwhile.
        Safety of the mapping: only pages found resident (mincore) are read
        here, so a fault never waits for (or fails on, SIGBUS) a disk read; a
        slab never shrinks (slots are punched, not truncated) and a replaced
        or wiped disk's old file stays mapped until its views are gone. A
        socket write from a view copies at write time and cannot fault."""
        pos = self._prefer[slot % len(self._prefer)]
        cached = self._files.get(pos)
        disk = self.store.disks[pos]
        if (cached is None or _mincore is None or not _NOWAIT or offset % BLOCK
                or length % BLOCK or not disk.online or length <= 0
                or offset + length > self._run[slot % len(self._run)] * CHUNK
                or cached[0] != getattr(disk, "generation", 0) or pos in self.untrusted):
            return None
        at = slot * CHUNK + offset
        mapped = self._maps.get(pos)
        if mapped is None or mapped[0] is not cached[1] or mapped[2] < at + length:
            mapped = self._map(pos, cached[1], at + length)
            if mapped is None:
                return None
        resident = self._resident
        count = length // _PAGE
        if (_mincore(mapped[3] + at, length, self._resident_at)
                or resident.translate(_RESIDENT).count(0, 0, count)):
            return None
        first = offset // BLOCK
        sums = memoryview(self._sums)[:length // BLOCK * SUM]
        try:
            got = os.preadv(cached[2].fd, [sums], (slot * BLOCKS + first) * SUM, _NOWAIT)
        except (OSError, AttributeError):  # not cached, failing: the careful path
            return None
        data = mapped[1][at:at + length]
        if got == len(sums) and block_sums(data) == sums:
            return data
        return None

    def release_view(self, view: memoryview) -> None:
        """Account a consumed :meth:`read_range` view; every ``RELEASE_BYTES``
        of them, unmap the slabs' pages from this process (MADV_DONTNEED: they
        stay in the page cache, and the next view maps them again). Mapped pages
        count in the server's RSS, the kernel maps whole page-cache folios
        around what a view touches (more than the view), and reading a volume
        would otherwise keep all of it mapped. A view still queued faults its
        pages back in when the socket copies it (a kernel copy: no SIGBUS)."""
        self._viewed += len(view)
        if self._viewed < RELEASE_BYTES:
            return
        self._viewed = 0
        for _, whole, size, _ in self._maps.values():
            try:
                whole.obj.madvise(mmap.MADV_DONTNEED, 0, size)
            except (OSError, ValueError):
                pass  # only the RSS figure is at stake

    def _map(self, pos: int, slab: BlockFile, end: int
             ) -> tuple[BlockFile, memoryview, int, int] | None:
        """Map a disk's slab file up to its current size (again when it has
        grown); None when it ends before ``end`` or cannot be mapped."""
        fd = getattr(slab, "fd", None)
        if fd is None:
            return None
        try:
            size = os.fstat(fd).st_size
            if size < end:
                return None
            mm = mmap.mmap(fd, size)
        except (OSError, ValueError):
            return None
        address = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        # Views are read-only: nothing can write the slab through them.
        mapped = (slab, memoryview(mm).toreadonly(), size, address)
        self._maps[pos] = mapped  # an older mapping lives on while views of it do
        return mapped

    def _repair(self, slot: int, first: int, dest: memoryview, stored: bytes) -> None:
        """Some block read is unwritten or damaged: recover the damaged ones."""
        for i in range(len(dest) // BLOCK):
            block = dest[i * BLOCK:(i + 1) * BLOCK]
            expect = stored[i * SUM:(i + 1) * SUM]
            if expect == _NO_SUM or block_sum(block) == expect:
                continue
            dest[i * BLOCK:(i + 1) * BLOCK] = self._recover_block(slot, first + i)

    def _read_preferred(self, slot: int, first: int, dest: memoryview) -> bytes | None:
        """The hot path: read from the replica this slot's reads go to when its
        files are open, of the disk's current generation and trusted; the
        stored checksums, or None to take the careful path."""
        pos = self._prefer[slot % len(self._prefer)]
        cached = self._files.get(pos)
        disk = self.store.disks[pos]
        if (cached is None or not disk.online or cached[0] != getattr(disk, "generation", 0)
                or pos in self.untrusted):
            return None
        count = len(dest) // BLOCK
        try:
            got = cached[1].preadinto(dest, slot * CHUNK + first * BLOCK)
            stored = cached[2].pread(count * SUM, (slot * BLOCKS + first) * SUM)
        except OSError:
            return None  # the careful path logs it and tries the other replicas
        if got < len(dest):  # past the end of the file: a hole, zeros
            dest[got:] = bytes(len(dest) - got)
        if len(stored) < count * SUM:
            stored += bytes(count * SUM - len(stored))
        return stored

    def _read_any(self, slot: int, first: int, dest: memoryview) -> bytes:
        """Read from the first replica that answers; disks being healed last."""
        replicas = self.positions(slot)
        # spread reads over the replicas, keep each block range on one disk;
        # disks still being healed only as a last resort
        order = replicas[slot % len(replicas):] + replicas[:slot % len(replicas)]
        for pos in order:
            self._disk_files(pos)  # opening a replaced disk's files is what marks it untrusted
        order.sort(key=lambda p: p in self.untrusted)
        for pos in order:
            stored = self._read_replica_into(pos, slot, first, dest)
            if stored is not None:
                return stored
        raise PoolError(f"slot {slot}: no replica readable")

    def _read_replica_into(self, pos: int, slot: int, first: int, dest: memoryview
                           ) -> bytes | None:
        """Read whole blocks into ``dest``; their stored checksums (None: disk failed)."""
        files = self._disk_files(pos)
        if files is None:
            return None
        slab, sums = files
        count = len(dest) // BLOCK
        try:
            got = slab.preadinto(dest, slot * CHUNK + first * BLOCK)
            stored = sums.pread(count * SUM, (slot * BLOCKS + first) * SUM)
        except OSError as exc:
            log.warning("volume read failed on disk %d: %s", pos, exc)
            return None
        if got < len(dest):  # past the end of the file: a hole, zeros
            dest[got:] = bytes(len(dest) - got)
        return stored + bytes(count * SUM - len(stored))

    def _recover_block(self, slot: int, block: int) -> bytes:
        """A good copy of one block from another replica; rewrite the bad ones."""
        candidates = []
        for pos in self.positions(slot):
            if pos in self.untrusted:
                continue
            got = self._read_replica(pos, slot, block, 1)
            if got is None:
                continue
            data, stored = got
            candidates.append((pos, bytes(data), stored))
        good = next((d for _, d, s in candidates if s != _NO_SUM and block_sum(d) == s), None)
        if good is None:
            # No replica matches its checksum: a write torn by a crash before it
            # was flushed. Its data is as good as any; keep the copy most
            # replicas hold and make it consistent.
            datas = [d for _, d, _ in candidates]
            if not datas:
                raise PoolError(f"slot {slot} block {block}: no replica readable")
            good = max(datas, key=datas.count)
        log.warning("volume block checksum mismatch (slot %d block %d): repairing", slot, block)
        for pos, data, stored in candidates:
            if data != good or stored != block_sum(good):
                self._write_replica(pos, slot, block, good, block_sum(good))
                self.repaired += 1
        return good

    # writes ------------------------------------------------------------------

    def _write_replica(self, pos: int, slot: int, first: int, data: bytes | memoryview,
                       sums: bytes, direct: bool = False) -> bool:
        files = self._disk_files(pos)
        if files is None:
            self.missed.add(pos)  # its copy is stale from now on: heal it when back
            return False
        slab, sumfile = files
        last = slot + (first * BLOCK + len(data) - 1) // CHUNK
        if last > self._top:
            self._raise_top(last)
        try:
            if direct:
                slab.pwrite_direct(data, slot * CHUNK + first * BLOCK)
            else:
                slab.pwrite(data, slot * CHUNK + first * BLOCK)
            sumfile.pwrite(sums, (slot * BLOCKS + first) * SUM)
        except OSError as exc:
            self._write_failed(pos, exc)
            return False
        self._dirty.add(pos)
        return True

    def _write_failed(self, pos: int, exc: OSError) -> None:
        """A replica's write failed: its copy is stale until healed (a full disk
        fails the request instead)."""
        if exc.errno == errno.ENOSPC:
            raise exc
        log.warning("volume write failed on disk %d: %s", pos, exc)
        self.missed.add(pos)

    def write(self, slot: int, offset: int, data: bytes | memoryview,
              cipher: VolumeCipher | None = None, tweak: int = 0) -> None:
        """Write ``data`` at ``offset`` within a slot on every replica (encrypted
        with ``cipher`` first, the slot's first block being volume block
        ``tweak``; a partial block is read, decrypted, changed and encrypted)."""
        data = memoryview(data)
        if not offset % BLOCK and not len(data) % BLOCK:
            if cipher is not None:
                data = memoryview(cipher.encrypt(tweak + offset // BLOCK, data))
            self._write_blocks(slot, offset // BLOCK, data, block_sums(data))
            return
        first, last = offset // BLOCK, (offset + len(data) - 1) // BLOCK
        head, tail = offset - first * BLOCK, (last + 1) * BLOCK - offset - len(data)
        partial = sorted({b for b, cut in ((first, head), (last, tail)) if cut})
        # Two writes into different bytes of one block each read-modify-write it:
        # without a lock per block, one would undo the other.
        locks = sorted({id(lk): lk for lk in (self._block_lock(slot, b) for b in partial)}
                       .items())
        for _, lock in locks:
            lock.acquire()
        try:
            buf = bytearray((last - first + 1) * BLOCK)
            self.read_into(slot, first * BLOCK, memoryview(buf), cipher, tweak)
            buf[head:head + len(data)] = data
            out = memoryview(buf if cipher is None else cipher.encrypt(tweak + first, buf))
            self._write_blocks(slot, first, out, block_sums(out))
        finally:
            for _, lock in reversed(locks):
                lock.release()

    def _write_blocks(self, slot: int, first: int, data: memoryview, sums: bytes) -> None:
        """Whole blocks and their checksums to every replica: two pwrites each.

        The hot path (every 4 KiB write) takes a disk's files straight from the
        cache when they are of its current generation and the disk is online,
        as :meth:`_read_preferred` does; else :meth:`_write_replica` opens them
        or records the disk as missing the write."""
        at, sum_at = slot * CHUNK + first * BLOCK, (slot * BLOCKS + first) * SUM
        files, disks, dirty = self._files, self.store.disks, self._dirty
        if slot > self._top:
            self._raise_top(slot)
        written = 0
        for pos in self._replica_sets[slot % self.n]:
            cached = files.get(pos)
            disk = disks[pos]
            if cached is None or not disk.online or cached[0] != getattr(disk, "generation", 0):
                written += self._write_replica(pos, slot, first, data, sums)
                continue
            try:
                cached[1].pwrite(data, at)
                cached[2].pwrite(sums, sum_at)
            except OSError as exc:
                self._write_failed(pos, exc)
                continue
            dirty.add(pos)
            written += 1
        if not written:
            raise PoolError(f"slot {slot}: no replica writable")

    def write_chunks(self, slot: int, data: memoryview, direct: bool = False) -> None:
        """Whole chunks (as stored) to the consecutive slots ``slot, slot+1, ...``.

        A disk holds runs of consecutive slots (R of every N): each run it
        holds here is one pwrite of data and one of checksums, not two per
        slot (a sequential 1 MiB write on 2+2: ~30 system calls, not 96).
        ``direct``: bulk data nobody is about to read (restores) goes past the
        page cache where the disk allows (``BlockFile.pwrite_direct``)."""
        count = len(data) // CHUNK
        sums = block_sums(data)
        runs: dict[int, list[list[int]]] = {}  # disk → [first, end) chunk indexes
        for i in range(count):
            for pos in self._replica_sets[(slot + i) % self.n]:
                held = runs.setdefault(pos, [])
                if held and held[-1][1] == i:
                    held[-1][1] = i + 1
                else:
                    held.append([i, i + 1])
        span = BLOCKS * SUM

        def to_disk(pos: int, held: list[list[int]]) -> list[list[int]]:
            return [[a, b] for a, b in held
                    if self._write_replica(pos, slot + a, 0, data[a * CHUNK:b * CHUNK],
                                           sums[a * span:b * span], direct)]

        if direct:  # each disk's writes wait on its device: the disks in parallel
            done = list(self._disk_writers().map(to_disk, runs, runs.values()))
        else:
            done = [to_disk(pos, held) for pos, held in runs.items()]
        written = [0] * count
        for ok in done:
            for a, b in ok:
                written[a:b] = [w + 1 for w in written[a:b]]
        if 0 in written:
            raise PoolError(f"slot {slot + written.index(0)}: no replica writable")

    def _disk_writers(self) -> concurrent.futures.ThreadPoolExecutor:
        """Threads for direct writes, made on first use (restores only)."""
        with self._lock:
            if self._writers is None:
                self._writers = concurrent.futures.ThreadPoolExecutor(
                    4 * self.n, thread_name_prefix="volume-disk")
            return self._writers

    def _block_lock(self, slot: int, block: int) -> threading.Lock:
        return self._block_locks[(slot * BLOCKS + block) % len(self._block_locks)]

    def clear(self, slot: int, offset: int = 0, length: int = CHUNK) -> None:
        """Make whole blocks of a slot read as zeros (holes, checksums unset).

        A whole slot past the end of a file is a hole already: a slot allocated
        for the first time (a restore or a fill allocates one per 64 KiB) costs
        no punch (a journal transaction on ext4), and above ``_top`` not even
        the fstat per file that tells."""
        first, count = offset // BLOCK, length // BLOCK
        whole = count == BLOCKS
        for pos in self.positions(slot):
            files = self._disk_files(pos)
            if files is None:
                continue
            slab, sums = files
            try:
                punched = False
                if not whole or (slot <= self._top and slab.size() > slot * CHUNK):
                    slab.punch(slot * CHUNK + first * BLOCK, count * BLOCK)
                    punched = True
                if not whole or (slot <= self._top and sums.size() > slot * BLOCKS * SUM):
                    sums.punch((slot * BLOCKS + first) * SUM, count * SUM)
                    punched = True
            except OSError as exc:
                log.warning("punching slot %d on disk %d failed: %s", slot, pos, exc)
                continue
            if punched:
                self._dirty.add(pos)

    def copy(self, src: int, dst: int) -> None:
        """Copy a whole slot (copy-on-write of a shared chunk)."""
        self.write(dst, 0, self.read(src, 0, CHUNK))

    def sync(self) -> None:
        """Make every write so far durable (fdatasync of the files written)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            files = [self._files[p] for p in dirty if p in self._files]
        for _, slab, sums in files:
            slab.sync()
            sums.sync()

    def heal(self, slots: Sequence[int]) -> int:
        """Rewrite the slots' blocks on replicas that lost or damaged them."""
        healed = 0
        for slot in slots:
            copies = {p: self._read_replica(p, slot, 0, BLOCKS) for p in self.positions(slot)}
            trusted = {p: c for p, c in copies.items() if p not in self.untrusted}
            for b in range(BLOCKS):
                views = {p: (bytes(c[0][b * BLOCK:(b + 1) * BLOCK]), c[1][b * SUM:(b + 1) * SUM])
                         for p, c in copies.items() if c is not None}
                good = next(((d, s) for p, (d, s) in views.items()
                             if p in trusted and s != _NO_SUM and block_sum(d) == s), None)
                if good is None:
                    continue  # never written anywhere, or unrecoverable: leave it
                for pos, (data, stored) in views.items():  # offline disks: healed later
                    if (data, stored) != good:
                        self._write_replica(pos, slot, b, good[0], good[1])
                        healed += 1
        return healed


RUN = 16  # slots a disk serves in a row when every disk holds every slot (1 MiB)


def _preferred_table(n: int, replicas: int) -> tuple[list[int], list[int]]:
    """The replica each slot's reads go to, and the run of slots from it on
    that go there too, over one period of slot numbers (the rule repeats).

    A disk's slab holds slot ``s`` at ``s * CHUNK``, so consecutive slots a
    disk holds lie one after another there, and a disk holds R (replicas)
    consecutive slots of every N. Reads of groups of R consecutive slots go to
    the one disk holding all of them (the group's last slot's first
    position), so that a large read is checked and sent in runs of R slots,
    not slot by slot. Groups end at multiples of R (slot 0 is read from its
    first position, as before), shifted by one more slot every lcm(N, R)
    slots when R and N share a factor (else some disks would serve nothing):
    every disk serves 1 of every N slots. When every disk holds every slot
    (N == R), groups of RUN slots rotate over the disks."""
    if n == replicas:
        prefer = [(s // RUN) % n for s in range(RUN * n)]
    else:
        d = math.gcd(n, replicas)
        cycle = n * replicas // d
        prefer = []
        for s in range(cycle * d):
            shift = (s // cycle) % d
            prefer.append((s + (shift - s) % replicas) % n)  # the group's last slot
    period = len(prefer)
    run = []
    for s in range(period):  # a run may go on into the next period, not round it
        k = 1
        while k < period and prefer[(s + k) % period] == prefer[s]:
            k += 1
        run.append(k)
    return prefer, run


def _created(disk, name: str) -> BlockFile:
    """A block file of a disk, created when missing."""
    file = disk.open_block_file(name)
    if file is None:
        raise OSError(errno.EIO, f"{name} could not be created on {disk!r}")
    return file


def _touch(disk, name: str) -> None:
    """Create an empty marker file on a disk."""
    _created(disk, name).close()


def _close(*files: BlockFile) -> None:
    for file in files:
        try:
            file.close()
        except OSError as exc:
            log.warning("closing a volume file failed: %s", exc)
