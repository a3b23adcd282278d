"""restic (Debian's 0.14.0) on a versioned bucket with object lock and a default retention.

The bucket is made as a ransomware-proof restic target is: CreateBucket with
object lock enabled (which turns versioning on) and a default retention of
GOVERNANCE for one day, so every file restic writes is locked on arrival.
restic is driven exactly as in test_restic.py (its ``Restic`` runner: private
HOME and cache, repository URL ``s3:<endpoint>/<bucket>/<prefix>``, password).

restic itself must not notice the lock: ``forget --prune`` deletes snapshot,
index and pack files, and in a versioned bucket a DELETE without a version id
only adds a delete marker, which object lock allows. The test then proves what
the lock is for: the files restic deleted are still there as noncurrent,
locked versions that cannot be deleted by version id, their bytes are intact
(a restic pack or index file is named by the SHA-256 of its content), and
removing the delete markers brings the forgotten snapshot back whole.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import random
import uuid

import pytest
from botocore.exceptions import ClientError

from .test_restic import (  # noqa: F401  (_restic_installed: autouse fixture)
    KIB,
    Restic,
    _restic_installed,
    assert_no_server_errors,
    check_read_data,
    manifest,
    restore_and_compare,
    snapshots,
)

PREFIX = "repo"


def make_tree(root: str, seed: int) -> None:
    """About 5 MB in 14 files over three directories, incompressible."""
    rnd = random.Random(seed)
    for d in ("docs", "data/sub", "media"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for i in range(10):
        d = ("docs", "data", "data/sub", "media")[i % 4]
        with open(os.path.join(root, d, f"file-{i}.bin"), "wb") as f:
            f.write(rnd.randbytes(rnd.randrange(200 * KIB, 800 * KIB)))
    for i in range(4):
        with open(os.path.join(root, "docs", f"note-{i}.txt"), "wb") as f:
            f.write(rnd.randbytes(rnd.randrange(0, 4 * KIB)))


def change_tree(root: str, seed: int) -> None:
    """Delete four big files, rewrite three, append to one, add three: most of the
    first backup's data becomes unused, so prune must delete (or repack) its packs."""
    rnd = random.Random(seed)
    files = sorted(manifest(root)[0])
    big = [p for p in files if p.endswith(".bin")]
    rnd.shuffle(big)
    for rel in big[:4]:
        os.remove(os.path.join(root, rel))
    for rel in big[4:7]:
        with open(os.path.join(root, rel), "wb") as f:
            f.write(rnd.randbytes(rnd.randrange(100 * KIB, 600 * KIB)))
    with open(os.path.join(root, big[7]), "ab") as f:
        f.write(rnd.randbytes(50 * KIB))
    os.makedirs(os.path.join(root, "new"), exist_ok=True)
    for i in range(3):
        with open(os.path.join(root, "new", f"added-{i}.bin"), "wb") as f:
            f.write(rnd.randbytes(rnd.randrange(100 * KIB, 500 * KIB)))


def live_keys(s3, bucket: str) -> set[str]:
    return {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}


def versions_by_key(s3, bucket: str) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """({key: [object versions]}, {key: [delete markers]}) from ListObjectVersions."""
    versions: dict[str, list[dict]] = {}
    markers: dict[str, list[dict]] = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            versions.setdefault(v["Key"], []).append(v)
        for m in page.get("DeleteMarkers", []):
            markers.setdefault(m["Key"], []).append(m)
    return versions, markers


def kind(key: str) -> str:
    """The restic file type of a repository key: data, index, snapshots, keys, locks, config."""
    return key[len(PREFIX) + 1:].split("/", 1)[0]


def error_code(err: pytest.ExceptionInfo) -> str:
    return err.value.response["Error"]["Code"]


def test_forget_prune_on_locked_bucket_then_undelete(basalt_http, tmp_path):
    server = basalt_http
    s3 = server.client()
    tmp = str(tmp_path)
    src = os.path.join(tmp, "src")
    make_tree(src, seed=11)
    bucket = f"restic-lock-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    restic = Restic(server, tmp, bucket, PREFIX)

    restic("init")
    # restic's uploads carry Content-MD5, so the default retention could be applied.
    head = s3.head_object(Bucket=bucket, Key=f"{PREFIX}/config")
    assert head["ObjectLockMode"] == "GOVERNANCE", head
    restic("backup", src, cwd=tmp)
    first_files, first_dirs = manifest(src)
    [first] = snapshots(restic)
    before_second = live_keys(s3, bucket)

    change_tree(src, seed=12)
    restic("backup", src, cwd=tmp)
    assert len(snapshots(restic)) == 2
    before = live_keys(s3, bucket)
    assert before_second < before

    out = restic("forget", "--keep-last", "1", "--prune")
    assert "remove 1 snapshots" in out.stdout, out.stdout[-3000:]
    [second] = snapshots(restic)
    assert second["id"] != first["id"]
    check_read_data(restic)
    restore_and_compare(restic, src, os.path.join(tmp, "restore-latest"), tmp)

    after = live_keys(s3, bucket)
    removed = {k for k in before - after if kind(k) != "locks"}
    removed_kinds = {kind(k) for k in removed}
    # forget removed snapshot 1's file, prune the old index and some of the first
    # backup's packs (deleted outright or after repacking their live blobs).
    assert f"{PREFIX}/snapshots/{first['id']}" in removed
    assert {"snapshots", "index", "data"} <= removed_kinds, sorted(removed)
    assert not {"config", "keys"} & removed_kinds

    # Every removed file is still stored: its one version is noncurrent, behind a
    # delete marker that is the latest version of its key.
    versions, markers = versions_by_key(s3, bucket)
    now = datetime.datetime.now(datetime.UTC)
    removed_packs = sorted(k for k in removed if kind(k) == "data")
    for key in sorted(removed):
        assert [m["IsLatest"] for m in markers.get(key, [])] == [True], (key, markers.get(key))
        [version] = versions[key]
        assert version["IsLatest"] is False, version
        head = s3.head_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
        assert head["ObjectLockMode"] == "GOVERNANCE", (key, head)
        until = head["ObjectLockRetainUntilDate"]
        assert now + datetime.timedelta(hours=23) < until < now + datetime.timedelta(days=2), until
        if kind(key) in ("data", "index"):
            # Read back by version id: a pack or index file is named by its SHA-256.
            body = s3.get_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])["Body"].read()
            assert hashlib.sha256(body).hexdigest() == key.rsplit("/", 1)[1], key
            assert len(body) == version["Size"]
    # Nothing restic still uses was touched: live keys have exactly one version, no marker.
    for key in after:
        assert len(versions[key]) == 1 and key not in markers, key

    # The lock holds against a delete by version id (no governance bypass asked for).
    victim = removed_packs[0]
    victim_version = versions[victim][0]["VersionId"]
    with pytest.raises(ClientError) as err:
        s3.delete_object(Bucket=bucket, Key=victim, VersionId=victim_version)
    assert error_code(err) == "AccessDenied", err.value.response
    body = s3.get_object(Bucket=bucket, Key=victim, VersionId=victim_version)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == victim.rsplit("/", 1)[1]

    # Undelete: remove the delete markers restic's forget and prune left behind.
    for key in sorted(removed):
        [marker] = markers[key]
        gone = s3.delete_object(Bucket=bucket, Key=key, VersionId=marker["VersionId"])
        assert gone.get("DeleteMarker") is True and gone["VersionId"] == marker["VersionId"], gone
    assert live_keys(s3, bucket) == after | removed

    snaps = snapshots(restic)
    assert sorted(s["id"] for s in snaps) == sorted([first["id"], second["id"]]), json.dumps(snaps)
    # Both the old and the new index list the packs prune kept: restic calls that
    # non-critical ("Duplicate packs"), and check still finds no errors.
    check_read_data(restic)
    # The recovered first snapshot restores to the first tree, byte for byte.
    target = os.path.join(tmp, "restore-first")
    restic("restore", first["id"], "--target", target, cwd=tmp)
    got_files, got_dirs = manifest(os.path.join(target, os.path.relpath(src, "/")))
    assert got_dirs == first_dirs
    assert got_files == first_files
    assert_no_server_errors(server)
