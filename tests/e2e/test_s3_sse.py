"""Server-side encryption (issue 16) with boto3 against a real `basalt serve` over HTTPS.

Every mode on single-part and multipart objects, ranged GETs at package
boundaries, copies between modes, AWS's errors for wrong, missing and malformed
keys, default bucket encryption, a bucket policy requiring encryption, and the
disks: no plaintext anywhere on them, a flipped ciphertext byte healed from
parity, packages swapped between objects refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import uuid

import pytest
from botocore.exceptions import ClientError

PACKAGE = 64 * 1024
KEY_A = os.urandom(32)
KEY_B = os.urandom(32)


def sse_c(key: bytes, copy: bool = False) -> dict[str, str]:
    prefix = "CopySource" if copy else ""
    return {f"{prefix}SSECustomerAlgorithm": "AES256", f"{prefix}SSECustomerKey": key,
            # boto3 computes the MD5 itself from a bytes key
            }


@pytest.fixture(scope="module")
def server(basalt_https):
    return basalt_https


@pytest.fixture(scope="module")
def s3(server):
    return server.client(retries={"max_attempts": 1})


@pytest.fixture(scope="module")
def kms_key(server):
    out = server.cli("kms", "key", "create", "sse-tests", "--json")
    return json.loads(out.stdout)["id"]


@pytest.fixture
def bucket(s3):
    name = f"sse-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def modes(kms_key: str) -> dict[str, tuple[dict, dict]]:
    """mode → (write arguments, read arguments)."""
    context = base64.b64encode(json.dumps({"team": "a"}).encode()).decode()
    return {
        "sse-s3": ({"ServerSideEncryption": "AES256"}, {}),
        "kms-default": ({"ServerSideEncryption": "aws:kms"}, {}),
        "kms-key": ({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key,
                     "SSEKMSEncryptionContext": context, "BucketKeyEnabled": True}, {}),
        "sse-c": (sse_c(KEY_A), sse_c(KEY_A)),
    }


def check_headers(mode: str, response: dict, kms_key: str) -> None:
    if mode == "sse-s3":
        assert response["ServerSideEncryption"] == "AES256"
    elif mode.startswith("kms"):
        assert response["ServerSideEncryption"] == "aws:kms"
        assert response["SSEKMSKeyId"].startswith("arn:aws:kms:")
        if mode == "kms-key":
            assert response["SSEKMSKeyId"].endswith("key/" + kms_key)
            assert response["BucketKeyEnabled"] is True
    else:
        assert response["SSECustomerAlgorithm"] == "AES256"
        assert response["SSECustomerKeyMD5"] == base64.b64encode(
            hashlib.md5(KEY_A).digest()).decode()
        assert "ServerSideEncryption" not in response


BOUNDARIES = [(0, 0), (65535, 65535), (65535, 65536), (65536, 65536), (65537, 65537),
              (65530, 131080), (100, 200_000)]


@pytest.mark.parametrize("mode", ["sse-s3", "kms-default", "kms-key", "sse-c"])
@pytest.mark.parametrize("size", [0, 1000, 65536, 300_001])
def test_single_part_every_mode(s3, bucket, kms_key, mode, size):
    write, read = modes(kms_key)[mode]
    data = random.Random(size).randbytes(size)
    put = s3.put_object(Bucket=bucket, Key="k", Body=data, **write)
    check_headers(mode, put, kms_key)
    md5 = hashlib.md5(data).hexdigest()
    assert (put["ETag"] == f'"{md5}"') == (mode == "sse-s3")  # KMS and SSE-C: opaque
    got = s3.get_object(Bucket=bucket, Key="k", **read)
    assert got["Body"].read() == data and got["ContentLength"] == size
    assert got["ETag"] == put["ETag"]
    check_headers(mode, got, kms_key)
    head = s3.head_object(Bucket=bucket, Key="k", **read)
    assert head["ContentLength"] == size
    check_headers(mode, head, kms_key)
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("k", size)]
    for first, last in BOUNDARIES + [(size - 1, size - 1), (max(0, size - 70_000), size - 1)]:
        if size == 0 or first >= size:
            continue
        part = s3.get_object(Bucket=bucket, Key="k", Range=f"bytes={first}-{last}", **read)
        assert part["Body"].read() == data[first:last + 1], (first, last)


@pytest.mark.parametrize("mode", ["sse-s3", "kms-key", "sse-c"])
def test_multipart_every_mode(s3, bucket, kms_key, mode):
    write, read = modes(kms_key)[mode]
    rng = random.Random(mode)
    parts = [rng.randbytes(5 << 20), rng.randbytes((5 << 20) + 12345), rng.randbytes(70_000)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="m", **write)
    check_headers(mode, up, kms_key)
    etags = []
    for number, body in enumerate(parts, 1):
        if mode == "sse-c":
            with pytest.raises(ClientError) as err:  # AWS: the key on every part
                s3.upload_part(Bucket=bucket, Key="m", UploadId=up["UploadId"],
                               PartNumber=number, Body=body)
            assert err.value.response["Error"]["Code"] == "InvalidRequest"
        done = s3.upload_part(Bucket=bucket, Key="m", UploadId=up["UploadId"],
                              PartNumber=number, Body=body, **read)
        check_headers(mode, done, kms_key)
        etags.append(done["ETag"])
    listed = s3.list_parts(Bucket=bucket, Key="m", UploadId=up["UploadId"])["Parts"]
    assert [p["Size"] for p in listed] == [len(p) for p in parts]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="m", UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]})
    whole = b"".join(parts)
    got = s3.get_object(Bucket=bucket, Key="m", **read)
    assert got["ETag"].strip('"').endswith("-3")
    assert got["ContentLength"] == len(whole) and got["Body"].read() == whole
    check_headers(mode, got, kms_key)
    second = s3.get_object(Bucket=bucket, Key="m", PartNumber=2, **read)
    assert second["Body"].read() == parts[1]
    edge = (5 << 20) - 10  # a range across the part boundary
    across = s3.get_object(Bucket=bucket, Key="m", Range=f"bytes={edge}-{edge + 70_000}", **read)
    assert across["Body"].read() == whole[edge:edge + 70_001]


@pytest.mark.parametrize("mode", ["sse-s3", "sse-c"])
def test_a_part_uploaded_again_replaces_the_first(s3, bucket, kms_key, mode):
    """Each upload of a part number is sealed under a key of its own (the
    object key's nonces are never reused); the last upload is what reads back."""
    write, read = modes(kms_key)[mode]
    rng = random.Random(7)
    first, second, tail = rng.randbytes(5 << 20), rng.randbytes(5 << 20), rng.randbytes(1000)
    up = s3.create_multipart_upload(Bucket=bucket, Key="again", **write)
    ids = {"Bucket": bucket, "Key": "again", "UploadId": up["UploadId"]}
    s3.upload_part(PartNumber=1, Body=first, **ids, **read)
    one = s3.upload_part(PartNumber=1, Body=second, **ids, **read)["ETag"]
    two = s3.upload_part(PartNumber=2, Body=tail, **ids, **read)["ETag"]
    s3.complete_multipart_upload(**ids, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": one}, {"PartNumber": 2, "ETag": two}]})
    assert s3.get_object(Bucket=bucket, Key="again", **read)["Body"].read() == second + tail
    edge = (5 << 20) - 100
    got = s3.get_object(Bucket=bucket, Key="again", Range=f"bytes={edge}-{edge + 199}", **read)
    assert got["Body"].read() == (second + tail)[edge:edge + 200]


def test_large_multipart_upload(s3, bucket, kms_key, tmp_path):
    """~100 MiB through boto3's transfer manager (16 MiB parts), SSE-KMS."""
    from boto3.s3.transfer import TransferConfig
    path = tmp_path / "big"
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(100):
            f.write(block[i:] + block[:i])
    config = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20)
    s3.upload_file(str(path), bucket, "big", Config=config,
                   ExtraArgs={"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key})
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == 100 << 20 and head["ServerSideEncryption"] == "aws:kms"
    out = tmp_path / "back"
    s3.download_file(bucket, "big", str(out), Config=config)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()
    tail = s3.get_object(Bucket=bucket, Key="big", Range="bytes=-1")["Body"].read()
    assert tail == path.read_bytes()[-1:]


def test_copies_between_modes(s3, bucket, kms_key):
    data = random.Random(7).randbytes(200_000)
    s3.put_object(Bucket=bucket, Key="plain", Body=data)
    # plain -> SSE-C
    s3.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "plain"},
                   **sse_c(KEY_A))
    assert s3.get_object(Bucket=bucket, Key="c", **sse_c(KEY_A))["Body"].read() == data
    # SSE-C (key A) -> SSE-C (key B): the source's key and the destination's differ
    s3.copy_object(Bucket=bucket, Key="c2", CopySource={"Bucket": bucket, "Key": "c"},
                   **sse_c(KEY_A, copy=True), **sse_c(KEY_B))
    assert s3.get_object(Bucket=bucket, Key="c2", **sse_c(KEY_B))["Body"].read() == data
    # SSE-C -> KMS
    copied = s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "c"},
                            ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key,
                            **sse_c(KEY_A, copy=True))
    assert copied["ServerSideEncryption"] == "aws:kms"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == data
    # KMS -> plain
    copied = s3.copy_object(Bucket=bucket, Key="p", CopySource={"Bucket": bucket, "Key": "k"})
    assert "ServerSideEncryption" not in copied
    got = s3.get_object(Bucket=bucket, Key="p")
    assert "ServerSideEncryption" not in got and got["Body"].read() == data
    assert got["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    # an SSE-C source without its key
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "c"})
    assert err.value.response["Error"]["Code"] == "InvalidRequest"
    # in place: re-encrypting an object under another mode is allowed
    s3.copy_object(Bucket=bucket, Key="p", CopySource={"Bucket": bucket, "Key": "p"},
                   ServerSideEncryption="AES256")
    assert s3.head_object(Bucket=bucket, Key="p")["ServerSideEncryption"] == "AES256"


def test_upload_part_copy_from_sse_c_into_sse_s3(s3, bucket):
    data = random.Random(8).randbytes(6 << 20)
    s3.put_object(Bucket=bucket, Key="src", Body=data, **sse_c(KEY_A))
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst", ServerSideEncryption="AES256")
    one = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up["UploadId"], PartNumber=1,
                              CopySource={"Bucket": bucket, "Key": "src"},
                              CopySourceRange=f"bytes=0-{(5 << 20) - 1}", **sse_c(KEY_A, True))
    two = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up["UploadId"], PartNumber=2,
                              CopySource={"Bucket": bucket, "Key": "src"},
                              CopySourceRange=f"bytes={5 << 20}-{len(data) - 1}",
                              **sse_c(KEY_A, True))
    s3.complete_multipart_upload(Bucket=bucket, Key="dst", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": one["CopyPartResult"]["ETag"]},
                  {"PartNumber": 2, "ETag": two["CopyPartResult"]["ETag"]}]})
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == data


def error_of(call, **kwargs) -> tuple[int, str]:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    response = err.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_wrong_missing_and_malformed_keys(s3, bucket):
    s3.put_object(Bucket=bucket, Key="c", Body=b"secret" * 1000, **sse_c(KEY_A))
    assert error_of(s3.get_object, Bucket=bucket, Key="c") == (400, "InvalidRequest")
    assert error_of(s3.head_object, Bucket=bucket, Key="c")[0] == 400  # HEAD: no body
    assert error_of(s3.get_object, Bucket=bucket, Key="c", **sse_c(KEY_B)) == (403, "AccessDenied")
    assert error_of(s3.head_object, Bucket=bucket, Key="c", **sse_c(KEY_B))[0] == 403
    # GetObjectAttributes needs the key too (AWS); with it, the attributes
    # (boto3 encodes the key of this operation only when given as text)
    attrs = {"Bucket": bucket, "Key": "c", "ObjectAttributes": ["ObjectSize"]}

    def encoded(key: bytes) -> dict[str, str]:
        return {"SSECustomerAlgorithm": "AES256",
                "SSECustomerKey": base64.b64encode(key).decode(),
                "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(key).digest()).decode()}
    assert error_of(s3.get_object_attributes, **attrs) == (400, "InvalidRequest")
    assert error_of(s3.get_object_attributes, **attrs, **encoded(KEY_B)) == (403, "AccessDenied")
    assert s3.get_object_attributes(**attrs, **encoded(KEY_A))["ObjectSize"] == 6000
    # a short key, a key whose MD5 is not the one sent, an unknown algorithm
    assert error_of(s3.get_object, Bucket=bucket, Key="c", SSECustomerAlgorithm="AES256",
                    SSECustomerKey=b"short") == (400, "InvalidArgument")
    wrong_md5 = base64.b64encode(hashlib.md5(KEY_B).digest()).decode()

    def replace_md5(request, **_):  # boto3 always computes the right one itself
        request.headers.replace_header("x-amz-server-side-encryption-customer-key-MD5",
                                       wrong_md5)
    s3.meta.events.register("before-sign.s3.GetObject", replace_md5)
    try:
        assert error_of(s3.get_object, Bucket=bucket, Key="c", **sse_c(KEY_A)) == (
            400, "InvalidArgument")
    finally:
        s3.meta.events.unregister("before-sign.s3.GetObject", replace_md5)
    assert error_of(s3.put_object, Bucket=bucket, Key="d", Body=b"x",
                    SSECustomerAlgorithm="AES128", SSECustomerKey=KEY_A)[0] == 400
    # SSE-C headers on a plain object, and SSE-C mixed with SSE-S3
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    assert error_of(s3.get_object, Bucket=bucket, Key="plain", **sse_c(KEY_A)) == (
        400, "InvalidRequest")
    assert error_of(s3.put_object, Bucket=bucket, Key="d", Body=b"x",
                    ServerSideEncryption="AES256", **sse_c(KEY_A)) == (400, "InvalidArgument")
    assert error_of(s3.put_object, Bucket=bucket, Key="d", Body=b"x",
                    ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/nope") == (
        400, "KMS.NotFoundException")
    assert error_of(s3.put_object, Bucket=bucket, Key="d", Body=b"x",
                    ServerSideEncryption="AES512") == (400, "InvalidArgument")
    assert "d" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]


def test_sse_c_over_plain_http_is_refused(basalt_http):
    s3 = basalt_http.client()
    s3.create_bucket(Bucket="sse-http")
    assert error_of(s3.put_object, Bucket="sse-http", Key="k", Body=b"x", **sse_c(KEY_A)) == (
        400, "InvalidRequest")
    # the other modes need no secret on the wire
    assert s3.put_object(Bucket="sse-http", Key="k", Body=b"x",
                         ServerSideEncryption="AES256")["ServerSideEncryption"] == "AES256"


def test_content_md5_and_checksums_are_the_plaintexts(s3, bucket):
    data = b"checked" * 50_000
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    put = s3.put_object(Bucket=bucket, Key="k", Body=data, ContentMD5=md5,
                        ChecksumAlgorithm="SHA256", **sse_c(KEY_A))
    assert put["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    assert error_of(s3.put_object, Bucket=bucket, Key="k2", Body=data, ContentMD5=bad,
                    ServerSideEncryption="AES256") == (400, "BadDigest")


def test_default_bucket_encryption(s3, bucket, kms_key):
    assert error_of(s3.get_bucket_encryption, Bucket=bucket) == (
        404, "ServerSideEncryptionConfigurationNotFoundError")
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                               "KMSMasterKeyID": kms_key}}]})
    rule = s3.get_bucket_encryption(Bucket=bucket)[
        "ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == kms_key
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"defaulted")
    assert put["ServerSideEncryption"] == "aws:kms" and put["SSEKMSKeyId"].endswith(kms_key)
    assert s3.put_object(Bucket=bucket, Key="s", Body=b"asked",
                         ServerSideEncryption="AES256")["ServerSideEncryption"] == "AES256"
    up = s3.create_multipart_upload(Bucket=bucket, Key="m")
    assert up["ServerSideEncryption"] == "aws:kms"
    s3.abort_multipart_upload(Bucket=bucket, Key="m", UploadId=up["UploadId"])
    s3.delete_bucket_encryption(Bucket=bucket)
    assert "ServerSideEncryption" not in s3.put_object(Bucket=bucket, Key="p", Body=b"x")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"defaulted"


def test_bucket_policy_requiring_encryption(s3, bucket):
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "AES256"}}}]}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    try:
        assert error_of(s3.put_object, Bucket=bucket, Key="k", Body=b"x") == (403, "AccessDenied")
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="AES256")
    finally:
        s3.delete_bucket_policy(Bucket=bucket)


def test_post_form_upload_encrypted(server, s3, bucket):
    import urllib3
    post = s3.generate_presigned_post(bucket, "form", ExpiresIn=300,
                                      Fields={"x-amz-server-side-encryption": "AES256"},
                                      Conditions=[{"x-amz-server-side-encryption": "AES256"}])
    body, content_type = urllib3.encode_multipart_formdata(
        [*post["fields"].items(), ("file", ("f", b"formdata"))])
    resp = urllib3.PoolManager(ca_certs=server.ca_path).request(
        "POST", post["url"], body=body, headers={"Content-Type": content_type}, timeout=30)
    assert resp.status == 204, resp.data
    assert resp.headers["x-amz-server-side-encryption"] == "AES256"
    got = s3.get_object(Bucket=bucket, Key="form")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == b"formdata"


# --- the disks ---------------------------------------------------------------------


def disk_files(data_dir: str) -> list[str]:
    root = os.path.join(data_dir, "disks")
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]


def shard_files(data_dir: str, names: set[str] | None = None) -> list[str]:
    return sorted(p for p in disk_files(data_dir)
                  if f"{os.sep}data{os.sep}" in p and (names is None or os.path.basename(p)
                                                       in names))


PATTERN = b"BASALT-PLAINTEXT-PATTERN-" * 40


def test_no_plaintext_on_any_disk(server, s3, bucket, kms_key):
    big = PATTERN * 3000  # ~3 MiB: shard files
    small = PATTERN * 10  # inline in LMDB
    for mode, (write, _) in modes(kms_key).items():
        s3.put_object(Bucket=bucket, Key=f"big-{mode}", Body=big, **write)
        s3.put_object(Bucket=bucket, Key=f"small-{mode}", Body=small, **write)
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ServerSideEncryption="AES256")
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=1,
                          Body=big)
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1,
                                                             "ETag": part["ETag"]}]})
    control = b"BASALT-CONTROL-" * 40  # stored in clear: proves the scan would see it
    s3.put_object(Bucket=bucket, Key="control", Body=control)
    s3.put_object(Bucket=bucket, Key="control-big", Body=control * 3000)
    found: dict[bytes, list[str]] = {PATTERN[:64]: [], control[:60]: []}
    for path in disk_files(server.data_dir):
        with open(path, "rb") as f:
            content = f.read()
        for needle, holders in found.items():
            if needle in content:
                holders.append(os.path.basename(path))
    assert "data.mdb" in found[control[:60]] and len(found[control[:60]]) > 1, found
    assert found[PATTERN[:64]] == [], found
    for mode, (_, read) in modes(kms_key).items():
        assert s3.get_object(Bucket=bucket, Key=f"big-{mode}", **read)["Body"].read() == big


def new_shards(data_dir: str, before: set[str]) -> set[str]:
    return {os.path.basename(p) for p in shard_files(data_dir)} - before


def test_flipped_ciphertext_byte_is_healed_from_parity(server, s3, bucket):
    before = {os.path.basename(p) for p in shard_files(server.data_dir)}
    data = random.Random(3).randbytes(3 << 20)
    s3.put_object(Bucket=bucket, Key="f", Body=data, ServerSideEncryption="AES256")
    paths = shard_files(server.data_dir, new_shards(server.data_dir, before))
    assert paths
    with open(paths[0], "r+b") as f:  # one byte of one shard on one disk
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == data
    got = s3.get_object(Bucket=bucket, Key="f", Range="bytes=0-100")["Body"].read()
    assert got == data[:101]


def test_packages_swapped_between_objects_are_refused(server, s3, bucket):
    rng = random.Random(4)
    one, two = rng.randbytes(2 << 20), rng.randbytes(2 << 20)
    before = {os.path.basename(p) for p in shard_files(server.data_dir)}
    s3.put_object(Bucket=bucket, Key="one", Body=one, ServerSideEncryption="AES256")
    mid = {os.path.basename(p) for p in shard_files(server.data_dir)}
    s3.put_object(Bucket=bucket, Key="two", Body=two, ServerSideEncryption="AES256")
    first, second = mid - before, new_shards(server.data_dir, mid)
    assert len(first) == len(second) == 1
    (a,), (b,) = first, second
    # Swap the two bodies' shards on every disk: each object's shards then hold
    # the other's ciphertext, every frame checksum still right.
    for disk in sorted(os.listdir(os.path.join(server.data_dir, "disks"))):
        root = os.path.join(server.data_dir, "disks", disk)
        pa, pb = (next(p for p in shard_files(server.data_dir, {n})
                       if p.startswith(root + os.sep)) for n in (a, b))
        with open(pa, "rb") as f:
            content_a = f.read()
        with open(pb, "rb") as f:
            content_b = f.read()
        with open(pa, "wb") as f:
            f.write(content_b)
        with open(pb, "wb") as f:
            f.write(content_a)
    for key in ("one", "two"):
        status, code = error_of(lambda **kw: s3.get_object(**kw)["Body"].read(),
                                Bucket=bucket, Key=key)
        assert status == 500, (key, status, code)
