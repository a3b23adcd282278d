"""The format of an encrypted object body: a sequence of authenticated packages.

Plaintext is cut into packages of 64 KiB (the last one shorter, an empty body
one empty package); each is sealed with AES-256-GCM under the object's data key
and stored as ciphertext followed by its 16-byte tag. The nonce is the stream
number (the part number of a multipart upload, 0 otherwise) and the package's
index, so no nonce repeats under one key; the associated data marks the last
package of a stream. Hence:

- a ranged GET reads and opens only the packages its range touches;
- packages swapped between objects fail (another key), reordered or moved
  within one fail (another nonce), and a body cut at a package boundary fails
  (its new last package was not sealed as the last);
- the engine below stores, erasure codes, checks and heals ciphertext like any
  other bytes.
"""

from __future__ import annotations

import struct
from typing import Any

PACKAGE = 64 * 1024
TAG = 16
SEALED = PACKAGE + TAG
_NONCE = struct.Struct(">IQ")  # stream, package index
_AAD = (b"basalt sse package", b"basalt sse package, last")


class PackageError(Exception):
    """A package failed authentication: wrong key, or the body was altered."""


def packages(size: int) -> int:
    """How many packages a plaintext of ``size`` bytes takes."""
    return max(1, -(-size // PACKAGE))


def sealed_size(size: int) -> int:
    """The stored size of a plaintext of ``size`` bytes."""
    return size + TAG * packages(size)


def sealed_span(start: int, end: int, size: int) -> tuple[int, int, int]:
    """For plaintext bytes ``[start, end)`` of a ``size``-byte stream: the first
    package index and the stored byte range ``[lo, hi)`` of the packages that
    hold them."""
    first = start // PACKAGE
    last = max(first, (end - 1) // PACKAGE) if end > start else first
    hi = min(sealed_size(size), (last + 1) * SEALED)
    return first, first * SEALED, hi


class PackageCipher:
    """Seals and opens the packages of one stream under one data key."""

    def __init__(self, key: bytes, stream: int = 0) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        self._aead: Any = AESGCM(key)
        self.stream = stream

    def seal(self, index: int, plaintext: bytes | memoryview, last: bool) -> bytes:
        return self._aead.encrypt(_NONCE.pack(self.stream, index), plaintext, _AAD[last])

    def open(self, index: int, sealed: bytes | memoryview, last: bool) -> bytes:
        from cryptography.exceptions import InvalidTag
        try:
            return self._aead.decrypt(_NONCE.pack(self.stream, index), sealed, _AAD[last])
        except InvalidTag:
            raise self._unauthentic(index) from None

    def open_into(self, index: int, sealed: bytes | memoryview, last: bool,
                  dest: memoryview) -> None:
        """:meth:`open` into ``dest`` (exactly the plaintext's length)."""
        from cryptography.exceptions import InvalidTag
        if len(sealed) < TAG or len(dest) != len(sealed) - TAG:
            raise PackageError(f"encrypted package {index} of stream {self.stream} is cut short")
        try:
            self._aead.decrypt_into(_NONCE.pack(self.stream, index), sealed, _AAD[last], dest)
        except InvalidTag:
            raise self._unauthentic(index) from None

    def _unauthentic(self, index: int) -> PackageError:
        return PackageError(f"encrypted package {index} of stream {self.stream} does not "
                            "authenticate: the body was altered or the key is wrong")

    def open_span(self, first: int, stored: bytes | memoryview, size: int) -> bytes:
        """The plaintext of whole packages ``first, first+1, …`` stored in
        ``stored`` (as :func:`sealed_span` named them) of a ``size``-byte stream."""
        total = packages(size)
        view = memoryview(stored)
        out = []
        index = first
        while view:
            if index >= total:
                raise PackageError("encrypted body is longer than its size")
            piece = view[:SEALED]
            out.append(self.open(index, piece, index == total - 1))
            view = view[len(piece):]
            index += 1
        return b"".join(out)


class Encryptor:
    """Turns a plaintext stream, fed in pieces of any size, into packages.

    The newest full package is held back until more data (or :meth:`finish`)
    tells whether it is the last."""

    def __init__(self, cipher: PackageCipher) -> None:
        self.cipher = cipher
        self._pending = bytearray()
        self._index = 0
        self.size = 0

    def update(self, data: bytes | memoryview) -> bytes:
        """Sealed packages completed by ``data`` (maybe none)."""
        self.size += len(data)
        out = []
        if not self._pending:  # seal straight from ``data``; keep only its tail
            view = memoryview(data).cast("B")
            whole = (len(view) - 1) // PACKAGE * PACKAGE if view else 0
            for pos in range(0, whole, PACKAGE):
                out.append(self.cipher.seal(self._index, view[pos:pos + PACKAGE], False))
                self._index += 1
            self._pending += view[whole:]
            return b"".join(out)
        self._pending += data
        pos = 0
        # Keep at least one byte back: a full package is sealed once it is known
        # not to be the last.
        with memoryview(self._pending) as view:
            while len(view) - pos > PACKAGE:
                out.append(self.cipher.seal(self._index, view[pos:pos + PACKAGE], False))
                pos += PACKAGE
                self._index += 1
        del self._pending[:pos]  # once per call: no quadratic shifting
        return b"".join(out)

    def finish(self) -> bytes:
        """The last package (sealed as the last; empty plaintext gives one too)."""
        sealed = self.cipher.seal(self._index, bytes(self._pending), True)
        self._pending.clear()
        self._index += 1
        return sealed


def decrypt_range(cipher: PackageCipher, stored: bytes | memoryview, first: int, size: int,
                  start: int, end: int) -> bytes:
    """Plaintext ``[start, end)`` from the packages of :func:`sealed_span`."""
    plain = cipher.open_span(first, stored, size)
    offset = start - first * PACKAGE
    return plain[offset:offset + (end - start)]
