"""Encrypted backups: how a backup's chunks and their keys are sealed.

A backup of an encrypted volume (or any backup given ``--passphrase-file``)
seals every chunk with AES-256-GCM before it leaves the client: a random
12-byte nonce, then the ciphertext and its tag; the chunk's index in the volume
is the associated data, so a chunk moved to another place fails to open. Each
backup run uses its own random 32-byte *backup key*, recorded in the manifest
only wrapped:

- ``{"kdf": "scrypt", ...}``: under a key derived from the user's passphrase
  (scrypt, salt in the record), restorable anywhere by whoever has the passphrase;
- ``{"sealed": ...}``: sealed by the server (AES-256-GCM under a key derived from
  its master key): restorable only on a server holding the same master key.

The sha256 a manifest keeps for each chunk is of its sealed bytes (what a
restore fetches and checks), so neither the packs, their names nor the manifest
reveal anything of the plaintext but which chunks are allocated.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

KEY_BYTES = 32
NONCE = 12
OVERHEAD = NONCE + 16  # a sealed chunk is this much longer than its plaintext
SCRYPT = {"n": 1 << 15, "r": 8, "p": 1}  # ~0.1 s and 32 MiB per derivation
_WRAP_AAD = b"basalt volume backup key"
SERVER_PURPOSE = "volume backup keys"  # KeyService.derived_key(SERVER_PURPOSE)


class BackupKeyError(Exception):
    """A backup key does not open: a wrong passphrase, another master key, damage."""


def _aead(key: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    return AESGCM(key)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: Any) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise BackupKeyError("a backup key is not base64") from None


class ChunkSealer:
    """Seals and opens the chunks of one backup run under its backup key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise BackupKeyError(f"a backup key is {KEY_BYTES} bytes")
        self._aead = _aead(key)

    def __repr__(self) -> str:
        return "ChunkSealer(<key hidden>)"

    def seal(self, index: int, data: bytes | memoryview) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, bytes(data), _aad(index))

    def open(self, index: int, sealed: bytes | memoryview) -> bytes:
        from cryptography.exceptions import InvalidTag
        sealed = bytes(sealed)
        try:
            return self._aead.decrypt(sealed[:NONCE], sealed[NONCE:], _aad(index))
        except InvalidTag:
            raise BackupKeyError(f"chunk {index} does not open with its backup key") from None


def _aad(index: int) -> bytes:
    return b"basalt backup chunk " + index.to_bytes(8, "big")


# passphrases (the CLI) --------------------------------------------------------------


def _kek(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, dklen=32,
                          maxmem=256 * r * n)


def wrap_with_passphrase(key: bytes, passphrase: bytes) -> dict:
    """The manifest's record of a backup key wrapped under a passphrase."""
    salt, nonce = os.urandom(16), os.urandom(NONCE)
    kek = _kek(passphrase, salt, **SCRYPT)
    return {"kdf": "scrypt", **SCRYPT, "salt": b64(salt),
            "wrapped": b64(nonce + _aead(kek).encrypt(nonce, key, _WRAP_AAD))}


def unwrap_with_passphrase(record: dict, passphrase: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag
    try:
        kek = _kek(passphrase, unb64(record["salt"]), int(record["n"]), int(record["r"]),
                   int(record["p"]))
        wrapped = unb64(record["wrapped"])
        return _aead(kek).decrypt(wrapped[:NONCE], wrapped[NONCE:], _WRAP_AAD)
    except (InvalidTag, KeyError, ValueError):
        raise BackupKeyError("the passphrase does not open this backup's key") from None


# server-sealed keys (the owner process) ----------------------------------------------


def seal_for_server(derived_key: bytes, key: bytes) -> bytes:
    """A backup key sealed under the server's derived key (``KeyService.derived_key``)."""
    nonce = os.urandom(NONCE)
    return nonce + _aead(derived_key).encrypt(nonce, key, _WRAP_AAD)


def open_on_server(derived_key: bytes, sealed: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag
    try:
        return _aead(derived_key).decrypt(sealed[:NONCE], sealed[NONCE:], _WRAP_AAD)
    except (InvalidTag, ValueError):
        raise BackupKeyError("the backup's key was sealed by a server with another master "
                             "key (restore it there, or back up with --passphrase-file)"
                             ) from None

