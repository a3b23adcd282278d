"""POST Object: browser uploads with a signed policy document (HTML forms).

(Being built for issue 14: until then it answers NotImplemented.)
"""

from __future__ import annotations

from aiohttp import web

from .errors import FormUploadNotImplemented
from .request import Context


async def post_object(ctx: Context) -> web.Response:
    raise FormUploadNotImplemented("POST (HTML form) uploads are not supported.")
