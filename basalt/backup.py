"""Volume backups to any S3 endpoint, and restores from them.

A backup takes a snapshot, reads its chunks over NBD and uploads them packed
into objects of about 16 MiB, plus a manifest:

    PREFIX/backups/<id>.json.gz   volume, size, chunk size, and chunk entries
                                  (pack, offset, length, sha256): a whole
                                  backup's (format 1, 2 when encrypted) for
                                  every allocated chunk; an incremental's
                                  (format 3) for the chunks changed since its
                                  base, the chunks gone since, and the base's id
    PREFIX/packs/<sha256>         chunk data, content-addressed

The next backup of the volume diffs its new snapshot against the snapshot of
the last backup (kept on the server for that purpose): only changed chunks
are read and uploaded, and only they are in its manifest, so an incremental
costs what changed, not the volume's size. A backup is read back through its
bases to the whole one (:func:`load_backup`); every CHAIN_LIMIT-th backup of a
chain is written whole, so that walk stays short, and `volume backups prune`
rewrites a kept incremental whole before deleting its bases
(basalt/backup_catalog.py). Chunks that read as zeros are not uploaded. Packs
are named by their content and built deterministically, so a rerun after an
interruption finds the packs already uploaded and skips them.

Backups of an encrypted volume stay encrypted (and any backup given
``--passphrase-file`` is): each run seals its chunks client-side with AES-GCM
under a fresh backup key (blockd/backup_cipher.py) that the manifest keeps only
wrapped under the passphrase, or, without one, sealed by the server (restorable
only by a server with the same master key). Each entry names the run whose key
sealed it; an incremental reuses earlier entries, so a restore may need several
keys (all from the one passphrase). A sealed pack's chunks come from one run: a
rerun after an interruption seals again under a new key and uploads anew (prune
removes the orphans). The bucket then holds only ciphertext, random pack names,
and the manifest's sizes and allocated chunk indexes.

A restore is done by the server (blockd/restore.py): the CLI sends it batches
of packs as presigned GET URLs (so the target's credentials never leave the
CLI) with their chunks' sha256; the server downloads them, checks every chunk
and writes it straight into the pool, and answers a batch only once it is
durable. The CLI records the batches done (under $XDG_STATE_HOME) so that an
interrupted restore resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gzip
import hashlib
import json
import os
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from typing import Any

from blockd import backup_cipher
from blockd.nbd_client import NBDClient

from . import tls_trust
from .admin_client import AdminClient, AdminError
from .config import ConfigError
from .progress import Progress, human_bytes

PACK_TARGET = 16 << 20
READ_RUN = 4 << 20     # bytes of consecutive chunks read in one NBD request
READS_IN_FLIGHT = 32   # NBD reads a backup keeps in flight (an incremental's are 64 KiB)
READ_AHEAD = 32 << 20  # and at most these bytes
# bytes of chunks per restore request, each durable when it ends ($BASALT_RESTORE_BATCH)
CHECKPOINT = int(os.environ.get("BASALT_RESTORE_BATCH") or 256 << 20)
BATCHES_IN_FLIGHT = 2   # restore requests at once: one writes while another flushes
PRESIGN_SECONDS = 7 * 24 * 3600  # the longest SigV4 allows
SNAPSHOT_PREFIX = "backup-"
# incrementals at most between a backup and a whole manifest ($BASALT_BACKUP_CHAIN)
CHAIN_LIMIT = int(os.environ.get("BASALT_BACKUP_CHAIN") or 32)
CIPHER = "AES-256-GCM"
BACKUP_KEYS = "/_basalt/v1/volume-backup-keys"


class BackupError(Exception):
    """A backup or restore cannot go on; the message says why."""


@dataclasses.dataclass
class Target:
    bucket: str
    prefix: str
    backup_id: str | None = None

    @classmethod
    def parse(cls, url: str) -> Target:
        u = urllib.parse.urlsplit(url)
        if u.scheme != "s3" or not u.netloc:
            raise ConfigError(f"not an s3://BUCKET/PREFIX location: {url!r}")
        path, _, backup = u.path.strip("/").partition("@")
        return cls(u.netloc, path.strip("/"), backup or None)

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)


def s3_client(args: Any, admin: AdminClient):
    """boto3 client for the backup target: --endpoint-url, else $AWS_ENDPOINT_URL,
    else this Basalt (with its credentials when no AWS ones are set)."""
    import boto3
    from botocore.config import Config
    endpoint = args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or admin.endpoint
    # Packs are uploaded with a CRC32C (which the target verifies) instead of a
    # SHA-256 payload signature (four times the CPU per byte); restores verify
    # every chunk's SHA-256 from the manifest instead of a CRC of whole responses.
    # Restores hand the server presigned GETs: SigV4 ones (boto3 would presign
    # SigV2 for us-east-1), which every S3 region takes.
    kwargs: dict[str, Any] = {"endpoint_url": endpoint,
                              "config": Config(max_pool_connections=16, signature_version="s3v4",
                                               s3={"payload_signing_enabled": False},
                                               request_checksum_calculation="when_required",
                                               response_checksum_validation="when_required",
                                               retries={"max_attempts": 5, "mode": "standard"})}
    if endpoint == admin.endpoint and not os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs.update(aws_access_key_id=admin.creds.access_key,
                      aws_secret_access_key=admin.creds.secret_key)
    verify = tls_trust.boto3_verify(endpoint)
    if verify is not None:
        kwargs["verify"] = verify
    return boto3.client("s3", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                        **kwargs)


def check_bucket(s3, target: Target) -> None:
    """One clear BackupError when the target bucket is missing or unreachable."""
    from botocore import exceptions as bex
    try:
        s3.head_bucket(Bucket=target.bucket)
    except bex.ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code") or exc.response.get("ResponseMetadata", {})
                   .get("HTTPStatusCode", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise BackupError(f"bucket {target.bucket} does not exist") from None
        if code in ("403", "AccessDenied"):
            raise BackupError(f"bucket {target.bucket}: access denied") from None
        raise BackupError(f"bucket {target.bucket} is not reachable: {exc}") from None
    except bex.BotoCoreError as exc:
        raise BackupError(f"bucket {target.bucket} is not reachable: {exc}") from None


def target_label(s3, target: Target, admin: AdminClient) -> str:
    """``s3://BUCKET/PREFIX`` (and the endpoint when it is not this Basalt)."""
    url = f"s3://{target.bucket}/{target.prefix}".rstrip("/")
    endpoint = s3.meta.endpoint_url
    return url if endpoint == admin.endpoint else f"{url} on {endpoint}"


def nbd_address(admin: AdminClient) -> tuple[str, int]:
    address = admin.call("GET", "/_basalt/v1/info").get("nbd") or ""
    host, _, port = address.rpartition(":")
    if not port:
        raise BackupError("the server does not report an NBD address")
    if host in ("0.0.0.0", "::", ""):
        host = urllib.parse.urlsplit(admin.endpoint).hostname or "127.0.0.1"
    return host.strip("[]"), int(port)


def list_manifests(s3, target: Target) -> list[str]:
    keys: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=target.bucket, Prefix=target.key("backups") + "/"):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json.gz")]
    return sorted(keys)


def pack_manifest(manifest: dict) -> bytes:
    """gzip'd JSON; pack keys listed once, chunks refer to them by number."""
    packs: dict[str, int] = {}
    chunks = {i: [packs.setdefault(e[0], len(packs)), *e[1:]]
              for i, e in manifest["chunks"].items()}
    body = dict(manifest, packs=list(packs), chunks=chunks)
    return gzip.compress(json.dumps(body, separators=(",", ":")).encode(), compresslevel=6)


def load_manifest(s3, target: Target, key: str) -> dict:
    """A manifest as stored (an incremental's holds only its changes)."""
    try:
        body = s3.get_object(Bucket=target.bucket, Key=key)["Body"].read()
        manifest = json.loads(gzip.decompress(body))
        packs = manifest.pop("packs")
        manifest["chunks"] = {i: [packs[e[0]], *e[1:]] for i, e in manifest["chunks"].items()}
        return manifest
    except Exception as exc:  # missing or damaged
        raise BackupError(f"cannot read backup manifest s3://{target.bucket}/{key}: {exc}") \
            from None


def manifest_key(target: Target, backup_id: str) -> str:
    return target.key("backups", f"{backup_id}.json.gz")


def put_manifest(s3, target: Target, manifest: dict) -> None:
    """Upload a manifest; its metadata tells the next backup, with a HEAD, whether
    the chain is encrypted and how long it is."""
    s3.put_object(Bucket=target.bucket, Key=manifest_key(target, manifest["backup"]),
                  Body=pack_manifest(manifest), Metadata={
                      "basalt-encrypted": "yes" if manifest.get("encryption") else "no",
                      "basalt-depth": str(manifest.get("depth", 0))})


def resolve(chain: list[dict]) -> dict:
    """One whole manifest (format 1, or 2 when encrypted) from a chain: a whole
    manifest, then the incrementals made on it, oldest first."""
    first, *later = chain
    chunks = dict(first["chunks"])
    keys = dict((first.get("encryption") or {}).get("keys", {}))
    for manifest in later:
        for index in manifest["removed"]:
            chunks.pop(str(index), None)
        chunks.update(manifest["chunks"])
        keys.update((manifest.get("encryption") or {}).get("keys", {}))
    whole = {k: v for k, v in chain[-1].items()
             if k not in ("removed", "depth", "encryption", "modified")}
    whole.update(format=1, chunks=chunks)
    if first.get("encryption"):
        used = {e[4] for e in chunks.values()}
        whole.update(format=2, encryption={"cipher": first["encryption"]["cipher"], "keys": {
            tag: key for tag, key in keys.items() if tag in used}})
    return whole


def load_backup(s3, target: Target, backup_id: str) -> dict:
    """Backup ``backup_id`` as one whole manifest, read back through its bases."""
    chain = [load_manifest(s3, target, manifest_key(target, backup_id))]
    while chain[-1]["format"] == 3:
        chain.append(load_manifest(s3, target, manifest_key(target, chain[-1]["base"])))
    return resolve(chain[::-1])


def resolve_all(manifests: dict[str, dict]) -> Iterator[tuple[str, dict]]:
    """(id, whole manifest) of each backup in ``manifests`` (id → as stored, with
    every incremental's bases), oldest first; a base's result is kept only until
    its last incremental is resolved from it."""
    children = Counter(m["base"] for m in manifests.values() if m["format"] == 3)
    done: dict[str, dict] = {}
    for backup_id in sorted(manifests):
        manifest = manifests[backup_id]
        chain = [manifest]
        if manifest["format"] == 3:
            base = manifest["base"]
            if base not in done:
                raise BackupError(f"backup {backup_id} is an incremental of {base}, "
                                  "which is missing")
            children[base] -= 1
            chain.insert(0, done[base] if children[base] else done.pop(base))
        whole = resolve(chain)
        if children[backup_id]:
            done[backup_id] = whole
        yield backup_id, whole


def _backup_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid() % 10000:04d}"


class _Packer:
    """Cuts chunks into packs of ~16 MiB and uploads them in the background."""

    def __init__(self, s3, target: Target, existing: set[str], progress: Progress,
                 sealer: backup_cipher.ChunkSealer | None = None, tag: str = "") -> None:
        self.s3, self.target, self.existing, self.progress = s3, target, existing, progress
        self.sealer, self.tag = sealer, tag  # chunks sealed under this run's backup key
        self.pool = concurrent.futures.ThreadPoolExecutor(4)
        self.uploads: list[concurrent.futures.Future] = []
        self.buf = bytearray()
        self.pending: list[tuple[int, int, int, str]] = []  # index, offset, length, sha
        self.entries: dict[str, list] = {}
        self.uploaded = 0
        self.lock = threading.Lock()
        self.reused = 0
        self.sent: set[str] = set()  # pack keys this run uploads

    def add(self, index: int, data: bytes | memoryview) -> None:
        if self.sealer is not None:
            data = self.sealer.seal(index, data)
        sha = hashlib.sha256(data).hexdigest()
        self.pending.append((index, len(self.buf), len(data), sha))
        self.buf += data
        if len(self.buf) >= PACK_TARGET:
            self.seal()

    def seal(self) -> None:
        if not self.pending:
            return
        data, self.buf = self.buf, bytearray()
        # Named by the chunks it holds (their hashes, in order): the same pack
        # again after an interruption gets the same name, without hashing it.
        name = hashlib.sha256("".join(p[3] for p in self.pending).encode()).hexdigest()
        key = self.target.key("packs", name)
        for index, offset, length, sha in self.pending:
            self.entries[str(index)] = [key, offset, length, sha, *([self.tag] if self.tag else [])]
        self.pending = []
        if key in self.existing:  # uploaded by an interrupted earlier run
            self.reused += len(data)
            return
        self.sent.add(key)
        self.uploads.append(self.pool.submit(self._put, key, data))

    def _put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.target.bucket, Key=key, Body=data,
                           ChecksumAlgorithm="CRC32C")
        with self.lock:  # four upload threads: += is not atomic
            self.uploaded += len(data)

    def finish(self) -> None:
        self.seal()
        for fut in concurrent.futures.as_completed(self.uploads):
            fut.result()
        self.pool.shutdown()


async def _read_chunks(host: str, port: int, export: str, indexes: list[int], chunk: int,
                       size: int, packer: _Packer, progress: Progress, total: int) -> int:
    """Read the chunks over NBD (runs of neighbours in one request, several in
    flight) and hand the non-zero ones to the packer, in index order."""
    runs: list[tuple[int, int]] = []  # first index, count
    for index in indexes:
        if runs and runs[-1][0] + runs[-1][1] == index and runs[-1][1] * chunk < READ_RUN:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((index, 1))
    done = 0
    loop = asyncio.get_running_loop()
    async with NBDClient(host, port, export) as nbd:
        window: list[tuple[int, int, asyncio.Future]] = []
        for first, count in runs + [(-1, 0)]:
            if first >= 0:
                length = min(count * chunk, size - first * chunk)
                window.append((first, count, asyncio.ensure_future(nbd.read(first * chunk,
                                                                            length))))
            while window and (len(window) >= READS_IN_FLIGHT or first < 0
                              or sum(w[1] for w in window) * chunk >= READ_AHEAD):
                start, n, fut = window.pop(0)
                data = await fut
                # hashing and packing off the event loop, so reads stay in flight
                await loop.run_in_executor(None, _pack_run, packer, start, n, chunk, data)
                done += len(data)
                progress.update(f"backup: {human_bytes(done)} of {human_bytes(total)} read, "
                                f"{human_bytes(packer.uploaded)} uploaded", done=done, total=total)
    return done


def _pack_run(packer: _Packer, start: int, count: int, chunk: int, data: bytes) -> None:
    zero, view = bytes(chunk), memoryview(data)
    for i in range(count):
        piece = view[i * chunk:(i + 1) * chunk]
        if piece != zero[:len(piece)]:  # all-zero chunks stay holes
            packer.add(start + i, piece)


def run_backup(args: Any, admin: AdminClient) -> int:
    target = Target.parse(args.to)
    s3 = s3_client(args, admin)
    volume = args.name
    started = time.monotonic()
    progress = Progress()
    check_bucket(s3, target)
    # One chain of backup snapshots per target, so backing a volume up to two
    # places keeps both incremental.
    tag = hashlib.sha1(f"{s3.meta.endpoint_url}|{target.bucket}|{target.prefix}".encode()
                       ).hexdigest()[:8]
    prefix = f"{SNAPSHOT_PREFIX}{tag}-"
    snapshots = {s["name"] for s in admin.call("GET", f"/_basalt/v1/volumes/{volume}/snapshots")
                 if s["name"].split("@", 1)[1].startswith(prefix)}
    # Manifests are named by backup id (time first): read back from the newest
    # only as far as the last one of this chain, whose snapshot is still here.
    keys = list_manifests(s3, target)
    ids = {k.rsplit("/", 1)[1][:-len(".json.gz")] for k in keys}
    done_snaps = {s.split("@", 1)[1] for s in snapshots if s.split("@", 1)[1][len(prefix):] in ids}
    # What the base's manifest says of its chain (a HEAD) and the packs already
    # there are read while the server takes the snapshot and diffs it.
    background = concurrent.futures.ThreadPoolExecutor(2)
    existing_packs = background.submit(_existing_packs, s3, target)
    base_id = base_snap = base_chain = None
    for key in reversed(keys):
        backup = key.rsplit("/", 1)[1][:-len(".json.gz")]
        if f"{volume}@{prefix}{backup}" in snapshots:
            base_id, base_snap = backup, prefix + backup
            base_chain = background.submit(_chain_of, s3, target, base_id)
            break
    # An earlier run interrupted after taking its snapshot: finish that one.
    leftover = sorted(s.split("@", 1)[1] for s in snapshots
                      if s.split("@", 1)[1] not in done_snaps)
    if leftover:
        snap = leftover[-1]
        backup_id = snap[len(prefix):]
    else:
        backup_id = _backup_id()
        snap = prefix + backup_id
        # the note lets `volume delete` say which backups keep this snapshot
        admin.call("POST", f"/_basalt/v1/volumes/{volume}/snapshots",
                   body={"snapshot": snap, "note": target_label(s3, target, admin)})
    sealer, key_record = _backup_key(args, admin, volume)
    depth = 0
    if base_chain is not None:
        encrypted, depth = base_chain.result()
        if encrypted != bool(sealer):  # no plaintext packs in an encrypted chain
            base_id = base_snap = None
    query = {"base": f"{volume}@{base_snap}"} if base_snap else {}
    diff = admin.call("GET", f"/_basalt/v1/volumes/{volume}@{snap}/diff", query)
    chunk, size, changed = diff["chunk_size"], diff["size"], diff["changed"]
    # The base read whole, to write this one whole, while the chunks are read.
    whole_base = (background.submit(load_backup, s3, target, base_id)
                  if base_id and depth + 1 >= CHAIN_LIMIT else None)
    host, port = nbd_address(admin)
    packer = _Packer(s3, target, existing_packs.result(), progress, sealer,
                     backup_id if sealer else "")
    read = asyncio.run(_read_chunks(host, port, f"{volume}@{snap}", changed, chunk, size,
                                    packer, progress, len(changed) * chunk))
    packer.finish()
    manifest = {"format": 1, "backup": backup_id, "volume": volume, "size": size,
                "chunk_size": chunk, "snapshot": snap, "created": time.time(),
                "base": base_id, "chunks": packer.entries}
    if sealer is not None:  # chunk entries name the run whose key sealed them
        manifest.update(format=2, encryption={"cipher": CIPHER, "keys": {backup_id: key_record}})
    if base_id:  # an incremental: unmapped since the base, or now reading as zeros
        removed = set(diff["removed"]) | {i for i in changed if str(i) not in packer.entries}
        manifest.update(format=3, depth=depth + 1, removed=sorted(removed))
        if whole_base is not None:
            manifest = resolve([whole_base.result(), manifest])
    background.shutdown()
    _check_reused(s3, target, manifest, packer)
    put_manifest(s3, target, manifest)
    # Keep only this snapshot for the next incremental backup.
    for old in snapshots:
        if old.split("@", 1)[1] != snap:
            try:
                admin.call("DELETE", f"/_basalt/v1/volumes/{old}")
            except AdminError:
                pass
    elapsed = time.monotonic() - started
    progress.done()
    kind = "incremental" if base_id else "full"
    if getattr(args, "json", False):  # chunks: those in this backup's manifest
        print(json.dumps({"backup": backup_id, "kind": kind, "read": read,
                          "uploaded": packer.uploaded, "reused": packer.reused,
                          "chunks": len(manifest["chunks"]), "seconds": round(elapsed, 3)}))
    else:
        print(f"backup {backup_id} of {volume} ({kind}): {len(changed)} of {diff['allocated']} "
              f"allocated chunks read ({human_bytes(read)}), {human_bytes(packer.uploaded)} "
              f"uploaded, {human_bytes(packer.reused)} already there, in {elapsed:.1f}s")
    return 0


def _passphrase(args: Any) -> bytes | None:
    """The passphrase in --passphrase-file (its last line break dropped), or None."""
    path = getattr(args, "passphrase_file", None)
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            phrase = f.read().rstrip(b"\r\n")
    except OSError as exc:
        raise BackupError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
    if not phrase:
        raise BackupError(f"the passphrase file {path} is empty")
    return phrase


def _backup_key(args: Any, admin: AdminClient, volume: str
                ) -> tuple[backup_cipher.ChunkSealer | None, dict | None]:
    """This run's chunk sealer and the manifest's record of its key (wrapped under
    the passphrase, else sealed by the server), when the backup is encrypted:
    the volume is, or a passphrase was given."""
    phrase = _passphrase(args)
    info = admin.call("GET", f"/_basalt/v1/volumes/{volume}")
    if phrase is None and not info.get("encrypted"):
        return None, None
    key = os.urandom(backup_cipher.KEY_BYTES)
    if phrase is not None:
        record = backup_cipher.wrap_with_passphrase(key, phrase)
    else:
        record = admin.call("POST", BACKUP_KEYS, body={"key": backup_cipher.b64(key)})
    return backup_cipher.ChunkSealer(key), record


def _chain_of(s3, target: Target, backup_id: str) -> tuple[bool, int]:
    """Whether a backup is encrypted, and how many incrementals lead to it: its
    manifest's metadata (older manifests, without it, are read)."""
    from botocore import exceptions as bex
    try:
        meta = s3.head_object(Bucket=target.bucket,
                              Key=manifest_key(target, backup_id)).get("Metadata") or {}
    except bex.ClientError as exc:
        raise BackupError(f"cannot read backup manifest {backup_id}: {exc}") from None
    if "basalt-encrypted" in meta:
        return meta["basalt-encrypted"] == "yes", int(meta.get("basalt-depth") or 0)
    manifest = load_manifest(s3, target, manifest_key(target, backup_id))
    return bool(manifest.get("encryption")), manifest.get("depth", 0)


def _check_reused(s3, target: Target, manifest: dict, packer: _Packer) -> None:
    """A manifest must never name a missing pack or base: the packs this backup
    reuses (a whole one's from the last backup, or packs an interrupted run
    left) and an incremental's base must still be there, which a prune running
    meanwhile could have changed (see backup_catalog)."""
    if manifest["format"] == 3:
        keys = list_manifests(s3, target)
        if manifest_key(target, manifest["base"]) not in keys:
            raise BackupError(f"backup {manifest['base']}, the base of this one, was deleted "
                              "meanwhile (a concurrent prune?); run the backup again")
    reused = {e[0] for e in manifest["chunks"].values()} - packer.sent
    if not reused:
        return
    missing = reused - _existing_packs(s3, target)
    if missing:
        raise BackupError(f"{len(missing)} packs this backup reuses were deleted meanwhile "
                          "(a concurrent prune?); run the backup again")


def _existing_packs(s3, target: Target) -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=target.bucket, Prefix=target.key("packs") + "/"):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys


# --- restore ----------------------------------------------------------------------


def _state_path(admin: AdminClient, volume: str, backup_id: str) -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    folder = os.path.join(base, "basalt", "restores")
    os.makedirs(folder, exist_ok=True)
    tag = hashlib.sha1(f"{admin.endpoint}|{volume}|{backup_id}".encode()).hexdigest()[:16]
    return os.path.join(folder, f"{tag}.json")


def run_restore(args: Any, admin: AdminClient) -> int:
    source = Target.parse(args.source)
    s3 = s3_client(args, admin)
    check_bucket(s3, source)
    keys = list_manifests(s3, source)
    if source.backup_id:
        key = source.key("backups", f"{source.backup_id}.json.gz")
        if key not in keys:
            raise BackupError(f"no backup {source.backup_id} at s3://{source.bucket}/"
                              f"{source.prefix}")
    elif keys:
        key = keys[-1]
    else:
        raise BackupError(f"no backups at s3://{source.bucket}/{source.prefix}")
    manifest = load_backup(s3, source, key.rsplit("/", 1)[1][:-len(".json.gz")])
    volume, backup_id = args.to, manifest["backup"]
    keys = _restore_keys(args, admin, manifest)  # before anything is made on the server
    state_file = _state_path(admin, volume, backup_id)
    restored: set[str] = set()
    if os.path.exists(state_file):  # resuming an interrupted restore
        with open(state_file) as f:
            restored = set(json.load(f))
    else:
        try:
            # an encrypted backup is restored onto an encrypted volume
            admin.call("POST", "/_basalt/v1/volumes", body={
                "name": volume, "size": manifest["size"], **({"encrypted": True} if keys else {})})
        except AdminError as exc:
            raise BackupError(f"cannot create volume {volume}: {exc}") from None
        _save_state(state_file, restored)
    started = time.monotonic()
    progress = Progress()
    written = _restore_batches(s3, source, manifest, admin, volume, restored, state_file,
                               progress, keys)
    os.unlink(state_file)
    progress.done()
    elapsed = time.monotonic() - started
    print(f"restored backup {backup_id} of {manifest['volume']} onto {volume}: "
          f"{len(manifest['chunks'])} chunks, {human_bytes(written)} written and verified, "
          f"in {elapsed:.1f}s")
    return 0


def _restore_keys(args: Any, admin: AdminClient, manifest: dict) -> dict[str, dict]:
    """The backup keys an encrypted backup's chunks name, as the server takes them:
    unwrapped here with the passphrase, or sealed ones checked to open there."""
    encryption = manifest.get("encryption")
    if not encryption:
        return {}
    phrase = _passphrase(args)
    out = {}
    for tag, record in encryption["keys"].items():
        if "sealed" in record:
            try:
                admin.call("POST", BACKUP_KEYS, body={"sealed": record["sealed"]})
            except AdminError as exc:
                hint = " (or give --passphrase-file if it was made with one)" if phrase else ""
                raise BackupError(f"backup {manifest['backup']} cannot be opened here: "
                                  f"{exc}{hint}") from None
            out[tag] = {"sealed": record["sealed"]}
        elif phrase is None:
            raise BackupError(f"backup {manifest['backup']} is encrypted with a passphrase: "
                              "give --passphrase-file")
        else:
            try:
                key = backup_cipher.unwrap_with_passphrase(record, phrase)
            except backup_cipher.BackupKeyError:
                raise BackupError(f"the passphrase does not open backup {manifest['backup']}"
                                  ) from None
            out[tag] = {"key": backup_cipher.b64(key)}
    return out


def _save_state(path: str, restored: set[str]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(sorted(restored), f)
    os.replace(tmp, path)


def restore_batches(manifest: dict, restored: set[str]) -> list[list[tuple[str, list]]]:
    """The chunks still to restore, cut into batches of about CHECKPOINT bytes
    (a pack's chunks split between two when needed), in volume order:
    [[(pack key, [[index, offset, length, sha256], ...]), ...], ...]."""
    by_pack: dict[str, list] = {}
    for index, (pack, *rest) in manifest["chunks"].items():  # offset, length, sha(, key)
        if index not in restored:
            by_pack.setdefault(pack, []).append([int(index), *rest])
    batches: list[list[tuple[str, list]]] = []
    size = CHECKPOINT
    for pack, entries in sorted(by_pack.items(), key=lambda p: min(e[0] for e in p[1])):
        for entry in sorted(entries, key=lambda e: e[1]):
            if size >= CHECKPOINT:
                batches.append([])
                size = 0
            if not batches[-1] or batches[-1][-1][0] != pack:
                batches[-1].append((pack, []))
            batches[-1][-1][1].append(entry)
            size += entry[2]
    return batches


def _restore_batches(s3, source: Target, manifest: dict, admin: AdminClient, volume: str,
                     restored: set[str], state_file: str, progress: Progress,
                     keys: dict[str, dict]) -> int:
    """The server writes the chunks into the volume itself (blockd/restore.py),
    fetching the packs through presigned URLs (the target's credentials stay
    here), a batch per request, BATCHES_IN_FLIGHT at once; each batch is durable
    when its request ends, and only then recorded for a resume."""
    batches = restore_batches(manifest, restored)
    total = sum(e[2] for batch in batches for _, es in batch for e in es)
    # The server fetches the packs: it trusts what this CLI trusts (a pinned
    # certificate: that one only, whatever name it is for).
    ca_file = tls_trust.pinned_file() or tls_trust.ca_bundle()
    ca = None
    if ca_file and s3.meta.endpoint_url.startswith("https:"):
        with open(ca_file) as f:
            ca = f.read()
    running: dict[int, int] = {}  # batch → bytes written so far
    done = 0
    lock = threading.Lock()

    def send(number: int, batch: list[tuple[str, list]]) -> int:
        # The backup keys travel to the server only in the request, signed (the
        # admin endpoint is local or TLS): the server opens the chunks with them.
        body = {"chunk_size": manifest["chunk_size"], "ca": ca,
                "pinned": bool(ca and tls_trust.pinned_file()), "keys": keys, "packs": [
            {"key": pack, "chunks": entries,
             "url": s3.generate_presigned_url("get_object", ExpiresIn=PRESIGN_SECONDS,
                                              Params={"Bucket": source.bucket, "Key": pack})}
            for pack, entries in batch]}
        try:
            for line in admin.stream("POST", f"/_basalt/v1/volumes/{volume}/restore", body=body):
                if "error" in line:
                    raise BackupError(line.get("message") or line["error"])
                with lock:
                    running[number] = line.get("written", 0)
                if line.get("done"):
                    return line["written"]
        except AdminError as exc:
            raise BackupError(f"restore onto {volume} failed: {exc}") from None
        raise BackupError(f"restore onto {volume}: the server ended a batch early")

    pool = concurrent.futures.ThreadPoolExecutor(BATCHES_IN_FLIGHT)
    try:
        futures = {pool.submit(send, n, b): (n, b) for n, b in enumerate(batches)}
        pending = set(futures)
        while pending:
            finished, pending = concurrent.futures.wait(
                pending, timeout=0.2, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in finished:
                done += fut.result()
                number, batch = futures[fut]
                with lock:
                    running.pop(number, None)
                restored.update(str(e[0]) for _, es in batch for e in es)
                _save_state(state_file, restored)  # durable on the server: record it
            with lock:
                now = done + sum(running.values())
            progress.update(f"restore: {human_bytes(now)} of {human_bytes(total)}",
                            done=now, total=total)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return done
