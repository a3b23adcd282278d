"""Multipart uploads with real clients: boto3's transfer manager, aws-cli, s3api."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator

import psutil
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

MIB = 1 << 20
AWS = os.path.join(os.path.dirname(sys.executable), "aws")


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


class RandomContent:
    """``size`` bytes of random (not sparse, not compressible) content, made again on
    demand from one random 16 MiB block: every chunk different (its index in its
    first 8 bytes). Comparing a file with it chunk by chunk costs no hashing and no
    second read of the source (5 GiB through sha256 twice took ~10 s per test)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.block = os.urandom(16 * MIB)

    def chunks(self) -> Iterator[bytes]:
        left, i = self.size, 0
        while left:
            n = min(left, len(self.block))
            yield i.to_bytes(8, "little") + self.block[8:n]
            left -= n
            i += 1

    def write(self, path: str) -> None:
        with open(path, "wb") as f:
            for chunk in self.chunks():
                f.write(chunk)

    def matches(self, path: str) -> bool:
        """Whether the file at ``path`` holds exactly this content."""
        with open(path, "rb") as f:
            return all(f.read(len(chunk)) == chunk for chunk in self.chunks()) \
                and f.read(1) == b""


def aws(server, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    cmd = [AWS, "--endpoint-url", server.endpoint, *args]
    if server.ca_path:
        cmd += ["--ca-bundle", server.ca_path]
    out = subprocess.run(cmd, env=server.env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out


class RssWatch:
    """Peak resident memory of the server and all its workers (the sum of their RSS,
    shared pages counted in each), sampled in the background."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                procs = [self.root] + self.root.children(recursive=True)
                total = sum(p.memory_info().rss for p in procs)
            except psutil.Error:
                continue
            self.peak = max(self.peak, total)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_boto3_transfer_manager_round_trip(basalt, s3, bucket, tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    content = RandomContent(63 * MIB + 12345)
    content.write(src)
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB,
                            max_concurrency=10)
    s3.upload_file(src, bucket, "tm/object", Config=config)
    head = s3.head_object(Bucket=bucket, Key="tm/object", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-13")
    assert head["ContentLength"] == os.path.getsize(src)
    s3.download_file(bucket, "tm/object", dst, Config=config)
    assert content.matches(dst)
    # a part of it, by number: the first 5 MiB
    first = s3.get_object(Bucket=bucket, Key="tm/object", PartNumber=1)
    assert first["ContentLength"] == 5 * MIB and first["PartsCount"] == 13
    with open(src, "rb") as f:
        assert first["Body"].read() == f.read(5 * MIB)


def test_multipart_etag_and_ranges_across_parts(s3, bucket):
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ContentType="text/csv",
                                    Metadata={"a": "b"})
    parts, datas = [], [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(777)]
    for n, data in enumerate(datas, 1):
        r = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=n,
                           Body=data)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=up["UploadId"])
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2, 3]
    assert [p["Size"] for p in listed["Parts"]] == [5 * MIB, 5 * MIB, 777]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": parts})
    expected = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in datas)).hexdigest() + "-3"
    assert done["ETag"].strip('"') == expected
    body = b"".join(datas)
    head = s3.head_object(Bucket=bucket, Key="mp")
    assert head["ContentType"] == "text/csv" and head["Metadata"] == {"a": "b"}
    for rng in ["bytes=5242870-5242890", "bytes=0-", f"bytes={10 * MIB - 1}-", "bytes=-800"]:
        got = s3.get_object(Bucket=bucket, Key="mp", Range=rng)["Body"].read()
        start, _, end = rng[6:].partition("-")
        if not start:
            expect = body[-int(end):]
        else:
            expect = body[int(start):int(end) + 1 if end else None]
        assert got == expect, rng
    assert s3.get_object(Bucket=bucket, Key="mp", PartNumber=3)["Body"].read() == datas[2]
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="mp", PartNumber=4)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


def test_completion_errors(s3, bucket):
    up = s3.create_multipart_upload(Bucket=bucket, Key="bad")
    uid = up["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="bad", UploadId=uid, PartNumber=1, Body=b"small")["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="bad", UploadId=uid, PartNumber=2, Body=b"x")["ETag"]
    cases = [
        ([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}], "InvalidPartOrder"),
        ([{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}], "InvalidPart"),
        ([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e2}], "InvalidPart"),
        ([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}], "EntityTooSmall"),
    ]
    for parts, expect in cases:
        with pytest.raises(ClientError) as err:
            s3.complete_multipart_upload(Bucket=bucket, Key="bad", UploadId=uid,
                                         MultipartUpload={"Parts": parts})
        assert code(err.value) == expect, parts
    with pytest.raises(ClientError) as err:
        s3.upload_part(Bucket=bucket, Key="bad", UploadId="nope", PartNumber=1, Body=b"x")
    assert code(err.value) == "NoSuchUpload"
    with pytest.raises(ClientError) as err:
        s3.upload_part(Bucket=bucket, Key="bad", UploadId=uid, PartNumber=10001, Body=b"x")
    assert code(err.value) == "InvalidArgument"
    s3.abort_multipart_upload(Bucket=bucket, Key="bad", UploadId=uid)
    with pytest.raises(ClientError) as err:
        s3.list_parts(Bucket=bucket, Key="bad", UploadId=uid)
    assert code(err.value) == "NoSuchUpload"


def test_part_checksums_composite_and_full_object(s3, bucket):
    datas = [os.urandom(5 * MIB), os.urandom(1000)]
    for kind, alg in [("COMPOSITE", "SHA256"), ("FULL_OBJECT", "CRC32")]:
        key = f"ck-{kind}"
        up = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=alg,
                                        ChecksumType=kind)
        parts = []
        for n, data in enumerate(datas, 1):
            r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n,
                               Body=data, ChecksumAlgorithm=alg)
            parts.append({"PartNumber": n, "ETag": r["ETag"], f"Checksum{alg}": r[f"Checksum{alg}"]})
        done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                            MultipartUpload={"Parts": parts})
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert head[f"Checksum{alg}"] == done[f"Checksum{alg}"]
        if kind == "FULL_OBJECT":
            whole = zlib.crc32(b"".join(datas)).to_bytes(4, "big")
            assert head["ChecksumCRC32"] == base64.b64encode(whole).decode()
        else:
            digests = b"".join(hashlib.sha256(d).digest() for d in datas)
            assert head["ChecksumSHA256"] == \
                base64.b64encode(hashlib.sha256(digests).digest()).decode() + "-2"
    with pytest.raises(ClientError) as err:  # a wrong part checksum is refused
        up = s3.create_multipart_upload(Bucket=bucket, Key="ck-bad", ChecksumAlgorithm="CRC32")
        s3.upload_part(Bucket=bucket, Key="ck-bad", UploadId=up["UploadId"], PartNumber=1,
                       Body=b"data", ChecksumCRC32="AAAAAA==")
    assert code(err.value) == "BadDigest"


def test_upload_part_copy_with_ranges_and_conditions(s3, bucket):
    source = os.urandom(12 * MIB)
    s3.put_object(Bucket=bucket, Key="copy-src", Body=source)
    etag = s3.head_object(Bucket=bucket, Key="copy-src")["ETag"]
    up = s3.create_multipart_upload(Bucket=bucket, Key="copy-dst")
    uid = up["UploadId"]
    r1 = s3.upload_part_copy(Bucket=bucket, Key="copy-dst", UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "copy-src"},
                             CopySourceRange=f"bytes=0-{6 * MIB - 1}", CopySourceIfMatch=etag)
    r2 = s3.upload_part_copy(Bucket=bucket, Key="copy-dst", UploadId=uid, PartNumber=2,
                             CopySource=f"{bucket}/copy-src",
                             CopySourceRange=f"bytes={6 * MIB}-{12 * MIB - 1}")
    with pytest.raises(ClientError) as err:
        s3.upload_part_copy(Bucket=bucket, Key="copy-dst", UploadId=uid, PartNumber=3,
                            CopySource={"Bucket": bucket, "Key": "copy-src"},
                            CopySourceIfNoneMatch=etag)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(ClientError) as err:
        s3.upload_part_copy(Bucket=bucket, Key="copy-dst", UploadId=uid, PartNumber=3,
                            CopySource={"Bucket": bucket, "Key": "copy-src"},
                            CopySourceRange=f"bytes=0-{12 * MIB}")
    assert code(err.value) == "InvalidArgument"
    s3.complete_multipart_upload(Bucket=bucket, Key="copy-dst", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]},
                  {"PartNumber": 2, "ETag": r2["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="copy-dst")["Body"].read() == source


def test_list_multipart_uploads_and_abort(basalt, s3, bucket):
    ids = {k: s3.create_multipart_upload(Bucket=bucket, Key=k)["UploadId"]
           for k in ["logs/a", "logs/b", "top", "x/y/z"]}
    out = s3.list_multipart_uploads(Bucket=bucket)
    assert [u["Key"] for u in out["Uploads"]] == ["logs/a", "logs/b", "top", "x/y/z"]
    out = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [u["Key"] for u in out["Uploads"]] == ["top"]
    assert [p["Prefix"] for p in out["CommonPrefixes"]] == ["logs/", "x/"]
    out = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=2)
    assert out["IsTruncated"] and out["NextKeyMarker"] == "logs/b"
    out = s3.list_multipart_uploads(Bucket=bucket, KeyMarker=out["NextKeyMarker"],
                                    UploadIdMarker=out["NextUploadIdMarker"])
    assert [u["Key"] for u in out["Uploads"]] == ["top", "x/y/z"]
    listed = json.loads(aws(basalt, "s3api", "list-multipart-uploads", "--bucket", bucket,
                            "--prefix", "logs/").stdout)
    assert [u["Key"] for u in listed["Uploads"]] == ["logs/a", "logs/b"]
    for key, uid in ids.items():
        aws(basalt, "s3api", "abort-multipart-upload", "--bucket", bucket, "--key", key,
            "--upload-id", uid)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_aws_cli_cp_large_file_with_bounded_server_memory(basalt, bucket, tmp_path):
    """`aws s3 cp` of 5 GiB up and down at default settings; the server stays small.

    Idle it is ~142 MiB (a main process of ~48 and two workers of ~47) and each
    worker holds at most 8 MiB of stripe batches. Measured peaks (RSS summed over
    the processes, 2026-12-02, 3 runs each): HTTP 185-186 MiB, HTTPS 192-193
    (issue 15: below 200), since the workers give their heap's free pages back
    (basalt.heap) and keep each TLS connection's buffers small (basalt.worker,
    gateway.get: OpenSSL's memory BIOs keep the most they ever held); before,
    HTTP 186-190 and HTTPS 203-204 (200-218 seen earlier, cause not found, so
    the bound is kept). The bound keeps a
    margin for CI and still fails the unbounded pool of before (260-307 MiB) and
    a child process of the owner's during the upload (a vfork'd child shares the
    owner's memory until it execs, so RSS sums count ~48 MiB twice: the usage
    sampler's `nft` every 10 s gave peaks of 234-246)."""
    size = int(os.environ.get("BASALT_BIG_FILE_MIB", 5 * 1024)) * MIB
    src, dst = str(tmp_path / "big.bin"), str(tmp_path / "back.bin")
    content = RandomContent(size)
    content.write(src)
    with RssWatch(basalt.proc.pid) as rss:
        started = time.monotonic()
        aws(basalt, "s3", "cp", src, f"s3://{bucket}/big.bin")
        up = time.monotonic() - started
        aws(basalt, "s3", "cp", f"s3://{bucket}/big.bin", dst)
    assert content.matches(dst)
    print(f"aws s3 cp {size >> 20} MiB: up {up:.1f}s, peak server RSS {rss.peak >> 20} MiB")
    assert rss.peak < 230 * MIB, f"server RSS peaked at {rss.peak >> 20} MiB"
    os.unlink(src)
    os.unlink(dst)


def test_64_concurrent_large_gets_with_bounded_server_memory(basalt, s3, bucket):
    """64 GETs of 64 MiB at once: requests beyond a worker's buffers wait for them
    before sending a byte, so the server stays under 400 MiB (issue 15)."""
    bodies = [os.urandom(64 * MIB) for _ in range(4)]
    for i, body in enumerate(bodies):
        s3.put_object(Bucket=bucket, Key=f"many/{i}", Body=body)
    crcs = [zlib.crc32(body) for body in bodies]
    del bodies
    client = basalt.client(max_pool_connections=64, read_timeout=600,
                           retries={"max_attempts": 1})
    errors: list[str] = []

    def get(i: int) -> None:
        body = client.get_object(Bucket=bucket, Key=f"many/{i % 4}")["Body"]
        crc, size = 0, 0
        for chunk in body.iter_chunks(MIB):
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
        if (crc, size) != (crcs[i % 4], 64 * MIB):
            errors.append(f"GET {i}: {size} bytes, other content")

    with RssWatch(basalt.proc.pid) as rss:
        threads = [threading.Thread(target=get, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    print(f"64 concurrent 64 MiB GETs: peak server RSS {rss.peak >> 20} MiB")
    assert rss.peak < 400 * MIB, f"server RSS peaked at {rss.peak >> 20} MiB"
