"""POST Object's signed policy: the form's credentials and the policy document.

:func:`form_credentials` finds how a form is signed (SigV4 ``x-amz-*`` fields,
SigV2 ``AWSAccessKeyId``/``signature``, or not at all) and checks the fields
are complete; :meth:`Credentials.verify` checks the signature over the base64
``policy``. :func:`parse_policy` decodes and validates the document
(``InvalidPolicyDocument``, 400); :meth:`PostPolicy.check` judges the form's
fields against it and :meth:`PostPolicy.check_size` the file's length, with
the errors and messages S3 sends.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .errors import AccessDenied, EntityTooLarge, EntityTooSmall, InvalidArgument, S3Error
from .sigv4 import ALGORITHM, SERVICE, sign, signature_mismatch, signing_key

V4_FIELDS = ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature")
V2_FIELDS = ("awsaccesskeyid", "signature")
# How S3 spells the fields when it names one that is missing.
_SPELLING = {"x-amz-algorithm": "X-Amz-Algorithm", "x-amz-credential": "X-Amz-Credential",
             "x-amz-date": "X-Amz-Date", "x-amz-signature": "X-Amz-Signature",
             "awsaccesskeyid": "AWSAccessKeyId", "signature": "Signature"}
# Fields a policy need not name (S3's list, both signature versions).
EXEMPT_FIELDS = frozenset(("policy", "x-amz-signature", "signature", "awsaccesskeyid", "file"))
EXEMPT_PREFIX = "x-ignore-"
# Fields S3 matches exactly only: a starts-with condition on them never holds.
_EXACT_ONLY = frozenset(("bucket", "success_action_status", "x-amz-algorithm",
                         "x-amz-credential", "x-amz-date", "x-amz-security-token"))
_EXPIRATION = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_SCOPE_DATE = re.compile(r"\d{8}")


class InvalidPolicyDocument(S3Error):
    status = 400
    message = "Invalid Policy: Invalid JSON."


def _invalid(detail: str) -> InvalidPolicyDocument:
    return InvalidPolicyDocument("Invalid Policy: " + detail)


def _denied(detail: str) -> AccessDenied:
    return AccessDenied("Invalid according to Policy: " + detail)


def missing_field(name: str) -> InvalidArgument:
    """The InvalidArgument S3 sends for a form without ``name`` (before the file)."""
    name = _SPELLING.get(name, name)
    return InvalidArgument(f"Bucket POST must contain a field named '{name}'.  If it is "
                           "specified, please check the order of the fields.",
                           ArgumentName=name, ArgumentValue="")


# --- credentials ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Credentials:
    """A signed form's claim: who signed its ``policy``, and how."""

    version: int            # 4 or 2
    access_key: str
    policy: str
    signature: str
    date: str = ""          # SigV4 scope: yyyyMMdd and region
    region: str = ""

    def verify(self, secret: str) -> None:
        """SignatureDoesNotMatch unless ``secret`` signed the policy."""
        if self.version == 4:
            key = signing_key(secret, self.date, self.region, SERVICE)
            ok = hmac.compare_digest(sign(key, self.policy), self.signature.lower())
        else:
            digest = hmac.new(secret.encode(), self.policy.encode(), "sha1").digest()
            ok = hmac.compare_digest(base64.b64encode(digest).decode(), self.signature)
        if not ok:
            raise signature_mismatch(self.access_key, self.policy, self.signature)


def form_credentials(fields: Mapping[str, str]) -> Credentials | None:
    """The credentials of a form (``fields`` by lower-case name); None when it
    carries none (an anonymous upload). Incomplete or malformed ones get S3's
    InvalidArgument."""
    if any(name in fields for name in V4_FIELDS):
        for name in ("policy", *V4_FIELDS):
            if name not in fields:
                raise missing_field(name)
        algorithm = fields["x-amz-algorithm"]
        if algorithm != ALGORITHM:
            raise InvalidArgument("Only AWS4-HMAC-SHA256 is supported",
                                  ArgumentName="X-Amz-Algorithm", ArgumentValue=algorithm)
        amz_date = fields["x-amz-date"]
        if not _AMZ_DATE.fullmatch(amz_date):
            raise InvalidArgument("X-Amz-Date must be in the ISO8601 Long Format "
                                  "\"yyyyMMdd'T'HHmmss'Z'\"", ArgumentName="X-Amz-Date",
                                  ArgumentValue=amz_date)
        access_key, date, region = _scope(fields["x-amz-credential"])
        return Credentials(4, access_key, fields["policy"], fields["x-amz-signature"],
                           date, region)
    if any(name in fields for name in V2_FIELDS):
        for name in ("policy", *V2_FIELDS):
            if name not in fields:
                raise missing_field(name)
        return Credentials(2, fields["awsaccesskeyid"], fields["policy"], fields["signature"])
    return None


def _scope(credential: str) -> tuple[str, str, str]:
    """``AKID/yyyyMMdd/region/s3/aws4_request`` → (access key, date, region)."""
    def bad(detail: str) -> InvalidArgument:
        return InvalidArgument(detail, ArgumentName="X-Amz-Credential", ArgumentValue=credential)

    parts = credential.split("/")
    if len(parts) != 5 or not parts[0]:
        raise bad('the Credential is mal-formed; expecting '
                  '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".')
    access_key, date, region, service, terminal = parts
    if not _SCOPE_DATE.fullmatch(date):
        raise bad(f'incorrect date format "{date}". This date in the credential must be in '
                  'the format "yyyyMMdd".')
    if service != SERVICE:
        raise bad(f'incorrect service "{service}". This endpoint belongs to "s3".')
    if terminal != "aws4_request":
        raise bad(f'incorrect terminal "{terminal}". This endpoint uses "aws4_request".')
    return access_key, date, region


# --- the policy document ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Condition:
    """One condition: ``eq``/``starts-with`` on a field (lower-case, no ``$``), or a
    ``content-length-range``; ``broken`` ones (S3 cannot apply them) never hold."""

    op: str
    field: str = ""
    value: str = ""
    low: int = 0
    high: int = 0
    text: str = ""          # how S3 quotes it in "Policy Condition failed: ..."
    broken: bool = False

    def holds(self, value: str) -> bool:
        if self.broken:
            return False
        if self.op == "eq":
            return value == self.value
        if self.field in _EXACT_ONLY or (self.field.startswith("x-amz-")
                                         and not self.field.startswith("x-amz-meta-")):
            return False
        if self.field == "content-type" and "," in value:
            # Several types (one per file, as browsers list them): each must match.
            return all(part.strip().startswith(self.value) for part in value.split(","))
        return value.startswith(self.value)


@dataclasses.dataclass(frozen=True)
class PostPolicy:
    expiration: datetime
    conditions: tuple[Condition, ...]

    def check(self, fields: Sequence[tuple[str, str]], bucket: str, key: str,
              now: datetime | None = None) -> None:
        """AccessDenied ("Invalid according to Policy: ...") unless the policy is
        current, names every field of the form (and the bucket) and each of its
        conditions holds. ``fields``: (name as sent, value) with ``${filename}``
        replaced; ``key`` as it will be stored."""
        if (now or datetime.now(UTC)) >= self.expiration:
            raise _denied("Policy expired.")
        covered = {c.field for c in self.conditions if c.op != "content-length-range"}
        if "bucket" not in covered:
            raise _denied("Extra input fields: bucket")
        for name, _ in fields:
            lname = name.lower()
            if lname not in covered and lname not in EXEMPT_FIELDS \
                    and not lname.startswith(EXEMPT_PREFIX):
                raise _denied(f"Extra input fields: {name}")
        values = {name.lower(): value for name, value in fields}
        values.update(bucket=bucket, key=key)
        for condition in self.conditions:
            if condition.op == "content-length-range" and not condition.broken:
                continue  # judged on the file: check_size
            if not condition.holds(values.get(condition.field, "")):
                raise _denied(f"Policy Condition failed: {condition.text}")

    def check_size(self, size: int) -> None:
        """EntityTooSmall/EntityTooLarge unless ``size`` is in every content-length-range."""
        for c in self.conditions:
            if c.op != "content-length-range" or c.broken:
                continue
            if size > c.high:
                raise too_large(size, c.high)
            if size < c.low:
                raise EntityTooSmall("Your proposed upload is smaller than the minimum allowed "
                                     "size", ProposedSize=size, MinSizeAllowed=c.low)

    @property
    def max_size(self) -> int | None:
        """The smallest upper bound of its content-length-ranges (None without one)."""
        highs = [c.high for c in self.conditions
                 if c.op == "content-length-range" and not c.broken]
        return min(highs) if highs else None


def too_large(size: int, limit: int) -> EntityTooLarge:
    return EntityTooLarge("Your proposed upload exceeds the maximum allowed size",
                          ProposedSize=size, MaxSizeAllowed=limit)


def parse_policy(encoded: str) -> PostPolicy:
    """The policy document of a form's ``policy`` field (base64 JSON)."""
    text = encoded.strip()
    if not text:
        raise _invalid("Expecting '{' but found End-of-Input")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("invalid Base64 encoding.") from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidPolicyDocument() from None
    if not isinstance(document, dict):
        raise InvalidPolicyDocument()
    if "expiration" not in document:
        raise _invalid("Policy missing expiration.")
    if "conditions" not in document:
        raise _invalid("Policy missing conditions.")
    for name in document:
        if name not in ("expiration", "conditions"):
            raise _invalid(f'Unexpected: "{name}"')
    expiration = document["expiration"]
    if not isinstance(expiration, str):
        raise InvalidPolicyDocument()
    conditions = document["conditions"]
    if not isinstance(conditions, list):
        raise _invalid("Invalid 'conditions' value: must be a List.")
    return PostPolicy(_expiration(expiration), tuple(_condition(c) for c in conditions))


def _expiration(text: str) -> datetime:
    if _EXPIRATION.fullmatch(text):
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return moment.astimezone(UTC)
        except ValueError:
            pass
    raise _invalid(f"Invalid 'expiration' value: '{text}'")


def _quote(items: Sequence[Any]) -> str:
    return json.dumps(list(items), ensure_ascii=False)


def _condition(raw: Any) -> Condition:
    if isinstance(raw, dict):
        if len(raw) != 1:
            raise _invalid("Invalid Simple-Condition: Simple-Conditions must have exactly one "
                           "property specified.")
        (name, value), = raw.items()
        if not isinstance(value, str):
            raise _invalid("Invalid Simple-Condition: value must be a string.")
        return Condition("eq", name.lower(), value, text=_quote(["eq", "$" + name, value]))
    if not isinstance(raw, list):
        raise _invalid("Invalid condition test: must be a List or Object.")
    if not raw:
        raise _invalid("Invalid Condition: missing operation identifier.")
    if not isinstance(raw[0], str):
        raise InvalidPolicyDocument()
    op = raw[0].lower()
    if op not in ("eq", "starts-with", "content-length-range"):
        raise _invalid(f"Invalid Condition: unknown operation '{raw[0]}'.")
    if len(raw) != 3:
        raise _invalid(f"Invalid {raw[0]}: wrong number of arguments.")
    text = _quote(raw)
    if op == "content-length-range":
        low, high = _bound(raw[1]), _bound(raw[2])
        if low is None or high is None:
            return Condition(op, text=text, broken=True)
        if low < 0 or high < 0:
            raise _invalid(f"Invalid {raw[0]}: the bounds may not be negative.")
        return Condition(op, low=low, high=high, text=text)
    ref, value = raw[1], raw[2]
    if not isinstance(ref, str) or isinstance(value, bool) \
            or not isinstance(value, str | int | float):
        raise InvalidPolicyDocument()
    if not ref.startswith("$") or len(ref) == 1:
        return Condition(op, text=text, broken=True)
    return Condition(op, ref[1:].lower(), str(value), text=text)


def _bound(value: Any) -> int | None:
    """A content-length-range bound: an integer, or a string of one (as S3 takes)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value.strip()):
        return int(value)
    return None
