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

_FALLOC_PUNCH = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_NO_PUNCH = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
_ZEROS_STEP = 1 << 20  # the zero-fill fallback writes at most this much at once

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

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

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
