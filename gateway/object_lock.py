"""Object lock: the bucket's configuration, a version's retention and legal hold.

Documents (``ObjectLockConfiguration``, ``Retention``, ``LegalHold``), the
``x-amz-object-lock-*`` headers of PutObject, CopyObject and
CreateMultipartUpload, and the six handlers of ``?object-lock``,
``?retention`` and ``?legal-hold``. Codes and messages are those S3 answers:
a document that does not validate is MalformedXML; a period that is not
positive, or a date in the past, InvalidArgument; a retention or legal-hold
request on a bucket without object lock, InvalidRequest. The rules a lock
enforces live in :mod:`storaged.object_lock`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from storaged.object_lock import COMPLIANCE, GOVERNANCE, MODES, LockConfig

from . import checksums
from .bucket import xml_response
from .errors import (
    InvalidArgument,
    InvalidBucketState,
    InvalidRequest,
    MalformedXML,
    NoSuchObjectLockConfiguration,
    ObjectLockConfigurationNotFoundError,
)
from .request import Context, version_param
from .s3xml import _children, _document, _el, _parse, _text, format_timestamp

__all__ = ["COMPLIANCE", "GOVERNANCE", "LockConfig"]

MAX_DAYS = 36500
MAX_YEARS = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

MODE_HEADER = "x-amz-object-lock-mode"
UNTIL_HEADER = "x-amz-object-lock-retain-until-date"
HOLD_HEADER = "x-amz-object-lock-legal-hold"
BYPASS_HEADER = "x-amz-bypass-governance-retention"
MISSING_LOCK = "Bucket is missing Object Lock Configuration"
FUTURE_DATE = "The retain until date must be in the future!"


# --- time ------------------------------------------------------------------------------

def parse_iso8601(text: str) -> int | None:
    """ns since the epoch of an ISO 8601 timestamp (UTC when it has no zone); None if invalid."""
    text = text.strip()
    if not text[:4].isdigit():
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def format_ns(ns: int) -> str:
    """``2030-01-01T00:00:00.000Z``: S3's form of a retain-until date."""
    return format_timestamp(_EPOCH + timedelta(microseconds=ns // 1000))


# --- ObjectLockConfiguration ----------------------------------------------------------

def _period(text: str, name: str) -> int:
    text = text.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit():
        raise MalformedXML()
    value = int(text)
    if value <= 0:
        raise InvalidArgument("Default retention period must be a positive integer value.",
                              ArgumentName=name, ArgumentValue=text)
    if value > (MAX_DAYS if name == "Days" else MAX_YEARS):
        raise InvalidArgument("Default retention period too large.", ArgumentName=name,
                              ArgumentValue=text)
    return value


def parse_lock_configuration(body: bytes) -> LockConfig:
    """An ObjectLockConfiguration body (ObjectLockEnabled must be "Enabled")."""
    root = _parse(body, "ObjectLockConfiguration")
    if root is None or _text(root, "ObjectLockEnabled") != "Enabled":
        raise MalformedXML()
    rules = _children(root, "Rule")
    if not rules:
        return LockConfig(True)
    if len(rules) > 1:
        raise MalformedXML()
    retentions = _children(rules[0], "DefaultRetention")
    if len(retentions) != 1:
        raise MalformedXML()
    retention = retentions[0]
    mode = _text(retention, "Mode")
    days, years = _text(retention, "Days"), _text(retention, "Years")
    if mode not in MODES or (days is None) == (years is None):
        raise MalformedXML()
    if days is not None:
        return LockConfig(True, mode, days=_period(days, "Days"))
    return LockConfig(True, mode, years=_period(years or "", "Years"))


def render_lock_configuration(config: LockConfig) -> bytes:
    rule = ""
    if config.mode:
        period = _el("Days", config.days) if config.days else _el("Years", config.years)
        rule = f"<Rule><DefaultRetention>{_el('Mode', config.mode)}{period}</DefaultRetention></Rule>"
    return _document("ObjectLockConfiguration", (_el("ObjectLockEnabled", "Enabled"), rule))


# --- Retention and LegalHold ----------------------------------------------------------

def parse_retention(body: bytes, now_ns: int) -> tuple[str, int]:
    """(mode, retain-until ns) of a Retention body; ("", 0) for an empty one (removal)."""
    root = _parse(body, "Retention")
    if root is None:
        raise MalformedXML()
    mode, date = _text(root, "Mode"), _text(root, "RetainUntilDate")
    if mode is None and date is None:
        return "", 0
    if mode not in MODES or date is None:
        raise MalformedXML()
    until = parse_iso8601(date)
    if until is None:
        raise MalformedXML()
    if until <= now_ns:
        raise InvalidArgument(FUTURE_DATE, ArgumentName="RetainUntilDate", ArgumentValue=date.strip())
    return mode, until


def render_retention(mode: str, until_ns: int) -> bytes:
    return _document("Retention", (_el("Mode", mode), _el("RetainUntilDate", format_ns(until_ns))))


def parse_legal_hold(body: bytes) -> bool:
    """The Status of a LegalHold body: ON → True, OFF → False."""
    root = _parse(body, "LegalHold")
    if root is None:
        raise MalformedXML()
    status = _text(root, "Status")
    if status not in ("ON", "OFF"):
        raise MalformedXML()
    return status == "ON"


def render_legal_hold(on: bool) -> bytes:
    return _document("LegalHold", (_el("Status", "ON" if on else "OFF"),))


# --- headers ---------------------------------------------------------------------------

def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def lock_from_headers(headers: Mapping[str, str], now_ns: int) -> tuple[str, int, bool | None]:
    """(mode, retain-until ns, legal hold) an upload asks for; ("", 0, None) when it asks none.

    The checks S3 makes before it looks at the bucket: both of mode and date or neither,
    a known mode, an ISO 8601 date in the future, a legal hold of ON or OFF.
    """
    h = _lower(headers)
    mode, date, hold = h.get(MODE_HEADER), h.get(UNTIL_HEADER), h.get(HOLD_HEADER)
    legal_hold: bool | None = None
    if hold is not None:
        if hold not in ("ON", "OFF"):
            raise InvalidArgument("Legal Hold must be either of 'ON' or 'OFF'",
                                  ArgumentName=HOLD_HEADER, ArgumentValue=hold)
        legal_hold = hold == "ON"
    if mode is None and date is None:
        return "", 0, legal_hold
    if mode is None or date is None:
        raise InvalidArgument(f"{UNTIL_HEADER} and {MODE_HEADER} must both be supplied",
                              ArgumentName=MODE_HEADER if mode is None else UNTIL_HEADER)
    if mode not in MODES:
        raise InvalidArgument("Unknown wormMode directive.", ArgumentName=MODE_HEADER,
                              ArgumentValue=mode)
    until = parse_iso8601(date)
    if until is None:
        raise InvalidArgument("The retain until date must be provided in ISO 8601 format",
                              ArgumentName=UNTIL_HEADER, ArgumentValue=date)
    if until <= now_ns:
        raise InvalidArgument(FUTURE_DATE, ArgumentName=UNTIL_HEADER, ArgumentValue=date)
    return mode, until, legal_hold


def has_integrity_header(headers: Mapping[str, str]) -> bool:
    """Whether the request declares Content-MD5 or an ``x-amz-checksum-*`` (header or trailer)."""
    return (checksums.content_md5(headers) is not None
            or checksums.requested_checksum(headers) is not None)


async def lock_for_write(store: Any, bucket: str, headers: Mapping[str, str], now_ns: int, *,
                   with_body: bool = True) -> tuple[str, int, bool]:
    """The lock a new version gets: the headers', else the bucket's default retention.

    Lock headers on a bucket without object lock are InvalidRequest; an upload with a
    body (PutObject, UploadPart of such an upload) that gets any lock must declare
    Content-MD5 or a checksum. ``with_body=False`` for CopyObject and
    CreateMultipartUpload. Returns (mode, retain-until ns, legal hold).
    """
    mode, until, hold = lock_from_headers(headers, now_ns)
    explicit = bool(mode) or hold is not None
    config = LockConfig.unpack(await store.bucket_config(bucket, "lock"))
    if explicit and not config.enabled:
        raise InvalidRequest("Bucket is missing ObjectLockConfiguration")
    if not mode:
        mode, until = config.default_retention(now_ns)
    if with_body and (explicit or mode) and not has_integrity_header(headers):
        raise InvalidRequest("Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object "
                             "requests with Object Lock parameters")
    return mode, until, bool(hold)


def lock_response_headers(info: Any) -> dict[str, str]:
    """The ``x-amz-object-lock-*`` headers of GetObject and HeadObject for a version."""
    out: dict[str, str] = {}
    mode = getattr(info, "lock_mode", "")
    if mode:
        out[MODE_HEADER] = mode
        out[UNTIL_HEADER] = format_ns(info.lock_until_ns)
    if getattr(info, "legal_hold", False):
        out[HOLD_HEADER] = "ON"
    return out


def bypass_requested(headers: Mapping[str, str]) -> bool:
    """``x-amz-bypass-governance-retention: true`` (any case)."""
    return _lower(headers).get(BYPASS_HEADER, "").strip().lower() == "true"


async def bypass_governance(store: Any, bucket: str, headers: Mapping[str, str]) -> bool:
    """The bypass flag of DeleteObject(s); the header on a bucket without object lock is
    InvalidArgument, as S3 answers."""
    if BYPASS_HEADER not in _lower(headers):
        return False
    if not LockConfig.unpack(await store.bucket_config(bucket, "lock")).enabled:
        raise InvalidArgument("x-amz-bypass-governance-retention is only applicable to Object Lock "
                              "enabled buckets.", ArgumentName=BYPASS_HEADER)
    return bypass_requested(headers)


# --- handlers ----------------------------------------------------------------------------

async def read_verified_body(ctx: Context) -> bytes:
    """The request body, checked against Content-MD5 or an ``x-amz-checksum-*`` (one is required)."""
    from .verified_body import verified_body

    return await verified_body(ctx)


async def _require_lock(ctx: Context) -> LockConfig:
    config = LockConfig.unpack(await ctx.store.bucket_config(ctx.bucket, "lock"))
    if not config.enabled:
        raise InvalidRequest(MISSING_LOCK)
    return config


async def put_object_lock_configuration(ctx: Context) -> web.Response:
    """PUT /{bucket}?object-lock"""
    await ctx.store.require_bucket(ctx.bucket)
    versioning = await ctx.store.versioning(ctx.bucket)
    config = parse_lock_configuration(await read_verified_body(ctx))
    if versioning != "Enabled":
        raise InvalidBucketState("Versioning must be 'Enabled' on the bucket to apply a Object Lock "
                                 "configuration")
    await ctx.store.set_bucket_config(ctx.bucket, "lock", config.pack())
    return web.Response(status=200)


async def get_object_lock_configuration(ctx: Context) -> web.Response:
    """GET /{bucket}?object-lock"""
    config = LockConfig.unpack(await ctx.store.bucket_config(ctx.bucket, "lock"))
    if not config.enabled:
        raise ObjectLockConfigurationNotFoundError(BucketName=ctx.bucket)
    return xml_response(render_lock_configuration(config))


async def put_object_retention(ctx: Context) -> web.Response:
    """PUT /{bucket}/{key}?retention[&versionId=]"""
    version_id = version_param(ctx)
    body = await read_verified_body(ctx)
    retention = parse_retention(body, ctx.store.stamp())
    await _require_lock(ctx)
    await ctx.store.update_object(ctx.bucket, ctx.key, version_id, retention=retention,
                                  bypass_governance=bypass_requested(ctx.headers))
    return web.Response(status=200)


async def get_object_retention(ctx: Context) -> web.Response:
    """GET /{bucket}/{key}?retention[&versionId=]"""
    version_id = version_param(ctx)
    await _require_lock(ctx)
    info = await ctx.store.head_object(ctx.bucket, ctx.key, version_id)
    if not info.lock_mode:
        raise NoSuchObjectLockConfiguration()
    return xml_response(render_retention(info.lock_mode, info.lock_until_ns))


async def put_object_legal_hold(ctx: Context) -> web.Response:
    """PUT /{bucket}/{key}?legal-hold[&versionId=]"""
    version_id = version_param(ctx)
    on = parse_legal_hold(await read_verified_body(ctx))
    await _require_lock(ctx)
    await ctx.store.update_object(ctx.bucket, ctx.key, version_id, legal_hold=on)
    return web.Response(status=200)


async def get_object_legal_hold(ctx: Context) -> web.Response:
    """GET /{bucket}/{key}?legal-hold[&versionId=]"""
    version_id = version_param(ctx)
    await _require_lock(ctx)
    info = await ctx.store.head_object(ctx.bucket, ctx.key, version_id)
    hold = getattr(info, "legal_hold", None)
    if hold is None:  # an engine that tells "never set" apart
        raise NoSuchObjectLockConfiguration()
    return xml_response(render_legal_hold(bool(hold)))
