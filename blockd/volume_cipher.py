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

Cost: every block has its own tweak, and ``cryptography`` cannot change an XTS
context's tweak, so through it each block needs a new OpenSSL context (a key
schedule and Python callbacks: ~2 us in a tight loop, ~3x that in the server
between requests). So blocks go through OpenSSL's own EVP interface (the
system's libcrypto, through cffi's ABI mode, nothing compiled): one context per
thread and direction, keyed once, and per block only a new tweak and the AES
work (~1.4 us). Each cipher checks at construction that this path gives what
``cryptography``'s public API gives, and uses the public API when libcrypto
cannot be loaded or disagrees.
"""

from __future__ import annotations

import ctypes.util
import functools
import threading
from collections.abc import Callable

BLOCK = 4096
KEY_BYTES = 64  # two AES-256 keys (data and tweak)
_ZERO = bytes(16)
_PROBE = bytes(range(256)) * (BLOCK // 256)

# A cipher's two operations: encrypt_into(first block, data, out) writes the
# ciphertext into ``out``, decrypt_into(first block, view) decrypts in place,
# leaving holes (zeros) alone.
EncryptInto = Callable[[int, "bytes | memoryview", memoryview], None]
DecryptInto = Callable[[int, memoryview], None]

_EVP = """
typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
typedef struct evp_cipher_st EVP_CIPHER;
EVP_CIPHER_CTX *EVP_CIPHER_CTX_new(void);
void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx);
const EVP_CIPHER *EVP_aes_256_xts(void);
int EVP_CipherInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, void *impl,
                      const char *key, const char *iv, int enc);
int EVP_CipherUpdate(EVP_CIPHER_CTX *ctx, char *out, int *outl, const char *in, int inl);
"""


@functools.cache
def _libcrypto():
    """(ffi, lib) for the system's libcrypto; OSError when there is none."""
    import cffi
    ffi = cffi.FFI()
    ffi.cdef(_EVP)
    for name in ("libcrypto.so.3", ctypes.util.find_library("crypto")):
        if name:
            try:
                return ffi, ffi.dlopen(name)
            except OSError:
                continue
    raise OSError("no libcrypto to load")


def _blocks(length: int) -> range:
    if length % BLOCK:
        raise ValueError("volume encryption works on whole 4 KiB blocks")
    return range(0, length, BLOCK)


def _openssl_xts(key: bytes) -> tuple[EncryptInto, DecryptInto]:
    """The two operations through libcrypto's EVP interface.

    An XTS context cannot be shared between threads (the tweak is set, then
    used), and a pool's larger I/O runs in threads, so each thread keys its own
    pair of contexts on first use; they are freed with the thread. The 4 KiB
    case is written out: it is every small guest read and write."""
    ffi, lib = _libcrypto()
    init, update, from_buffer, null = (lib.EVP_CipherInit_ex, lib.EVP_CipherUpdate,
                                       ffi.from_buffer, ffi.NULL)
    xts, local = lib.EVP_aes_256_xts(), threading.local()

    def contexts() -> tuple:
        pair = []
        for encrypting in (1, 0):
            ctx = lib.EVP_CIPHER_CTX_new()
            if ctx == null:
                raise MemoryError("EVP_CIPHER_CTX_new failed")
            ctx = ffi.gc(ctx, lib.EVP_CIPHER_CTX_free)
            if init(ctx, xts, null, key, null, encrypting) != 1:
                raise ValueError("OpenSSL refused the XTS key")
            pair.append(ctx)
        local.contexts = (*pair, ffi.new("int *"))
        return local.contexts

    def crypt(ctx, outl, block: int, dst, src) -> None:
        # Same cipher and key: only the tweak is set (enc=-1 keeps the direction).
        if (init(ctx, null, null, null, block.to_bytes(16, "little"), -1) != 1
                or update(ctx, dst, outl, src, BLOCK) != 1):
            raise RuntimeError("OpenSSL AES-XTS failed")

    def encrypt_into(first_block: int, data: bytes | memoryview, out: memoryview) -> None:
        try:
            ctx, _, outl = local.contexts
        except AttributeError:
            ctx, _, outl = contexts()
        if len(out) < len(data):  # libcrypto would write past its end
            raise ValueError("the ciphertext buffer is shorter than the data")
        dst, src = from_buffer(out, require_writable=True), from_buffer(data)
        for i in _blocks(len(data)):
            crypt(ctx, outl, first_block + i // BLOCK, dst + i, src + i)

    def decrypt_into(first_block: int, view: memoryview) -> None:
        try:
            _, ctx, outl = local.contexts
        except AttributeError:
            _, ctx, outl = contexts()
        if len(view) == BLOCK:
            if view[:16].tobytes() != _ZERO:  # (memoryview == bytes compares per byte)
                p = from_buffer(view, require_writable=True)
                if (init(ctx, null, null, null, first_block.to_bytes(16, "little"), -1) != 1
                        or update(ctx, p, outl, p, BLOCK) != 1):
                    raise RuntimeError("OpenSSL AES-XTS failed")
            return
        p = from_buffer(view, require_writable=True)
        for i in _blocks(len(view)):
            if view[i:i + 16].tobytes() != _ZERO:
                crypt(ctx, outl, first_block + i // BLOCK, p + i, p + i)
    return encrypt_into, decrypt_into


def _public_xts(key: bytes) -> tuple[EncryptInto, DecryptInto]:
    """The two operations through ``cryptography``'s public API: a context per
    block."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    aes = algorithms.AES(key)

    def cipher(block: int) -> Cipher:
        return Cipher(aes, modes.XTS(block.to_bytes(16, "little")))

    def encrypt_into(first_block: int, data: bytes | memoryview, out: memoryview) -> None:
        src = memoryview(data)
        for i in _blocks(len(src)):
            out[i:i + BLOCK] = cipher(first_block + i // BLOCK).encryptor().update(
                src[i:i + BLOCK])

    def decrypt_into(first_block: int, view: memoryview) -> None:
        for i in _blocks(len(view)):
            block = view[i:i + BLOCK]
            if block[:16].tobytes() != _ZERO:
                block[:] = cipher(first_block + i // BLOCK).decryptor().update(block)
    return encrypt_into, decrypt_into


class VolumeCipher:
    """Encrypts and decrypts whole 4 KiB blocks of one volume family; safe to use
    from several threads at once.

    ``encrypt_into(first_block, data, out)``: the ciphertext of whole blocks
    starting at volume block ``first_block``, written into ``out`` (as long as
    ``data``). ``decrypt_into(first_block, view)``: decrypt whole blocks in
    place; holes (never written, or trimmed: zeros) stay zeros. Both are the
    chosen backend's own functions (no call in between: a 4 KiB read is the hot
    path)."""

    encrypt_into: EncryptInto
    decrypt_into: DecryptInto

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"an XTS volume key is {KEY_BYTES} bytes")
        if key[:32] == key[32:]:
            raise ValueError("the two halves of an XTS key must differ")
        self.encrypt_into, self.decrypt_into = _public_xts(key)
        expected = self.encrypt(1, _PROBE), self.decrypt(1, _PROBE)
        try:
            self.encrypt_into, self.decrypt_into = _openssl_xts(key)
            if (self.encrypt(1, _PROBE), self.decrypt(1, _PROBE)) != expected:
                raise ValueError("libcrypto's AES-XTS disagrees with cryptography's")
        except Exception:  # noqa: BLE001 - no usable libcrypto: the public API
            self.encrypt_into, self.decrypt_into = _public_xts(key)

    def __repr__(self) -> str:
        return "VolumeCipher(<key hidden>)"

    def encrypt(self, first_block: int, data: bytes | memoryview) -> bytearray:
        """Ciphertext (a new bytearray) of whole blocks starting at volume block
        ``first_block``."""
        out = bytearray(len(data))
        self.encrypt_into(first_block, data, memoryview(out))
        return out

    def decrypt(self, first_block: int, data: bytes | memoryview) -> bytes:
        """Plaintext of whole blocks starting at volume block ``first_block``."""
        out = bytearray(data)
        self.decrypt_into(first_block, memoryview(out))
        return bytes(out)
