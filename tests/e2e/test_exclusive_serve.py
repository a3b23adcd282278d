"""Operating safely: one `basalt serve` per data dir and per disk, and disks whose
mount failed are never formatted or written (real servers, real NBD clients, a
real tmpfs mount when run as root)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from .conftest import BASALT, free_port, start_server, stop_server
from .nbd_e2e_helpers import MiB, new_volume, require, run, uri, write_file

ONE_WORKER = ("--workers", "1")
NOT_MOUNTED = "not mounted (was a mount point when formatted)"


def second_serve(server, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    """Another `basalt serve` on other ports; returns its result and how long it took."""
    args = [BASALT, "serve", "--s3-address", f"127.0.0.1:{free_port()}",
            "--nbd-address", f"127.0.0.1:{free_port()}", *extra]
    started = time.monotonic()
    try:
        out = subprocess.run(args, env=server.env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:  # it started serving: the bug itself
        raise AssertionError("a second basalt serve did not exit") from exc
    return out, time.monotonic() - started


def refused(out: subprocess.CompletedProcess, elapsed: float, what: str, path: str, pid: int):
    assert out.returncode != 0, out
    assert elapsed < 10, f"took {elapsed:.1f} s to refuse"
    assert f"{what} {path} is in use by basalt serve (pid {pid})" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "serving" not in out.stdout, out


def touched(data_dir: str) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of the files a second server must leave alone."""
    names = ["basalt.json", "credentials.json", "run/owner.sock", "run/nbd.sock"]
    names += [f"disks/disk{i}/format.json" for i in range(4)]
    out = {}
    for name in names:
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            st = os.stat(path)
            out[name] = (st.st_ino, st.st_mtime_ns)
    assert "basalt.json" in out and "disks/disk0/format.json" in out, out
    return out


def sha256_of_volume(server, name: str, dest) -> str:
    run("nbdcopy", uri(server, name), str(dest), timeout=300)
    with open(dest, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def health(server) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(server.endpoint + "/_basalt/health", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def disk_entry(server, path: str) -> dict:
    _, body = health(server)
    entries = [d for d in body["disks"] if d["path"] == path]
    assert len(entries) == 1, body
    return entries[0]


def put_objects(server, bucket: str) -> dict[str, bytes]:
    s3 = server.client()
    s3.create_bucket(Bucket=bucket)
    blobs = {f"k{i}": os.urandom(size) for i, size in enumerate([0, 100, 300_000, 3_000_000])}
    for key, data in blobs.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    return blobs


def check_objects(server, bucket: str, blobs: dict[str, bytes]) -> None:
    s3 = server.client()
    for key, data in blobs.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data, key


def test_second_server_on_the_data_dir_is_refused_while_a_volume_write_runs(tmp_path):
    require("nbdcopy")
    server = start_server(str(tmp_path), extra=ONE_WORKER)
    try:
        run_dir = os.path.join(server.data_dir, "run")
        sockets = [os.path.join(run_dir, "owner.sock"), os.path.join(run_dir, "nbd.sock")]
        assert all(os.path.exists(s) for s in sockets)
        size = 48 * MiB
        new_volume(server, "busy", size)
        data = os.urandom(size)
        src = write_file(tmp_path / "src.raw", data)
        writer = subprocess.Popen(["nbdcopy", "-C", "2", "--flush", src, uri(server, "busy")],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            before = touched(server.data_dir)
            out, elapsed = second_serve(server, "--data-dir", server.data_dir)
            refused(out, elapsed, "data dir", server.data_dir, server.proc.pid)
            assert all(os.path.exists(s) for s in sockets)
            assert touched(server.data_dir) == before  # settings, credentials, formats
            assert writer.wait(300) == 0, writer.stdout.read()
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        expected = hashlib.sha256(data).hexdigest()
        assert sha256_of_volume(server, "busy", tmp_path / "back.raw") == expected
        # The first server still answers volume commands (its owner socket is its
        # own) and S3.
        listed = json.loads(server.cli("volume", "list", "--json").stdout)
        assert "busy" in json.dumps(listed)
        blobs = put_objects(server, "still-serving")
        check_objects(server, "still-serving", blobs)
        stop_server(server)
        server = start_server(str(tmp_path), extra=ONE_WORKER)
        assert sha256_of_volume(server, "busy", tmp_path / "again.raw") == expected
        check_objects(server, "still-serving", blobs)
    finally:
        stop_server(server)


def test_second_server_sharing_one_disk_is_refused(tmp_path):
    disks = [str(tmp_path / "disks" / f"d{i}") for i in range(4)]
    extra = [a for d in disks for a in ("--disk", d)]
    server = start_server(str(tmp_path / "a"), extra=(*ONE_WORKER, *extra))
    try:
        blobs = put_objects(server, "shared")
        before = sorted(os.listdir(disks[2]))
        with open(os.path.join(disks[2], "format.json")) as f:
            fmt = f.read()
        theirs = [str(tmp_path / "b-disks" / f"d{i}") for i in range(3)] + [disks[2]]
        out, elapsed = second_serve(server, "--data-dir", str(tmp_path / "b" / "data"),
                                    *[a for d in theirs for a in ("--disk", d)])
        refused(out, elapsed, "disk", disks[2], server.proc.pid)
        assert not os.path.exists(tmp_path / "b-disks")  # none of its disks was touched
        assert sorted(os.listdir(disks[2])) == before
        with open(os.path.join(disks[2], "format.json")) as f:
            assert f.read() == fmt
        check_objects(server, "shared", blobs)
    finally:
        stop_server(server)


def test_unmounted_tmpfs_disk_stays_empty_and_offline(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disks = [str(tmp_path / "disks" / f"d{i}") for i in range(4)]
    for d in disks:
        os.makedirs(d)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", disks[1]],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount is not permitted here: {mounted.stderr.strip()}")
    server = None
    try:
        extra = (*ONE_WORKER, *[a for d in disks for a in ("--disk", d)])
        server = start_server(str(tmp_path), extra=extra)
        blobs = put_objects(server, "mounted")
        assert os.path.exists(os.path.join(disks[1], "format.json"))
        stop_server(server)
        server = None
        run("umount", disks[1])
        mounted = None
        assert os.listdir(disks[1]) == []
        server = start_server(str(tmp_path), extra=extra)
        time.sleep(3)  # a few passes of the disk watcher
        assert os.listdir(disks[1]) == []  # no format.json, nothing written
        entry = disk_entry(server, disks[1])
        assert entry["state"] == "offline" and entry["reason"] == NOT_MOUNTED, entry
        status, body = health(server)
        assert (status, body["status"]) == (200, "degraded"), body
        check_objects(server, "mounted", blobs)
        s3 = server.client()
        s3.put_object(Bucket="mounted", Key="later", Body=b"written while it is away")
        assert os.listdir(disks[1]) == []
        assert NOT_MOUNTED in server.log()
    finally:
        if server is not None:
            stop_server(server)
        if mounted is not None:
            subprocess.run(["umount", disks[1]], capture_output=True)


def test_missing_disk_path_is_not_recreated(tmp_path):
    disks = [str(tmp_path / "disks" / f"d{i}") for i in range(4)]
    extra = (*ONE_WORKER, *[a for d in disks for a in ("--disk", d)])
    server = start_server(str(tmp_path), extra=extra)  # first format creates them
    try:
        assert all(os.path.exists(os.path.join(d, "format.json")) for d in disks)
        blobs = put_objects(server, "missing")
        stop_server(server)
        shutil.rmtree(disks[2])
        server = start_server(str(tmp_path), extra=extra)
        time.sleep(3)
        assert not os.path.exists(disks[2])
        entry = disk_entry(server, disks[2])
        assert entry["state"] == "offline" and entry["reason"].startswith("missing"), entry
        check_objects(server, "missing", blobs)
    finally:
        stop_server(server)
