"""The key service: named KMS keys and the data keys sealed under them.

A *KMS key* has an id (a UUID, as AWS's), a name (its alias), a state and one
or more *versions* of key material: 32 random bytes each, sealed with
AES-256-GCM under a key derived from the master key (the key id and version
bound in as associated data). Records are settings ``key/ID`` of the system
bucket ``.basalt-kms``: replicated on a write quorum of every set and healed
like every bucket setting, shared by every worker and node.

A *data key* encrypts one object or volume. It is 32 random bytes, handed out
in plaintext to the caller once and kept only sealed (:class:`SealedKey`) beside
the data: AES-256-GCM under the current version of the KMS key, with the key id,
version and the caller's *encryption context* as associated data, so a sealed
key moved to another object, or opened with another context, fails.

Rotation adds a version; new data keys are sealed under it, older sealed keys
keep opening with the version they name, and :meth:`KeyService.reseal` moves
one to the newest version without touching the data it protects. A disabled
key neither seals nor opens. SSE-S3 uses the built-in key ``SSE_S3`` whose
material is derived from the master key: it has no record and cannot be
disabled.

Key material and plaintext data keys never leave this module but as return
values: nothing here logs them, and their reprs hide them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import struct
import time
import uuid
from typing import Any

from . import master_key, system_buckets

SYSTEM_BUCKET = ".basalt-kms"
SSE_S3 = "00000000-0000-0000-0000-000000000000"  # the built-in SSE-S3 key
DEFAULT_ALIAS = "aws/s3"  # what aws:kms without a key id uses, created on first use
FINGERPRINT = "master/fingerprint"
REFRESH_SECONDS = 1.0
_MAGIC = b"BK1"
_HEADER = struct.Struct(">3s16sH12s")  # magic, key id, version, nonce
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_-")


class KMSError(Exception):
    """A key operation refused; ``code`` is the AWS KMS exception name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclasses.dataclass
class KeyRecord:
    id: str
    name: str
    created: float
    enabled: bool = True
    description: str = ""
    versions: list[str] = dataclasses.field(default_factory=list, repr=False)  # sealed, hex
    rotated: float | None = None

    def as_dict(self, region: str = "us-east-1", account: str = "000000000000") -> dict:
        """What the admin API and CLI show (never key material)."""
        return {"id": self.id, "name": self.name,
                "arn": f"arn:aws:kms:{region}:{account}:key/{self.id}",
                "state": "Enabled" if self.enabled else "Disabled",
                "description": self.description, "versions": len(self.versions),
                "created": _iso(self.created),
                "rotated": _iso(self.rotated) if self.rotated else None}


@dataclasses.dataclass(frozen=True)
class DataKey:
    plaintext: bytes = dataclasses.field(repr=False)
    sealed: bytes
    key_id: str


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _context_bytes(context: dict[str, str] | None) -> bytes:
    # Canonical (sorted, compact) so the same context always binds the same way.
    return json.dumps(context or {}, sort_keys=True, separators=(",", ":")).encode()


def key_id_of(sealed: bytes) -> str:
    """The KMS key id a sealed data key names."""
    if len(sealed) < _HEADER.size or sealed[:3] != _MAGIC:
        raise KMSError("InvalidCiphertextException", "not a sealed data key")
    return str(uuid.UUID(bytes=sealed[3:19]))


class KeyService:
    """The KMS keys of one store, as one process sees them."""

    def __init__(self, store: Any, master: bytes) -> None:
        self.store = store
        self.fingerprint = master_key.fingerprint(master)
        self._master = master
        self._keys: dict[str, KeyRecord] = {}
        self._read_at = float("-inf")
        self._materials: dict[tuple[str, int], Any] = {}  # (id, version) → AESGCM
        self._lock = asyncio.Lock()

    # --- records ----------------------------------------------------------------------

    async def _records(self, max_age: float = REFRESH_SECONDS) -> dict[str, KeyRecord]:
        if time.monotonic() - self._read_at > max_age:
            async with self._lock:
                if time.monotonic() - self._read_at > max_age:
                    started = time.monotonic()
                    configs = await self._configs()
                    self._keys = {}
                    for kind, raw in configs.items():
                        if kind.startswith("key/"):
                            record = KeyRecord(**json.loads(raw))
                            self._keys[record.id] = record
                    self._read_at = started
        return self._keys

    async def _configs(self) -> dict[str, bytes]:
        return await system_buckets.configs(self.store, SYSTEM_BUCKET)

    async def _put(self, kind: str, value: bytes) -> None:
        await system_buckets.set_config(self.store, SYSTEM_BUCKET, kind, value)

    async def _save(self, record: KeyRecord) -> None:
        await self._put(f"key/{record.id}", json.dumps(dataclasses.asdict(record)).encode())
        self._read_at = float("-inf")

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key for another use of the master key (e.g. sealing console
        sessions), the same in every process and node that holds it."""
        return master_key.derive(self._master, purpose)

    async def check_master(self) -> None:
        """Refuse a master key other than the one this store's keys were made
        under (a node given another key file, or a data dir moved without its
        key); the first server to start records its key's fingerprint."""
        configs = await self._configs()
        stored = configs.get(FINGERPRINT)
        if stored is None:
            await self._put(FINGERPRINT, self.fingerprint.encode())
        elif stored.decode() != self.fingerprint:
            raise master_key.MasterKeyError(
                f"this master key (fingerprint {self.fingerprint}) is not the one this "
                f"data's keys were made under (fingerprint {stored.decode()}): start with "
                f"--master-key-file naming that key")

    async def keys(self) -> list[KeyRecord]:
        """Every KMS key, oldest first."""
        return sorted((await self._records(0)).values(), key=lambda r: (r.created, r.id))

    async def find(self, ref: str, fresh: bool = False) -> KeyRecord:
        """A key by id, ARN (``arn:aws:kms:…:key/ID``), name or ``alias/NAME``."""
        records = await self._records(0 if fresh else REFRESH_SECONDS)
        found = _match(records, ref)
        if found is None and not fresh:  # made a moment ago by another worker?
            found = _match(await self._records(0), ref)
        if found is None:
            raise KMSError("NotFoundException", f"Invalid keyId {ref}")
        return found

    async def create(self, name: str, description: str = "") -> KeyRecord:
        """A new enabled key with one version of fresh material."""
        if not name or len(name) > 250 or not set(name) <= _NAME_CHARS or name.startswith(
                "alias/"):
            raise KMSError("ValidationException", "a key name is 1-250 letters, digits, "
                                                  "'/', '_' and '-', not starting with alias/")
        if _match(await self._records(0), name) is not None:
            raise KMSError("AlreadyExistsException", f"a KMS key named {name!r} exists")
        record = KeyRecord(str(uuid.uuid4()), name, time.time(), description=description)
        record.versions.append(self._seal_material(record.id, 0, os.urandom(32)))
        await self._save(record)
        return record

    async def rotate(self, ref: str) -> KeyRecord:
        """Add a version: new data keys use it, existing ones still open."""
        record = await self.find(ref, fresh=True)
        version = len(record.versions)
        record.versions.append(self._seal_material(record.id, version, os.urandom(32)))
        record.rotated = time.time()
        await self._save(record)
        return record

    async def set_enabled(self, ref: str, enabled: bool) -> KeyRecord:
        record = await self.find(ref, fresh=True)
        record.enabled = enabled
        await self._save(record)
        return record

    async def default_key(self) -> KeyRecord:
        """The key ``aws:kms`` uses when the request names none (made on first use)."""
        try:
            return await self.find(DEFAULT_ALIAS)
        except KMSError:
            try:
                return await self.create(DEFAULT_ALIAS, "default key for SSE-KMS")
            except KMSError:  # another worker made it at the same moment
                return await self.find(DEFAULT_ALIAS, fresh=True)

    # --- data keys ----------------------------------------------------------------------

    async def data_key(self, ref: str | None, context: dict[str, str] | None = None,
                       size: int = 32) -> DataKey:
        """A fresh data key of ``size`` bytes sealed under a KMS key (``None``:
        SSE-S3's built-in key)."""
        plaintext = os.urandom(size)
        if ref is None or ref == SSE_S3:
            return DataKey(plaintext, self._seal(self._sse_s3, SSE_S3, 0, plaintext, context),
                           SSE_S3)
        record = await self.find(ref)
        _usable(record)
        version = len(record.versions) - 1
        aead = self._material(record, version)
        return DataKey(plaintext, self._seal(aead, record.id, version, plaintext, context),
                       record.id)

    async def open(self, sealed: bytes, context: dict[str, str] | None = None) -> bytes:
        """The plaintext of a sealed data key, with the context it was sealed with."""
        from cryptography.exceptions import InvalidTag
        key_id = key_id_of(sealed)
        _, _, version, nonce = _HEADER.unpack_from(sealed)
        if key_id == SSE_S3:
            aead = self._sse_s3
        else:
            record = await self.find(key_id)
            _usable(record)
            if version >= len(record.versions):
                raise KMSError("InvalidCiphertextException", "the key version does not exist")
            aead = self._material(record, version)
        try:
            return aead.decrypt(nonce, sealed[_HEADER.size:], sealed[:_HEADER.size]
                                + _context_bytes(context))
        except InvalidTag:
            raise KMSError("InvalidCiphertextException",
                           "the data key does not open with this key and context") from None

    async def reseal(self, sealed: bytes, context: dict[str, str] | None = None) -> bytes:
        """The same data key sealed under its KMS key's newest version."""
        plaintext = await self.open(sealed, context)
        key_id = key_id_of(sealed)
        if key_id == SSE_S3:
            return sealed
        record = await self.find(key_id)
        version = len(record.versions) - 1
        return self._seal(self._material(record, version), key_id, version, plaintext, context)

    # --- sealing ------------------------------------------------------------------------

    # Made on first use: a worker that never sees an encrypted object never
    # loads cryptography (several MiB of resident memory per process).
    @functools.cached_property
    def _aead(self) -> Any:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        return AESGCM

    @functools.cached_property
    def _wrap(self) -> Any:
        return self._aead(master_key.derive(self._master, "kms key material"))

    @functools.cached_property
    def _sse_s3(self) -> Any:
        return self._aead(master_key.derive(self._master, "sse-s3 data keys"))

    def _seal_material(self, key_id: str, version: int, material: bytes) -> str:
        nonce = os.urandom(12)
        aad = f"{key_id}/{version}".encode()
        return (nonce + self._wrap.encrypt(nonce, material, aad)).hex()

    def _material(self, record: KeyRecord, version: int) -> Any:
        from cryptography.exceptions import InvalidTag
        cached = self._materials.get((record.id, version))
        if cached is None:
            raw = bytes.fromhex(record.versions[version])
            try:
                material = self._wrap.decrypt(raw[:12], raw[12:],
                                              f"{record.id}/{version}".encode())
            except InvalidTag:
                raise KMSError("KMSInternalException",
                               f"KMS key {record.name} was sealed under another master key"
                               ) from None
            cached = self._materials[(record.id, version)] = self._aead(material)
        return cached

    @staticmethod
    def _seal(aead: Any, key_id: str, version: int, plaintext: bytes,
              context: dict[str, str] | None) -> bytes:
        header = _HEADER.pack(_MAGIC, uuid.UUID(key_id).bytes, version, os.urandom(12))
        return header + aead.encrypt(header[-12:], plaintext, header + _context_bytes(context))


def _match(records: dict[str, KeyRecord], ref: str) -> KeyRecord | None:
    if ref.startswith("arn:"):
        ref = ref.rpartition(":")[2]
        if ref.startswith("key/"):
            ref = ref[4:]
    if ref.startswith("alias/"):
        ref = ref[6:]
    found = records.get(ref)
    if found is None:
        found = next((r for r in records.values() if r.name == ref), None)
    return found


def _usable(record: KeyRecord) -> None:
    if not record.enabled:
        raise KMSError("DisabledException", f"KMS key {record.name} is disabled")
