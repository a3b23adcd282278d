"""`basalt image`: disk images as objects in the ``basalt-images`` bucket.

Imports go through this Basalt's own S3 API with the root credentials; a
source that is already an object (``s3://...``) on another endpoint is
streamed through (``AWS_ENDPOINT_URL`` selects it, as for backups). Every
source is checked before anything is uploaded: a qcow2 header that qemu-img
can convert on its own, or a raw image of a non-empty multiple of 512 bytes.

Volumes made from an image clone an internal base volume on the server
(blockd/images.py); deleting an image goes through the server, which refuses
while such volumes exist and removes the object and its bases together.
"""

from __future__ import annotations

import io
import os
import re
import urllib.parse

from . import tls_trust
from .admin_client import AdminClient, AdminError
from .config import ConfigError
from .progress import Progress, human_bytes

BUCKET = "basalt-images"
QCOW2_MAGIC = b"QFI\xfb"
HEADER = 512               # bytes read to recognise an image
MAX_SIZE = 1 << 50         # the largest volume (blockd.manager.MAX_SIZE)
# The server names an image's base volume image.NAME.<12 hex>, and volume names
# are at most 63 of these characters.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,43}$")
USAGE = "/_basalt/v1/volume-images"


class ImageError(ConfigError):
    """An image operation refused; ``code`` names the reason for --json output."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_image(head: bytes, size: int, what: str) -> str:
    """``"qcow2"`` or ``"raw"`` for an image of ``size`` bytes whose first bytes
    are ``head`` (at least 32 of them when there are); ImageError otherwise."""
    if head[:4] == QCOW2_MAGIC:
        if len(head) < 32:
            raise ImageError("InvalidImage", f"{what}: qcow2 header cut short ({size} bytes)")
        version = int.from_bytes(head[4:8], "big")
        backing = int.from_bytes(head[8:16], "big")
        cluster_bits = int.from_bytes(head[20:24], "big")
        virtual = int.from_bytes(head[24:32], "big")
        if version not in (2, 3):
            raise ImageError("InvalidImage", f"{what}: qcow2 version {version} is not "
                             "supported (2 or 3)")
        if not 9 <= cluster_bits <= 21:
            raise ImageError("InvalidImage", f"{what}: damaged qcow2 header "
                             f"(cluster bits {cluster_bits})")
        if not 0 < virtual <= MAX_SIZE:
            raise ImageError("InvalidImage", f"{what}: qcow2 disk size {virtual} bytes is not "
                             f"between 1 byte and {human_bytes(MAX_SIZE)}")
        if backing:
            raise ImageError("InvalidImage", f"{what}: qcow2 image with a backing file; "
                             "flatten it first (qemu-img convert -O qcow2)")
        return "qcow2"
    if size == 0:
        raise ImageError("InvalidImage", f"{what} is not a disk image: it is empty")
    if size % 512:
        raise ImageError("InvalidImage", f"{what} is not a disk image: {size} bytes is not a "
                         "multiple of 512 and no qcow2 header")
    return "raw"


def _s3(admin: AdminClient, endpoint: str | None = None):
    import boto3
    own = endpoint is None or endpoint == admin.endpoint
    kwargs = {"endpoint_url": endpoint or admin.endpoint}
    if own:
        kwargs.update(aws_access_key_id=admin.creds.access_key,
                      aws_secret_access_key=admin.creds.secret_key)
    verify = tls_trust.boto3_verify(kwargs["endpoint_url"])
    if verify is not None:
        kwargs["verify"] = verify
    return boto3.client("s3", region_name="us-east-1", **kwargs)


def _code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code")
               or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _source_error(exc: Exception, source: str, src=None, bucket: str = "") -> Exception:
    """One clear line for a failed read of an ``s3://`` source (``src``, ``bucket``:
    to tell a missing bucket from a missing key when a HEAD answered a bare 404)."""
    from botocore import exceptions as bex
    if isinstance(exc, bex.ClientError):
        code = _code(exc)
        if code in ("404", "NotFound") and src is not None:
            code = "NoSuchKey"
            try:
                src.head_bucket(Bucket=bucket)
            except bex.ClientError as inner:
                if _code(inner) in ("404", "NoSuchBucket", "NotFound"):
                    code = "NoSuchBucket"
        if code in ("NoSuchBucket", "NoSuchKey", "404", "NotFound"):
            return ImageError(code, f"{source}: no such object ({code})")
        if code in ("403", "AccessDenied"):
            return ImageError("AccessDenied", f"{source}: access denied")
        return ImageError(code or "S3Error", f"{source}: {exc}")
    if isinstance(exc, bex.BotoCoreError):
        return ImageError(type(exc).__name__, f"{source}: {exc}")
    return exc


def _ensure_bucket(s3) -> None:
    from botocore.exceptions import ClientError
    try:
        s3.head_bucket(Bucket=BUCKET)
    except ClientError as exc:
        if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        s3.create_bucket(Bucket=BUCKET)


def _exists(s3, name: str) -> bool:
    from botocore.exceptions import ClientError
    try:
        s3.head_object(Bucket=BUCKET, Key=name)
        return True
    except ClientError as exc:
        if _code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def _usage(admin: AdminClient) -> dict:
    """Per image: its base volumes and the volumes made from them (server side)."""
    return admin.call("GET", USAGE) or {}


class _Stream(io.RawIOBase):
    """A botocore streaming body as a raw file, so BufferedReader fills whole reads
    (s3transfer cuts multipart parts by read size)."""

    def __init__(self, body) -> None:
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.body.read(len(b))
        b[:len(data)] = data
        return len(data)


def _open_source(admin: AdminClient, source: str) -> tuple[int, bytes, object]:
    """(size, first bytes, opener of the whole content as a file object)."""
    if source.startswith("s3://"):
        u = urllib.parse.urlsplit(source)
        bucket, key = u.netloc, u.path.lstrip("/")
        if not bucket or not key:
            raise ImageError("InvalidArgument", f"not an s3://BUCKET/KEY location: {source!r}")
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        src = _s3(admin, endpoint) if endpoint else _s3(admin)
        try:
            size = src.head_object(Bucket=bucket, Key=key)["ContentLength"]
            head = src.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{HEADER - 1}"
                                  )["Body"].read() if size else b""
        except Exception as exc:
            raise _source_error(exc, source, src, bucket) from None

        def opener():
            try:
                body = src.get_object(Bucket=bucket, Key=key)["Body"]
            except Exception as exc:
                raise _source_error(exc, source) from None
            return io.BufferedReader(_Stream(body), 8 << 20)
        return size, head, opener
    if not os.path.exists(source):
        raise ImageError("NoSuchFile", f"no such image file: {source}")
    if not os.path.isfile(source):
        raise ImageError("InvalidArgument", f"{source} is not a file")
    with open(source, "rb") as f:
        head = f.read(HEADER)
        size = os.fstat(f.fileno()).st_size
    return size, head, lambda: open(source, "rb")


def import_image(admin: AdminClient, source: str, name: str, progress: Progress,
                 replace: bool = False) -> dict:
    """Store ``source`` (a file or ``s3://BUCKET/KEY``) as image ``name``, checked
    first; an existing name only with ``replace``, and not while volumes use it."""
    if not NAME.match(name):
        raise ImageError("InvalidImageName", "image names are 1-44 letters, digits, '.', '_' "
                         "or '-', starting with a letter or digit")
    size, head, opener = _open_source(admin, source)
    fmt = check_image(head, size, source)
    s3 = _s3(admin)
    _ensure_bucket(s3)
    replaced = _exists(s3, name)
    if replaced:
        if not replace:
            raise ImageError("ImageExists", f"image {name} exists; use --replace")
        users = _usage(admin).get(name, {}).get("volumes") or []
        if users:
            raise ImageError("ImageInUse", f"image {name} is used by volumes "
                             f"{', '.join(users)}; delete "
                             f"{'them' if len(users) > 1 else 'it'} before replacing the image")
    with opener() as f:
        s3.upload_fileobj(f, BUCKET, name, Callback=progress.counter(f"importing {name}", size))
    progress.done()
    if replaced:
        # The old version's base volume, if one was made, is unused now; a failure
        # here leaves only a hidden volume the next replace or delete removes.
        try:
            admin.call("DELETE", f"{USAGE}/{urllib.parse.quote(name, safe='')}",
                       {"stale": "true"})
        except AdminError:
            pass
    stored = s3.head_object(Bucket=BUCKET, Key=name)["ContentLength"]
    return {"name": name, "size": stored, "format": fmt, "replaced": replaced}


def list_images(admin: AdminClient) -> list[dict]:
    """Each image: name, size, format and the volumes made from it."""
    from botocore.exceptions import ClientError
    s3 = _s3(admin)
    contents: list[dict] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            contents += page.get("Contents", [])
    except ClientError as exc:
        if _code(exc) in ("404", "NoSuchBucket"):
            return []  # nothing imported yet
        raise
    usage = _usage(admin) if contents else {}
    return [{"name": o["Key"], "size": o["Size"], "format": _format(s3, o["Key"], o["Size"]),
             "volumes": usage.get(o["Key"], {}).get("volumes", [])} for o in contents]


def delete_image(admin: AdminClient, name: str) -> dict:
    """Delete image ``name`` (its object and internal volumes), refused while
    volumes made from it exist; returns what was deleted."""
    try:
        return admin.call("DELETE", f"{USAGE}/{urllib.parse.quote(name, safe='')}")
    except AdminError as exc:
        if exc.code in ("ImageInUse", "NoSuchImage"):
            raise ImageError(exc.code, exc.message) from None
        raise


def _format(s3, key: str, size: int) -> str:
    if size < 4:
        return "raw"
    head = s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-3")["Body"].read()
    return "qcow2" if head == QCOW2_MAGIC else "raw"
