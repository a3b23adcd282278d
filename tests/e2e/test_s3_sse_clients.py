"""Server-side encryption from aws-cli and rclone (issue 16), over HTTPS.

aws-cli: ``--sse AES256``, ``--sse aws:kms --sse-kms-key-id``, ``--sse-c AES256
--sse-c-key`` (uploads above its 8 MiB threshold go multipart); rclone (Debian's,
scripts/test installs it): ``--s3-server-side-encryption`` and ``--s3-sse-customer-*``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from .rclone import rclone_runner

AWS = os.path.join(os.path.dirname(sys.executable), "aws")
CUSTOMER_KEY = "0123456789abcdef0123456789abcdef"  # 32 bytes, as aws-cli and rclone take it


@pytest.fixture(scope="module")
def server(basalt_https):
    return basalt_https


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert out.returncode == 0, (cmd, out.stderr.decode(errors="replace"))
    return out


def aws(server, tmp_path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "config").write_text("[default]\nregion = us-east-1\n")
    env = dict(server.env, AWS_CONFIG_FILE=str(tmp_path / "config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "nothing"), AWS_PAGER="")
    env.pop("AWS_PROFILE", None)
    return run([AWS, "--endpoint-url", server.endpoint, "--ca-bundle", server.ca_path, *args],
               env)


def test_aws_cli_every_mode(server, tmp_path):
    kms_key = json.loads(server.cli("kms", "key", "create", "cli", "--json").stdout)["id"]
    s3 = server.client()
    s3.create_bucket(Bucket="cli")
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(os.urandom(300_000))
    big.write_bytes(os.urandom(20 << 20))  # multipart (8 MiB parts)
    cases = {
        "s3": (["--sse", "AES256"], []),
        "kms": (["--sse", "aws:kms", "--sse-kms-key-id", kms_key], []),
        "c": (["--sse-c", "AES256", "--sse-c-key", CUSTOMER_KEY],
              ["--sse-c", "AES256", "--sse-c-key", CUSTOMER_KEY]),
    }
    for name, (write, read) in cases.items():
        for path in (small, big):
            url = f"s3://cli/{name}/{path.name}"
            aws(server, tmp_path, "s3", "cp", str(path), url, *write)
            back = tmp_path / f"back-{name}-{path.name}"
            aws(server, tmp_path, "s3", "cp", url, str(back), *read)
            assert hashlib.sha256(back.read_bytes()).digest() == \
                hashlib.sha256(path.read_bytes()).digest(), url
    head = s3.head_object(Bucket="cli", Key="kms/big")
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].endswith(kms_key)
    assert head["ETag"].strip('"').endswith("-3")
    assert s3.head_object(Bucket="cli", Key="s3/small")["ServerSideEncryption"] == "AES256"
    # a server-side copy from SSE-C to SSE-S3
    aws(server, tmp_path, "s3", "cp", "s3://cli/c/small", "s3://cli/copied", "--sse", "AES256",
        "--sse-c-copy-source", "AES256", "--sse-c-copy-source-key", CUSTOMER_KEY)
    got = s3.get_object(Bucket="cli", Key="copied")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == small.read_bytes()


def test_rclone_sse_options(server, tmp_path):
    rclone = rclone_runner(server, tmp_path)
    s3 = server.client()
    s3.create_bucket(Bucket="rclone")
    src = tmp_path / "src"
    src.mkdir()
    files = {f"f{i}": os.urandom(size) for i, size in enumerate([0, 1000, 70_000, 6 << 20])}
    for name, data in files.items():
        (src / name).write_bytes(data)
    sse_c = ["--s3-sse-customer-algorithm", "AES256", "--s3-sse-customer-key", CUSTOMER_KEY]
    rclone("copy", str(src), "b:rclone/s3", "--s3-server-side-encryption", "AES256")
    rclone("copy", str(src), "b:rclone/c", *sse_c)
    for prefix, extra in (("s3", []), ("c", sse_c)):
        out = tmp_path / f"out-{prefix}"
        rclone("copy", f"b:rclone/{prefix}", str(out), *extra)
        for name, data in files.items():
            assert (out / name).read_bytes() == data, (prefix, name)
        rclone("check", str(src), f"b:rclone/{prefix}", "--download", *extra)
    assert s3.head_object(Bucket="rclone", Key="s3/f2")["ServerSideEncryption"] == "AES256"
    head = s3.head_object(Bucket="rclone", Key="c/f2", SSECustomerAlgorithm="AES256",
                          SSECustomerKey=CUSTOMER_KEY)
    assert head["SSECustomerAlgorithm"] == "AES256"
