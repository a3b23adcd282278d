"""Default bucket encryption: Put/Get/DeleteBucketEncryption, and the encryption
a write without SSE headers gets from it.

The configuration is the bucket setting ``encryption``, stored as the
validated (algorithm, KMS key id, bucket key) triple and rendered back as S3's
ServerSideEncryptionConfiguration. A bucket without one stores objects as
they are sent (S3 before 2023; a default of SSE-S3 for every bucket would make
every write pay for encryption whether or not anyone asked).
"""

from __future__ import annotations

import json
from xml.sax.saxutils import escape

from aiohttp import web

from .bucket import xml_response
from .errors import InvalidArgument, MalformedXML, S3Error
from .request import Context
from .s3xml import S3_NAMESPACE, _children, _parse, _text
from .sse import MODES, Requested
from .verified_body import verified_body

KIND = "encryption"


class ServerSideEncryptionConfigurationNotFoundError(S3Error):
    status = 404
    message = "The server side encryption configuration was not found"


def parse_encryption(body: bytes) -> tuple[str, str | None, bool]:
    """(algorithm, KMS key id or None, bucket key enabled) from the XML body."""
    root = _parse(body, "ServerSideEncryptionConfiguration")
    if root is None:
        raise MalformedXML()
    rules = _children(root, "Rule")
    if len(rules) != 1 or len(root) != 1:
        raise MalformedXML()
    rule = rules[0]
    defaults = _children(rule, "ApplyServerSideEncryptionByDefault")
    if len(defaults) != 1 or any(c.tag.rsplit("}", 1)[-1] not in (
            "ApplyServerSideEncryptionByDefault", "BucketKeyEnabled") for c in rule):
        raise MalformedXML()
    apply = defaults[0]
    if any(c.tag.rsplit("}", 1)[-1] not in ("SSEAlgorithm", "KMSMasterKeyID") for c in apply):
        raise MalformedXML()
    algorithm = _text(apply, "SSEAlgorithm", required=True)
    if algorithm not in MODES:
        raise MalformedXML()
    key_id = _text(apply, "KMSMasterKeyID")
    if key_id is not None and algorithm == "AES256":
        raise InvalidArgument("a KMSMasterKeyID is not applicable if the default sse "
                              "algorithm is not aws:kms or aws:kms:dsse",
                              ArgumentName="ApplyServerSideEncryptionByDefault")
    bucket_key = _text(rule, "BucketKeyEnabled")
    if bucket_key not in (None, "true", "false"):
        raise MalformedXML()
    return algorithm, key_id or None, bucket_key == "true"


def render_encryption(algorithm: str, key_id: str | None, bucket_key: bool) -> bytes:
    key = f"<KMSMasterKeyID>{escape(key_id)}</KMSMasterKeyID>" if key_id else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<ServerSideEncryptionConfiguration '
            f'xmlns="{S3_NAMESPACE}"><Rule><ApplyServerSideEncryptionByDefault>'
            f"<SSEAlgorithm>{algorithm}</SSEAlgorithm>{key}"
            f"</ApplyServerSideEncryptionByDefault>"
            f"<BucketKeyEnabled>{'true' if bucket_key else 'false'}</BucketKeyEnabled>"
            f"</Rule></ServerSideEncryptionConfiguration>").encode()


def default_encryption(raw: bytes | None) -> Requested | None:
    """What a write without SSE headers gets in a bucket whose setting is ``raw``."""
    if raw is None:
        return None
    algorithm, key_id, bucket_key = json.loads(raw)
    if algorithm == "AES256":
        return Requested("AES256")
    return Requested(algorithm, kms_key=key_id, bucket_key=bucket_key)


async def put_bucket_encryption(ctx: Context) -> web.Response:
    body = await verified_body(ctx)
    await ctx.store.require_bucket(ctx.bucket)
    config = parse_encryption(body)
    await ctx.store.set_bucket_config(ctx.bucket, KIND, json.dumps(config).encode())
    return web.Response(status=200)


async def get_bucket_encryption(ctx: Context) -> web.Response:
    raw = await ctx.store.bucket_config(ctx.bucket, KIND)
    if raw is None:
        raise ServerSideEncryptionConfigurationNotFoundError(BucketName=ctx.bucket)
    return xml_response(render_encryption(*json.loads(raw)))


async def delete_bucket_encryption(ctx: Context) -> web.Response:
    await ctx.store.require_bucket(ctx.bucket)
    await ctx.store.set_bucket_config(ctx.bucket, KIND, None)
    return web.Response(status=204)
