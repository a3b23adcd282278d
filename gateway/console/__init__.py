"""The web console at ``/_basalt/console/`` (served by every S3 worker).

Static pages from ``static/`` (no CDN: everything the browser loads comes from
this package), a small JSON API (:mod:`.api`) for sessions, presigned URLs,
usage and bills, and a WebSocket for VM consoles. See ARCHITECTURE.md, "Web
console", for the design: sealed session cookies with server-side records,
CSRF tokens, and every bucket or object operation an S3 request signed as the
user.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from . import api
from . import session as sessions

PREFIX = "/_basalt/console/"
STATIC = Path(__file__).parent / "static"
_VM_CONSOLE = re.compile(r"vms/([^/]+)/console")
# Nothing but this origin's own files: no inline script, no framing, no other hosts.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data: blob:; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
ROUTES = {
    ("GET", "session"): api.get_session,
    ("POST", "session"): api.sign_in,
    ("DELETE", "session"): api.sign_out,
    ("POST", "presign"): api.presign,
    ("GET", "bucket-stats"): api.bucket_stats,
    ("GET", "usage"): api.usage,
    ("POST", "bill"): api.bill,
}


async def handle(request: web.Request, store: Any, owner: Any = None) -> web.StreamResponse:
    """Answer a request under ``/_basalt/console``."""
    path = request.path
    if not path.startswith(PREFIX):
        return web.Response(status=302, headers={"Location": PREFIX})
    rest = path[len(PREFIX):]
    try:
        if rest.startswith("api/"):
            name = rest[len("api/"):]
            vm = _VM_CONSOLE.fullmatch(name)
            if vm and request.method == "GET":
                return await api.vm_console(request, store, owner, vm.group(1))
            handler = ROUTES.get((request.method, name))
            if handler is None:
                raise api.ConsoleError(404, "NotFound", f"no console API {request.method} {name}")
            response = await handler(request, store)
        else:
            response = _static(request, rest or "index.html")
    except api.ConsoleError as exc:
        response = api.error(exc.status, exc.code, exc.message)
    renewed = request.get(api.RENEW)
    if renewed is not None and response.status < 400:
        sessions.set_cookie(request, response, renewed)  # the idle clock starts again
    response.headers.update(SECURITY_HEADERS)
    return response


def _static(request: web.Request, name: str) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        raise api.ConsoleError(405, "MethodNotAllowed", "static files are read-only")
    file = (STATIC / name).resolve()
    if not file.is_relative_to(STATIC.resolve()) or not file.is_file():
        raise api.ConsoleError(404, "NotFound", f"no console file {name}")
    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return web.FileResponse(file, headers={"Content-Type": kind})
