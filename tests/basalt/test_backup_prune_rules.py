"""Prune's crash-safety and concurrency rules, against an in-memory S3."""

import datetime
import io
import types

import pytest

from basalt import backup, backup_catalog
from basalt.backup import BackupError, Target, pack_manifest
from basalt.config import ConfigError

T0 = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)


class FakeS3:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, datetime.datetime]] = {}
        self.deleted: list[list[str]] = []  # one list per DeleteObjects call

    def put(self, key: str, body: bytes, second: int) -> None:
        self.objects[key] = (body, T0 + datetime.timedelta(seconds=second))

    def head_bucket(self, Bucket):
        pass

    def get_paginator(self, name):
        return self

    def paginate(self, Bucket, Prefix):
        yield {"Contents": [{"Key": k, "Size": len(b), "LastModified": t}
                            for k, (b, t) in sorted(self.objects.items())
                            if k.startswith(Prefix)]}

    def get_object(self, Bucket, Key, Range=None):
        return {"Body": io.BytesIO(self.objects[Key][0])}

    def put_object(self, Bucket, Key, Body, Metadata=None):
        self.objects[Key] = (Body, T0 + datetime.timedelta(seconds=100))  # the target's "now"

    def delete_objects(self, Bucket, Delete):
        keys = [o["Key"] for o in Delete["Objects"]]
        self.deleted.append(keys)
        for k in keys:
            self.objects.pop(k, None)
        return {}


def manifest(backup_id: str, packs: dict[int, str], base: str | None = None,
             removed: tuple[int, ...] = ()) -> bytes:
    """A whole backup's manifest, or with ``base`` an incremental's."""
    body = {"format": 1, "backup": backup_id, "volume": "v", "size": 1 << 20,
            "chunk_size": 65536, "snapshot": f"backup-00000000-{backup_id}",
            "created": T0.timestamp(), "base": base,
            "chunks": {str(i): [f"p/packs/{p}", 0, 100, "0" * 64] for i, p in packs.items()}}
    if base:
        body.update(format=3, depth=1, removed=list(removed))
    return pack_manifest(body)


@pytest.fixture
def s3(monkeypatch):
    fake = FakeS3()
    monkeypatch.setattr(backup_catalog, "s3_client", lambda args, client: fake)
    return fake


def args(keep=1):
    return types.SimpleNamespace(source="s3://b/p", endpoint_url=None, keep=keep)


class Progress:
    def update(self, text: str) -> None:
        pass

    def done(self) -> None:
        pass


def test_manifests_go_first_and_only_old_unreferenced_packs_follow(s3):
    s3.put("p/packs/a", b"a" * 10, 0)        # backup 1 only
    s3.put("p/packs/shared", b"s" * 20, 0)   # backups 1 and 2
    s3.put("p/backups/20261201T000001Z-0001.json.gz",
           manifest("20261201T000001Z-0001", {0: "a", 1: "shared"}), 1)
    s3.put("p/packs/b", b"b" * 30, 2)
    s3.put("p/backups/20261201T000003Z-0002.json.gz",
           manifest("20261201T000003Z-0002", {0: "b", 1: "shared"}), 3)
    s3.put("p/packs/fresh", b"f" * 40, 3)    # same instant as the newest manifest: kept
    s3.put("p/packs/later", b"l" * 50, 9)    # a running backup's: kept
    result = backup_catalog.prune_backups(args(), None, Progress())
    assert result == {"kept": ["20261201T000003Z-0002"], "removed": ["20261201T000001Z-0001"],
                      "packs_deleted": 1, "bytes_freed": 10}
    assert s3.deleted == [["p/backups/20261201T000001Z-0001.json.gz"], ["p/packs/a"]]
    assert sorted(s3.objects) == ["p/backups/20261201T000003Z-0002.json.gz", "p/packs/b",
                                  "p/packs/fresh", "p/packs/later", "p/packs/shared"]
    listed = backup_catalog.list_backups(args(), None)
    assert [(b["id"], b["chunks"], b["bytes"], b["packs"]) for b in listed] == [
        ("20261201T000003Z-0002", 2, 200, 2)]


def test_an_unreadable_kept_manifest_stops_the_prune_before_any_delete(s3):
    s3.put("p/packs/a", b"a", 0)
    s3.put("p/backups/20261201T000001Z-0001.json.gz",
           manifest("20261201T000001Z-0001", {0: "a"}), 1)
    s3.put("p/backups/20261201T000002Z-0002.json.gz", b"not gzip", 2)
    with pytest.raises(BackupError, match="cannot read backup manifest"):
        backup_catalog.prune_backups(args(), None, Progress())
    assert s3.deleted == []


def test_keep_must_be_positive(s3):
    for keep in (0, -1, "2"):
        with pytest.raises(ConfigError, match="--keep must be"):
            backup_catalog.prune_backups(args(keep), None, Progress())


def test_a_backup_refuses_to_name_packs_a_prune_removed_meanwhile():
    s3 = FakeS3()
    s3.put("p/packs/kept", b"k", 0)
    target = Target("b", "p")
    packer = types.SimpleNamespace(sent={"p/packs/new"})
    entries = {"0": ["p/packs/kept", 0, 1, ""], "1": ["p/packs/new", 0, 1, ""]}
    backup._check_reused(s3, target, {"format": 1, "chunks": entries}, packer)  # all there
    entries["2"] = ["p/packs/pruned", 0, 1, ""]
    with pytest.raises(BackupError, match="1 packs this backup reuses were deleted meanwhile"):
        backup._check_reused(s3, target, {"format": 1, "chunks": entries}, packer)
    # an incremental's base must be there too
    incremental = {"format": 3, "base": "20261201T000001Z-0001", "chunks": {}}
    with pytest.raises(BackupError, match="the base of this one, was deleted meanwhile"):
        backup._check_reused(s3, target, incremental, packer)
    s3.put("p/backups/20261201T000001Z-0001.json.gz", b"", 1)
    backup._check_reused(s3, target, incremental, packer)


def test_incrementals_read_back_through_their_bases_and_prune_rewrites_the_oldest_kept(s3):
    ids = [f"20261201T00000{n}Z-000{n}" for n in range(1, 5)]
    s3.put("p/packs/a", b"a" * 10, 0)
    s3.put("p/packs/b", b"b" * 20, 0)
    s3.put(f"p/backups/{ids[0]}.json.gz", manifest(ids[0], {0: "a", 1: "a", 2: "a"}), 1)
    s3.put("p/packs/c", b"c" * 30, 1)
    s3.put(f"p/backups/{ids[1]}.json.gz", manifest(ids[1], {1: "b"}, ids[0], (2,)), 2)
    s3.put(f"p/backups/{ids[2]}.json.gz", manifest(ids[2], {0: "c"}, ids[1]), 3)
    s3.put(f"p/backups/{ids[3]}.json.gz", manifest(ids[3], {}, ids[2], (1,)), 4)
    whole = backup.load_backup(s3, Target("b", "p"), ids[2])
    assert whole["format"] == 1 and whole["base"] == ids[1]
    assert {i: e[0][8:] for i, e in whole["chunks"].items()} == {"0": "c", "1": "b"}
    listed = backup_catalog.list_backups(args(), None)
    assert [(b["chunks"], b["packs"], b["base"]) for b in listed] == [
        (3, 1, None), (2, 2, ids[0]), (2, 2, ids[1]), (1, 1, ids[2])]

    result = backup_catalog.prune_backups(args(keep=2), None, Progress())
    assert result["kept"] == ids[2:] and result["packs_deleted"] == 1  # a: no longer named
    assert sorted(s3.objects) == [f"p/backups/{ids[2]}.json.gz", f"p/backups/{ids[3]}.json.gz",
                                  "p/packs/b", "p/packs/c"]
    rewritten = backup.load_manifest(s3, Target("b", "p"), f"p/backups/{ids[2]}.json.gz")
    assert rewritten["format"] == 1 and len(rewritten["chunks"]) == 2  # whole now
    assert rewritten["modified"] == (T0 + datetime.timedelta(seconds=3)).isoformat()
    assert backup.load_backup(s3, Target("b", "p"), ids[3])["chunks"] == {
        "0": ["p/packs/c", 0, 100, "0" * 64]}
    # the rewrite's own time (100 s) is not the pack rule's: packs from 5 s on are kept
    s3.put("p/packs/in-flight", b"f", 5)
    again = backup_catalog.prune_backups(args(keep=2), None, Progress())
    assert again["removed"] == [] and again["packs_deleted"] == 0
