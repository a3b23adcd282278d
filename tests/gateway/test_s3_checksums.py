"""Checksums: check values, botocore's own checksum classes as oracle, CRC combine,
the multipart compositions and S3's header validation."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from awscrt import checksums as crt
from botocore.httpchecksum import _CHECKSUM_CLS
from hypothesis import given, settings
from hypothesis import strategies as st
from s3_testkit import stubbed_s3

from gateway import errors
from gateway.checksums import (
    ALGORITHMS,
    CRC_ALGORITHMS,
    b64,
    checksum,
    composite_checksum,
    content_md5,
    crc_combine,
    full_object_checksum,
    header_name,
    multipart_checksum_type,
    new_hasher,
    parse_checksum_value,
    requested_checksum,
    verify_content_md5,
)

CHECK_VALUES = {
    "CRC32": "cbf43926",
    "CRC32C": "e3069283",
    "CRC64NVME": "ae8b14860a799888",
    "SHA1": "f7c3bc1d808e04732adf679965ccc34ca7ae3441",
    "SHA256": "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225",
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_check_values_in_one_piece_and_in_several(algorithm):
    assert checksum(algorithm, b"123456789").hex() == CHECK_VALUES[algorithm]
    hasher = new_hasher(algorithm.lower())
    for piece in (b"1234", b"", memoryview(b"5678"), bytearray(b"9")):
        hasher.update(piece)
    assert hasher.digest().hex() == CHECK_VALUES[algorithm]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("size", [0, 1, 1000, 1 << 20])
def test_same_values_as_botocore(algorithm, size):
    data = os.urandom(size)
    oracle = _CHECKSUM_CLS[algorithm.lower()]()
    oracle.update(data)
    assert b64(checksum(algorithm, data)) == oracle.b64digest()


def test_unknown_algorithm():
    with pytest.raises(errors.InvalidRequest, match="Checksum algorithm provided is unsupported"):
        new_hasher("MD4")


def test_header_names():
    assert header_name("CRC64NVME") == "x-amz-checksum-crc64nvme"


# --- CRC combine ---------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(a=st.binary(max_size=3000), b=st.binary(max_size=3000),
       algorithm=st.sampled_from(CRC_ALGORITHMS))
def test_crc_combine_equals_the_crc_of_the_concatenation(a, b, algorithm):
    crc_a = int.from_bytes(checksum(algorithm, a), "big")
    crc_b = int.from_bytes(checksum(algorithm, b), "big")
    assert crc_combine(algorithm, crc_a, crc_b, len(b)) == int.from_bytes(checksum(algorithm, a + b), "big")


@pytest.mark.parametrize("algorithm,oracle", [("CRC32", crt.combine_crc32),
                                              ("CRC32C", crt.combine_crc32c),
                                              ("CRC64NVME", crt.combine_crc64nvme)])
def test_crc_combine_agrees_with_awscrt_on_huge_lengths(algorithm, oracle):
    for length in (1, 5 * 1024**3, 2**40 + 12345, 10**15):
        assert crc_combine(algorithm, 0x1234567, 0x89ABCDE, length) == oracle(0x1234567, 0x89ABCDE, length)


@pytest.mark.parametrize("algorithm", CRC_ALGORITHMS)
def test_full_object_checksum_of_parts(algorithm):
    parts = [os.urandom(n) for n in (5 << 20, 5 << 20, 12345, 1)]
    pairs = [(checksum(algorithm, p), len(p)) for p in parts]
    assert full_object_checksum(algorithm, pairs) == checksum(algorithm, b"".join(parts))


def test_full_object_checksum_refuses_sha():
    with pytest.raises(errors.InvalidRequest):
        full_object_checksum("SHA256", [(b"x" * 32, 1)])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_composite_checksum(algorithm):
    parts = [b"part one", b"part two", b"three"]
    digests = [checksum(algorithm, p) for p in parts]
    value = composite_checksum(algorithm, iter(digests))
    assert value == f"{b64(checksum(algorithm, b''.join(digests)))}-3"


def test_composite_matches_a_known_s3_value():
    # Two parts "a" and "b" with SHA256: S3 renders base64(sha256(sha256(a) || sha256(b)))-2.
    digests = [hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()]
    expected = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode() + "-2"
    assert composite_checksum("SHA256", digests) == expected


@pytest.mark.parametrize("algorithm,requested,expected", [
    ("CRC32", None, "COMPOSITE"), ("CRC64NVME", None, "FULL_OBJECT"), ("sha256", None, "COMPOSITE"),
    ("CRC32C", "full_object", "FULL_OBJECT"), ("CRC32", "COMPOSITE", "COMPOSITE"),
])
def test_multipart_checksum_type(algorithm, requested, expected):
    assert multipart_checksum_type(algorithm, requested) == expected


@pytest.mark.parametrize("algorithm,requested", [("SHA1", "FULL_OBJECT"), ("CRC64NVME", "COMPOSITE"),
                                                 ("CRC32", "PARTIAL")])
def test_multipart_checksum_type_refusals(algorithm, requested):
    with pytest.raises(errors.InvalidRequest):
        multipart_checksum_type(algorithm, requested)


# --- request headers -------------------------------------------------------------------

CRC32_123 = "y/Q5Jg=="


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_checksum_values_are_validated(algorithm):
    good = base64.b64encode(bytes.fromhex(CHECK_VALUES[algorithm])).decode()
    assert parse_checksum_value(algorithm, good) == bytes.fromhex(CHECK_VALUES[algorithm])
    for bad in (CHECK_VALUES[algorithm], good.rstrip("="), good + "AAAA", "", "!!!!", good[:-4]):
        with pytest.raises(errors.InvalidRequest) as info:
            parse_checksum_value(algorithm, bad)
        assert info.value.message == f"Value for {header_name(algorithm)} header is invalid."


def test_requested_checksum_from_a_header():
    request = requested_checksum({"X-Amz-Checksum-CRC32": CRC32_123, "x-amz-sdk-checksum-algorithm": "crc32"})
    assert request.algorithm == "CRC32" and request.expected == bytes.fromhex("cbf43926")
    assert not request.in_trailer and request.header == "x-amz-checksum-crc32"


def test_requested_checksum_from_a_trailer():
    request = requested_checksum({"x-amz-trailer": "x-amz-checksum-crc64nvme",
                                  "x-amz-sdk-checksum-algorithm": "CRC64NVME"})
    assert request.algorithm == "CRC64NVME" and request.expected is None and request.in_trailer


def test_requested_checksum_none_and_unrelated_headers():
    assert requested_checksum({}) is None
    assert requested_checksum({"x-amz-checksum-mode": "ENABLED", "x-amz-checksum-type": "COMPOSITE",
                               "x-amz-checksum-algorithm": "CRC32", "x-amz-trailer": "x-other"}) is None


@pytest.mark.parametrize("headers,error,message", [
    ({"x-amz-checksum-crc32": CRC32_123, "x-amz-checksum-crc32c": "4waSgw=="}, errors.InvalidRequest,
     "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."),
    ({"x-amz-checksum-crc32": CRC32_123, "x-amz-trailer": "x-amz-checksum-crc32c"}, errors.InvalidRequest,
     "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."),
    ({"x-amz-sdk-checksum-algorithm": "CRC32"}, errors.InvalidRequest,
     "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* or "
     "x-amz-trailer headers were found."),
    ({"x-amz-sdk-checksum-algorithm": "SHA256", "x-amz-checksum-crc32": CRC32_123}, errors.BadDigest,
     "The SHA256 you specified did not match the calculated checksum."),
    ({"x-amz-sdk-checksum-algorithm": "MD4", "x-amz-checksum-crc32": CRC32_123}, errors.InvalidRequest,
     "Checksum algorithm provided is unsupported. Please try again with any of the valid types: "
     "[CRC32, CRC32C, CRC64NVME, SHA1, SHA256]"),
    ({"x-amz-checksum-crc32": "cbf43926"}, errors.InvalidRequest,
     "Value for x-amz-checksum-crc32 header is invalid."),
    ({"x-amz-trailer": "x-amz-checksum-md4"}, errors.InvalidRequest,
     "Checksum algorithm provided is unsupported."),
])
def test_requested_checksum_errors(headers, error, message):
    with pytest.raises(error) as info:
        requested_checksum(headers)
    assert info.value.message.startswith(message)


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
def test_boto3_checksum_headers(algorithm):
    s3 = stubbed_s3("http://127.0.0.1:9000")
    s3.client.put_object(Bucket="b", Key="k", Body=b"123456789", ChecksumAlgorithm=algorithm)
    request = requested_checksum(dict(s3.requests[0].headers))
    assert request.algorithm == algorithm and not request.in_trailer
    assert request.expected.hex() == CHECK_VALUES[algorithm]


def test_content_md5():
    digest = hashlib.md5(b"123456789").digest()
    assert content_md5({"Content-MD5": "JfnnlDI7RTiF9RgfG2JNCw=="}) == digest
    assert content_md5({}) is None
    for bad in ("not base64!", "YWJyYWNhZGFicmE=", "25f9e794323b453885f5181f1b624d0b", ""):
        with pytest.raises(errors.InvalidDigest) as info:
            content_md5({"content-md5": bad})
        assert info.value.extra == {"Content-MD5": bad}
        assert info.value.message == "The Content-MD5 you specified was invalid."
    verify_content_md5(digest, digest)
    with pytest.raises(errors.BadDigest) as mismatch:
        verify_content_md5(hashlib.md5(b"").digest(), digest)
    assert mismatch.value.extra == {"ExpectedDigest": "1B2M2Y8AsgTpgAmY7PhCfg==",
                                    "CalculatedDigest": "JfnnlDI7RTiF9RgfG2JNCw=="}
