"""Encrypted objects are as durable as plain ones (issue 16): SIGKILL in the middle
of encrypted uploads, two disks wiped and healed, a KMS key rotated and the
server restarted: everything acknowledged reads back."""

from __future__ import annotations

import json
import os
import random
import shutil

from .conftest import start_server, stop_server
from .test_s3_crash import kill_during_uploads

CUSTOMER = os.urandom(32)
SSE_C = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": CUSTOMER}


def mode_of(key: str, kms_key: str) -> tuple[dict, dict]:
    """(write arguments, read arguments) of a key: the modes take turns."""
    lane = int(key[1:]) % 3
    if lane == 0:
        return {"ServerSideEncryption": "AES256"}, {}
    if lane == 1:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key}, {}
    return SSE_C, SSE_C


def test_sigkill_during_encrypted_uploads(tmp_path):
    def modes(server):
        kms_key = json.loads(server.cli("kms", "key", "create", "crash", "--json").stdout)["id"]
        return lambda key: mode_of(key, kms_key)
    kill_during_uploads(tmp_path, ("--allow-sse-c-over-http",), modes)


def wipe(server, names: list[str]) -> None:
    for name in names:
        path = os.path.join(server.data_dir, "disks", name)
        shutil.rmtree(path)
        os.mkdir(path)


def test_two_disk_wipes_heal_and_key_rotation_then_restart(tmp_path):
    extra = ("--allow-sse-c-over-http",)
    server = start_server(str(tmp_path), extra=extra)
    try:
        kms_key = json.loads(server.cli("kms", "key", "create", "dur", "--json").stdout)["id"]
        s3 = server.client()
        s3.create_bucket(Bucket="dur")
        s3.put_bucket_encryption(Bucket="dur", ServerSideEncryptionConfiguration={"Rules": [{
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        objects = {}
        for i in range(9):
            key = f"k{i}"
            data = random.Random(i).randbytes([1000, 200_000, 3_000_000][i % 3])
            write, read = mode_of(key, kms_key)
            s3.put_object(Bucket="dur", Key=key, Body=data, **write)
            objects[key] = (data, read)
        s3.put_object(Bucket="dur", Key="defaulted", Body=b"d" * 300_000)
        objects["defaulted"] = (b"d" * 300_000, {})

        def check_all(client) -> None:
            for key, (data, read) in objects.items():
                got = client.get_object(Bucket="dur", Key=key, **read)
                assert got["Body"].read() == data, key
                assert "SSECustomerAlgorithm" in got or "ServerSideEncryption" in got, key

        # Two disks of a 2+2 set wiped: the data survives, heal rebuilds them,
        # then the other two can go.
        stop_server(server)
        wipe(server, ["disk0", "disk1"])
        server = start_server(str(tmp_path), extra=extra)
        server.cli("heal")
        check_all(server.client())
        stop_server(server)
        wipe(server, ["disk2", "disk3"])
        server = start_server(str(tmp_path), extra=extra)
        server.cli("heal")
        check_all(server.client())

        # Rotation adds a key version; the objects sealed under the old one and
        # those written after it all read after a restart.
        server.cli("kms", "key", "rotate", "dur")
        key = "after-rotation"
        data = os.urandom(100_000)
        server.client().put_object(Bucket="dur", Key=key, Body=data,
                                   ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key)
        objects[key] = (data, {})
        stop_server(server)
        server = start_server(str(tmp_path), extra=extra)
        info = json.loads(server.cli("kms", "key", "info", "dur", "--json").stdout)
        assert info["versions"] == 2, info
        check_all(server.client())
    finally:
        stop_server(server)
