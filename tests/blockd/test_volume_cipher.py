"""XTS volume blocks: round trips, the tweak is the volume address, and no
plaintext pattern survives encryption."""

import os
import threading

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


def _public(first: int, data: bytes, encrypting: bool = True) -> bytes:
    """What cryptography's public API gives, block by block."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    out = []
    for i in range(len(data) // BLOCK):
        cipher = Cipher(algorithms.AES(KEY), modes.XTS((first + i).to_bytes(16, "little")))
        ctx = cipher.encryptor() if encrypting else cipher.decryptor()
        out.append(ctx.update(data[i * BLOCK:(i + 1) * BLOCK]))
    return b"".join(out)


def test_agrees_with_the_public_cipher_api():
    """Blocks go through libcrypto's EVP interface (one context per thread, only
    the tweak set per block): the result must be what the public API gives."""
    cipher = VolumeCipher(KEY)
    assert "_openssl_xts" in cipher.decrypt_into.__qualname__  # the fast path is in use
    data = os.urandom(3 * BLOCK)
    sealed = cipher.encrypt(7, data)
    assert sealed == _public(7, data)
    assert cipher.decrypt(7, data) == _public(7, data, encrypting=False)
    assert cipher.encrypt(2**63, data[:BLOCK]) == _public(2**63, data[:BLOCK])


def test_threads_each_use_their_own_context():
    """Larger I/O runs in the pool's threads: a context shared between threads
    would take one thread's tweak for another's block."""
    cipher = VolumeCipher(KEY)
    blocks = [(n, os.urandom(BLOCK)) for n in range(64)]
    expected = {n: _public(n, data) for n, data in blocks}
    wrong = []

    def work(seed: int) -> None:
        for _ in range(150):
            for n, data in blocks[seed::4]:
                sealed = cipher.encrypt(n, data)
                if sealed != expected[n] or cipher.decrypt(n, sealed) != data:
                    wrong.append(n)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_holes_read_as_zeros_in_place():
    cipher = VolumeCipher(KEY)
    data = os.urandom(BLOCK) + bytes(BLOCK) + os.urandom(BLOCK)
    stored = bytearray(cipher.encrypt(5, data))
    stored[BLOCK:2 * BLOCK] = bytes(BLOCK)  # the middle block trimmed (a hole)
    cipher.decrypt_into(5, memoryview(stored))
    assert stored[:BLOCK] == data[:BLOCK] and stored[2 * BLOCK:] == data[2 * BLOCK:]
    assert stored[BLOCK:2 * BLOCK] == bytes(BLOCK)
    assert "key" in repr(cipher) and KEY.hex() not in repr(cipher)


@pytest.mark.parametrize("failure", ["disagrees", "no libcrypto"])
def test_falls_back_to_the_public_api(monkeypatch, failure):
    from blockd import volume_cipher

    def broken(key):
        if failure == "no libcrypto":
            raise OSError("no libcrypto to load")
        return (lambda first, data: bytearray(len(data)),  # zeros: not XTS
                lambda first, view: None)
    monkeypatch.setattr(volume_cipher, "_openssl_xts", broken)
    cipher = VolumeCipher(KEY)
    data = os.urandom(2 * BLOCK)
    assert cipher.encrypt(3, data) == _public(3, data)
    assert cipher.decrypt(3, cipher.encrypt(3, data)) == data


def test_encrypt_into_refuses_a_short_buffer():
    cipher = VolumeCipher(bytes(range(64)))
    with pytest.raises(ValueError):
        cipher.encrypt_into(0, bytes(2 * BLOCK), memoryview(bytearray(BLOCK)))
    out = bytearray(2 * BLOCK)
    cipher.encrypt_into(5, bytes(range(256)) * 32, memoryview(out))
    assert out == cipher.encrypt(5, bytes(range(256)) * 32)
