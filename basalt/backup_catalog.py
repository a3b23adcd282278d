"""`basalt volume backups list|prune s3://BUCKET/PREFIX`: what a backup location
holds, and removing old backups with the packs only they used.

The layout is basalt/backup.py's: ``PREFIX/backups/<id>.json.gz`` manifests
(a whole one names every allocated chunk's pack, offset, length, sha256; an
incremental's only what changed since its base, which it names) and
content-named ``PREFIX/packs/<name>`` objects shared between backups. Backup
ids begin with their UTC start time, so key order is age order (the order
restore uses to find the newest).

Prune is safe against crashes and concurrent backups:

- Manifests are deleted first, packs after. A crash in between leaves packs no
  manifest names (garbage the next prune collects), never a manifest naming a
  missing pack.
- The kept manifests, and the bases they are incrementals of, are all read
  before anything is deleted; one that cannot be read stops the prune, since
  the packs it names are unknown.
- A kept incremental whose base is to be deleted is first rewritten whole
  (same key, same chunks: an atomic PUT), so every kept backup still reads
  back. The rewrite carries the time the target gave the manifest first
  (``modified``), which the pack rule below uses instead of the rewrite's.
- A pack is collected only when no kept manifest names it **and** it was last
  modified before the newest kept manifest was first written (both times from
  the target's clock). A backup that is still uploading writes its manifest last,
  so every pack it uploaded after that moment is safe; one that reuses older
  packs checks, just before writing its manifest, that they are all still
  there and fails with "run the backup again" otherwise (backup._check_reused).
  With no manifest left nothing is collected.

Prune leaves the server-side snapshot of each backup chain alone: it belongs to
the newest backup, which is always kept, and the next backup diffs against it.
"""

from __future__ import annotations

import concurrent.futures
import datetime
from typing import Any

from .admin_client import AdminClient
from .backup import (
    BackupError,
    Target,
    check_bucket,
    load_manifest,
    put_manifest,
    resolve_all,
    s3_client,
)
from .config import ConfigError
from .progress import Progress

BATCH = 1000  # keys per DeleteObjects request (the S3 maximum)


def _open(args: Any, client: AdminClient) -> tuple[Any, Target]:
    target = Target.parse(args.source)
    s3 = s3_client(args, client)  # --endpoint-url, else $AWS_ENDPOINT_URL, else this Basalt
    check_bucket(s3, target)
    return s3, target


def _objects(s3, target: Target, folder: str) -> list[dict]:
    """Key, Size and LastModified of every object under ``PREFIX/folder/``."""
    found: list[dict] = []
    for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=target.bucket, Prefix=target.key(folder) + "/"):
        found += page.get("Contents", [])
    return found


def _manifest_objects(s3, target: Target) -> list[dict]:
    """The manifests, oldest first."""
    return sorted((o for o in _objects(s3, target, "backups") if o["Key"].endswith(".json.gz")),
                  key=lambda o: o["Key"])


def _backup_id(key: str) -> str:
    return key.rsplit("/", 1)[1][:-len(".json.gz")]


def _load(s3, target: Target, ids: list[str]) -> dict[str, dict]:
    """The manifests of these backups and of every base they need, as stored."""
    found: dict[str, dict] = {}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        while ids:
            found.update(zip(ids, pool.map(
                lambda i: load_manifest(s3, target, target.key("backups", f"{i}.json.gz")),
                ids), strict=True))
            ids = sorted({m["base"] for m in found.values()
                          if m["format"] == 3 and m["base"] not in found})
    return found


def _summary(backup_id: str, manifest: dict) -> dict:
    chunks = manifest["chunks"]
    created = datetime.datetime.fromtimestamp(manifest["created"], datetime.UTC)
    return {"id": backup_id, "time": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "volume": manifest["volume"], "size": manifest["size"], "chunks": len(chunks),
            "bytes": sum(e[2] for e in chunks.values()),
            "packs": len({e[0] for e in chunks.values()}), "base": manifest.get("base")}


def list_backups(args: Any, client: AdminClient) -> list[dict]:
    """The backups at ``args.source``, oldest first: id, time (ISO 8601 UTC),
    volume, size (the volume's), chunks, bytes (pack data the backup references),
    packs, base (the backup it was made incrementally from, or None)."""
    s3, target = _open(args, client)
    ids = [_backup_id(o["Key"]) for o in _manifest_objects(s3, target)]
    return [_summary(i, m) for i, m in resolve_all(_load(s3, target, ids))]


def _delete(s3, target: Target, keys: list[str], progress: Progress, what: str) -> None:
    for start in range(0, len(keys), BATCH):
        batch = keys[start:start + BATCH]
        answer = s3.delete_objects(Bucket=target.bucket, Delete={
            "Objects": [{"Key": k} for k in batch], "Quiet": True})
        errors = answer.get("Errors") or []
        if errors:
            first = errors[0]
            raise BackupError(f"cannot delete {len(errors)} {what}, e.g. "
                              f"s3://{target.bucket}/{first.get('Key')}: "
                              f"{first.get('Message') or first.get('Code')}")
        done = start + len(batch)
        progress.update(f"prune: {done} / {len(keys)} {what} deleted "
                        f"({done * 100 // len(keys)}%)")


def prune_backups(args: Any, client: AdminClient, progress: Progress) -> dict:
    """Keep the newest ``args.keep`` backups at ``args.source``; delete the other
    manifests, then the packs no kept backup references (see the module docstring
    for the crash-safety and concurrency rule). Returns kept and removed ids,
    packs_deleted and bytes_freed."""
    keep = args.keep
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ConfigError(f"--keep must be a whole number of at least 1, not {keep!r}")
    s3, target = _open(args, client)
    manifests = _manifest_objects(s3, target)
    kept, removed = manifests[-keep:], manifests[:-keep]
    written = {_backup_id(o["Key"]): o["LastModified"] for o in kept}
    stored = _load(s3, target, sorted(written))
    referenced: set[str] = set()
    for backup_id, whole in resolve_all(stored):
        if backup_id not in written:
            continue  # a base to be deleted
        referenced.update(e[0] for e in whole["chunks"].values())
        manifest = stored[backup_id]
        if "modified" in manifest:  # rewritten whole by an earlier prune
            written[backup_id] = datetime.datetime.fromisoformat(manifest["modified"])
        elif manifest["format"] == 3 and manifest["base"] not in written:
            put_manifest(s3, target, dict(whole, modified=written[backup_id].isoformat()))
    if removed:
        _delete(s3, target, [o["Key"] for o in removed], progress, "manifests")
    garbage: list[dict] = []
    if kept:
        cutoff = max(written.values())
        garbage = [o for o in _objects(s3, target, "packs")
                   if o["Key"] not in referenced and o["LastModified"] < cutoff]
    _delete(s3, target, [o["Key"] for o in garbage], progress, "packs")
    freed = sum(o["Size"] for o in garbage)
    progress.done()
    return {"kept": [_backup_id(o["Key"]) for o in kept],
            "removed": [_backup_id(o["Key"]) for o in removed],
            "packs_deleted": len(garbage), "bytes_freed": freed}
