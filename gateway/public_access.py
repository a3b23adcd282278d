"""Object ownership controls and the public access block of a bucket.

(Being built for issue 14: until then every operation answers NotImplemented.)
"""

from __future__ import annotations

from aiohttp import web

from .errors import S3NotImplemented
from .request import Context


async def not_yet(ctx: Context) -> web.Response:
    raise S3NotImplemented(f"{ctx.route.op} is not supported yet.")


get_ownership_controls = put_ownership_controls = delete_ownership_controls = not_yet
get_public_access_block = put_public_access_block = delete_public_access_block = not_yet
