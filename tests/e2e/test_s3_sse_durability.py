"""Encrypted objects are as durable as plain ones (issue 16): SIGKILL in the middle
of encrypted uploads, two disks wiped and healed, a KMS key rotated and the
server restarted: everything acknowledged reads back."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import signal
import threading
import time

from botocore.exceptions import BotoCoreError, ClientError

from .conftest import start_server, stop_server

CUSTOMER = os.urandom(32)
SSE_C = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": CUSTOMER}


def body(key: str, version: int) -> bytes:
    rng = random.Random(f"{key}/{version}")
    return rng.randbytes(rng.choice([3_000, 150_000, 2_500_000]))


def mode_of(key: str, kms_key: str) -> tuple[dict, dict]:
    """(write arguments, read arguments) of a key: the modes take turns."""
    lane = int(key[1:]) % 3
    if lane == 0:
        return {"ServerSideEncryption": "AES256"}, {}
    if lane == 1:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key}, {}
    return SSE_C, SSE_C


def test_sigkill_during_encrypted_uploads(tmp_path):
    extra = ("--allow-sse-c-over-http",)
    server = start_server(str(tmp_path), extra=extra)
    kms_key = json.loads(server.cli("kms", "key", "create", "crash", "--json").stdout)["id"]
    s3 = server.client(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
    s3.create_bucket(Bucket="crash")
    keys = [f"k{i}" for i in range(8)]
    acked: dict[str, int] = {}
    in_flight: dict[str, set[int]] = {k: set() for k in keys}
    lock = threading.Lock()
    stop, killed = threading.Event(), threading.Event()
    early_errors: list[str] = []

    def writer(lane: int) -> None:
        version = lane * 100000
        client = server.client(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
        while not stop.is_set():
            key = keys[2 * lane + version % 2]  # one writer per key
            version += 1
            with lock:
                in_flight[key].add(version)
            try:
                client.put_object(Bucket="crash", Key=key, Body=body(key, version),
                                  **mode_of(key, kms_key)[0])
            except (BotoCoreError, ClientError) as exc:
                if not killed.is_set():
                    early_errors.append(repr(exc))
                continue
            with lock:
                acked[key] = version
                in_flight[key].discard(version)

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(writer, lane) for lane in range(4)]
            time.sleep(3)
            killed.set()
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
            stop.set()
            for f in futures:
                f.result()
        assert acked, "no upload was acknowledged before the kill"
        assert not early_errors, early_errors
        stop_server(server)
        server = start_server(str(tmp_path), extra=extra)
        s3 = server.client()
        for key in keys:
            allowed = set(in_flight[key]) | ({acked[key]} if key in acked else set())
            try:
                data = s3.get_object(Bucket="crash", Key=key,
                                     **mode_of(key, kms_key)[1])["Body"].read()
            except ClientError:
                assert key not in acked, f"{key}: acknowledged version {acked[key]} lost"
                continue
            digest = hashlib.sha256(data).digest()
            assert any(hashlib.sha256(body(key, v)).digest() == digest for v in allowed), \
                f"{key} is not one whole version it was given"
    finally:
        stop_server(server)


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
