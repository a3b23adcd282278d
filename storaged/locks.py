"""One server per data dir and per disk: exclusive ``flock`` locks held for life.

* The data dir is locked through ``DATA_DIR/basalt.lock``, a file holding the
  holder's pid (rewritten by each holder; never fsynced: it is only a hint).
* A disk is locked on its directory itself (``flock`` on a directory fd), so
  locking writes nothing on the disk: an unmounted disk's mount point stays
  empty. The holder's pid is then found in ``/proc/locks``.

The kernel drops the locks when the holder exits, however it exits, so a stale
lock never needs cleaning up. Descriptors are close-on-exec: workers and the
daemons the server starts do not inherit (and prolong) them.
"""

from __future__ import annotations

import fcntl
import os
import zlib
from collections.abc import Iterable

from .errors import StorageError

LOCK_FILE = "basalt.lock"


class InUse(StorageError):
    """Another process holds the data dir or a disk."""


def holder_pid(fd: int) -> int | None:
    """The pid holding a ``flock`` on the file behind ``fd``, from ``/proc/locks``."""
    st = os.fstat(fd)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" ("->" marks waiters)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == ident and fields[4] != "0":
            return int(fields[4])
    return None


def _busy(what: str, path: str, pid: int | None) -> InUse:
    holder = f"basalt serve (pid {pid})" if pid else "another basalt serve"
    return InUse(f"{what} {path} is in use by {holder}")


def _flock(fd: int, what: str, path: str, pid_hint: int | None = None) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = holder_pid(fd) or pid_hint
        os.close(fd)
        raise _busy(what, path, pid) from None
    except OSError:
        os.close(fd)
        raise


class Locks:
    """The locks of one server; :meth:`release` (or exit) frees them."""

    def __init__(self) -> None:
        self.paths: dict[str, int] = {}  # realpath → fd

    def lock_data_dir(self, data_dir: str) -> None:
        """Lock ``data_dir`` (created when missing) and record our pid in it."""
        os.makedirs(data_dir, exist_ok=True)
        path = os.path.join(data_dir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        _flock(fd, "data dir", data_dir, _read_pid(fd))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.paths[os.path.realpath(path)] = fd

    def lock_disks(self, roots: Iterable[str]) -> None:
        """Lock each existing disk directory; missing ones are skipped (nothing
        is created here: whether they may be is the store's decision)."""
        for root in roots:
            real = os.path.realpath(root)
            if real in self.paths:
                continue
            try:
                fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                continue
            _flock(fd, "disk", root)
            self.paths[real] = fd

    def release(self) -> None:
        for fd in self.paths.values():
            os.close(fd)  # closing the last descriptor drops the flock
        self.paths.clear()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def lock_server(data_dir: str, disks: Iterable[str]) -> Locks:
    """Lock the data dir, then every existing disk; raises :class:`InUse` (having
    released what it took) when another server holds any of them."""
    locks = Locks()
    try:
        locks.lock_data_dir(data_dir)
        locks.lock_disks(disks)
    except BaseException:
        locks.release()
        raise
    return locks


class KeyLocks:
    """Serialise changes to one object across the server's processes.

    Removing a version and changing its retention or legal hold read the
    version, check object lock, then write: two such changes racing in two
    worker processes must not both pass the check on what the other is about
    to change. Keys hash onto ``SLOTS`` lock files in ``directory`` (taken with
    ``flock`` in a thread, so the event loop keeps serving while it waits).
    """

    SLOTS = 256

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory

    def acquire(self, bucket: str, key: str) -> int:
        """Block until this process holds the key's slot; returns the fd to release."""
        slot = zlib.crc32(f"{bucket}/{key}".encode()) % self.SLOTS
        fd = os.open(os.path.join(self.directory, f"{slot:03d}"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)  # closing drops the flock
