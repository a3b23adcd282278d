"""Requests for features Basalt lacks get NotImplemented, and racing CreateBuckets one winner.

Real boto3 against a real `basalt serve` (HTTP and HTTPS, two S3 worker processes): a user must
never believe a feature took effect when it did not,
nor that their credentials are wrong when a feature is missing.
"""

from __future__ import annotations

import concurrent.futures
import ssl
import urllib.error
import urllib.request
import uuid

import pytest
from botocore.exceptions import ClientError


def not_implemented(call, **kwargs):
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    assert err.value.response["Error"]["Code"] == "NotImplemented", err.value.response
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    return err.value.response["Error"]


def test_unsupported_sub_resources_are_refused(s3, bucket):
    # Server-side encryption is supported since issue 16 (tests/e2e/test_s3_sse.py).
    not_implemented(s3.get_bucket_website, Bucket=bucket)
    not_implemented(s3.get_bucket_replication, Bucket=bucket)


def test_presigned_post_uploads_over_http_and_https(basalt, s3, bucket):
    post = s3.generate_presigned_post(bucket, "form.txt", ExpiresIn=300)
    boundary = uuid.uuid4().hex
    fields = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
              for k, v in post["fields"].items()]
    body = ("".join(fields) + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="form.txt"\r\n\r\nhello\r\n--{boundary}--\r\n').encode()
    request = urllib.request.Request(post["url"], data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30, context=ssl.create_default_context(
            cafile=basalt.ca_path) if basalt.ca_path else None) as resp:
        assert resp.status == 204  # POST Object: tests/e2e/test_s3_post_object.py
    assert s3.get_object(Bucket=bucket, Key="form.txt")["Body"].read() == b"hello"


def test_concurrent_create_bucket_has_exactly_one_winner(basalt_http):
    clients = [basalt_http.client() for _ in range(8)]
    for _ in range(3):
        name = f"race-{uuid.uuid4().hex[:10]}"

        def create(s3, name=name):
            try:
                s3.create_bucket(Bucket=name)
                return "created"
            except ClientError as exc:
                return exc.response["Error"]["Code"]

        with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
            results = list(pool.map(create, clients))
        assert results.count("created") == 1, results
        assert set(results) == {"created", "BucketAlreadyOwnedByYou"}, results
        first = clients[0].list_buckets()["Buckets"]
        created = next(b["CreationDate"] for b in first if b["Name"] == name)
        clients[0].put_object(Bucket=name, Key="k", Body=b"kept")
        # A late creator changes nothing of the winner's bucket.
        with pytest.raises(ClientError) as err:
            clients[1].create_bucket(Bucket=name)
        assert err.value.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
        again = clients[0].list_buckets()["Buckets"]
        assert next(b["CreationDate"] for b in again if b["Name"] == name) == created
        assert clients[0].get_object(Bucket=name, Key="k")["Body"].read() == b"kept"
