"""The aws-chunked decoder: AWS's documented vectors, botocore's encoder as the oracle
for unsigned trailers, random read splits, and every framing and signature error."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import tracemalloc
import zlib

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, CrtCrc32cChecksum, CrtCrc32Checksum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from s3_testkit import DOC_NOW, SplitSource, auth_context, encode_chunked, secret_for, stubbed_s3
from test_sigv4 import DOC_EXAMPLES

from gateway import errors
from gateway.checksums import b64, checksum, parse_checksum_value
from gateway.chunked import AwsChunkedDecoder, strip_aws_chunked
from gateway.sigv4 import (
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    verify_request,
)

A = b"a" * 66560
DOC_SIGNED_BODY = (
    b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n"
    + A[:65536] + b"\r\n"
    b"400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n"
    + A[:1024] + b"\r\n"
    b"0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n")
DOC_TRAILER_BODY = (
    b"10000;chunk-signature=b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2\r\n"
    + A[:65536] + b"\r\n"
    b"400;chunk-signature=1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7\r\n"
    + A[:1024] + b"\r\n"
    b"0;chunk-signature=2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992\r\n"
    b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
    b"x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n"
    b"\r\n")


async def decode(body: bytes, auth, *, seed: int = 0, max_read: int | None = None,
                 decoded_length: int | None = None, trailers=(), **options):
    decoder = AwsChunkedDecoder(SplitSource(body, seed, max_read), auth,
                                decoded_length=decoded_length, trailer_names=trailers, **options)
    pieces = [bytes(piece) async for piece in decoder]
    return b"".join(pieces), decoder


def doc_auth(index: int):
    method, path, query, headers = DOC_EXAMPLES[index]
    return verify_request(method, path, query, headers, secret_for, DOC_NOW), headers


# --- AWS's documented examples ------------------------------------------------------

@pytest.mark.parametrize("max_read", [None, 1, 7, 100, 65538])
async def test_documented_signed_upload(max_read):
    auth, headers = doc_auth(4)
    decoder = AwsChunkedDecoder.from_headers(SplitSource(DOC_SIGNED_BODY, 3, max_read), headers, auth)
    assert b"".join([bytes(p) async for p in decoder]) == A
    assert decoder.decoded_size == 66560 and decoder.trailers == {}


@pytest.mark.parametrize("max_read", [None, 1, 13])
async def test_documented_signed_upload_with_trailer(max_read):
    auth, headers = doc_auth(5)
    decoder = AwsChunkedDecoder.from_headers(SplitSource(DOC_TRAILER_BODY, 5, max_read), headers, auth)
    assert b"".join([bytes(p) async for p in decoder]) == A
    assert decoder.trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}
    assert parse_checksum_value("CRC32C", decoder.trailers["x-amz-checksum-crc32c"],
                                trailing=True) == checksum("CRC32C", A)


@pytest.mark.parametrize("body", [DOC_SIGNED_BODY, DOC_TRAILER_BODY])
async def test_documented_vectors_match_the_independent_encoder(body):
    trailer = body is DOC_TRAILER_BODY
    auth, _ = doc_auth(5 if trailer else 4)
    encoded = encode_chunked(A, 65536, auth=auth,
                             trailers={"x-amz-checksum-crc32c": "sOO8/Q=="} if trailer else None)
    assert encoded == body


@pytest.mark.parametrize("position,verified", [(0, 0), (1, 65536), (2, 66560), ("data", 0)])
async def test_a_bad_chunk_signature_anywhere_is_rejected(position, verified):
    auth, headers = doc_auth(4)
    body = bytearray(DOC_SIGNED_BODY)
    if position == "data":
        body[200] = ord("b")
    else:
        at = -1
        for _ in range(position + 1):
            at = DOC_SIGNED_BODY.index(b"chunk-signature=", at + 1)
        at += len(b"chunk-signature=")
        body[at] = ord("0") if body[at] != ord("0") else ord("1")
    seen = []
    with pytest.raises(errors.SignatureDoesNotMatch) as info:
        async for piece in AwsChunkedDecoder.from_headers(SplitSource(bytes(body)), headers, auth):
            seen.append(piece)
    assert info.value.extra["StringToSign"].startswith("AWS4-HMAC-SHA256-PAYLOAD\n")
    # Nothing of a chunk is yielded before its signature is checked.
    assert sum(len(p) for p in seen) == verified


async def test_a_bad_trailer_signature_is_rejected():
    auth, headers = doc_auth(5)
    body = DOC_TRAILER_BODY.replace(b"trailer-signature:d8", b"trailer-signature:d9")
    with pytest.raises(errors.SignatureDoesNotMatch) as info:
        await decode(body, auth, trailers=["x-amz-checksum-crc32c"])
    assert info.value.extra["StringToSign"].startswith("AWS4-HMAC-SHA256-TRAILER\n")
    tampered = DOC_TRAILER_BODY.replace(b"sOO8/Q==", b"sOO8/A==")
    with pytest.raises(errors.SignatureDoesNotMatch):
        await decode(tampered, auth, trailers=["x-amz-checksum-crc32c"])


async def test_trailer_layout_variants_are_tolerated():
    auth, _ = doc_auth(5)
    names = ["x-amz-checksum-crc32c"]
    # An empty line between the final chunk and the trailers, and no final CRLF.
    spaced = DOC_TRAILER_BODY.replace(b"f992\r\nx-amz", b"f992\r\n\r\nx-amz")
    assert (await decode(spaced, auth, trailers=names))[0] == A
    assert (await decode(DOC_TRAILER_BODY[:-2], auth, trailers=names))[0] == A
    assert (await decode(DOC_TRAILER_BODY[:-4], auth, trailers=names))[0] == A


# --- botocore's encoder (what boto3 / aws-cli send) -------------------------------------

@pytest.mark.parametrize("size", [0, 1, 8191, 8192, 100_000, 1_048_576, 3_000_001])
@pytest.mark.parametrize("algorithm,cls", [("crc32", CrtCrc32Checksum), ("crc32c", CrtCrc32cChecksum)])
async def test_botocore_aws_chunked_wrapper(size, algorithm, cls):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    name = f"x-amz-checksum-{algorithm}"
    wire = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=cls, checksum_name=name).read()
    auth = auth_context(STREAMING_UNSIGNED_TRAILER)
    decoded, decoder = await decode(wire, auth, decoded_length=size, trailers=[name])
    assert decoded == data
    assert decoder.trailers[name] == b64(checksum(algorithm, data))


async def test_botocore_wrapper_without_checksum():
    wire = AwsChunkedWrapper(io.BytesIO(b"z" * 20000), chunk_size=10000).read()
    assert wire.endswith(b"0\r\n\r\n")
    decoded, decoder = await decode(wire, auth_context(STREAMING_UNSIGNED_TRAILER), decoded_length=20000)
    assert decoded == b"z" * 20000 and decoder.trailers == {}


async def test_boto3_put_object_end_to_end():
    s3 = stubbed_s3("https://s3.example.com")
    data = bytes(range(256)) * 5000
    s3.client.put_object(Bucket="bucket", Key="k", Body=data)
    request = s3.requests[0]
    auth = request.verify()
    decoder = AwsChunkedDecoder.from_headers(SplitSource(request.body, 11), dict(request.headers), auth)
    assert b"".join([bytes(p) async for p in decoder]) == data
    (name, value), = decoder.trailers.items()
    assert name == request.header("x-amz-trailer")
    algorithm = name.removeprefix("x-amz-checksum-")
    assert parse_checksum_value(algorithm.upper(), value, trailing=True) == checksum(algorithm, data)
    assert strip_aws_chunked(request.header("Content-Encoding")) is None


# --- properties ----------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=40_000), chunk=st.integers(8192, 20_000), seed=st.integers(0, 99),
       max_read=st.sampled_from([1, 3, 64, 4096, None]),
       mode=st.sampled_from([STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER]))
def test_roundtrip_with_random_splits(data, chunk, seed, max_read, mode):
    auth = auth_context(mode, seed="ab" * 32)
    trailers = None if mode == STREAMING_PAYLOAD else {"x-amz-checksum-crc32": b64(checksum("CRC32", data))}
    body = encode_chunked(data, chunk, auth=None if mode == STREAMING_UNSIGNED_TRAILER else auth,
                          trailers=trailers)
    decoded, decoder = asyncio.run(decode(body, auth, seed=seed, max_read=max_read,
                                          decoded_length=len(data), trailers=list(trailers or ())))
    assert decoded == data
    assert decoder.trailers == (trailers or {})


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, len(DOC_SIGNED_BODY) - 3))
def test_every_truncation_fails(cut):
    auth, headers = doc_auth(4)

    async def run():
        decoder = AwsChunkedDecoder.from_headers(SplitSource(DOC_SIGNED_BODY[:cut]), headers, auth)
        return [p async for p in decoder]

    with pytest.raises((errors.IncompleteBody, errors.InvalidRequest, errors.SignatureDoesNotMatch)):
        asyncio.run(run())


# --- framing errors ------------------------------------------------------------------

UNSIGNED = auth_context(STREAMING_UNSIGNED_TRAILER)
SIGNED = auth_context(STREAMING_PAYLOAD, seed="cd" * 32)


async def expect_error(body, auth=UNSIGNED, error=errors.InvalidRequest, **options):
    with pytest.raises(error) as info:
        await decode(body, auth, **options)
    return info.value


@pytest.mark.parametrize("body,error", [
    (b"zz\r\nabc\r\n0\r\n\r\n", errors.InvalidRequest),               # non-hex size
    (b"0x3\r\nabc\r\n0\r\n\r\n", errors.InvalidRequest),              # prefixed hex
    (b" 3\r\nabc\r\n0\r\n\r\n", errors.InvalidRequest),               # padding
    (b"3\r\nabcX\r\n0\r\n\r\n", errors.InvalidRequest),               # data not followed by CRLF
    (b"3\nabc\r\n0\r\n\r\n", errors.InvalidRequest),                  # bare LF in header
    (b"3" * 5000 + b"\r\n", errors.InvalidRequest),                  # oversized header line
    (b"3\r\nabc\r\n0\r\n\r\ngarbage", errors.InvalidRequest),        # data after the end
    (b"3\r\nabc\r\n", errors.IncompleteBody),                        # no final chunk
    (b"3\r\nab", errors.IncompleteBody),                             # data cut short
    (b"", errors.IncompleteBody),                                    # empty body
])
async def test_bad_framing(body, error):
    await expect_error(body, error=error, min_chunk_size=0)


async def test_uppercase_hex_sizes_are_fine():
    data = b"q" * 0x2A
    decoded, _ = await decode(b"2A\r\n" + data + b"\r\n0\r\n\r\n", UNSIGNED, min_chunk_size=0)
    assert decoded == data


async def test_signed_chunk_header_needs_a_signature():
    body = encode_chunked(b"x" * 9000, 9000, auth=SIGNED)
    await expect_error(body.replace(b";chunk-signature=", b";chunk-sig=", 1), SIGNED)
    await expect_error(body.replace(b";chunk-signature=", b"\r\n", 1), SIGNED)


@pytest.mark.parametrize("delta", [-1, 1])
async def test_decoded_length_must_match(delta):
    data = b"d" * 20000
    body = encode_chunked(data, 10000)
    await expect_error(body, error=errors.IncompleteBody, decoded_length=len(data) + delta)
    signed = encode_chunked(data, 10000, auth=SIGNED)
    await expect_error(signed, SIGNED, errors.IncompleteBody, decoded_length=len(data) + delta)


async def test_missing_or_bad_decoded_length_header():
    with pytest.raises(errors.MissingContentLength):
        AwsChunkedDecoder.from_headers(SplitSource(b""), {}, UNSIGNED)
    with pytest.raises(errors.InvalidArgument):
        AwsChunkedDecoder.from_headers(SplitSource(b""), {"x-amz-decoded-content-length": "-1"},
                                       UNSIGNED)


@pytest.mark.parametrize("auth", [UNSIGNED, SIGNED])
async def test_only_the_last_chunk_may_be_small(auth):
    data = b"s" * 20000
    body = encode_chunked(data, 8191, auth=None if auth is UNSIGNED else auth)
    error = await expect_error(body, auth, errors.InvalidChunkSizeError)
    assert error.extra == {"Chunk": "1", "BadChunkSize": "8191"} and error.status == 403
    ok = encode_chunked(data, 8192, auth=None if auth is UNSIGNED else auth)
    assert (await decode(ok, auth))[0] == data


async def test_chunks_above_the_maximum_are_refused():
    body = encode_chunked(b"m" * 5000, 5000)
    error = await expect_error(body, max_chunk_size=4096)
    assert "exceeds the maximum" in error.message


async def test_empty_object():
    for auth in (UNSIGNED, SIGNED):
        body = encode_chunked(b"", 8192, auth=None if auth is UNSIGNED else auth)
        assert (await decode(body, auth, decoded_length=0))[0] == b""


# --- trailers ---------------------------------------------------------------------------

CRC = {"x-amz-checksum-crc32": "AAAAAA=="}


async def test_trailer_names_must_match_the_declaration():
    body = encode_chunked(b"t" * 100, 8192, trailers=CRC)
    assert (await decode(body, UNSIGNED, trailers=["x-amz-checksum-crc32"]))[1].trailers == CRC
    await expect_error(body, error=errors.MalformedTrailerError)  # not declared
    await expect_error(body, error=errors.MalformedTrailerError, trailers=["x-amz-checksum-sha256"])
    bare = encode_chunked(b"t" * 100, 8192)
    await expect_error(bare, error=errors.MalformedTrailerError, trailers=["x-amz-checksum-crc32"])
    broken = body.replace(b"x-amz-checksum-crc32:", b"x-amz-checksum-crc32 ")
    await expect_error(broken, error=errors.MalformedTrailerError, trailers=["x-amz-checksum-crc32"])


async def test_declared_trailer_without_a_trailer_mode():
    with pytest.raises(errors.MalformedTrailerError):
        AwsChunkedDecoder(SplitSource(b""), SIGNED, decoded_length=None,
                          trailer_names=["x-amz-checksum-crc32"])
    body = encode_chunked(b"t" * 100, 8192, auth=SIGNED, trailers=CRC, sign_trailer=False)
    await expect_error(body, SIGNED, errors.MalformedTrailerError)


async def test_signed_trailer_requires_its_signature():
    auth = auth_context(STREAMING_PAYLOAD_TRAILER, seed="ef" * 32)
    body = encode_chunked(b"t" * 100, 8192, auth=auth, trailers=CRC, sign_trailer=False)
    await expect_error(body, auth, errors.MalformedTrailerError, trailers=["x-amz-checksum-crc32"])


def test_non_streaming_modes_are_refused():
    with pytest.raises(errors.InvalidRequest):
        AwsChunkedDecoder(SplitSource(b""), auth_context("UNSIGNED-PAYLOAD"), decoded_length=None)


# --- streaming behaviour ----------------------------------------------------------------

async def test_large_signed_chunks_are_hashed_in_a_thread():
    calls = []

    async def run_in_thread(fn, *args):
        calls.append(sum(len(p) for p in args[0]))
        return await asyncio.to_thread(fn, *args)

    data = b"h" * (200_000 + 10_000)
    body = encode_chunked(data, 100_000, auth=SIGNED)
    decoded, _ = await decode(body, SIGNED, run_in_thread=run_in_thread)
    assert decoded == data
    assert calls == [100_000, 100_000]  # the 10 KB chunk and the empty one stay on the loop


class LazySource:
    """An unsigned aws-chunked body generated on the fly: nothing is held in memory."""

    def __init__(self, chunks: int, chunk_size: int) -> None:
        self._frames = self._generate(chunks, chunk_size)
        self._pending = b""

    @staticmethod
    def _generate(chunks, chunk_size):
        payload = b"L" * chunk_size
        for _ in range(chunks):
            yield b"%x\r\n" % chunk_size
            yield payload
            yield b"\r\n"
        yield b"0\r\n\r\n"

    async def read(self, n: int) -> bytes:
        while not self._pending:
            self._pending = next(self._frames, b"")
            if not self._pending:
                return b""
        out, self._pending = self._pending[:n], self._pending[n:]
        return out


async def test_memory_stays_bounded_on_a_large_stream():
    chunk_size = 4 * 1024 * 1024
    decoder = AwsChunkedDecoder(LazySource(24, chunk_size), UNSIGNED, decoded_length=24 * chunk_size)
    crc = 0
    tracemalloc.start()
    try:
        async for piece in decoder:
            crc = zlib.crc32(piece, crc)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoder.decoded_size == 96 * 1024 * 1024
    assert peak < 16 * 1024 * 1024


def test_strip_aws_chunked():
    assert strip_aws_chunked("aws-chunked") is None
    assert strip_aws_chunked(None) is None
    assert strip_aws_chunked("aws-chunked,gzip") == "gzip"
    assert strip_aws_chunked("gzip, aws-chunked") == "gzip"
    assert strip_aws_chunked("aws-chunked, aws-chunked") is None
    assert strip_aws_chunked("deflate, gzip") == "deflate, gzip"


def test_decoded_trailer_checksum_values_are_validated_by_checksums():
    with pytest.raises(errors.InvalidRequest, match="trailing header is invalid"):
        parse_checksum_value("CRC32", "y/Q5Jg", trailing=True)
    assert parse_checksum_value("CRC32", "y/Q5Jg==", trailing=True) == base64.b64decode("y/Q5Jg==")


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300), position=st.integers(0, 2000), byte=st.integers(0, 255),
       mode=st.sampled_from([STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER]))
def test_garbage_and_mutations_only_raise_s3_errors(body, position, byte, mode):
    auth = auth_context(mode, seed="ab" * 32)
    valid = encode_chunked(b"v" * 9000, 8192, auth=None if mode == STREAMING_UNSIGNED_TRAILER else auth,
                           trailers=None if mode == STREAMING_PAYLOAD else CRC)
    mutated = bytearray(valid)
    mutated[position % len(mutated)] = byte
    for candidate in (body, bytes(mutated)):
        with contextlib.suppress(errors.S3Error):
            asyncio.run(decode(candidate, auth, trailers=[] if mode == STREAMING_PAYLOAD else list(CRC)))
