"""Block files: a disk's raw files for another service (block volumes), by offset.

A :class:`BlockFile` is what :meth:`Disk.open_block_file` hands out instead of
a file descriptor, so that a disk on another host only needs one more
implementation of it. :class:`LocalBlockFile` wraps an fd of a local file.

These calls sit on the 4 KiB random I/O path of every volume: the local
implementation is one system call each, with nothing allocated beyond what
``os.pread`` returns. They block; call them from worker threads.
"""

from __future__ import annotations

import abc
import ctypes
import ctypes.util
import errno
import os
import threading

_FALLOC_PUNCH = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_NO_PUNCH = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
_ZEROS_STEP = 1 << 20  # the zero-fill fallback writes at most this much at once

# O_DIRECT wants the buffer's address, the length and the offset aligned to the
# device's logical block size; 4 KiB covers every disk's.
DIRECT_ALIGN = 4096

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int


class BlockFile(abc.ABC):
    """A file addressed by offset: read, write, punch holes, make durable.

    Reading past the end returns fewer bytes (the caller treats the rest as a
    hole: zeros). Every failure, a full disk (``ENOSPC``) included, is an
    :class:`OSError`. Not positioned: calls from several threads may overlap.
    """

    __slots__ = ()

    @abc.abstractmethod
    def pread(self, length: int, offset: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (short only at the end of the file)."""

    @abc.abstractmethod
    def preadinto(self, buf: bytearray | memoryview, offset: int) -> int:
        """Fill the writable ``buf`` from ``offset``; bytes read (short only at the end)."""

    @abc.abstractmethod
    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Write all of ``data`` at ``offset`` (growing the file as needed)."""

    def pwrite_direct(self, data: bytearray | memoryview, offset: int) -> None:
        """:meth:`pwrite` for bulk data nobody is about to read (a restore):
        past the page cache where the file allows it. The same durability as
        :meth:`pwrite`: :meth:`sync` makes it durable."""
        self.pwrite(data, offset)

    @abc.abstractmethod
    def punch(self, offset: int, length: int) -> None:
        """Make a range read as zeros and free its space, keeping the file's size.

        Where the filesystem cannot deallocate, the range is overwritten with zeros."""

    @abc.abstractmethod
    def sync(self) -> None:
        """Make every write so far durable (fdatasync)."""

    @abc.abstractmethod
    def size(self) -> int: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Release the file; closing twice is harmless, any other call then fails."""

    def __enter__(self) -> BlockFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalBlockFile(BlockFile):
    """A block file that is an open fd of a local file (owned: closed by :meth:`close`)."""

    __slots__ = ("fd", "_direct")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._direct: int | None = None  # an O_DIRECT fd of the file; -1: none here

    def __repr__(self) -> str:
        return f"LocalBlockFile(fd={self.fd})"

    def pread(self, length: int, offset: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def preadinto(self, buf: bytearray | memoryview, offset: int) -> int:
        return os.preadv(self.fd, [buf], offset)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        done = os.pwrite(self.fd, data, offset)
        if done == len(data):
            return
        # A short write (the disk filling up, a file size limit): go on until
        # the rest is written or the error shows.
        view = memoryview(data).cast("B")
        while done < len(view):
            wrote = os.pwrite(self.fd, view[done:], offset + done)
            if wrote == 0:
                raise OSError(errno.EIO, "write made no progress")
            done += wrote

    def pwrite_direct(self, data: bytearray | memoryview, offset: int) -> None:
        """O_DIRECT when ``data`` (writable), its length and ``offset`` are
        :data:`DIRECT_ALIGN`-aligned and the filesystem takes it; else :meth:`pwrite`.

        Why: a restore writes every byte M+1 times; through the page cache each
        copy costs a memcpy into fresh pages and dirty-page throttling, and the
        pages push out what the cache held. The kernel writes back and drops any
        cached pages of the range around a direct write, so buffered readers and
        mappings of the file stay coherent."""
        view = memoryview(data).cast("B")
        fd = self._direct if self._direct is not None else self._open_direct()
        if fd < 0 or (offset | len(view)) % DIRECT_ALIGN or not _aligned(view):
            self.pwrite(view, offset)
            return
        try:
            done = os.pwrite(fd, view, offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # ENOSPC, EIO: as pwrite would fail
                raise
            done = 0  # the filesystem's alignment rules are stricter: buffered
        if done < len(view):  # short (a filling disk): the rest, or the error
            self.pwrite(view[done:], offset + done)

    def direct_capable(self) -> bool:
        """Whether this file can be opened for O_DIRECT here (not on tmpfs)."""
        return self._open_direct() >= 0

    def _open_direct(self) -> int:
        """A second, O_DIRECT, description of this file (-1 where unsupported)."""
        with _DIRECT_LOCK:
            if self._direct is None:
                try:
                    self._direct = os.open(f"/proc/self/fd/{self.fd}",
                                           os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
                except (OSError, AttributeError):  # tmpfs, no /proc, not Linux
                    self._direct = -1
            return self._direct

    def punch(self, offset: int, length: int) -> None:
        if length <= 0:
            return
        if _fallocate is not None:
            if _fallocate(self.fd, _FALLOC_PUNCH, offset, length) == 0:
                return
            err = ctypes.get_errno()
            if err not in _NO_PUNCH:
                raise OSError(err, os.strerror(err))
        # No hole punching here: write zeros over what exists, keep the size.
        end = min(offset + length, self.size())
        while offset < end:
            step = min(end - offset, _ZEROS_STEP)
            self.pwrite(bytes(step), offset)
            offset += step

    def sync(self) -> None:
        fd = self.fd
        if fd < 0:  # os.fdatasync takes a closed file (-1) for a ValueError
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        os.fdatasync(fd)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
        direct, self._direct = self._direct, -1
        if direct is not None and direct >= 0:
            os.close(direct)


_DIRECT_LOCK = threading.Lock()


def _aligned(view: memoryview) -> bool:
    """Whether a writable buffer starts on a DIRECT_ALIGN boundary."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view)) % DIRECT_ALIGN == 0
    except (TypeError, ValueError):  # read-only or empty: not for O_DIRECT
        return False
