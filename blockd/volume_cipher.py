"""Encrypted volumes: AES-256-XTS per 4 KiB block, the block's place in the
volume as the tweak.

XTS is the disk-encryption mode (dm-crypt, BitLocker, FileVault): each block is
encrypted on its own, so a 4 KiB guest write re-encrypts 4 KiB, and the same
plaintext at two places gives two ciphertexts. The tweak is the block's index
in the *volume* (not the pool slot it lives in), so snapshots and clones, which
share the volume's key and its addresses, copy chunks on write as they are.

The pool below stores, checksums, replicates and heals ciphertext; a block that
was never written (or was trimmed) is a hole and reads as zeros without being
decrypted. XTS authenticates nothing: the pool's per-block checksums detect
damage, as for plaintext volumes.
"""

from __future__ import annotations

from typing import Any

BLOCK = 4096
KEY_BYTES = 64  # two AES-256 keys (data and tweak)


class VolumeCipher:
    """Encrypts and decrypts whole 4 KiB blocks of one volume family."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"an XTS volume key is {KEY_BYTES} bytes")
        if key[:32] == key[32:]:
            raise ValueError("the two halves of an XTS key must differ")
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        self._cipher, self._xts = Cipher, modes.XTS
        self._aes = algorithms.AES(key)

    def _run(self, first_block: int, data: bytes | memoryview, encrypt: bool) -> bytes:
        view = memoryview(data)
        if len(view) % BLOCK:
            raise ValueError("volume encryption works on whole 4 KiB blocks")
        out = bytearray(len(view))
        cipher, xts, aes = self._cipher, self._xts, self._aes
        for i in range(0, len(view), BLOCK):
            tweak = (first_block + i // BLOCK).to_bytes(16, "little")
            c: Any = cipher(aes, xts(tweak))
            ctx = c.encryptor() if encrypt else c.decryptor()
            out[i:i + BLOCK] = ctx.update(view[i:i + BLOCK])
        return bytes(out)

    def encrypt(self, first_block: int, data: bytes | memoryview) -> bytes:
        """Ciphertext of whole blocks starting at volume block ``first_block``."""
        return self._run(first_block, data, True)

    def decrypt(self, first_block: int, data: bytes | memoryview) -> bytes:
        """Plaintext of whole blocks starting at volume block ``first_block``."""
        return self._run(first_block, data, False)
