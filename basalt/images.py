"""`basalt image`: disk images as objects in the ``basalt-images`` bucket.

Imports go through this Basalt's own S3 API with the root credentials; a
source that is already an object (``s3://...``) on another endpoint is
streamed through (``--endpoint-url``/``AWS_ENDPOINT_URL`` select it, as for
backups).
"""

from __future__ import annotations

import os
import urllib.parse

from .admin_client import AdminClient
from .config import ConfigError
from .progress import Progress, human_bytes

BUCKET = "basalt-images"
QCOW2_MAGIC = b"QFI\xfb"


def _s3(admin: AdminClient, endpoint: str | None = None):
    import boto3
    own = endpoint is None or endpoint == admin.endpoint
    kwargs = {"endpoint_url": endpoint or admin.endpoint}
    if own:
        kwargs.update(aws_access_key_id=admin.creds.access_key,
                      aws_secret_access_key=admin.creds.secret_key)
    ca = os.environ.get("BASALT_CA_BUNDLE") or os.environ.get("AWS_CA_BUNDLE")
    if ca:
        kwargs["verify"] = ca
    return boto3.client("s3", region_name="us-east-1", **kwargs)


def _ensure_bucket(s3) -> None:
    try:
        s3.head_bucket(Bucket=BUCKET)
    except Exception:
        s3.create_bucket(Bucket=BUCKET)


def import_image(admin: AdminClient, source: str, name: str, progress: Progress) -> dict:
    s3 = _s3(admin)
    _ensure_bucket(s3)
    done = [0]

    def show(n: int) -> None:
        done[0] += n
        progress.update(f"importing {name}: {human_bytes(done[0])}")

    if source.startswith("s3://"):
        u = urllib.parse.urlsplit(source)
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        src = _s3(admin, endpoint) if endpoint else s3
        body = src.get_object(Bucket=u.netloc, Key=u.path.lstrip("/"))["Body"]
        head = body.read(4)
        import io

        class Joined(io.RawIOBase):
            """The four bytes already read, then the rest of the stream."""

            def __init__(self) -> None:
                self.pending = head

            def readable(self) -> bool:
                return True

            def readinto(self, b) -> int:
                data = self.pending or body.read(len(b))
                self.pending = b""
                b[:len(data)] = data
                return len(data)

        s3.upload_fileobj(io.BufferedReader(Joined(), 8 << 20), BUCKET, name, Callback=show)
    else:
        if not os.path.isfile(source):
            raise ConfigError(f"no such image file: {source}")
        with open(source, "rb") as f:
            head = f.read(4)
        s3.upload_file(source, BUCKET, name, Callback=show)
    progress.done()
    size = s3.head_object(Bucket=BUCKET, Key=name)["ContentLength"]
    return {"name": name, "size": size, "format": "qcow2" if head == QCOW2_MAGIC else "raw"}


def list_images(admin: AdminClient) -> list[dict]:
    s3 = _s3(admin)
    try:
        contents = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    except Exception:
        return []
    return [{"name": o["Key"], "size": o["Size"], "format": _format(s3, o["Key"])}
            for o in contents]


def _format(s3, key: str) -> str:
    head = s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-3")["Body"].read()
    return "qcow2" if head == QCOW2_MAGIC else "raw"
