"""One server per data dir and per disk: flock locks with the holder's pid."""

import os
import subprocess
import sys
import textwrap

import pytest

from storaged import InUse, lock_server
from storaged.locks import LOCK_FILE, Locks, holder_pid


def hold_in_child(data_dir, disks):
    """Another process holding the locks (flock conflicts across open files,
    but a separate process is what a second server really is)."""
    code = textwrap.dedent(f"""
        import sys, time
        from storaged import lock_server
        lock_server({data_dir!r}, {disks!r})
        print("locked", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    assert proc.stdout.readline().strip() == "locked"
    return proc


def release(proc):
    proc.stdin.close()
    proc.wait(10)


def test_second_holder_of_the_data_dir_is_refused_with_the_pid(tmp_path):
    data = str(tmp_path / "data")
    proc = hold_in_child(data, [])
    try:
        with open(os.path.join(data, LOCK_FILE)) as f:
            assert f.read().strip() == str(proc.pid)
        with pytest.raises(InUse, match=f"data dir {data} is in use by basalt serve "
                                        rf"\(pid {proc.pid}\)"):
            lock_server(data, [])
    finally:
        release(proc)
    # The kernel dropped the lock with the process: no stale lock to clean up.
    locks = lock_server(data, [])
    with open(os.path.join(data, LOCK_FILE)) as f:
        assert f.read().strip() == str(os.getpid())
    locks.release()


def test_a_shared_disk_is_refused_and_nothing_is_written_on_it(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = hold_in_child(str(tmp_path / "a"), [str(disk)])
    try:
        assert os.listdir(disk) == []  # the directory itself is locked, no file in it
        with pytest.raises(InUse, match=rf"disk {disk} is in use by basalt serve \(pid {proc.pid}\)"):
            lock_server(str(tmp_path / "b"), [str(tmp_path / "other"), str(disk)])
        # What the refused attempt took is released again.
        lock_server(str(tmp_path / "b"), []).release()
    finally:
        release(proc)
    assert os.listdir(disk) == []
    lock_server(str(tmp_path / "b"), [str(disk)]).release()


def test_missing_disks_are_not_created(tmp_path):
    locks = lock_server(str(tmp_path / "data"), [str(tmp_path / "absent")])
    try:
        assert not (tmp_path / "absent").exists()
        (tmp_path / "absent").mkdir()
        locks.lock_disks([str(tmp_path / "absent")])  # once it exists (first format)
        assert len(locks.paths) == 2
    finally:
        locks.release()


def test_holder_pid_reads_proc_locks(tmp_path):
    locks = Locks()
    locks.lock_data_dir(str(tmp_path))
    try:
        fd = os.open(tmp_path / LOCK_FILE, os.O_RDONLY)
        try:
            assert holder_pid(fd) in (os.getpid(), None)  # None only without /proc/locks
        finally:
            os.close(fd)
    finally:
        locks.release()
