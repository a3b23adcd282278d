"""Quotas against a real server: boto3 for S3, the CLI for the admin side.

Bucket byte and object quotas refuse PutObject, CopyObject and
CompleteMultipartUpload with 403 QuotaExceeded and store nothing; deleting frees
room; concurrent uploads overshoot by at most the uploads in flight; account
quotas bind a bucket's writes and volume creation; ``quota show`` reports usage.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from tests.e2e.conftest import start_server, stop_server

KIB = 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(str(tmp_path_factory.mktemp("quota")))
    yield srv
    stop_server(srv)


@pytest.fixture
def s3(server):
    return server.client(retries={"max_attempts": 1})


@pytest.fixture
def bucket(s3):
    name = f"quota-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def cli_json(server, *args: str, check: bool = True) -> dict:
    out = server.cli(*args, "--json", check=check)
    return json.loads(out.stdout)


def refused(call, **kwargs) -> ClientError:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    assert err.value.response["Error"]["Code"] == "QuotaExceeded", err.value.response
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    return err.value


def keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def complete_small_upload(s3, bucket: str, key: str, size: int) -> dict:
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=1,
                          Body=b"m" * size)
    return {"Bucket": bucket, "Key": key, "UploadId": up["UploadId"],
            "MultipartUpload": {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}}


def test_bucket_byte_quota_refuses_put_copy_and_completion(server, s3, bucket):
    shown = cli_json(server, "quota", "set", "--bucket", bucket, "--max-bytes", "100K")
    assert shown["max_bytes"] == 100 * KIB and shown["max_objects"] is None
    s3.put_object(Bucket=bucket, Key="a", Body=b"a" * 60 * KIB)
    err = refused(s3.put_object, Bucket=bucket, Key="b", Body=b"b" * 50 * KIB)
    assert "byte quota" in err.response["Error"]["Message"]
    assert bucket in err.response["Error"]["Message"]
    refused(s3.copy_object, Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "a"})
    completion = complete_small_upload(s3, bucket, "mp", 50 * KIB)
    refused(s3.complete_multipart_upload, **completion)
    assert keys(s3, bucket) == ["a"]                      # nothing stored by the refusals
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="b")
    # The upload is still there: within the quota again, it completes.
    s3.delete_object(Bucket=bucket, Key="a")
    s3.complete_multipart_upload(**completion)
    s3.put_object(Bucket=bucket, Key="b", Body=b"b" * 40 * KIB)
    assert keys(s3, bucket) == ["b", "mp"]
    shown = cli_json(server, "quota", "show", "--bucket", bucket)
    assert shown["usage"] == {"bytes": 90 * KIB, "objects": 2}
    text = server.cli("quota", "show", "--bucket", bucket).stdout
    assert "90.0 KiB of 100.0 KiB" in text


def test_bucket_object_quota_and_clearing_it(server, s3, bucket):
    cli_json(server, "quota", "set", "--bucket", bucket, "--max-objects", "2")
    s3.put_object(Bucket=bucket, Key="one", Body=b"1")
    s3.put_object(Bucket=bucket, Key="two", Body=b"2")
    err = refused(s3.put_object, Bucket=bucket, Key="three", Body=b"3")
    assert "object quota of 2" in err.response["Error"]["Message"]
    refused(s3.copy_object, Bucket=bucket, Key="three",
            CopySource={"Bucket": bucket, "Key": "one"})
    refused(s3.complete_multipart_upload, **complete_small_upload(s3, bucket, "mp", 10))
    assert keys(s3, bucket) == ["one", "two"]
    s3.delete_object(Bucket=bucket, Key="one")            # frees room
    s3.put_object(Bucket=bucket, Key="three", Body=b"3")
    # The byte limit set now keeps the object limit; 'none' clears one limit only.
    shown = cli_json(server, "quota", "set", "--bucket", bucket, "--max-bytes", "1M")
    assert (shown["max_bytes"], shown["max_objects"]) == (1 << 20, 2)
    shown = cli_json(server, "quota", "set", "--bucket", bucket, "--max-objects", "none")
    assert (shown["max_bytes"], shown["max_objects"]) == (1 << 20, None)
    s3.put_object(Bucket=bucket, Key="four", Body=b"4")
    assert len(keys(s3, bucket)) == 3


def test_versions_count_and_markers_do_not(server, s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    cli_json(server, "quota", "set", "--bucket", bucket, "--max-objects", "2")
    s3.put_object(Bucket=bucket, Key="k", Body=b"v1")
    s3.put_object(Bucket=bucket, Key="k", Body=b"v2")
    refused(s3.put_object, Bucket=bucket, Key="k", Body=b"v3")  # two versions held
    s3.delete_object(Bucket=bucket, Key="k")                    # a marker: always allowed
    assert cli_json(server, "quota", "show", "--bucket", bucket)["usage"] == \
        {"bytes": 4, "objects": 2}


def test_concurrent_uploads_overshoot_by_at_most_those_in_flight(server, bucket):
    size, limit, threads = 16 * KIB, 10, 16
    cli_json(server, "quota", "set", "--bucket", bucket, "--max-bytes", str(limit * size))

    def upload(n: int) -> list[bool]:
        client = server.client(retries={"max_attempts": 1})   # a connection of its own
        out = []
        for i in range(4):
            try:
                client.put_object(Bucket=bucket, Key=f"t{n}-{i}", Body=b"x" * size)
                out.append(True)
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "QuotaExceeded"
                out.append(False)
        return out

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        outcomes = [ok for done in pool.map(upload, range(threads)) for ok in done]
    stored = cli_json(server, "quota", "show", "--bucket", bucket)["usage"]
    assert stored["objects"] == sum(outcomes) >= limit - 1
    # Each worker process never overshoots alone; across them, by at most one
    # upload in flight per connection.
    assert stored["bytes"] <= (limit + threads) * size
    assert outcomes.count(False) >= 4 * threads - limit - threads


def test_account_quota_binds_buckets_and_volumes(server, s3, bucket):
    root = cli_json(server, "quota", "show", "--account", "root")
    assert root["account"] == "000000000000" and bucket in root["buckets"]
    used = root["usage"]
    try:
        shown = cli_json(server, "quota", "set", "--account", "root",
                         "--max-objects", str(used["objects"] + 1),
                         "--max-bytes", str(used["bytes"] + (1 << 20)))
        assert shown["max_objects"] == used["objects"] + 1
        time.sleep(1.2)  # every worker reads the account quotas again within a second
        s3.put_object(Bucket=bucket, Key="fits", Body=b"x")
        err = refused(s3.put_object, Bucket=bucket, Key="over", Body=b"y")
        assert "account 000000000000" in err.response["Error"]["Message"]
        out = server.cli("volume", "create", f"v{uuid.uuid4().hex[:6]}", "--size", "10G",
                         "--json", check=False)
        assert out.returncode != 0
        assert json.loads(out.stdout)["error"] == "QuotaExceeded"
    finally:
        cli_json(server, "quota", "set", "--account", "root", "--max-objects", "0",
                 "--max-bytes", "0")
    time.sleep(1.2)
    s3.put_object(Bucket=bucket, Key="over", Body=b"y")


def test_admin_refusals(server, s3):
    out = server.cli("quota", "show", "--bucket", "no-such-bucket-here", "--json", check=False)
    assert out.returncode != 0 and json.loads(out.stdout)["error"] == "NoSuchBucket"
    out = server.cli("quota", "show", "--account", "nobody-here", "--json", check=False)
    assert out.returncode != 0 and json.loads(out.stdout)["error"] == "NoSuchAccount"
    out = server.cli("quota", "set", "--bucket", "b", "--max-objects", "-3", "--json",
                     check=False)
    assert out.returncode != 0 and json.loads(out.stdout)["error"] == "InvalidArgument"


def test_refused_upload_is_not_read(server, bucket):
    """A large upload refused up front gets its 403 without sending the body."""
    cli_json(server, "quota", "set", "--bucket", bucket, "--max-bytes", "1M")
    client = server.client(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=20)
    started = time.monotonic()
    refused(client.put_object, Bucket=bucket, Key="huge", Body=b"z" * (64 << 20))
    assert time.monotonic() - started < 20
    assert keys(client, bucket) == []


def test_form_upload_over_a_byte_quota_is_refused(server, s3, bucket):
    import urllib3
    cli_json(server, "quota", "set", "--bucket", bucket, "--max-bytes", "100K")
    s3.put_object(Bucket=bucket, Key="a", Body=b"a" * 60 * KIB)
    post = s3.generate_presigned_post(bucket, "form", ExpiresIn=300)

    def send(size: int) -> urllib3.BaseHTTPResponse:
        fields = [*post["fields"].items(), ("file", ("f.bin", b"f" * size))]
        body, content_type = urllib3.encode_multipart_formdata(fields)
        return urllib3.request("POST", post["url"], body=body,
                               headers={"Content-Type": content_type}, retries=False)
    answer = send(50 * KIB)
    assert answer.status == 403 and b"<Code>QuotaExceeded</Code>" in answer.data
    assert keys(s3, bucket) == ["a"]
    assert send(10 * KIB).status == 204
    assert keys(s3, bucket) == ["a", "form"]
