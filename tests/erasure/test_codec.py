"""The Reed-Solomon codec: known vectors, every erasure pattern, bad input."""

import itertools
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyeclib.ec_iface import ECDriver

from erasure import Codec, ErasureError, allocate

PYECLIB_HEADER = 80  # liberasurecode fragment header


@pytest.mark.parametrize("k,m", [(2, 2), (4, 2), (8, 4), (12, 4), (3, 1), (1, 1)])
def test_shards_match_pyeclib_isa_l_rs_vand(k, m):
    # pyeclib's isa_l_rs_vand backend is the reference: same matrix, same shards.
    driver = ECDriver(k=k, m=m, ec_type="isa_l_rs_vand")
    codec = Codec(k, m)
    data = random.Random(k * 100 + m).randbytes(k * 4096)
    fragments = driver.encode(data)
    shards = codec.encode_block(data)
    for fragment, shard in zip(fragments, shards):
        assert fragment[PYECLIB_HEADER:PYECLIB_HEADER + len(shard)] == shard


def test_known_vector_2_plus_2():
    # Vandermonde rows [1, 1] and [1, 2]: p0 = d0 ^ d1, p1 = d0 ^ 2*d1 in GF(2^8).
    shards = Codec(2, 2).encode_block(bytes(range(8)))
    assert [s.hex() for s in shards] == ["00010203", "04050607", "04040404", "080b0e0d"]


def test_known_vector_4_plus_2_with_padding():
    shards = Codec(4, 2).encode_block(b"The quick brown fox jumps over the lazy dog")
    assert [s.hex() for s in shards] == [
        "54686520717569636b2062", "726f776e20666f78206a75", "6d7073206f766572207468",
        "65206c617a7920646f6700", "2e570d0f441c430d04597f", "16761d5367932341f42635"]


def test_known_parity_is_stable():
    codec = Codec(4, 2)
    parity = codec.encode_block(b"basalt" * 100)[4:]
    driver = ECDriver(k=4, m=2, ec_type="isa_l_rs_vand")
    frags = driver.encode(b"basalt" * 100)
    assert [f[PYECLIB_HEADER:PYECLIB_HEADER + len(p)] for f, p in zip(frags[4:], parity)] == parity


@pytest.mark.parametrize("k,m", [(1, 1), (2, 1), (2, 2), (4, 2), (8, 4), (12, 4)])
def test_every_erasure_pattern_up_to_m(k, m):
    codec = Codec(k, m)
    n = k + m
    block = os.urandom(k * 64 - 3)
    shards = codec.encode_block(block)
    for lost in range(m + 1):
        for pattern in itertools.combinations(range(n), lost):
            damaged = [None if i in pattern else s for i, s in enumerate(shards)]
            assert codec.decode_block(damaged, len(block)) == block, pattern
            targets = {i: bytearray(len(shards[0])) for i in pattern}
            codec.reconstruct(damaged, len(shards[0]), targets)
            assert all(bytes(targets[i]) == shards[i] for i in pattern), pattern


def test_more_than_m_losses_is_an_error():
    codec = Codec(4, 2)
    shards = codec.encode_block(b"x" * 100)
    with pytest.raises(ErasureError, match="4 needed"):
        codec.decode_block([None, None, None] + shards[3:], 100)


@given(k=st.integers(1, 10), m=st.integers(0, 4), data=st.binary(max_size=3000),
       seed=st.integers(0, 2**32))
@settings(max_examples=150, deadline=None)
def test_decode_from_any_k_shards(k, m, data, seed):
    codec = Codec(k, m)
    shards = codec.encode_block(data)
    rng = random.Random(seed)
    lost = rng.sample(range(k + m), rng.randint(0, m))
    damaged = [None if i in lost else s for i, s in enumerate(shards)]
    assert codec.decode_block(damaged, len(data)) == data


def test_encode_into_reused_buffers():
    codec = Codec(4, 2)
    shard = 1 << 16
    stripe, parity = allocate(4 * shard), allocate(2 * shard)
    for _ in range(3):
        data = os.urandom(4 * shard)
        stripe[:] = data
        codec.encode(stripe, parity, shard)
        assert [bytes(parity[i * shard:(i + 1) * shard]) for i in range(2)] == \
            codec.encode_block(data)[4:]


@pytest.mark.parametrize("k,m,msg", [
    (0, 2, "k must be at least 1"), (2, -1, "m must not be negative"),
    (30, 4, "at most 32"), (10, 6, "not guaranteed recoverable"), (2.0, 2, "integers"),
])
def test_bad_parameters(k, m, msg):
    with pytest.raises(ErasureError, match=msg):
        Codec(k, m)


def test_bad_buffers():
    codec = Codec(2, 2)
    with pytest.raises(ErasureError, match="stripe buffer holds"):
        codec.encode(bytearray(10), bytearray(100), 8)
    with pytest.raises(ErasureError, match="read-only"):
        codec.encode(bytearray(16), bytes(16), 8)
    with pytest.raises(ErasureError, match="expected 4 shard slots"):
        codec.reconstruct([b"x"], 1, {0: bytearray(1)})
    with pytest.raises(ErasureError, match="out of range"):
        codec.reconstruct([b"a", b"b", None, None], 1, {7: bytearray(1)})


def test_zero_parity_is_plain_striping():
    codec = Codec(3, 0)
    assert codec.decode_block(codec.encode_block(b"abcdefg"), 7) == b"abcdefg"


def test_coding_leaves_no_cyclic_garbage():
    """Small PUTs code a block each: a ctypes array type built per call was
    cyclic garbage per call, and most of what their young collections found."""
    import gc

    from erasure.codec import Codec
    codec = Codec(2, 2)
    block = os.urandom(4096)
    shards = codec.encode_block(block)
    codec.decode_block([None, shards[1], shards[2], None], len(block))  # fills the caches
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            shards = codec.encode_block(block)
            assert codec.decode_block([None, shards[1], shards[2], None], len(block)) == block
        assert gc.collect() == 0
    finally:
        gc.enable()
