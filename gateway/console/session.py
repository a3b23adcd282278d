"""Console sessions: a sealed cookie plus a server-side record.

The cookie is AES-256-GCM sealed (``cryptography``) under a key every worker
process and node derives alike (``KeyService.derived_key("console sessions")``;
from the root secret by HKDF on a server without a master key), so any process
can open it: no per-process state. It holds the access key id, the session id,
the CSRF token, when it was issued and the last activity, never a secret key.

Each session also has a record, the setting ``session/ID`` of the system bucket
``.basalt-console`` (replicated like every bucket setting; unreachable by S3):
sign-out removes it, so a copied cookie dies with the session. Idle timeout:
the cookie's last activity, renewed by a fresh cookie at most every
``refresh_after`` seconds of use; past ``IDLE`` seconds without a request the
session is refused (and its record goes with the next sign-in's sweep).
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import json
import os
import secrets
import time
from typing import Any

from aiohttp import web

SYSTEM_BUCKET = ".basalt-console"
COOKIE = "basalt-console"
COOKIE_PATH = "/_basalt/console/"
CSRF_HEADER = "X-Basalt-CSRF"
AAD = b"basalt console session v1"
MAX_AGE = 12 * 3600  # a session ends after this however busy


def idle_seconds() -> float:
    """The idle timeout: ``BASALT_CONSOLE_IDLE_SECONDS`` (default 30 minutes)."""
    return float(os.environ.get("BASALT_CONSOLE_IDLE_SECONDS") or 1800)


clock = time.time  # tests move it


@dataclasses.dataclass(frozen=True)
class Session:
    access_key: str
    sid: str
    csrf: str
    issued: float
    active: float

    def touched(self) -> Session:
        return dataclasses.replace(self, active=clock())


def new_session(access_key: str) -> Session:
    now = clock()
    return Session(access_key, secrets.token_hex(16), secrets.token_urlsafe(32), now, now)


def _aead(request: web.Request) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    keys = request.get("keys")
    if keys is not None:
        key = keys.derived_key("console sessions")
    else:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
        key = HKDF(hashes.SHA256(), 32, salt=b"basalt console", info=b"console sessions"
                   ).derive(request["directory"].root_secret.encode())
    return AESGCM(key)


def seal(request: web.Request, session: Session) -> str:
    nonce = os.urandom(12)
    plain = json.dumps(dataclasses.asdict(session)).encode()
    return base64.urlsafe_b64encode(nonce + _aead(request).encrypt(nonce, plain, AAD)).decode()


def unseal(request: web.Request, value: str) -> Session | None:
    """The session a cookie holds; None when it is not one of ours (or was altered)."""
    from cryptography.exceptions import InvalidTag
    try:
        raw = base64.urlsafe_b64decode(value.encode())
        plain = _aead(request).decrypt(raw[:12], raw[12:], AAD)
        return Session(**json.loads(plain))
    except (ValueError, TypeError, InvalidTag):
        return None


def set_cookie(request: web.Request, response: web.StreamResponse, session: Session) -> None:
    response.set_cookie(COOKIE, seal(request, session), path=COOKIE_PATH, httponly=True,
                        secure=request.secure, samesite="Strict")


def clear_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path=COOKIE_PATH, secure=request.secure, httponly=True,
                        samesite="Strict")


# -- the server-side records -------------------------------------------------------

async def _put(store: Any, kind: str, value: bytes | None) -> None:
    from storaged import system_buckets
    await system_buckets.set_config(store, SYSTEM_BUCKET, kind, value)


async def _records(store: Any) -> dict[str, bytes]:
    from storaged import system_buckets
    return await system_buckets.configs(store, SYSTEM_BUCKET)


async def record(store: Any, session: Session) -> None:
    """Store the new session's record, and drop those of sessions past their time."""
    now = clock()
    for kind, value in (await _records(store)).items():
        if kind.startswith("session/") and json.loads(value)["expires"] < now:
            await _put(store, kind, None)
    await _put(store, f"session/{session.sid}", json.dumps(
        {"access_key": session.access_key, "expires": session.issued + MAX_AGE}).encode())


async def forget(store: Any, session: Session) -> None:
    await _put(store, f"session/{session.sid}", None)


async def live(store: Any, session: Session) -> bool:
    """A session that was not signed out, idle too long or kept past MAX_AGE."""
    now = clock()
    if now - session.active > idle_seconds() or now - session.issued > MAX_AGE:
        return False
    found = (await _records(store)).get(f"session/{session.sid}")
    return found is not None and json.loads(found)["access_key"] == session.access_key


def csrf_ok(request: web.Request, session: Session, given: str | None = None) -> bool:
    given = given if given is not None else request.headers.get(CSRF_HEADER, "")
    return hmac.compare_digest(given.encode(), session.csrf.encode())


def refresh_due(session: Session) -> bool:
    """Renew the cookie's activity time now and then, not on every request."""
    return clock() - session.active > min(60.0, idle_seconds() / 4)
