"""XTS volume blocks: round trips, the tweak is the volume address, and no
plaintext pattern survives encryption."""

import os

import pytest

from blockd.volume_cipher import BLOCK, VolumeCipher

KEY = bytes(range(64))


def test_round_trip_at_any_address():
    cipher = VolumeCipher(KEY)
    data = os.urandom(8 * BLOCK)
    for first in (0, 1, 2**40):
        sealed = cipher.encrypt(first, data)
        assert len(sealed) == len(data) and sealed != data
        assert cipher.decrypt(first, sealed) == data
        # block by block, the same bytes: each block stands alone
        assert b"".join(cipher.encrypt(first + i, data[i * BLOCK:(i + 1) * BLOCK])
                        for i in range(8)) == sealed


def test_same_plaintext_differs_by_address_and_key():
    cipher = VolumeCipher(KEY)
    pattern = b"BASALT-PLAINTEXT" * (BLOCK // 16)
    a, b = cipher.encrypt(0, pattern), cipher.encrypt(1, pattern)
    assert a != b and b"BASALT-PLAINTEXT" not in a + b
    other = VolumeCipher(os.urandom(64))
    assert other.encrypt(0, pattern) != a
    assert cipher.decrypt(1, a) != pattern  # read at the wrong address: garbage


def test_refusals():
    with pytest.raises(ValueError):
        VolumeCipher(b"k" * 32)
    with pytest.raises(ValueError):
        VolumeCipher(b"k" * 64)  # equal halves
    with pytest.raises(ValueError):
        VolumeCipher(KEY).encrypt(0, b"x" * 100)


def test_agrees_with_the_public_cipher_api():
    """Contexts are made by the function Cipher.encryptor calls (faster): the
    result must be what the public API gives, block by block."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    data = os.urandom(3 * BLOCK)
    sealed = VolumeCipher(KEY).encrypt(7, data)
    for i in range(3):
        tweak = (7 + i).to_bytes(16, "little")
        ctx = Cipher(algorithms.AES(KEY), modes.XTS(tweak)).encryptor()
        assert ctx.update(data[i * BLOCK:(i + 1) * BLOCK]) == sealed[i * BLOCK:(i + 1) * BLOCK]


def test_holes_read_as_zeros_in_place():
    cipher = VolumeCipher(KEY)
    data = os.urandom(BLOCK) + bytes(BLOCK) + os.urandom(BLOCK)
    stored = bytearray(cipher.encrypt(5, data))
    stored[BLOCK:2 * BLOCK] = bytes(BLOCK)  # the middle block trimmed (a hole)
    cipher.decrypt_into(5, memoryview(stored))
    assert stored[:BLOCK] == data[:BLOCK] and stored[2 * BLOCK:] == data[2 * BLOCK:]
    assert stored[BLOCK:2 * BLOCK] == bytes(BLOCK)
    assert "key" in repr(cipher) and KEY.hex() not in repr(cipher)


def test_falls_back_to_the_public_api_when_the_private_path_disagrees(monkeypatch):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from blockd import volume_cipher
    monkeypatch.setattr(volume_cipher, "_unchecked_xts",
                        lambda xts: lambda tweak: modes.XTS(bytes(16)))  # a wrong tweak
    cipher = VolumeCipher(KEY)
    assert cipher._xts is modes.XTS
    data = os.urandom(BLOCK)
    public = Cipher(algorithms.AES(KEY), modes.XTS((3).to_bytes(16, "little"))).encryptor()
    assert cipher.encrypt(3, data) == public.update(data)
    assert cipher.decrypt(3, cipher.encrypt(3, data)) == data
