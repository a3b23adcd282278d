"""restic (the Debian package) backing up to `basalt serve` and restoring, over HTTP and HTTPS.

Written against Debian 12's restic 0.14.0. restic is given only what any user must give: the repository as
``s3:<endpoint>/<bucket>/<prefix>`` (restic's form for a custom S3 endpoint),
a repository password, AWS-style credentials and, over HTTPS, ``--cacert`` with
the test CA. Nothing else from the environment reaches it (a private HOME and
cache dir), so a developer's own restic or AWS settings cannot leak in.

Each test backs up a generated tree of 2,000 files (nested directories, unicode
names, sizes 0..200 KiB, mostly small, plus a few MiB-sized files) and checks
that restores are byte-identical, file list and sha256 of every file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import uuid

import pytest

KIB, MIB = 1024, 1 << 20
RESTIC = shutil.which("restic")

# Directory and file name pieces, some of them unicode (NFC and otherwise),
# with spaces, to check that names survive the round trip through S3 keys.
NAMES = ["alpha", "beta", "données", "日本語", "Ελληνικά", "emoji 🎉", "with space",
         "naïve-café", "résumé", "Ω", "z"]


@pytest.fixture(scope="module", autouse=True)
def _restic_installed():
    if RESTIC is None:
        pytest.fail("restic is not installed: apt-get install -y restic")


class Restic:
    """Runs restic against one repository on one Basalt server."""

    def __init__(self, server, tmp: str, bucket: str, prefix: str):
        self.server = server
        self.repo = f"s3:{server.endpoint}/{bucket}/{prefix}"
        home = os.path.join(tmp, "restic-home")
        os.makedirs(home, exist_ok=True)
        senv = server.env
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "RESTIC_CACHE_DIR": os.path.join(home, "cache"),
            "RESTIC_REPOSITORY": self.repo,
            "RESTIC_PASSWORD": "basalt-restic-test-password",
            "AWS_ACCESS_KEY_ID": senv["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": senv["AWS_SECRET_ACCESS_KEY"],
        }

    def __call__(self, *args: str, cwd: str | None = None, check: bool = True,
                 timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = [RESTIC]
        if self.server.ca_path:
            cmd += ["--cacert", self.server.ca_path]
        cmd += list(args)
        out = subprocess.run(cmd, env=self.env, cwd=cwd, capture_output=True, text=True,
                             timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(
                f"restic {' '.join(args)} exited {out.returncode}\n"
                f"stdout:\n{out.stdout[-4000:]}\nstderr:\n{out.stderr[-4000:]}\n"
                f"failed requests in the server log:\n{failed_requests(self.server)}")
        # restic retries failed backend calls quietly ("... returned error, retrying
        # after ..."): a clean run must not have needed any.
        assert "retrying" not in out.stderr, out.stderr[-4000:]
        return out


def failed_requests(server, n: int = 40) -> str:
    """The last request lines of the server log whose status is 4xx or 5xx."""
    lines = [ln for ln in server.log().splitlines() if re.search(r" status=[45]\d\d ", ln)]
    return "\n".join(lines[-n:]) or "(none)"


def assert_no_server_errors(server) -> None:
    errors = [ln for ln in server.log().splitlines() if re.search(r" status=5\d\d ", ln)]
    assert not errors, "\n".join(errors[-20:])


def make_tree(root: str, seed: int, files: int = 2000) -> None:
    rnd = random.Random(seed)
    dirs = [""]
    for i in range(120):  # nested directories, up to 5 deep
        parent = rnd.choice(dirs)
        if parent.count(os.sep) >= 4:
            parent = ""
        dirs.append(os.path.join(parent, f"{rnd.choice(NAMES)}-{i}"))
    for d in dirs:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.makedirs(os.path.join(root, "empty dir", "deeper"), exist_ok=True)
    big = {rnd.randrange(files) for _ in range(5)}
    for i in range(files):
        if i in big:
            size = rnd.randrange(1 * MIB, 6 * MIB)
        else:
            r = rnd.random()
            size = (0 if r < 0.05 else rnd.randrange(1, 4 * KIB) if r < 0.6
                    else rnd.randrange(4 * KIB, 32 * KIB) if r < 0.9
                    else rnd.randrange(32 * KIB, 200 * KIB + 1))
        name = f"{rnd.choice(NAMES)}-f{i}{rnd.choice(['', '.txt', '.bin', '.日志'])}"
        with open(os.path.join(root, rnd.choice(dirs), name), "wb") as f:
            f.write(rnd.randbytes(size))


def change_tree(root: str, seed: int) -> None:
    """Rewrite, grow, truncate, delete and add files (one new MiB-sized file too)."""
    rnd = random.Random(seed)
    paths = sorted(manifest(root)[0])
    for rel in rnd.sample(paths, 80):
        full = os.path.join(root, rel)
        action = rnd.choice(["rewrite", "append", "truncate", "delete"])
        if action == "delete":
            os.remove(full)
        elif action == "append":
            with open(full, "ab") as f:
                f.write(rnd.randbytes(rnd.randrange(1, 64 * KIB)))
        elif action == "truncate":
            os.truncate(full, os.path.getsize(full) // 2)
            with open(full, "ab") as f:
                f.write(b"x")  # same-or-smaller size, new content
        else:
            with open(full, "wb") as f:
                f.write(rnd.randbytes(rnd.randrange(0, 200 * KIB)))
    os.makedirs(os.path.join(root, "new ñew 新しい"), exist_ok=True)
    for i in range(30):
        with open(os.path.join(root, "new ñew 新しい", f"added-{i}"), "wb") as f:
            f.write(rnd.randbytes(rnd.randrange(0, 100 * KIB)))
    with open(os.path.join(root, "new ñew 新しい", "big-added.bin"), "wb") as f:
        f.write(rnd.randbytes(3 * MIB + 12345))


def manifest(root: str) -> tuple[dict[str, str], set[str]]:
    """{relative file path: sha256} and the set of relative directory paths."""
    files, dirs = {}, set()
    for dirpath, _dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel != ".":
            dirs.add(rel)
        for name in filenames:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                files[os.path.normpath(os.path.join(rel, name))] = hashlib.file_digest(
                    f, "sha256").hexdigest()
    return files, dirs


def restore_and_compare(restic: Restic, src: str, target: str, cwd: str) -> None:
    restic("restore", "latest", "--target", target, cwd=cwd)
    # restic recreates the backed-up path below the target.
    restored = os.path.join(target, os.path.relpath(src, "/"))
    assert os.path.isdir(restored), os.listdir(target)
    want_files, want_dirs = manifest(src)
    got_files, got_dirs = manifest(restored)
    assert sorted(got_files) == sorted(want_files)
    assert got_dirs == want_dirs
    diff = [p for p in want_files if got_files[p] != want_files[p]]
    assert not diff, f"{len(diff)} files differ, e.g. {diff[:5]}"


def check_read_data(restic: Restic) -> None:
    out = restic("check", "--read-data")
    assert "no errors were found" in out.stdout, out.stdout[-2000:]


def snapshots(restic: Restic) -> list[dict]:
    return json.loads(restic("snapshots", "--json").stdout)


def test_backup_restore_change_forget_prune(basalt, tmp_path):
    tmp = str(tmp_path)
    src = os.path.join(tmp, "src")
    make_tree(src, seed=1)
    bucket = f"restic-{uuid.uuid4().hex[:10]}"
    restic = Restic(basalt, tmp, bucket, "host-a/repo")

    restic("init")  # restic creates the bucket itself
    basalt.client().head_bucket(Bucket=bucket)
    restic("backup", src, cwd=tmp)
    snaps = snapshots(restic)
    assert len(snaps) == 1 and snaps[0]["paths"] == [src]
    first = snaps[0]["id"]
    # The repository lives under the prefix and nowhere else in the bucket.
    keys = [o["Key"] for page in basalt.client().get_paginator("list_objects_v2").paginate(
        Bucket=bucket) for o in page.get("Contents", [])]
    assert keys and all(k.startswith("host-a/repo/") for k in keys)
    assert "host-a/repo/config" in keys

    restore_and_compare(restic, src, os.path.join(tmp, "restore-1"), tmp)
    check_read_data(restic)

    change_tree(src, seed=2)
    restic("backup", src, cwd=tmp)
    snaps = snapshots(restic)
    assert len(snaps) == 2
    restic("forget", "--keep-last", "1", "--prune")
    snaps = snapshots(restic)
    assert len(snaps) == 1 and snaps[0]["id"] != first
    check_read_data(restic)
    restore_and_compare(restic, src, os.path.join(tmp, "restore-2"), tmp)
    assert_no_server_errors(basalt)


def test_disk_loss_heal_then_check_and_restore(basalt, tmp_path):
    tmp = str(tmp_path)
    src = os.path.join(tmp, "src")
    make_tree(src, seed=3)
    bucket = f"restic-{uuid.uuid4().hex[:10]}"
    basalt.client().create_bucket(Bucket=bucket)
    restic = Restic(basalt, tmp, bucket, "repo")
    restic("init")
    restic("backup", src, cwd=tmp)

    disk = os.path.join(basalt.data_dir, "disks", "disk1")
    shards = disk_files(disk, "data")
    assert shards, "the backup left no shard files on disk1"
    shutil.rmtree(disk)  # the server keeps serving

    # Still fully readable with one disk gone (the server may already be healing
    # it in the background; either way restic must see nothing wrong).
    check_read_data(restic)
    basalt.cli("heal")  # asserts exit 0
    # The wiped disk is back: formatted again and holding every shard it had.
    assert os.path.isfile(os.path.join(disk, "format.json"))
    rebuilt = disk_files(disk, "data")
    assert {p: n for p, n in rebuilt.items() if p in shards} == shards
    check_read_data(restic)
    restore_and_compare(restic, src, os.path.join(tmp, "restore-after-heal"), tmp)
    # ...and writable: an incremental backup after the heal still works.
    change_tree(src, seed=4)
    restic("backup", src, cwd=tmp)
    assert len(snapshots(restic)) == 2
    check_read_data(restic)
    restore_and_compare(restic, src, os.path.join(tmp, "restore-after-heal-2"), tmp)
    assert_no_server_errors(basalt)


def disk_files(disk: str, sub: str) -> dict[str, int]:
    """{path below disk: size} of the files under disk/sub (the object shard files)."""
    top = os.path.join(disk, sub)
    return {os.path.relpath(os.path.join(p, f), disk): os.path.getsize(os.path.join(p, f))
            for p, _, fs in os.walk(top) for f in fs}
