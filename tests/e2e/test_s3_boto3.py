"""boto3 at its default configuration against `basalt serve`, over HTTP and HTTPS.

Newest botocore sends CRC32 checksums by default: as a header over HTTP and as
an aws-chunked trailer over HTTPS; both paths run here.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import time
import urllib.error
import urllib.request
import zlib

import pytest
from botocore.exceptions import ClientError

KIB, MIB = 1024, 1 << 20


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def test_bucket_lifecycle(s3):
    s3.create_bucket(Bucket="life-cycle-1")
    assert "life-cycle-1" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="life-cycle-1")
    assert s3.get_bucket_location(Bucket="life-cycle-1")["LocationConstraint"] is None
    with pytest.raises(ClientError) as err:
        s3.create_bucket(Bucket="life-cycle-1")
    assert code(err.value) == "BucketAlreadyOwnedByYou"
    s3.put_object(Bucket="life-cycle-1", Key="x", Body=b"x")
    with pytest.raises(ClientError) as err:
        s3.delete_bucket(Bucket="life-cycle-1")
    assert code(err.value) == "BucketNotEmpty"
    s3.delete_object(Bucket="life-cycle-1", Key="x")
    s3.delete_bucket(Bucket="life-cycle-1")
    with pytest.raises(ClientError) as err:
        s3.head_bucket(Bucket="life-cycle-1")
    assert status(err.value) == 404


def test_create_bucket_with_location_constraint(s3):
    s3.create_bucket(Bucket="located-bucket",
                     CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.head_bucket(Bucket="located-bucket")


@pytest.mark.parametrize("name", ["ab", "UPPER", "a_b", "-ab", "192.168.1.1", "a..b", "x" * 64])
def test_invalid_bucket_names(s3, name):
    from botocore.exceptions import ParamValidationError
    try:
        s3.create_bucket(Bucket=name)
    except ParamValidationError:
        return  # botocore refused it before sending
    except ClientError as exc:
        assert code(exc) == "InvalidBucketName"
        return
    pytest.fail(f"{name!r} was accepted")


@pytest.mark.parametrize("size", [0, 1, 4 * KIB, 128 * KIB + 1, MIB - 1, 3 * MIB + 17])
def test_put_get_sizes(s3, bucket, size):
    data = os.urandom(size)
    put = s3.put_object(Bucket=bucket, Key=f"obj-{size}", Body=data)
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key=f"obj-{size}")
    assert got["Body"].read() == data
    assert got["ContentLength"] == size


def test_default_checksums_are_verified_stored_and_returned(s3, bucket):
    data = os.urandom(2 * MIB + 5)
    put = s3.put_object(Bucket=bucket, Key="ck", Body=data)
    expected = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert put["ChecksumCRC32"] == expected
    head = s3.head_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == expected
    # botocore validates the returned checksum itself on this GET
    assert s3.get_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")["Body"].read() == data


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
def test_each_checksum_algorithm(s3, bucket, algorithm):
    data = os.urandom(300 * KIB)
    put = s3.put_object(Bucket=bucket, Key=f"alg-{algorithm}", Body=data,
                        ChecksumAlgorithm=algorithm)
    head = s3.head_object(Bucket=bucket, Key=f"alg-{algorithm}", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == put[f"Checksum{algorithm}"]
    if algorithm == "SHA256":
        assert base64.b64decode(head["ChecksumSHA256"]) == hashlib.sha256(data).digest()


def test_wrong_checksum_and_md5_are_rejected_and_store_nothing(s3, bucket):
    data = b"payload that will be refused"
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="bad", Body=data, ChecksumCRC32="AAAAAA==")
    assert code(err.value) == "BadDigest"
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="bad", Body=data,
                      ContentMD5=base64.b64encode(hashlib.md5(b"other").digest()).decode())
    assert code(err.value) == "BadDigest"
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=bucket, Key="bad")
    assert status(err.value) == 404


def test_metadata_and_content_headers(s3, bucket):
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    s3.put_object(Bucket=bucket, Key="doc.html", Body=b"<p>hi</p>", ContentType="text/html",
                  ContentEncoding="identity", ContentDisposition='attachment; filename="a.html"',
                  ContentLanguage="en", CacheControl="max-age=60", Expires=expires,
                  Metadata={"Owner": "ada", "project": "basalt"})
    head = s3.head_object(Bucket=bucket, Key="doc.html")
    assert head["ContentType"] == "text/html"
    assert head["ContentEncoding"] == "identity"
    assert head["ContentDisposition"] == 'attachment; filename="a.html"'
    assert head["ContentLanguage"] == "en"
    assert head["CacheControl"] == "max-age=60"
    assert head["Expires"] == expires
    assert head["Metadata"] == {"owner": "ada", "project": "basalt"}
    got = s3.get_object(Bucket=bucket, Key="doc.html", ResponseContentType="text/plain",
                        ResponseCacheControl="no-store")
    assert got["ContentType"] == "text/plain" and got["CacheControl"] == "no-store"


def test_ranges(s3, bucket):
    data = os.urandom(3 * MIB)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    for rng, expect in [("bytes=0-0", data[:1]), ("bytes=10-19", data[10:20]),
                        ("bytes=-100", data[-100:]), ("bytes=3145000-", data[3145000:]),
                        ("bytes=1048570-2097160", data[1048570:2097161]),
                        ("bytes=5-999999999", data[5:])]:
        got = s3.get_object(Bucket=bucket, Key="r", Range=rng)
        assert got["Body"].read() == expect, rng
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"].endswith(f"/{len(data)}")
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={len(data)}-")
    assert code(err.value) == "InvalidRange" and status(err.value) == 416


def test_conditional_gets(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="c", Body=b"conditional")
    etag = put["ETag"]
    head = s3.head_object(Bucket=bucket, Key="c")
    modified = head["LastModified"]
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"conditional"
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0000"')
    assert status(err.value) == 412
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert status(err.value) == 304
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=modified)
    assert status(err.value) == 304
    before = modified - datetime.timedelta(hours=1)
    assert s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=before)["Body"].read()
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=before)
    assert status(err.value) == 412


def test_conditional_writes(s3, bucket):
    s3.put_object(Bucket=bucket, Key="once", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="once", Body=b"2", IfNoneMatch="*")
    assert status(err.value) == 412
    etag = s3.head_object(Bucket=bucket, Key="once")["ETag"]
    s3.put_object(Bucket=bucket, Key="once", Body=b"3", IfMatch=etag)
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="once", Body=b"4", IfMatch=etag)
    assert status(err.value) == 412
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"3"


def test_copy_object(s3, bucket):
    data = os.urandom(MIB + 3)
    s3.put_object(Bucket=bucket, Key="src", Body=data, ContentType="image/png",
                  Metadata={"a": "1"})
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert head["ContentType"] == "image/png" and head["Metadata"] == {"a": "1"}
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == data
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src",
                   MetadataDirective="REPLACE", ContentType="text/plain", Metadata={"b": "2"})
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert head["ContentType"] == "text/plain" and head["Metadata"] == {"b": "2"}
    # onto itself: only with REPLACE
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"})
    assert code(err.value) == "InvalidRequest"
    s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"c": "3"})
    assert s3.head_object(Bucket=bucket, Key="src")["Metadata"] == {"c": "3"}
    etag = s3.head_object(Bucket=bucket, Key="src")["ETag"]
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "src"},
                       CopySourceIfNoneMatch=etag)
    assert status(err.value) == 412
    s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "src"},
                   CopySourceIfMatch=etag)
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "nope"})
    assert code(err.value) == "NoSuchKey"


def test_delete_objects_and_quiet_mode(s3, bucket):
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"d/{i}", Body=b"x")
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"d/{i}"} for i in range(3)]
                                                    + [{"Key": "never-existed"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["d/0", "d/1", "d/2", "never-existed"]
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "d/3"}, {"Key": "d/4"}],
                                                    "Quiet": True})
    assert "Deleted" not in out
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_delete_objects_thousand(s3, bucket):
    keys = [f"many/{i:04d}" for i in range(1000)]
    for k in keys[:50]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"")
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    assert len(out["Deleted"]) == 1000


def test_listing_v1_v2_pagination_delimiter_encoding(s3, bucket):
    keys = [f"photos/2024/{i:03d}.jpg" for i in range(25)] + ["photos/readme", "top", "a b+c",
                                                             "ü/ñ"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    paginator = s3.get_paginator("list_objects_v2")
    seen = [o["Key"] for page in paginator.paginate(Bucket=bucket, PaginationConfig={"PageSize": 7})
            for o in page.get("Contents", [])]
    assert seen == sorted(keys, key=lambda k: k.encode())
    paginator = s3.get_paginator("list_objects")
    seen = [o["Key"] for page in paginator.paginate(Bucket=bucket, PaginationConfig={"PageSize": 4})
            for o in page.get("Contents", [])]
    assert seen == sorted(keys, key=lambda k: k.encode())
    out = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in out["CommonPrefixes"]] == ["photos/", "ü/"]
    assert [o["Key"] for o in out["Contents"]] == ["a b+c", "top"]
    out = s3.list_objects_v2(Bucket=bucket, Prefix="photos/", Delimiter="/")
    assert [p["Prefix"] for p in out["CommonPrefixes"]] == ["photos/2024/"]
    out = s3.list_objects_v2(Bucket=bucket, StartAfter="photos/2024/020.jpg", MaxKeys=3,
                             FetchOwner=True)
    assert [o["Key"] for o in out["Contents"]] == [f"photos/2024/{i:03d}.jpg" for i in (21, 22, 23)]
    assert out["Contents"][0]["Owner"]["ID"]
    out = s3.list_objects_v2(Bucket=bucket, Prefix="a b", EncodingType="url")
    assert [o["Key"] for o in out["Contents"]] == ["a%20b%2Bc"]  # asked for: left encoded
    with pytest.raises(ClientError) as err:
        s3.list_objects_v2(Bucket="no-such-bucket-here")
    assert code(err.value) == "NoSuchBucket"


def test_delimiter_pages_over_common_prefixes(s3, bucket):
    for d in range(5):
        for i in range(3):
            s3.put_object(Bucket=bucket, Key=f"dir{d}/f{i}", Body=b"")
    paginator = s3.get_paginator("list_objects_v2")
    prefixes = [p["Prefix"] for page in paginator.paginate(
        Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 2})
        for p in page.get("CommonPrefixes", [])]
    assert prefixes == [f"dir{d}/" for d in range(5)]


def test_keys_with_special_characters(s3, bucket):
    keys = ["with space", "plus+sign", "percent%20", "q?mark", "hash#", "amp&er", "eq=ual",
            "tilde~", "unicode-ß-日本", "double//slash", "./dot", "../dotdot", "trailing/",
            "x" * 1024]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == k.encode(), k
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(listed) == sorted(keys)
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="y" * 1025, Body=b"")
    assert code(err.value) == "KeyTooLongError"


def test_missing_things(s3, bucket):
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="nope")
    assert code(err.value) == "NoSuchKey"
    assert err.value.response["Error"]["Resource"] == f"/{bucket}/nope"
    assert err.value.response["ResponseMetadata"]["RequestId"]
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket="no-such-bucket-x", Key="nope")
    assert code(err.value) == "NoSuchBucket"
    s3.delete_object(Bucket=bucket, Key="nope")  # deleting nothing succeeds


def test_presigned_urls_default_and_v4(basalt, s3, bucket):
    from botocore.config import Config
    s3.put_object(Bucket=bucket, Key="shared.txt", Body=b"for the browser")
    ctx = None
    if basalt.ca_path:
        import ssl
        ctx = ssl.create_default_context(cafile=basalt.ca_path)
    v4 = basalt.client(signature_version="s3v4")
    for client in (s3, v4):
        url = client.generate_presigned_url("get_object",
                                            Params={"Bucket": bucket, "Key": "shared.txt"})
        assert urllib.request.urlopen(url, context=ctx).read() == b"for the browser"
        put_url = client.generate_presigned_url("put_object",
                                                Params={"Bucket": bucket, "Key": "up.txt"})
        assert _put(put_url, b"uploaded", ctx) == 200
        assert s3.get_object(Bucket=bucket, Key="up.txt")["Body"].read() == b"uploaded"
        expired = client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": "shared.txt"}, ExpiresIn=1)
        time.sleep(2.1)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(expired, context=ctx)
        assert err.value.code == 403 and b"Request has expired" in err.value.read()
    tampered = v4.generate_presigned_url("get_object",
                                         Params={"Bucket": bucket, "Key": "shared.txt"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(tampered.replace("shared.txt", "other.txt"), context=ctx)
    assert err.value.code == 403
    _ = Config


def _put(url: str, body: bytes, ctx) -> int:
    """PUT like a browser's fetch: no Content-Type (urllib would add one, unsigned)."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    conn = (http.client.HTTPSConnection(u.netloc, context=ctx) if u.scheme == "https"
            else http.client.HTTPConnection(u.netloc))
    conn.request("PUT", u.path + "?" + u.query, body=body)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def test_wrong_secret_and_unknown_key(basalt, bucket):
    import boto3
    bad = boto3.client("s3", endpoint_url=basalt.endpoint, aws_access_key_id="BASALTTESTACCESSKEY1",
                       aws_secret_access_key="wrong", region_name="us-east-1",
                       verify=basalt.ca_path or True)
    with pytest.raises(ClientError) as err:
        bad.list_objects_v2(Bucket=bucket)
    assert code(err.value) == "SignatureDoesNotMatch"
    unknown = boto3.client("s3", endpoint_url=basalt.endpoint, aws_access_key_id="NOBODY",
                           aws_secret_access_key="x", region_name="us-east-1",
                           verify=basalt.ca_path or True)
    with pytest.raises(ClientError) as err:
        unknown.list_buckets()
    assert code(err.value) == "InvalidAccessKeyId"


def test_virtual_hosted_style(tmp_path, tls_files):
    from botocore.config import Config

    from .conftest import start_server, stop_server
    server = start_server(str(tmp_path), extra=("--domain", "s3.localhost"))
    try:
        import boto3
        port = server.endpoint.rsplit(":", 1)[1]
        vhost = boto3.client("s3", endpoint_url=f"http://s3.localhost:{port}",
                             aws_access_key_id=server.env["BASALT_ACCESS_KEY"],
                             aws_secret_access_key=server.env["BASALT_SECRET_KEY"],
                             region_name="us-east-1",
                             config=Config(s3={"addressing_style": "virtual"}))
        # *.localhost resolves to 127.0.0.1 only with some resolvers: send the
        # request to 127.0.0.1 with the virtual Host header instead.
        def to_loopback(request, **_):
            host = request.url.split("//", 1)[1].split("/", 1)[0]
            request.headers["Host"] = host
            request.url = request.url.replace(host, f"127.0.0.1:{port}", 1)
        vhost.meta.events.register_first("before-send.s3", to_loopback)
        vhost.create_bucket(Bucket="vhost-bucket")
        vhost.put_object(Bucket="vhost-bucket", Key="dir/k", Body=b"virtual")
        assert vhost.get_object(Bucket="vhost-bucket", Key="dir/k")["Body"].read() == b"virtual"
        path_style = server.client()
        assert path_style.get_object(Bucket="vhost-bucket", Key="dir/k")["Body"].read() == b"virtual"
        assert [o["Key"] for o in vhost.list_objects_v2(Bucket="vhost-bucket")["Contents"]] == ["dir/k"]
    finally:
        stop_server(server)


def test_request_ids_on_every_response(s3, bucket):
    resp = s3.put_object(Bucket=bucket, Key="id", Body=b"x")
    assert resp["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    resp = s3.get_object(Bucket=bucket, Key="id")
    assert resp["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="nope")
    assert err.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
