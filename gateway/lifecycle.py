"""PutBucketLifecycleConfiguration, GetBucketLifecycleConfiguration, DeleteBucketLifecycle,
and the ``x-amz-expiration`` header of objects a rule will expire.

The rules are stored as ``LifecycleConfig.pack()`` under the bucket's "lifecycle"
setting; the engine's scanner (storaged/lifecycle.py) applies them.
"""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

from aiohttp import web

from storaged.lifecycle_rules import DAY_NS, LifecycleConfig, expiration

from .bucket import xml_response
from .errors import NoSuchLifecycleConfiguration
from .lifecycle_xml import parse_lifecycle, render_lifecycle
from .request import Context
from .verified_body import verified_body

KIND = "lifecycle"


async def put_bucket_lifecycle(ctx: Context) -> web.Response:
    body = await verified_body(ctx)          # Content-MD5 or a checksum is required
    await ctx.store.require_bucket(ctx.bucket)      # NoSuchBucket before any XML error
    config = parse_lifecycle(body)
    await ctx.store.set_bucket_config(ctx.bucket, KIND, config.pack())
    return web.Response(status=200)


async def get_bucket_lifecycle(ctx: Context) -> web.Response:
    raw = await ctx.store.bucket_config(ctx.bucket, KIND)
    if not raw:
        raise NoSuchLifecycleConfiguration(BucketName=ctx.bucket)
    return xml_response(render_lifecycle(LifecycleConfig.unpack(raw)))


async def delete_bucket_lifecycle(ctx: Context) -> web.Response:
    await ctx.store.set_bucket_config(ctx.bucket, KIND, None)
    return web.Response(status=204)


async def expiration_header(store: Any, info: Any, day_ns: int = DAY_NS) -> dict[str, str]:
    """``{"x-amz-expiration": 'expiry-date="...", rule-id="..."'}`` for a current
    object version a rule expires, else ``{}`` (also for delete markers)."""
    raw = await store.bucket_config(info.bucket, KIND)
    if not raw:
        return {}
    found = expiration(LifecycleConfig.unpack(raw), info, day_ns)
    if found is None:
        return {}
    expiry_ns, rule_id = found
    date = formatdate(expiry_ns // 10**9, usegmt=True)
    return {"x-amz-expiration": f'expiry-date="{date}", rule-id="{_quoted(rule_id)}"'}


def _quoted(text: str) -> str:
    # A rule id is free text; keep the header one line and its quotes balanced.
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
