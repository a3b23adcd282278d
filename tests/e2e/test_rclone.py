"""rclone with its default settings (Debian's 1.60; scripts/test installs it):
sync and check, a file above its 200 MiB multipart cutoff, server-side copy and
move, deletions on a second sync, and a versioned bucket's old versions listed,
read, read as of a time, and cleaned up."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from .rclone import rclone_runner

BIG = 210_000_000  # above rclone's --s3-upload-cutoff (200 MiB): a multipart upload


@pytest.fixture(scope="module")
def server(basalt_http):
    return basalt_http


def write_tree(root) -> dict[str, bytes]:
    files = {"empty": b"", "a/b/sp ace +plus%.txt": b"odd name\n", "a/ünï.txt": b"utf-8\n",
             "big": os.urandom(BIG)}
    files.update({f"a/f{i}": os.urandom(i * 7_919) for i in range(20)})
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_sync_check_copy_move_and_deletions(server, tmp_path):
    rclone = rclone_runner(server, tmp_path)
    src = tmp_path / "src"
    files = write_tree(src)
    rclone("mkdir", "b:rclone-sync")
    rclone("sync", str(src), "b:rclone-sync/t")
    rclone("check", str(src), "b:rclone-sync/t")  # sizes and MD5s as the server reports them
    rclone("check", "--download", str(src), "b:rclone-sync/t")
    listed = rclone("lsf", "-R", "--files-only", "b:rclone-sync/t").stdout.splitlines()
    assert sorted(listed) == sorted(files)
    md5 = rclone("md5sum", "b:rclone-sync/t/big").stdout.split()[0]
    assert md5 == hashlib.md5(files["big"]).hexdigest()
    s3 = server.client()
    assert s3.head_object(Bucket="rclone-sync", Key="t/big")["ETag"].strip('"').endswith("-41")  # 5 MiB parts

    # server-side copy of the multipart object, and a move
    rclone("copyto", "b:rclone-sync/t/big", "b:rclone-sync/u/big2")
    rclone("moveto", "b:rclone-sync/t/a/f3", "b:rclone-sync/u/f3moved")
    moved = {line.split()[1]: line.split()[0]
             for line in rclone("md5sum", "b:rclone-sync/u").stdout.splitlines()}
    assert moved == {"big2": md5, "f3moved": hashlib.md5(files["a/f3"]).hexdigest()}
    assert "a/f3" not in rclone("lsf", "-R", "b:rclone-sync/t").stdout.splitlines()

    # a second sync deletes and replaces
    (src / "a/f5").unlink()
    (src / "a/f6").write_bytes(b"changed")
    rclone("sync", str(src), "b:rclone-sync/t")
    rclone("check", "--download", str(src), "b:rclone-sync/t")
    out = tmp_path / "out"
    rclone("copy", "b:rclone-sync/t", str(out))
    assert (out / "a/f6").read_bytes() == b"changed" and not (out / "a/f5").exists()
    assert (out / "a/b/sp ace +plus%.txt").read_bytes() == files["a/b/sp ace +plus%.txt"]

    rclone("purge", "b:rclone-sync/u")
    assert rclone("lsf", "b:rclone-sync/u").stdout == ""


def test_versions_listed_read_and_cleaned_up(server, tmp_path):
    rclone = rclone_runner(server, tmp_path)
    rclone("mkdir", "b:rclone-versions")
    rclone("backend", "versioning", "b:rclone-versions", "Enabled")
    assert rclone("backend", "versioning", "b:rclone-versions").stdout.strip() == "Enabled"
    local = tmp_path / "f.txt"
    local.write_text("first\n")
    rclone("copyto", str(local), "b:rclone-versions/d/f.txt")
    time.sleep(1.5)
    between = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    time.sleep(1.5)
    local.write_text("second\n")
    rclone("copyto", str(local), "b:rclone-versions/d/f.txt")
    assert rclone("cat", "b:rclone-versions/d").stdout == "second\n"
    assert rclone("cat", "--s3-version-at", between, "b:rclone-versions/d").stdout == "first\n"

    rclone("delete", "b:rclone-versions/d/f.txt")
    assert rclone("lsf", "b:rclone-versions/d").stdout == ""
    names = rclone("lsf", "--s3-versions", "b:rclone-versions/d").stdout.splitlines()
    assert len(names) == 2 and all(n.startswith("f-v") and n.endswith(".txt") for n in names)
    out = tmp_path / "out"
    rclone("copy", "--s3-versions", "b:rclone-versions/d", str(out))
    assert sorted(p.read_text() for p in out.iterdir()) == ["first\n", "second\n"]

    rclone("backend", "cleanup-hidden", "b:rclone-versions")
    assert rclone("lsf", "--s3-versions", "b:rclone-versions/d").stdout == ""
    s3 = server.client()
    assert "Versions" not in s3.list_object_versions(Bucket="rclone-versions")
