"""Encrypted body packages: round trips at every boundary, ranged opens, and
every way to alter a stored body detected."""

import os
import random

import pytest

from gateway.sse_packages import (
    PACKAGE,
    SEALED,
    TAG,
    Encryptor,
    PackageCipher,
    PackageError,
    decrypt_range,
    packages,
    sealed_size,
    sealed_span,
)

KEY = bytes(range(32))


def seal_all(data: bytes, key: bytes = KEY, stream: int = 0, piece: int = 10_000) -> bytes:
    enc = Encryptor(PackageCipher(key, stream))
    out = [enc.update(data[i:i + piece]) for i in range(0, len(data), piece)]
    out.append(enc.finish())
    return b"".join(out)


@pytest.mark.parametrize("size", [0, 1, PACKAGE - 1, PACKAGE, PACKAGE + 1, 3 * PACKAGE,
                                  5 * PACKAGE + 777])
def test_round_trip_and_sizes(size):
    data = os.urandom(size)
    stored = seal_all(data)
    assert len(stored) == sealed_size(size) == size + TAG * packages(size)
    assert data[:64] not in stored or size < 16
    cipher = PackageCipher(KEY)
    assert cipher.open_span(0, stored, size) == data


def test_feeding_in_any_piece_size_gives_the_same_body():
    data = os.urandom(4 * PACKAGE + 5)
    assert seal_all(data, piece=1) == seal_all(data, piece=PACKAGE) == seal_all(data, piece=1 << 20)


def test_ranges_open_only_the_packages_they_touch():
    size = 7 * PACKAGE + 1234
    data = os.urandom(size)
    stored = seal_all(data)
    cipher = PackageCipher(KEY)
    rng = random.Random(7)
    edges = [0, 1, PACKAGE - 1, PACKAGE, PACKAGE + 1, 2 * PACKAGE, size - 1, size]
    cases = [(a, b) for a in edges for b in edges if a < b]
    cases += [tuple(sorted(rng.sample(range(size + 1), 2))) for _ in range(50)]
    for start, end in cases:
        if start == end:
            continue
        first, lo, hi = sealed_span(start, end, size)
        assert hi - lo <= (-(-(end - start) // PACKAGE) + 1) * SEALED
        assert decrypt_range(cipher, stored[lo:hi], first, size, start, end) == data[start:end]


def test_altered_bodies_are_refused():
    size = 3 * PACKAGE + 10
    data = os.urandom(size)
    stored = seal_all(data)
    cipher = PackageCipher(KEY)
    flipped = bytearray(stored)
    flipped[SEALED + 5] ^= 1
    swapped = stored[SEALED:2 * SEALED] + stored[:SEALED] + stored[2 * SEALED:]
    truncated = stored[:3 * SEALED]  # cut at a package boundary
    for body, plain_size in ((bytes(flipped), size), (swapped, size),
                             (truncated, 3 * PACKAGE), (stored + stored[-SEALED:], size)):
        with pytest.raises(PackageError):
            cipher.open_span(0, body, plain_size)
    other = seal_all(os.urandom(size), key=os.urandom(32))  # a package of another object
    with pytest.raises(PackageError):
        cipher.open_span(1, other[SEALED:2 * SEALED], size)
    with pytest.raises(PackageError):  # the same key, another part's stream
        cipher.open_span(0, seal_all(data, stream=2), size)


def test_open_into_fills_its_view_or_refuses():
    """``open_into`` (what a GET uses) gives what ``open`` gives, into the view it
    is handed, and refuses an altered, cut or misplaced package."""
    data = os.urandom(PACKAGE + 10)
    stored = seal_all(data)
    cipher = PackageCipher(KEY)
    out = bytearray(len(data))
    cipher.open_into(0, stored[:SEALED], False, memoryview(out)[:PACKAGE])
    cipher.open_into(1, stored[SEALED:], True, memoryview(out)[PACKAGE:])
    assert out == data
    flipped = bytearray(stored[SEALED:])
    flipped[3] ^= 1
    for index, sealed, last, size in ((1, bytes(flipped), True, 10),   # altered
                                      (1, stored[SEALED:SEALED + TAG - 1], True, 0),  # cut
                                      (1, stored[SEALED:], True, 11),  # wrong size asked
                                      (0, stored[SEALED:], True, 10),  # another index
                                      (1, stored[SEALED:], False, 10)):  # not sealed last
        with pytest.raises(PackageError):
            cipher.open_into(index, sealed, last, memoryview(bytearray(size)))


def test_each_upload_of_a_part_seals_under_a_key_of_its_own():
    """A part number uploaded twice must not reuse the object key's GCM nonces
    (part number, package index): each upload gets a salt and a derived key."""
    from gateway import sse
    from gateway.sse_objects import Sealing, part_key
    sealing = Sealing(sse.Encryption("AES256"), KEY)
    data = os.urandom(PACKAGE + 10)
    first, again = sealing.seal_part(3), sealing.seal_part(3)
    assert first.salt != again.salt and len(first.salt) == 16
    bodies = []
    for seal in (first, again):
        body = seal.encryptor.update(data) + seal.encryptor.finish()
        assert PackageCipher(part_key(KEY, seal.salt), 3).open_span(0, body, len(data)) == data
        with pytest.raises(PackageError):  # not under the object key itself
            PackageCipher(KEY, 3).open_span(0, body, len(data))
        bodies.append(body)
    assert bodies[0][:64] != bodies[1][:64]  # same plaintext, other keys
    whole = sealing.seal()  # a whole object: under the object key, no salt
    assert whole.salt == b""
    body = whole.encryptor.update(data) + whole.encryptor.finish()
    assert PackageCipher(KEY, 1).open_span(0, body, len(data)) == data
