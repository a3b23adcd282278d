"""Encrypted volumes: AES-256-XTS per 4 KiB block, the block's place in the
volume as the tweak.

XTS is the disk-encryption mode (dm-crypt, BitLocker, FileVault): each block is
encrypted on its own, so a 4 KiB guest write re-encrypts 4 KiB, and the same
plaintext at two places gives two ciphertexts. The tweak is the block's index
in the *volume* (not the pool slot it lives in), so snapshots and clones, which
share the volume's key and its addresses, copy chunks on write as they are.

The pool below stores, checksums, replicates and heals ciphertext; a block that
was never written (or was trimmed) is a hole and reads as zeros without being
decrypted: a stored block starting with 16 zero bytes is a hole (a written
block's ciphertext starts so with probability 2^-128). XTS authenticates
nothing: the pool's per-block checksums detect damage, as for plaintext volumes.

Cost: every block needs its own OpenSSL context (the tweak is set when one is
made). The AES work is ~0.7 us per 4 KiB (AES-NI); making the context through
the public ``Cipher`` object costs ~3 us more in Python (ABC isinstance checks),
so contexts are made by the function ``Cipher.encryptor`` itself calls (test
``test_volume_cipher.py`` checks the two agree).
"""

from __future__ import annotations

BLOCK = 4096
KEY_BYTES = 64  # two AES-256 keys (data and tweak)
_ZERO = bytes(16)


class VolumeCipher:
    """Encrypts and decrypts whole 4 KiB blocks of one volume family."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"an XTS volume key is {KEY_BYTES} bytes")
        if key[:32] == key[32:]:
            raise ValueError("the two halves of an XTS key must differ")
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        self._xts = modes.XTS
        self._aes = algorithms.AES(key)
        try:
            # The context factories behind Cipher(...).encryptor(), without its ~2 µs of
            # checks per 4 KiB block. Private: a cryptography release that moves them
            # gets the public API (same output, tested), not a broken data path.
            from cryptography.hazmat.bindings._rust import openssl as rust_openssl
            self._enc = rust_openssl.ciphers.create_encryption_ctx
            self._dec = rust_openssl.ciphers.create_decryption_ctx
        except (ImportError, AttributeError):
            self._enc = lambda aes, mode: Cipher(aes, mode).encryptor()
            self._dec = lambda aes, mode: Cipher(aes, mode).decryptor()

    def __repr__(self) -> str:
        return "VolumeCipher(<key hidden>)"

    def encrypt(self, first_block: int, data: bytes | memoryview) -> bytes:
        """Ciphertext of whole blocks starting at volume block ``first_block``."""
        if len(data) == BLOCK:  # the common case (every 4 KiB write): one call, no loop
            return self._enc(self._aes, self._xts(first_block.to_bytes(16, "little"))
                             ).update(data)
        view = memoryview(data)
        if len(view) % BLOCK:
            raise ValueError("volume encryption works on whole 4 KiB blocks")
        make, xts, aes = self._enc, self._xts, self._aes
        return b"".join([make(aes, xts((first_block + i).to_bytes(16, "little")))
                         .update(view[i * BLOCK:(i + 1) * BLOCK])
                         for i in range(len(view) // BLOCK)])

    def decrypt_into(self, first_block: int, view: memoryview) -> None:
        """Decrypt whole blocks in place, starting at volume block ``first_block``;
        holes (never written, or trimmed: zeros) stay zeros."""
        if len(view) == BLOCK:  # the common case (every 4 KiB read): no loop
            if view[:16].tobytes() != _ZERO:  # (memoryview == bytes compares per byte)
                view[:] = self._dec(self._aes, self._xts(first_block.to_bytes(16, "little"))
                                    ).update(view)
            return
        if len(view) % BLOCK:
            raise ValueError("volume encryption works on whole 4 KiB blocks")
        make, xts, aes = self._dec, self._xts, self._aes
        for i in range(0, len(view), BLOCK):
            block = view[i:i + BLOCK]
            if block[:16].tobytes() != _ZERO:
                block[:] = make(aes, xts((first_block + i // BLOCK).to_bytes(16, "little"))
                                ).update(block)

    def decrypt(self, first_block: int, data: bytes | memoryview) -> bytes:
        """Plaintext of whole blocks starting at volume block ``first_block``."""
        out = bytearray(data)
        self.decrypt_into(first_block, memoryview(out))
        return bytes(out)
