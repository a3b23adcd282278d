"""SIGKILL `basalt serve` (and its workers) in the middle of uploads.

Every object acknowledged before the kill reads back byte-identical after a
restart; an upload in flight leaves either its old version or its new one.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from .conftest import Server, start_server, stop_server


def body(key: str, version: int) -> bytes:
    rng = random.Random(f"{key}/{version}")
    return rng.randbytes(rng.choice([3_000, 150_000, 2_500_000]))


def test_sigkill_during_uploads(tmp_path):
    kill_during_uploads(tmp_path)


def kill_during_uploads(tmp_path, extra: tuple[str, ...] = (),
                        modes: Callable[[Server], Callable[[str], tuple[dict, dict]]] | None = None
                        ) -> None:
    """Four writers put versions of eight keys until the server's whole process
    group is SIGKILLed; after a restart every acknowledged version reads back and
    an upload in flight left its old version or its new one. ``modes(server)``
    gives each key's extra put and get arguments (e.g. its encryption)."""
    server = start_server(str(tmp_path), extra=extra)
    mode = modes(server) if modes is not None else (lambda key: ({}, {}))
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
            # Each key has one writer, so the last response seen is the last commit.
            key = keys[2 * lane + version % 2]
            version += 1
            with lock:
                in_flight[key].add(version)
            try:
                client.put_object(Bucket="crash", Key=key, Body=body(key, version),
                                  **mode(key)[0])
            except (BotoCoreError, ClientError) as exc:
                if not killed.is_set():
                    early_errors.append(repr(exc))
                continue  # the server died under us: outcome unknown, stays "in flight"
            with lock:
                acked[key] = version
                in_flight[key].discard(version)

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(writer, lane) for lane in range(4)]
            time.sleep(3)
            killed.set()
            os.killpg(server.proc.pid, signal.SIGKILL)  # master and workers at once
            server.proc.wait()
            stop.set()
            for f in futures:
                f.result()
        assert acked, "no upload was acknowledged before the kill"
        assert not early_errors, early_errors
        stop_server(server)
        server = start_server(str(tmp_path), extra=extra)  # same data dir: restart
        s3 = server.client()
        for key in keys:
            allowed = set(in_flight[key]) | ({acked[key]} if key in acked else set())
            try:
                data = s3.get_object(Bucket="crash", Key=key, **mode(key)[1])["Body"].read()
            except ClientError:
                assert key not in acked, f"{key}: acknowledged version {acked[key]} lost"
                continue
            digest = hashlib.sha256(data).digest()
            assert any(hashlib.sha256(body(key, v)).digest() == digest for v in allowed), \
                f"{key} is not one whole version it was given"
    finally:
        stop_server(server)


def part_body(number: int, attempt: int) -> bytes:
    """Part ``number``'s bytes for its ``attempt``-th upload (5 MiB + a few: the
    shard writes then have unaligned offsets and direct middles)."""
    return random.Random(f"part{number}/{attempt}").randbytes(5 * 1024 * 1024 + 4099 * number)


def test_sigkill_during_part_uploads(tmp_path):
    """Parts go past the page cache (O_DIRECT): every part acknowledged before a
    SIGKILL is listed after the restart with its ETag, and the upload completes
    from those parts into exactly their bytes."""
    server = start_server(str(tmp_path))
    s3 = server.client(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=20)
    s3.create_bucket(Bucket="crash")
    upload_id = s3.create_multipart_upload(Bucket="crash", Key="big")["UploadId"]
    acked: dict[int, tuple[int, str]] = {}  # part number -> (attempt, ETag)
    lock = threading.Lock()
    stop, killed = threading.Event(), threading.Event()
    early_errors: list[str] = []

    def uploader(lane: int) -> None:
        client = server.client(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=20)
        attempt = 0
        while not stop.is_set():
            attempt += 1
            number = 1 + lane + 3 * (attempt % 3)  # each part number has one uploader
            data = part_body(number, attempt)
            try:
                etag = client.upload_part(Bucket="crash", Key="big", UploadId=upload_id,
                                          PartNumber=number, Body=data)["ETag"]
            except (BotoCoreError, ClientError) as exc:
                if not killed.is_set():
                    early_errors.append(repr(exc))
                continue
            assert etag.strip('"') == hashlib.md5(data).hexdigest()
            with lock:
                acked[number] = (attempt, etag)

    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(uploader, lane) for lane in range(3)]
            time.sleep(4)
            killed.set()
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
            stop.set()
            for f in futures:
                f.result()
        assert len(acked) >= 3, f"only {len(acked)} parts acknowledged before the kill"
        assert not early_errors, early_errors
        stop_server(server)
        server = start_server(str(tmp_path))
        s3 = server.client()
        listed = {p["PartNumber"]: p["ETag"]
                  for p in s3.list_parts(Bucket="crash", Key="big", UploadId=upload_id)["Parts"]}
        landed: dict[int, int] = {}  # part number -> the attempt whose bytes it holds
        for number, (attempt, etag) in acked.items():
            assert number in listed, f"acknowledged part {number} lost"
            # The acknowledged upload, or one of the same number after it (in flight).
            later = [a for a in range(attempt, attempt + 4)
                     if f'"{hashlib.md5(part_body(number, a)).hexdigest()}"' == listed[number]]
            assert later, f"part {number}: ETag {listed[number]} is none of its uploads"
            assert later[0] > attempt or listed[number] == etag
            landed[number] = later[0]
        numbers = sorted(acked)
        s3.complete_multipart_upload(
            Bucket="crash", Key="big", UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": listed[n]} for n in numbers]})
        got = s3.get_object(Bucket="crash", Key="big")["Body"].read()
        expected = b"".join(part_body(n, landed[n]) for n in numbers)
        assert len(got) == len(expected) and got == expected, "the object is not its parts"
    finally:
        stop_server(server)
