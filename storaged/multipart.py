"""Multipart uploads: parts stored as they come, composed into one object at the end.

Each part is streamed into its own shard files ``<part data id>.<number>``
exactly like a PUT, and recorded in every disk's ``parts`` table (write
quorum). Completion writes one object record whose parts point at those
files — no part data is copied — then forgets the upload; parts the object
does not use are purged. Two completions of the same key race like two PUTs:
the last commit wins on every disk, and each version names its own files, so
nobody ever reads a mix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from .errors import (
    EntityTooSmall,
    InvalidPart,
    InvalidPartOrder,
    NoSuchUpload,
    ReadQuorumError,
    WriteQuorumError,
)
from .layout import distribution
from .meta import ObjectInfo, PartInfo, new_id
from .metadb import EndUpload, PutPart, PutUpload, encode_key, part_key, upload_key
from .writer import (
    Body,
    Condition,
    ObjectAttrs,
    Seal,
    ShardStream,
    Stored,
    commit_version,
    sealed_reader,
)

if TYPE_CHECKING:
    from .store import ObjectStore

MIN_PART_SIZE = 5 << 20
MAX_PARTS = 10000


@dataclasses.dataclass(frozen=True)
class UploadInfo:
    bucket: str
    key: str
    upload_id: str
    initiated_ns: int
    attrs: ObjectAttrs
    checksum_algorithm: str = ""
    checksum_type: str = ""

    def pack(self) -> bytes:
        a = self.attrs
        return msgpack.packb({"key": self.key, "ini": self.initiated_ns, "ct": a.content_type,
                              "hdr": dict(a.headers), "um": dict(a.user_meta),
                              "cka": self.checksum_algorithm, "ckt": self.checksum_type,
                              "tags": dict(a.tags), "lock": [a.lock_mode, a.lock_until_ns],
                              "hold": a.legal_hold} | ({"acl": a.acl} if a.acl else {})
                             | ({"enc": a.encryption} if a.encryption else {}))

    @classmethod
    def unpack(cls, bucket: str, upload_id: str, raw: bytes) -> UploadInfo:
        d = msgpack.unpackb(raw)
        mode, until = d.get("lock", ("", 0))
        attrs = ObjectAttrs(d["ct"], d["hdr"], d["um"], d.get("tags", {}), mode, until,
                            d.get("hold", False), d.get("acl", b""), d.get("enc", ""))
        return cls(bucket, d["key"], upload_id, d["ini"], attrs, d["cka"], d["ckt"])


@dataclasses.dataclass(frozen=True)
class PartRecord:
    number: int
    size: int
    etag: str
    checksums: Mapping[str, str]
    data_id: str
    mtime_ns: int
    stored_size: int = 0  # encrypted: the size of its sealed form (PartInfo.stored_size)
    salt: bytes = b""     # encrypted: the Seal's salt (PartInfo.salt)

    def pack(self) -> bytes:
        return msgpack.packb({"pid": self.data_id, "size": self.size, "etag": self.etag,
                              "cks": dict(self.checksums), "mt": self.mtime_ns}
                             | ({"ss": self.stored_size} if self.stored_size else {})
                             | ({"sl": self.salt} if self.salt else {}))

    def info(self) -> PartInfo:
        """The part as an object version records it."""
        return PartInfo(self.number, self.size, self.etag, dict(self.checksums), self.data_id,
                        self.stored_size, self.salt)

    @classmethod
    def unpack(cls, number: int, raw: bytes) -> PartRecord:
        d = msgpack.unpackb(raw)
        return cls(number, d["size"], d["etag"], d["cks"], d["pid"], d["mt"], d.get("ss", 0),
                   d.get("sl", b""))


@dataclasses.dataclass
class UploadPage:
    uploads: list[UploadInfo]
    prefixes: list[str]
    truncated: bool
    next_key: str
    next_upload_id: str


def _quorum(store: ObjectStore, values: list[bytes | None]) -> bytes | None:
    """The value at least K disks agree on (None: absent), as for objects."""
    votes = Counter(v for v in values if v is not None)
    if votes:
        value, count = votes.most_common(1)[0]
        if count >= store.k:
            return value
    if len(values) < store.n and sum(votes.values()) + store.n - len(values) >= store.write_quorum:
        raise ReadQuorumError("too many disks unavailable to read the upload")
    return None


async def _read_all(store: ObjectStore, table: bytes, key: bytes) -> list[bytes | None]:
    return list((await store.set.vote("get", table, key)).values())


async def _commit_all(store: ObjectStore, ops: list[Any], what: str) -> dict[int, Any]:
    done = await store.set.commit_all(ops)
    done.require(store.write_quorum, what)
    return done.firsts()


def new_upload_id() -> str:
    # Time first: upload ids of one key then list in the order they started.
    return f"{time.time_ns():016x}{new_id(64)}"


async def create_upload(store: ObjectStore, bucket: str, key: str, attrs: ObjectAttrs,
                        checksum_algorithm: str = "", checksum_type: str = "") -> UploadInfo:
    await store.require_bucket(bucket)
    upload = UploadInfo(bucket, key, new_upload_id(), time.time_ns(), attrs, checksum_algorithm,
                        checksum_type)
    record = upload.pack()
    await _commit_all(store, [PutUpload(bucket, key, upload.upload_id, record)],
                      f"create upload {bucket}/{key}")
    return upload


async def get_upload(store: ObjectStore, bucket: str, key: str, upload_id: str) -> UploadInfo:
    raw = None
    if len(upload_id) == 32 and all(c in "0123456789abcdef" for c in upload_id):
        raw = _quorum(store, await _read_all(store, b"uploads",
                                             upload_key(bucket, key, upload_id)))
    if raw is None:
        await store.require_bucket(bucket)
        raise NoSuchUpload(upload_id)
    return UploadInfo.unpack(bucket, upload_id, raw)


async def upload_part(store: ObjectStore, bucket: str, key: str, upload_id: str, number: int,
                      body: Body, *, size: int | None = None, content_md5: bytes | None = None,
                      hashers: Sequence[Any] = (),
                      finalize: Callable[[str], Mapping[str, str] | None] | None = None,
                      seal: Seal | None = None, upload: UploadInfo | None = None) -> PartRecord:
    """Store one part (replacing an earlier upload of the same number); ``seal``
    encrypts it as for a PUT. ``upload`` is the upload as the caller just read it
    (else it is read here first, so a part of no upload writes no data)."""
    if upload is None:
        # Only an early refusal: the part's record is not applied on a disk that
        # does not know the upload (PutPart), e.g. when it was aborted meanwhile.
        await get_upload(store, bucket, key, upload_id)
    # Parts skip the page cache: they are the bulk path (aws s3 cp, rclone),
    # rarely read back soon, and through the cache a third of 1 GiB uploads fell
    # into page reclaim (see ARCHITECTURE.md, "What bounds the large-object rows").
    stream = ShardStream(store, bucket, key, new_id(), number, upload_id, direct=True)
    chunks, hashers, sealed = sealed_reader(store, body, size, hashers, seal)

    async def commit(stored: Stored) -> PartRecord:
        part = PartRecord(number, sealed.size if sealed else stored.size,
                          seal.etag_of(stored.md5_hex) if seal else stored.md5_hex,
                          dict(stored.checksums or {}), stored.data_id, time.time_ns(),
                          stored.size if sealed else 0, seal.salt if seal else b"")
        record = part.pack()
        positions = stored.positions
        done = await store.set.commit_all(
            [PutPart(bucket, key, upload_id, number, stored.data_id, record)], positions)
        applied = done.applied()
        for p in positions:
            if p not in applied:
                store.background(store.purge(p, stored.data_id, [number]))
        if len(applied) < store.write_quorum:
            await stream.discard()
            await get_upload(store, bucket, key, upload_id)  # NoSuchUpload when aborted meanwhile
            raise WriteQuorumError(f"part {number} of {upload_id}: {len(applied)} disks")
        for p, replaced in applied.items():
            if replaced.record is not None:
                old = PartRecord.unpack(number, replaced.record)
                if old.data_id != stored.data_id:
                    store.background(store.purge(p, old.data_id, [number]))
        return part

    return await stream.run(chunks, memoryview(b""), content_md5, hashers, finalize, commit,
                            md5=sealed.md5 if sealed else None)


async def list_parts(store: ObjectStore, bucket: str, key: str, upload_id: str,
                     after: int = 0, max_parts: int = 1000) -> tuple[list[PartRecord], bool]:
    """Parts numbered above ``after`` (quorum-agreed), and whether more follow."""
    await get_upload(store, bucket, key, upload_id)
    found: dict[int, list[bytes]] = {}
    prefix = upload_id.encode()
    for _, items in await store.set.ask("range", b"parts", part_key(upload_id, after + 1),
                                        prefix):
        for k, v in items:
            found.setdefault(int.from_bytes(k[len(prefix):], "big"), []).append(v)
    parts = []
    for number in sorted(found):
        votes = Counter(found[number])
        value, count = max(votes.items(),
                           key=lambda kv: (kv[1], msgpack.unpackb(kv[0])["mt"]))
        if count >= store.k:
            parts.append(PartRecord.unpack(number, value))
    return parts[:max_parts], len(parts) > max_parts


def multipart_etag(etags: Sequence[str]) -> str:
    """S3's ETag of a multipart object: MD5 of the parts' binary MD5s, then -N."""
    digest = hashlib.md5(b"".join(bytes.fromhex(e) for e in etags)).hexdigest()
    return f"{digest}-{len(etags)}"


async def complete_upload(store: ObjectStore, bucket: str, key: str, upload_id: str,
                          chosen: Sequence[tuple[int, str]], *,
                          finalize: Callable[[list[PartRecord]], Mapping[str, str]] | None = None,
                          checksum_type: str = "",
                          condition: Condition | None = None) -> ObjectInfo:
    """Compose the named parts (number, ETag) into the object; nothing is copied."""
    upload = await get_upload(store, bucket, key, upload_id)
    if not chosen:
        raise InvalidPart("You must specify at least one part")
    numbers = [n for n, _ in chosen]
    if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
        raise InvalidPartOrder("The list of parts was not in ascending order")
    listed, _ = await list_parts(store, bucket, key, upload_id, 0, MAX_PARTS)
    stored = {p.number: p for p in listed}
    parts: list[PartRecord] = []
    for number, etag in chosen:
        part = stored.get(number)
        if part is None or etag.strip('"') != part.etag:
            raise InvalidPart(f"part {number} was not uploaded or has another ETag",
                              number=number)
        parts.append(part)
    for part in parts[:-1]:
        if part.size < store.min_part_size:
            raise EntityTooSmall(f"part {part.number} is {part.size} bytes, the minimum is "
                                 f"{store.min_part_size}", number=part.number, size=part.size)
    checksums = dict(finalize(parts)) if finalize else {}
    info = ObjectInfo(
        bucket=bucket, key=key, version_id=new_id(), size=sum(p.size for p in parts),
        etag=multipart_etag([p.etag for p in parts]), mtime_ns=time.time_ns(),
        content_type=upload.attrs.content_type, headers=dict(upload.attrs.headers),
        user_meta=dict(upload.attrs.user_meta), checksums=checksums,
        checksum_type=checksum_type, tags=dict(upload.attrs.tags),
        lock_mode=upload.attrs.lock_mode, lock_until_ns=upload.attrs.lock_until_ns,
        legal_hold=upload.attrs.legal_hold, acl=upload.attrs.acl,
        encryption=upload.attrs.encryption, k=store.k, m=store.m, block_size=store.geometry.block_size,
        dist=tuple(distribution(bucket, key, store.n)),
        parts=tuple(p.info() for p in parts))
    info = await commit_version(store, info, None, condition, store.online_positions())
    await end_upload(store, bucket, key, upload_id, keep=(info.mtime_ns, info.version_id))
    return info


async def end_upload(store: ObjectStore, bucket: str, key: str, upload_id: str,
                     keep: tuple[int, str] | None = None) -> None:
    """Forget an upload; purge the part files nothing uses (abort and completion).

    ``keep``: the version (mtime, data id) that completed it, whose parts stay.
    """
    done = await _commit_all(store, [EndUpload(bucket, key, upload_id, keep)],
                             f"end upload {upload_id}")
    for pos, unused in done.items():
        for data_id, number in unused:
            store.background(store.purge(pos, data_id, [number]))


async def abort_upload(store: ObjectStore, bucket: str, key: str, upload_id: str) -> None:
    await get_upload(store, bucket, key, upload_id)
    await end_upload(store, bucket, key, upload_id)


async def part_uses(store: ObjectStore, upload_id: str, data_id: str) -> bool:
    """Whether any disk's part records of ``upload_id`` name ``data_id`` (True
    when a disk could not tell: a file is only ever purged on certainty)."""
    prefix = upload_id.encode()
    online = store.online_positions()
    answers = await store.set.ask("range", b"parts", prefix, prefix, positions=online)
    if len(answers) < len(online):
        return True
    return any(msgpack.unpackb(v)["pid"] == data_id for _, items in answers for _, v in items)


async def list_uploads(store: ObjectStore, bucket: str, prefix: str = "", delimiter: str = "",
                       key_marker: str = "", upload_id_marker: str = "",
                       max_uploads: int = 1000) -> UploadPage:
    """In-progress uploads of a bucket, by key then start time (quorum-agreed)."""
    await store.require_bucket(bucket)
    start = encode_key(bucket, prefix)
    head = bucket.encode() + b"/"
    seen: dict[bytes, list[bytes]] = {}
    for _, items in await store.set.ask("range", b"uploads", start, head):
        for k, v in items:
            seen.setdefault(k, []).append(v)
    uploads: list[UploadInfo] = []
    for k in sorted(seen):
        votes = Counter(seen[k])
        value, count = votes.most_common(1)[0]
        if count < store.k:
            continue
        upload = UploadInfo.unpack(bucket, k.rsplit(b"\x00", 1)[1].decode(), value)
        if not upload.key.startswith(prefix):
            continue
        if key_marker and (upload.key < key_marker or (
                upload.key == key_marker and (not upload_id_marker
                                              or upload.upload_id <= upload_id_marker))):
            continue
        uploads.append(upload)
    out: list[UploadInfo] = []
    prefixes: list[str] = []
    truncated = False
    for upload in uploads:
        rest = upload.key[len(prefix):]
        cut = rest.find(delimiter) if delimiter else -1
        if len(out) + len(prefixes) >= max_uploads:
            truncated = True
            break
        if cut >= 0:
            cp = prefix + rest[:cut + len(delimiter)]
            if cp not in prefixes and not (key_marker and cp <= key_marker):
                prefixes.append(cp)
            continue
        out.append(upload)
    last = out[-1] if out else None
    return UploadPage(out, prefixes, truncated,
                      (last.key if last else (prefixes[-1] if prefixes else "")) if truncated else "",
                      last.upload_id if truncated and last else "")


async def expire_uploads(store: ObjectStore, max_age_ns: int) -> int:
    """Abort uploads started more than ``max_age_ns`` ago (abandoned); how many."""
    now = time.time_ns()
    expired = 0
    for bucket in [b.name for b in await store.list_buckets()]:
        page = await list_uploads(store, bucket, max_uploads=1 << 30)
        for upload in page.uploads:
            if now - upload.initiated_ns > max_age_ns:
                await end_upload(store, bucket, upload.key, upload.upload_id)
                expired += 1
    return expired
