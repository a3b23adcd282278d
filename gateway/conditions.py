"""Conditional requests: If-Match, If-None-Match, If-(Un)Modified-Since.

Evaluated in RFC 9110 order (If-Match, then If-Unmodified-Since only without
If-Match; If-None-Match, then If-Modified-Since only without If-None-Match),
which is also how S3 resolves the combinations its documentation lists. The
``x-amz-copy-source-if-*`` headers of CopyObject use the same rules.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from email.utils import format_datetime, parsedate_to_datetime

from storaged import ObjectInfo

from .errors import NotModified, PreconditionFailed


def http_date(moment: datetime.datetime) -> str:
    """RFC 7231 date, as in Last-Modified."""
    return format_datetime(moment.astimezone(datetime.UTC).replace(microsecond=0),
                           usegmt=True)


def parse_http_date(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None  # an unparsable date is ignored, as HTTP says
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment


def etag_matches(header: str, etag: str) -> bool:
    """Whether an If-Match / If-None-Match list names ``etag`` (``*`` names any)."""
    for item in header.split(","):
        item = item.strip()
        if item.startswith("W/"):
            item = item[2:]
        if item == "*" or item.strip('"') == etag:
            return True
    return False


def check(headers: Mapping[str, str], info: ObjectInfo, prefix: str = "If-",
          read: bool = True) -> None:
    """Raise PreconditionFailed (412) or NotModified (304) when a condition fails.

    ``prefix`` is ``"x-amz-copy-source-if-"`` for a copy source, whose failures
    are all 412s; ``read`` is False for writes, where If-None-Match fails with 412.
    """
    get = lambda name: headers.get(prefix + name)  # noqa: E731
    modified = info.last_modified.replace(microsecond=0)
    etag_header = {"ETag": f'"{info.etag}"', "Last-Modified": http_date(info.last_modified)}
    if_match = get("Match")
    if if_match is not None:
        if not etag_matches(if_match, info.etag):
            raise PreconditionFailed(Condition=prefix + "Match")
    else:
        since = parse_http_date(get("Unmodified-Since"))
        if since is not None and modified > since:
            raise PreconditionFailed(Condition=prefix + "Unmodified-Since")
    copy = prefix != "If-"
    if_none = get("None-Match")
    if if_none is not None:
        if etag_matches(if_none, info.etag):
            if read and not copy:
                raise NotModified(headers=etag_header)
            raise PreconditionFailed(Condition=prefix + "None-Match")
    else:
        since = parse_http_date(get("Modified-Since"))
        if since is not None and modified <= since:
            if copy:
                raise PreconditionFailed(Condition=prefix + "Modified-Since")
            raise NotModified(headers=etag_header)
