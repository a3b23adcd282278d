"""A multipart upload in progress survives disk loss once healed: boto3 against
a real `basalt serve`, `basalt heal` through the CLI, disks wiped between restarts."""

from __future__ import annotations

import hashlib
import os
import shutil

from .conftest import start_server, stop_server

MIB = 1 << 20


def wipe(server, *names: str) -> None:
    for name in names:
        shutil.rmtree(os.path.join(server.data_dir, "disks", name))


def test_parts_are_healed_onto_a_wiped_disk_before_completion(tmp_path):
    tmp = str(tmp_path)
    parts = [os.urandom(5 * MIB), os.urandom(3 * MIB + 11)]
    server = start_server(tmp)
    try:
        s3 = server.client()
        s3.create_bucket(Bucket="uploads")
        upload = s3.create_multipart_upload(Bucket="uploads", Key="big")["UploadId"]
        etags = [s3.upload_part(Bucket="uploads", Key="big", UploadId=upload, PartNumber=n,
                                Body=body)["ETag"] for n, body in enumerate(parts, 1)]
    finally:
        stop_server(server)
    wipe(server, "disk0")  # the parts' shards there are gone
    server = start_server(tmp)
    try:
        report = server.cli("heal", "--json")
        assert '"failed": 0' in report.stdout, report.stdout
    finally:
        stop_server(server)
    # 2+2: with disk0 healed, disks 0 and 3 must hold enough of every part alone.
    wipe(server, "disk1", "disk2")
    server = start_server(tmp)
    try:
        s3 = server.client()
        s3.complete_multipart_upload(
            Bucket="uploads", Key="big", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                       for n, e in enumerate(etags, 1)]})
        body = s3.get_object(Bucket="uploads", Key="big")["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(b"".join(parts)).digest()
    finally:
        stop_server(server)
        shutil.rmtree(tmp, ignore_errors=True)
