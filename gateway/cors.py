"""Bucket CORS: Put/Get/DeleteBucketCors, preflight OPTIONS, headers on responses.

(Being built for issue 14: until then every operation answers NotImplemented.)
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .errors import S3NotImplemented
from .request import Context


async def prepare(request: web.Request, route: Any, store: Any) -> None:
    """Before the request is judged: find the CORS rule that answers its Origin."""


def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """As the response starts: the CORS headers ``prepare`` found."""


async def preflight(ctx: Context) -> web.Response:
    raise S3NotImplemented("CORS is not supported yet.")


get_bucket_cors = put_bucket_cors = delete_bucket_cors = preflight
