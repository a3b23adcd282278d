"""GetObjectAttributes through real boto3 (and aws-cli) against `basalt serve`.

A simple object (ETag, ObjectSize, StorageClass, its Checksum), a multipart
object (the part count, and the parts paged when they carry checksums), a
version by id, and a key whose latest version is a delete marker.
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from botocore.exceptions import ClientError

from .s3_errors import refused
from .test_s3_awscli import api, aws, aws_config  # noqa: F401  (fixtures)

ALL = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]
MIB = 1 << 20


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def attributes(s3, bucket, key, names=ALL, **kwargs) -> dict:
    got = s3.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=names, **kwargs)
    got.pop("ResponseMetadata")
    return got


def test_simple_object(s3, bucket):
    body = os.urandom(70_000)
    put = s3.put_object(Bucket=bucket, Key="k", Body=body, ChecksumAlgorithm="SHA256")
    head = s3.head_object(Bucket=bucket, Key="k")
    got = attributes(s3, bucket, "k")
    assert got == {"LastModified": head["LastModified"], "ETag": put["ETag"].strip('"'),
                   "Checksum": {"ChecksumSHA256": sha256_b64(body), "ChecksumType": "FULL_OBJECT"},
                   "StorageClass": "STANDARD", "ObjectSize": len(body)}
    assert put["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    # Only what is asked for.
    assert attributes(s3, bucket, "k", ["ObjectSize"]) == {"LastModified": head["LastModified"],
                                                           "ObjectSize": len(body)}
    only = attributes(s3, bucket, "k", ["ETag", "StorageClass"])
    assert set(only) == {"LastModified", "ETag", "StorageClass"}
    # A simple object has no parts.
    assert "ObjectParts" not in attributes(s3, bucket, "k", ["ObjectParts", "ObjectSize"])
    refused("InvalidArgument", s3.get_object_attributes, Bucket=bucket, Key="k",
            ObjectAttributes=["Bogus"])
    refused("InvalidArgument", s3.get_object_attributes, Bucket=bucket, Key="k",
            ObjectAttributes=["etag"])
    refused("NoSuchKey", s3.get_object_attributes, Bucket=bucket, Key="missing",
            ObjectAttributes=["ETag"])
    refused("NoSuchBucket", s3.get_object_attributes, Bucket=bucket + "-none", Key="k",
            ObjectAttributes=["ETag"])


def test_checksums_of_other_algorithms_and_none(basalt, s3, bucket):
    s3.put_object(Bucket=bucket, Key="crc", Body=b"hello", ChecksumAlgorithm="CRC32C")
    checksum = attributes(s3, bucket, "crc", ["Checksum"])["Checksum"]
    assert set(checksum) == {"ChecksumCRC32C", "ChecksumType"}
    assert checksum["ChecksumCRC32C"] == s3.head_object(Bucket=bucket, Key="crc",
                                                        ChecksumMode="ENABLED")["ChecksumCRC32C"]
    # Uploaded without any checksum: no Checksum element at all.
    plain = basalt.client(request_checksum_calculation="when_required")
    plain.put_object(Bucket=bucket, Key="plain", Body=b"hello")
    got = attributes(s3, bucket, "plain")
    assert "Checksum" not in got and got["ObjectSize"] == 5
    assert got["ETag"] == hashlib.md5(b"hello").hexdigest()


def upload(s3, bucket, key, parts, **create):
    algorithm = create.get("ChecksumAlgorithm")
    up = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    done = []
    for n, data in enumerate(parts, 1):
        extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n, Body=data, **extra)
        entry = {"PartNumber": n, "ETag": r["ETag"]}
        if algorithm:
            entry[f"Checksum{algorithm}"] = r[f"Checksum{algorithm}"]
        done.append(entry)
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up,
                                        MultipartUpload={"Parts": done})


def test_multipart_without_part_checksums(basalt, bucket):
    s3 = basalt.client(request_checksum_calculation="when_required")
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), b"tail"]
    done = upload(s3, bucket, "mp", parts)
    got = attributes(s3, bucket, "mp")
    assert got["ETag"] == done["ETag"].strip('"') and got["ETag"].endswith("-3")
    assert got["ObjectSize"] == sum(map(len, parts))
    # Without part checksums S3 tells the count alone.
    assert got["ObjectParts"] == {"TotalPartsCount": 3}
    assert "Checksum" not in got


def test_multipart_parts_paged(s3, bucket):
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(5 * MIB), b"last part"]
    done = upload(s3, bucket, "mp", parts, ChecksumAlgorithm="SHA256")
    expected = [{"PartNumber": n, "Size": len(p), "ChecksumSHA256": sha256_b64(p)}
                for n, p in enumerate(parts, 1)]
    got = attributes(s3, bucket, "mp")
    assert got["ObjectSize"] == sum(map(len, parts)) and got["ETag"].endswith("-4")
    # The checksum of the part checksums, as CompleteMultipartUpload gave it but without the
    # "-4" part count (so S3 answers GetObjectAttributes; HeadObject keeps the suffix).
    composite = base64.b64encode(hashlib.sha256(b"".join(
        hashlib.sha256(p).digest() for p in parts)).digest()).decode()
    assert done["ChecksumSHA256"] == composite + "-4"
    assert got["Checksum"] == {"ChecksumSHA256": composite, "ChecksumType": "COMPOSITE"}
    head = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == composite + "-4"
    assert got["ObjectParts"]["TotalPartsCount"] == 4
    assert got["ObjectParts"]["Parts"] == expected
    assert got["ObjectParts"]["IsTruncated"] is False
    page = attributes(s3, bucket, "mp", ["ObjectParts"], MaxParts=2)["ObjectParts"]
    assert page["Parts"] == expected[:2] and page["IsTruncated"] is True
    assert page["MaxParts"] == 2 and page["NextPartNumberMarker"] == 2
    assert page["TotalPartsCount"] == 4
    page = attributes(s3, bucket, "mp", ["ObjectParts"], MaxParts=2,
                      PartNumberMarker=page["NextPartNumberMarker"])["ObjectParts"]
    assert page["Parts"] == expected[2:] and page["IsTruncated"] is False
    assert page["PartNumberMarker"] == 2 and "NextPartNumberMarker" not in page
    page = attributes(s3, bucket, "mp", ["ObjectParts"], PartNumberMarker=3)["ObjectParts"]
    assert page["Parts"] == expected[3:]
    page = attributes(s3, bucket, "mp", ["ObjectParts"], PartNumberMarker=4)["ObjectParts"]
    assert page.get("Parts", []) == [] and page["IsTruncated"] is False
    # Walking one part at a time visits every part once.
    seen, marker = [], 0
    while True:
        page = attributes(s3, bucket, "mp", ["ObjectParts"], MaxParts=1,
                          PartNumberMarker=marker)["ObjectParts"]
        seen += page.get("Parts", [])
        if not page["IsTruncated"]:
            break
        marker = page["NextPartNumberMarker"]
    assert seen == expected


def test_by_version_and_delete_marker(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    bodies = [b"first version", os.urandom(1000)]
    puts = [s3.put_object(Bucket=bucket, Key="k", Body=b, ChecksumAlgorithm="SHA256") for b in bodies]
    for put, body in zip(puts, bodies):
        got = attributes(s3, bucket, "k", ["ETag", "ObjectSize", "Checksum"], VersionId=put["VersionId"])
        assert got["VersionId"] == put["VersionId"] and got["ObjectSize"] == len(body)
        assert got["ETag"] == put["ETag"].strip('"')
        assert got["Checksum"]["ChecksumSHA256"] == sha256_b64(body)
    latest = attributes(s3, bucket, "k", ["ObjectSize"])
    assert latest["VersionId"] == puts[1]["VersionId"] and latest["ObjectSize"] == len(bodies[1])
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    err = refused("NoSuchKey", s3.get_object_attributes, Bucket=bucket, Key="k",
                  ObjectAttributes=["ETag"])
    headers = err.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amz-delete-marker"] == "true" and headers["x-amz-version-id"] == marker
    with pytest.raises(ClientError) as exc:
        s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["ETag"], VersionId=marker)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 405
    # Older versions are still there by id.
    got = attributes(s3, bucket, "k", ["ObjectSize"], VersionId=puts[0]["VersionId"])
    assert got["ObjectSize"] == len(bodies[0])
    refused("NoSuchVersion", s3.get_object_attributes, Bucket=bucket, Key="k",
            ObjectAttributes=["ETag"], VersionId="0" * 32)
    refused("InvalidArgument", s3.get_object_attributes, Bucket=bucket, Key="k",
            ObjectAttributes=["ETag"], VersionId="not-a-version")


def test_aws_cli_get_object_attributes(aws, basalt, s3, bucket):  # noqa: F811
    body = os.urandom(4096)
    s3.put_object(Bucket=bucket, Key="cli", Body=body, ChecksumAlgorithm="SHA256")
    got = api(aws, "get-object-attributes", "--bucket", bucket, "--key", "cli",
              "--object-attributes", "ETag", "ObjectSize", "Checksum", "StorageClass")
    assert got["ObjectSize"] == len(body) and got["ETag"] == hashlib.md5(body).hexdigest()
    assert got["Checksum"]["ChecksumSHA256"] == sha256_b64(body)
    assert got["StorageClass"] == "STANDARD"


def test_multipart_full_object_checksum(s3, bucket):
    parts = [os.urandom(5 * MIB), b"end"]
    done = upload(s3, bucket, "full", parts, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT")
    got = attributes(s3, bucket, "full", ["Checksum", "ObjectParts"])
    assert done["ChecksumType"] == "FULL_OBJECT" and "-" not in done["ChecksumCRC32"]
    assert got["Checksum"] == {"ChecksumCRC32": done["ChecksumCRC32"], "ChecksumType": "FULL_OBJECT"}
    assert [(p["PartNumber"], p["Size"]) for p in got["ObjectParts"]["Parts"]] == [(1, 5 * MIB), (2, 3)]
    assert all(p["ChecksumCRC32"] for p in got["ObjectParts"]["Parts"])
