"""Versioned buckets through real boto3 (and aws-cli) against `basalt serve`.

PUT/overwrite/DELETE/restore-by-copy round trips, the null version of
unversioned and suspended buckets, DeleteObjects by version, multipart
versions, and ListObjectVersions paged across thousands of versions
compared with a model the test keeps.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random

import pytest
from botocore.exceptions import ClientError

from .s3_errors import code
from .test_s3_awscli import aws, aws_config  # noqa: F401  (fixtures)
from .test_s3_object_lock import workers4  # noqa: F401  (fixture)


def enable(s3, bucket, status="Enabled"):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})


def all_versions(s3, bucket, **kwargs):
    """(key, version id, is marker, is latest) of every page: boto3 splits each page
    into Versions and DeleteMarkers, so versions come first, then markers, each
    kind in listing order."""
    versions, markers = [], []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, **kwargs):
        for v in page.get("Versions", []):
            versions.append((v["Key"], v["VersionId"], False, v["IsLatest"]))
        for m in page.get("DeleteMarkers", []):
            markers.append((m["Key"], m["VersionId"], True, m["IsLatest"]))
    return versions + markers


def split(entries):
    """A model in listing order, arranged as all_versions returns it."""
    return [e for e in entries if not e[2]] + [e for e in entries if e[2]]


def test_versioning_status(s3, bucket):
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    enable(s3, bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    enable(s3, bucket, "Suspended")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"


def test_put_overwrite_delete_restore(s3, bucket):
    enable(s3, bucket)
    bodies = [b"first", os.urandom(300_000), b"third"]
    ids = [s3.put_object(Bucket=bucket, Key="doc", Body=b)["VersionId"] for b in bodies]
    assert len(set(ids)) == 3 and "null" not in ids
    head = s3.head_object(Bucket=bucket, Key="doc")
    assert head["VersionId"] == ids[-1]
    for vid, body in zip(ids, bodies):
        got = s3.get_object(Bucket=bucket, Key="doc", VersionId=vid)
        assert got["Body"].read() == body and got["VersionId"] == vid
    deleted = s3.delete_object(Bucket=bucket, Key="doc")
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="doc")
    assert code(err) == "NoSuchKey"
    headers = err.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amz-delete-marker"] == "true" and headers["x-amz-version-id"] == marker
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 405
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    # Restore the first version by copying it over the marker.
    copied = s3.copy_object(Bucket=bucket, Key="doc",
                            CopySource={"Bucket": bucket, "Key": "doc", "VersionId": ids[0]})
    assert copied["CopySourceVersionId"] == ids[0]
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"first"
    listed = all_versions(s3, bucket)
    assert [(v[1], v[2], v[3]) for v in listed] == [
        (copied["VersionId"], False, True), (ids[2], False, False),
        (ids[1], False, False), (ids[0], False, False), (marker, True, False)]
    # Removing a version for good, and the marker.
    s3.delete_object(Bucket=bucket, Key="doc", VersionId=ids[1])
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="doc", VersionId=ids[1])
    assert code(err) == "NoSuchVersion"
    gone = s3.delete_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert gone["DeleteMarker"] is True and gone["VersionId"] == marker


def test_null_version_and_suspended(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"unversioned")
    assert "VersionId" not in s3.head_object(Bucket=bucket, Key="k")
    enable(s3, bucket)
    assert s3.head_object(Bucket=bucket, Key="k")["VersionId"] == "null"
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["VersionId"]
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"unversioned"
    enable(s3, bucket, "Suspended")
    assert s3.put_object(Bucket=bucket, Key="k", Body=b"again")["VersionId"] == "null"
    assert [(v[1], v[3]) for v in all_versions(s3, bucket)] == [("null", True), (v1, False)]
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"again"
    marker = s3.delete_object(Bucket=bucket, Key="k")
    assert marker["DeleteMarker"] is True and marker["VersionId"] == "null"
    assert all_versions(s3, bucket) == [("k", v1, False, False), ("k", "null", True, True)]


def test_delete_objects_by_version(s3, bucket):
    enable(s3, bucket)
    ids = {k: [s3.put_object(Bucket=bucket, Key=k, Body=b"x")["VersionId"] for _ in range(3)]
           for k in ("a", "b")}
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "a", "VersionId": ids["a"][0]}, {"Key": "a", "VersionId": ids["a"][1]},
        {"Key": "b"}, {"Key": "c", "VersionId": "not-a-version"}]})
    done = {(d["Key"], d.get("VersionId")) for d in result["Deleted"]}
    assert done == {("a", ids["a"][0]), ("a", ids["a"][1]), ("b", None)}
    marker = next(d for d in result["Deleted"] if d["Key"] == "b")
    assert marker["DeleteMarker"] is True and marker["DeleteMarkerVersionId"]
    assert [(e["Key"], e["Code"]) for e in result["Errors"]] == [("c", "InvalidArgument")]
    assert [v[1] for v in all_versions(s3, bucket, Prefix="a")] == [ids["a"][2]]


def test_multipart_versions(s3, bucket):
    enable(s3, bucket)
    bodies = []
    for n in range(2):
        up = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
        parts = [os.urandom(5 << 20), os.urandom(1234 + n)]
        etags = [s3.upload_part(Bucket=bucket, Key="big", UploadId=up, PartNumber=i + 1,
                                Body=p)["ETag"] for i, p in enumerate(parts)]
        done = s3.complete_multipart_upload(
            Bucket=bucket, Key="big", UploadId=up, MultipartUpload={"Parts": [
                {"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
        bodies.append((done["VersionId"], b"".join(parts)))
    for vid, body in bodies:
        assert s3.get_object(Bucket=bucket, Key="big", VersionId=vid)["Body"].read() == body


def test_bad_version_input(s3, bucket):
    enable(s3, bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="k", VersionId="bogus")
    assert code(err) == "InvalidArgument"
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="k", VersionId="0" * 32)
    assert code(err) == "NoSuchVersion"
    vid = s3.head_object(Bucket=bucket, Key="k")["VersionId"]
    assert s3.get_object_acl(Bucket=bucket, Key="k", VersionId=vid)["Grants"]
    with pytest.raises(ClientError) as err:
        s3.get_object_acl(Bucket=bucket, Key="k", VersionId="0" * 32)
    assert code(err) == "NoSuchVersion"
    with pytest.raises(ClientError) as err:
        s3.list_object_versions(Bucket=bucket, VersionIdMarker="null")
    assert code(err) == "InvalidArgument"
    with pytest.raises(ClientError) as err:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Maybe"})
    assert code(err) == "MalformedXML"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    with pytest.raises(ClientError) as err:
        s3.delete_bucket(Bucket=bucket)
    assert code(err) == "BucketNotEmpty"


def test_listing_thousands_of_versions_matches_model(s3, bucket):
    enable(s3, bucket)
    rng = random.Random(12)
    keys = ["a", "a/1", "a/2/x", "b", "dir/one", "dir/two", "dir/sub/three", "z"]
    model: dict[str, list[tuple[str, bool]]] = {k: [] for k in keys}
    plan = [rng.choice(keys) for _ in range(2000)]
    plan += ["hot"] * 600  # one key with many versions, paged through the middle
    model["hot"] = []

    def write(key_and_marker):
        key, marker = key_and_marker
        if marker:
            return key, s3.delete_object(Bucket=bucket, Key=key)["VersionId"], True
        return key, s3.put_object(Bucket=bucket, Key=key, Body=b"v")["VersionId"], False

    # Per key the writes go in order; keys go in parallel.
    by_key: dict[str, list[bool]] = {}
    for key in plan:
        by_key.setdefault(key, []).append(rng.random() < 0.15)

    def write_key(key):
        return [write((key, marker)) for marker in by_key[key]]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for results in pool.map(write_key, list(by_key)):
            for key, vid, marker in results:
                model[key].insert(0, (vid, marker))
    expected = [(k, v, m, i == 0) for k in sorted(model) for i, (v, m) in enumerate(model[k])]
    assert all_versions(s3, bucket) == split(expected)
    assert all_versions(s3, bucket, PaginationConfig={"PageSize": 37}) == split(expected)
    assert all_versions(s3, bucket, Prefix="dir/", PaginationConfig={"PageSize": 50}) == \
        split([e for e in expected if e[0].startswith("dir/")])
    prefixes, top = [], set()
    for page in s3.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 100}):
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        top |= {v["Key"] for v in page.get("Versions", []) + page.get("DeleteMarkers", [])}
    assert prefixes == ["a/", "dir/"] and top == {"a", "b", "hot", "z"}
    enc = s3.list_object_versions(Bucket=bucket, Prefix="dir/s", EncodingType="url")
    assert enc["EncodingType"] == "url"


def test_aws_cli_lists_versions(aws, basalt, s3, bucket):  # noqa: F811
    enable(s3, bucket)
    ids = [s3.put_object(Bucket=bucket, Key="cli", Body=b"x")["VersionId"] for _ in range(3)]
    out = aws("s3api", "list-object-versions", "--bucket", bucket, "--output", "json")
    listed = [v["VersionId"] for v in json.loads(out.stdout_text)["Versions"]]
    assert listed == ids[::-1]
    aws("s3api", "delete-object", "--bucket", bucket, "--key", "cli", "--version-id", ids[0])
    out = aws("s3api", "get-bucket-versioning", "--bucket", bucket, "--output", "json")
    assert json.loads(out.stdout_text)["Status"] == "Enabled"
    assert [v[1] for v in all_versions(s3, bucket)] == ids[:0:-1]


@pytest.mark.parametrize("status", [None, "Enabled", "Suspended"])
def test_concurrent_puts_to_one_key_on_several_workers_all_succeed(workers4, status):  # noqa: F811
    """S3's last writer wins: a PUT that loses the race to a newer one on another
    worker process is still a success, never a 503."""
    bucket = f"race-{os.urandom(4).hex()}"
    clients = [workers4.client(max_pool_connections=8) for _ in range(8)]
    clients[0].create_bucket(Bucket=bucket)
    if status:
        enable(clients[0], bucket, status)
    bodies = [os.urandom(4096) for _ in range(160)]

    def put(i):
        clients[i % 8].put_object(Bucket=bucket, Key="hot", Body=bodies[i])
        return i

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        assert sorted(pool.map(put, range(len(bodies)))) == list(range(len(bodies)))
    final = clients[0].get_object(Bucket=bucket, Key="hot")["Body"].read()
    assert final in bodies
    kept = all_versions(clients[0], bucket)
    assert len(kept) == (len(bodies) if status == "Enabled" else 1)
