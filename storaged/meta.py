"""The object metadata record stored in every disk's LMDB index.

One record per object version, identical on every disk of the set (so a
quorum is found by comparing bytes). A fixed header — mtime, version id,
flags — lets the commit path order versions without decoding the msgpack
body that follows; short keys keep the body small for listing scans.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import random
import struct
from collections.abc import Mapping

import msgpack

from .layout import Geometry

FORMAT = 1
_ids = random.Random()  # seeded from os.urandom once; reseeded in forked children
os.register_at_fork(after_in_child=_ids.seed)


def new_id(bits: int = 128) -> str:
    """A random hex id (version ids, request ids).

    Drawn from a per-process generator seeded from the kernel: uuid4 costs an
    ``os.urandom`` system call per id, measurable on the small-object path.
    """
    return f"{_ids.getrandbits(bits):0{bits // 4}x}"
HEADER = struct.Struct(">Q16sB")  # mtime ns, version id (uuid bytes), flags
INLINE = 1
MARKER = 2      # a delete marker: no data
VERSIONED = 4   # has a version id of its own; without it the version is the "null" one
NULL_VERSION = "null"


@dataclasses.dataclass(frozen=True)
class PartInfo:
    """One stored part: a single PUT has one, a multipart upload many."""

    number: int
    size: int
    etag: str
    checksums: Mapping[str, str] = dataclasses.field(default_factory=dict)
    data_id: str = ""  # whose shard files hold it: "" = the object version's own
    stored_size: int = 0  # bytes in its shard files when not ``size`` (encrypted: sealed)
    salt: bytes = b""     # encrypted multipart part: its Seal's salt (the gateway's)

    @property
    def stored(self) -> int:
        """The size of the part's stored stream (what its shards hold)."""
        return self.stored_size or self.size


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """Everything known about one object version (public view and record)."""

    bucket: str
    key: str
    version_id: str
    size: int
    etag: str
    mtime_ns: int
    content_type: str = "binary/octet-stream"
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    user_meta: Mapping[str, str] = dataclasses.field(default_factory=dict)
    checksums: Mapping[str, str] = dataclasses.field(default_factory=dict)
    checksum_type: str = ""
    k: int = 1
    m: int = 0
    block_size: int = 1 << 20
    dist: tuple[int, ...] = ()
    parts: tuple[PartInfo, ...] = ()
    inline: bool = False
    delete_marker: bool = False
    versioned: bool = False
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    lock_mode: str = ""          # "" | GOVERNANCE | COMPLIANCE
    lock_until_ns: int = 0
    legal_hold: bool = False
    meta_ns: int = 0             # last change of tags or lock settings (newest wins)
    acl: bytes = b""             # the object's ACL (gateway.acl's packing); b"": the default
    encryption: str = ""         # encrypted: how (gateway.sse.Encryption's JSON, keys sealed)

    @property
    def stored_size(self) -> int:
        """Bytes of the stored body (``size`` is the plaintext's when encrypted)."""
        return sum(p.stored for p in self.parts) if self.encryption else self.size

    @property
    def version(self) -> str:
        """The version id clients see: "null", or the mtime and the data id's head
        (the mtime leads so a version is found by one LMDB seek)."""
        if not self.versioned:
            return NULL_VERSION
        return f"{self.mtime_ns:016x}{self.version_id[:16]}"

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.k, self.m, self.block_size)

    @property
    def last_modified(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.mtime_ns / 1e9, tz=datetime.UTC)

    def files(self) -> dict[str, list[int]]:
        """Shard files of this version: data id → part numbers (none when inline)."""
        if self.inline:
            return {}
        out: dict[str, list[int]] = {}
        for p in self.parts:
            out.setdefault(p.data_id or self.version_id, []).append(p.number)
        return out

    def own_files(self) -> dict[str, list[int]]:
        """Shard files written for this version itself (a multipart upload's parts
        belong to the upload until it is finished)."""
        return {d: n for d, n in self.files().items() if d == self.version_id}

    def part_data_id(self, part: PartInfo) -> str:
        return part.data_id or self.version_id

    @property
    def order(self) -> tuple[int, str]:
        """Last-writer-wins order: newer mtime, ties broken by version id."""
        return (self.mtime_ns, self.version_id)

    def pack(self) -> bytes:
        flags = ((INLINE if self.inline else 0) | (MARKER if self.delete_marker else 0)
                 | (VERSIONED if self.versioned else 0))
        header = HEADER.pack(self.mtime_ns, bytes.fromhex(self.version_id), flags)
        extra: dict = {}
        if self.tags:
            extra["tags"] = dict(self.tags)
        if self.lock_mode:
            extra["lock"] = [self.lock_mode, self.lock_until_ns]
        if self.legal_hold:
            extra["hold"] = True
        if self.meta_ns:
            extra["ms"] = self.meta_ns
        if self.acl:
            extra["acl"] = self.acl
        if self.encryption:
            extra["enc"] = self.encryption
        return header + msgpack.packb(extra | {
            "v": FORMAT, "size": self.size, "etag": self.etag, "ct": self.content_type,
            "hdr": dict(self.headers), "um": dict(self.user_meta), "cks": dict(self.checksums),
            "ckt": self.checksum_type, "ec": [self.k, self.m, self.block_size],
            "dist": list(self.dist),
            "parts": [_pack_part(p) for p in self.parts],
        })

    @classmethod
    def unpack(cls, bucket: str, key: str, raw: bytes | memoryview) -> ObjectInfo:
        mtime, vid, flags = HEADER.unpack_from(raw)
        d = msgpack.unpackb(memoryview(raw)[HEADER.size:])
        k, m, bs = d["ec"]
        lock = d.get("lock", ("", 0))
        # Every field at once: a frozen dataclass's __init__ sets its 26 fields one
        # object.__setattr__ at a time, 40% of an unpack, which every read pays
        # (tests/storaged/test_small_object_costs.py checks no field is left out).
        info = object.__new__(cls)
        info.__dict__.update(
            bucket=bucket, key=key, version_id=vid.hex(), size=d["size"], etag=d["etag"],
            mtime_ns=mtime, content_type=d["ct"], headers=d["hdr"], user_meta=d["um"],
            checksums=d["cks"], checksum_type=d.get("ckt", ""), k=k, m=m, block_size=bs,
            dist=tuple(d["dist"]),
            parts=tuple(PartInfo(*p) for p in d["parts"]),
            inline=bool(flags & INLINE), delete_marker=bool(flags & MARKER),
            versioned=bool(flags & VERSIONED), tags=d.get("tags", {}),
            lock_mode=lock[0], lock_until_ns=lock[1],
            legal_hold=d.get("hold", False), meta_ns=d.get("ms", 0), acl=d.get("acl", b""),
            encryption=d.get("enc", ""),
        )
        return info


def _pack_part(p: PartInfo) -> list:
    # Trailing fields only when set: most parts are [number, size, etag, checksums].
    out = [p.number, p.size, p.etag, dict(p.checksums)]
    if p.salt:
        return out + [p.data_id, p.stored_size, p.salt]
    if p.stored_size:
        return out + [p.data_id, p.stored_size]
    return out + [p.data_id] if p.data_id else out


def record_version(raw: bytes | memoryview) -> tuple[int, str]:
    """(mtime, version id) of a packed record, from its header alone."""
    mtime, vid, _ = HEADER.unpack_from(raw)
    return mtime, vid.hex()


def record_inline(raw: bytes | memoryview) -> bool:
    return bool(HEADER.unpack_from(raw)[2] & INLINE)


def record_marker(raw: bytes | memoryview) -> bool:
    return bool(HEADER.unpack_from(raw)[2] & MARKER)


def record_null(raw: bytes | memoryview) -> bool:
    """Whether a packed record is its key's "null" version."""
    return not HEADER.unpack_from(raw)[2] & VERSIONED


def record_meta_ns(raw: bytes | memoryview) -> int:
    """When the record's tags or lock settings last changed (0: never)."""
    return msgpack.unpackb(memoryview(raw)[HEADER.size:]).get("ms", 0)


def parse_version(version: str) -> tuple[int, str] | None:
    """(mtime, data id head) of a client version id; None for "null".

    Raises ValueError for anything that is not a version id Basalt issued.
    """
    if version == NULL_VERSION:
        return None
    if len(version) != 32 or version != version.lower():
        raise ValueError(version)
    return int(version[:16], 16), f"{int(version[16:], 16):016x}"
