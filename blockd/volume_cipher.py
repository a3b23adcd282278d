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
made, and cryptography cannot reset an XTS tweak). The AES work is ~0.7 us per
4 KiB (AES-NI); making the context through the public ``Cipher`` and ``XTS``
objects costs ~3 us more in Python (ABC isinstance and argument checks), so
contexts are made by the function ``Cipher.encryptor`` itself calls, from tweak
objects made without the checks. Each cipher checks at construction that this
path gives what the public API gives, and falls back to the public API if not.
"""

from __future__ import annotations

BLOCK = 4096
KEY_BYTES = 64  # two AES-256 keys (data and tweak)
_ZERO = bytes(16)
_PROBE = bytes(range(256)) * (BLOCK // 256)


def _unchecked_xts(xts: type):
    """``XTS(tweak)`` without its argument checks: our tweaks are always 16 bytes."""
    new = xts.__new__

    def make(tweak: bytes):
        mode = new(xts)
        mode._tweak = tweak
        return mode
    return make


class VolumeCipher:
    """Encrypts and decrypts whole 4 KiB blocks of one volume family."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"an XTS volume key is {KEY_BYTES} bytes")
        if key[:32] == key[32:]:
            raise ValueError("the two halves of an XTS key must differ")
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        self._aes = algorithms.AES(key)
        public = (lambda aes, mode: Cipher(aes, mode).encryptor(),
                  lambda aes, mode: Cipher(aes, mode).decryptor(), modes.XTS)
        self._enc, self._dec, self._xts = public
        expected = self.encrypt(1, _PROBE), self.decrypt(1, _PROBE)
        try:
            # The context factories behind Cipher(...).encryptor() and tweak objects
            # made without XTS.__init__'s checks (~1.5 us less per 4 KiB block).
            # Private: kept only while they give what the public API gives.
            from cryptography.hazmat.bindings._rust import openssl as rust_openssl
            self._enc = rust_openssl.ciphers.create_encryption_ctx
            self._dec = rust_openssl.ciphers.create_decryption_ctx
            self._xts = _unchecked_xts(modes.XTS)
            if (self.encrypt(1, _PROBE), self.decrypt(1, _PROBE)) != expected:
                raise ValueError("the private cipher path disagrees")
        except Exception:  # noqa: BLE001 - any failure of the private path: the public one
            self._enc, self._dec, self._xts = public

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
