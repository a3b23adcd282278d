"""Policy strings and the Condition element: wildcards, ``${...}`` variables, operators.

A policy string is compiled once: ``*`` and ``?`` wildcards become a regex, and in
2012-10-17 policies ``${key}`` (optionally ``${key, 'default'}``) is looked up in the
request's condition keys at evaluation time, ``${*}``, ``${?}`` and ``${$}`` being
the literal characters. A variable that is missing, multivalued or malformed makes
the value match nothing, as AWS does.

Condition semantics (AWS's documented ones): operators and keys are ANDed, the
values of one key ORed. A key missing from the request makes a positive operator
false and a negated one (``StringNotEquals``, ``NotIpAddress``, ...) true;
``...IfExists`` makes any operator true on a missing key; ``ForAllValues:`` is true
and ``ForAnyValue:`` false on a missing or empty key. ``ForAnyValue:`` needs one
request value, ``ForAllValues:`` every request value, to match one of the policy
values; a negated operator negates per request value ("matches none of them").
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import S3Error

Keys = Mapping[str, Sequence[str]]


class MalformedPolicy(S3Error):
    """A policy document S3 refuses (``PutBucketPolicy`` answers 400 MalformedPolicy)."""

    status = 400
    message = "Policies must be valid JSON and the first byte must be '{'"


# --- strings: wildcards and variables ----------------------------------------

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_VARIABLE_BODY = re.compile(r"\s*([^\s,']+)\s*(?:,\s*'([^']*)'\s*)?")
_ESCAPED = frozenset("*?$")
_compile = functools.lru_cache(maxsize=4096)(re.compile)


def glob_regex(text: str) -> str:
    """The regex source of ``text`` with ``*`` any run of characters, ``?`` any one."""
    return ".*".join(".".join(map(re.escape, run.split("?"))) for run in text.split("*"))


class Template:
    """A policy string split into wildcard text, literal characters and variables."""

    __slots__ = ("text", "parts", "static")

    def __init__(self, text: str, variables: bool) -> None:
        self.text = text
        # ("glob", text) | ("lit", char) | ("var", key or "" if malformed, default or None)
        parts: list[tuple[str, str, str | None]] = []
        pos = 0
        for m in _VARIABLE.finditer(text) if variables else ():
            if m.start() > pos:
                parts.append(("glob", text[pos:m.start()], None))
            body = m.group(1)
            if body in _ESCAPED:
                parts.append(("lit", body, None))
            else:
                v = _VARIABLE_BODY.fullmatch(body)
                parts.append(("var", v.group(1).lower() if v else "", v.group(2) if v else None))
            pos = m.end()
        if pos < len(text) or not parts:
            parts.append(("glob", text[pos:], None))
        # with each fixed part's regex source, translated once
        self.parts = tuple((kind, text, default, glob_regex(text) if kind == "glob" else re.escape(text))
                           for kind, text, default in parts)
        self.static = all(kind != "var" for kind, _, _ in parts)

    def _pieces(self, keys: Keys, glob: bool) -> list[str] | None:
        out = []
        for kind, text, default, source in self.parts:
            if kind == "var":
                values = keys.get(text) if text else None
                # AWS substitutes single-valued keys only; a multivalued one is "no value".
                if values and len(values) == 1:
                    text = values[0]
                elif default is not None:
                    text = default
                else:
                    return None
                out.append(re.escape(text) if glob else text)
            else:
                out.append(source if glob else text)
        return out

    def literal(self, keys: Keys) -> str | None:
        """The string with variables substituted (wildcards are plain characters)."""
        pieces = self._pieces(keys, False)
        return None if pieces is None else "".join(pieces)

    def regex(self, keys: Keys) -> str | None:
        """The regex source of the string with variables substituted as literal text."""
        pieces = self._pieces(keys, True)
        return None if pieces is None else "".join(pieces)


class Wildcard:
    """A policy string matched with ``*``/``?`` wildcards; compiled once when it has no variables."""

    __slots__ = ("template", "flags", "pattern")

    def __init__(self, text: str, variables: bool, ignore_case: bool = False) -> None:
        self.template = Template(text, variables)
        self.flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
        self.pattern = re.compile(self.template.regex({}), self.flags) if self.template.static else None

    def match(self, value: str, keys: Keys) -> bool:
        if self.pattern is not None:
            return self.pattern.fullmatch(value) is not None
        source = self.template.regex(keys)
        return source is not None and _compile(source, self.flags).fullmatch(value) is not None


# --- condition keys ---------------------------------------------------------------

# The S3 service's own condition keys (lowercased); tag keys follow a '/'.
S3_KEYS = frozenset(k.lower() for k in (
    "s3:AccessGrantsInstanceArn", "s3:AccessPointNetworkOrigin", "s3:authType",
    "s3:DataAccessPointAccount", "s3:DataAccessPointArn", "s3:delimiter", "s3:ExistingJobOperation",
    "s3:ExistingJobPriority", "s3:JobSuspendedCause", "s3:LocationConstraint", "s3:max-keys",
    "s3:object-lock-legal-hold", "s3:object-lock-mode", "s3:object-lock-remaining-retention-days",
    "s3:object-lock-retain-until-date", "s3:prefix", "s3:RequestJobOperation",
    "s3:RequestJobPriority", "s3:RequestObjectTagKeys", "s3:ResourceAccount", "s3:signatureAge",
    "s3:signatureversion", "s3:TlsVersion", "s3:versionid", "s3:x-amz-acl",
    "s3:x-amz-content-sha256", "s3:x-amz-copy-source", "s3:x-amz-grant-full-control",
    "s3:x-amz-grant-read", "s3:x-amz-grant-read-acp", "s3:x-amz-grant-write",
    "s3:x-amz-grant-write-acp", "s3:x-amz-metadata-directive", "s3:x-amz-server-side-encryption",
    "s3:x-amz-server-side-encryption-aws-kms-key-id",
    "s3:x-amz-server-side-encryption-customer-algorithm", "s3:x-amz-storage-class",
    "s3:x-amz-website-redirect-location", "s3:x-amz-object-ownership", "s3:if-match",
    "s3:if-none-match", "s3:ObjectCreationOperation", "s3:InventoryAccessibleOptionalFields",
    "s3:BucketObjectLockEnabled",
))
S3_TAG_KEYS = ("s3:existingobjecttag/", "s3:requestobjecttag/", "s3:buckettag/")
_KEY = re.compile(r"[A-Za-z0-9-]+:[A-Za-z0-9_.:/+=@-]+")


def check_key(key: str, resource_policy: bool) -> str:
    """The lowercased condition key, or MalformedPolicy if S3 would not know it.

    Any ``aws:`` global key is accepted; in a bucket policy an ``s3:`` key must be
    one of S3's and no other service's keys may appear.
    """
    lower = key.lower()
    if _KEY.fullmatch(key):
        prefix = lower.split(":", 1)[0]
        if prefix == "aws":
            return lower
        if prefix == "s3":
            if lower in S3_KEYS or (lower.startswith(S3_TAG_KEYS) and "/" != lower[-1]):
                return lower
        elif not resource_policy:
            return lower
    raise MalformedPolicy("Policy has an invalid condition key")


# --- value types -----------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_EPOCH = re.compile(r"-?\d+(\.\d+)?")


def parse_number(text: str) -> float | None:
    return float(text) if _NUMBER.fullmatch(text.strip()) else None


def parse_date(text: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 date/time or of epoch seconds (UTC if no zone)."""
    text = text.strip()
    if _EPOCH.fullmatch(text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@functools.lru_cache(maxsize=4096)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; policies name them as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _invalid_value() -> MalformedPolicy:
    return MalformedPolicy("Policy has an invalid condition value")


# Each base type: compile(policy value, variables) -> compiled; test(request value, compiled, keys).

def _compile_number(value: str, variables: bool) -> float:
    number = parse_number(value)
    if number is None:
        raise _invalid_value()
    return number


def _compile_date(value: str, variables: bool) -> float:
    moment = parse_date(value)
    if moment is None or math.isinf(moment):
        raise _invalid_value()
    return moment


def _compile_bool(value: str, variables: bool) -> str:
    if value.lower() not in ("true", "false"):
        raise _invalid_value()
    return value.lower()


def _compile_binary(value: str, variables: bool) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid_value() from None


def _compile_ip(value: str, variables: bool) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise _invalid_value() from None


def _split_arn(value: str, variables: bool) -> list[str]:
    """``value`` split at its first five colons outside ``${...}`` variables."""
    hidden = _VARIABLE.sub(lambda m: "\0" * len(m.group()), value) if variables else value
    parts, start = [], 0
    for _ in range(5):
        colon = hidden.find(":", start)
        if colon < 0:
            break
        parts.append(value[start:colon])
        start = colon + 1
    parts.append(value[start:])
    return parts


def _compile_arn(value: str, variables: bool) -> tuple[Wildcard, ...]:
    # Each of the six colon-separated components is matched on its own, so a
    # wildcard never spans a colon. A value without colons ("*", "${var}") is
    # matched as a whole; one with too few components matches no ARN.
    parts = _split_arn(value, variables)
    if len(parts) == 1:
        return (Wildcard(value, variables),)
    if len(parts) < 6:
        return ()
    return tuple(Wildcard(p, variables) for p in parts)


def _test_arn(request: str, compiled: tuple[Wildcard, ...], keys: Keys) -> bool:
    if len(compiled) < 2:
        return bool(compiled) and compiled[0].match(request, keys)
    parts = request.split(":", 5)
    return len(parts) == 6 and all(w.match(p, keys) for w, p in zip(compiled, parts))


def _test_equals(request: str, compiled: Template, keys: Keys) -> bool:
    return compiled.literal(keys) == request


def _test_equals_ignore_case(request: str, compiled: Template, keys: Keys) -> bool:
    value = compiled.literal(keys)
    return value is not None and value.casefold() == request.casefold()


def _test_like(request: str, compiled: Wildcard, keys: Keys) -> bool:
    return compiled.match(request, keys)


def _ordered(parse: Callable[[str], float | None], compare: Callable[[float, float], bool]):
    def test(request: str, compiled: float, keys: Keys) -> bool:
        value = parse(request)
        return value is not None and compare(value, compiled)
    return test


def _test_bool(request: str, compiled: str, keys: Keys) -> bool:
    return request.lower() == compiled


def _test_binary(request: str, compiled: bytes, keys: Keys) -> bool:
    try:
        return base64.b64decode(request, validate=True) == compiled
    except (binascii.Error, ValueError):
        return False


def _test_ip(request: str, compiled: Any, keys: Keys) -> bool:
    address = _ip(request)
    return address is not None and address in compiled


@dataclass(frozen=True, slots=True)
class _Base:
    compile: Callable[[str, bool], Any]
    test: Callable[[str, Any, Keys], bool]
    negated: bool = False


def _template(value: str, variables: bool) -> Template:
    return Template(value, variables)


def _wildcard(value: str, variables: bool) -> Wildcard:
    return Wildcard(value, variables)


_STRING_EQ = (_template, _test_equals)
_STRING_IC = (_template, _test_equals_ignore_case)
_STRING_LIKE = (_wildcard, _test_like)
_ARN = (_compile_arn, _test_arn)


def _numeric(cmp: Callable[[float, float], bool]) -> tuple[Callable, Callable]:
    return (_compile_number, _ordered(parse_number, cmp))


def _date(cmp: Callable[[float, float], bool]) -> tuple[Callable, Callable]:
    return (_compile_date, _ordered(parse_date, cmp))


OPERATORS: dict[str, _Base] = {
    "StringEquals": _Base(*_STRING_EQ),
    "StringNotEquals": _Base(*_STRING_EQ, negated=True),
    "StringEqualsIgnoreCase": _Base(*_STRING_IC),
    "StringNotEqualsIgnoreCase": _Base(*_STRING_IC, negated=True),
    "StringLike": _Base(*_STRING_LIKE),
    "StringNotLike": _Base(*_STRING_LIKE, negated=True),
    "NumericEquals": _Base(*_numeric(operator.eq)),
    "NumericNotEquals": _Base(*_numeric(operator.eq), negated=True),
    "NumericLessThan": _Base(*_numeric(operator.lt)),
    "NumericLessThanEquals": _Base(*_numeric(operator.le)),
    "NumericGreaterThan": _Base(*_numeric(operator.gt)),
    "NumericGreaterThanEquals": _Base(*_numeric(operator.ge)),
    "DateEquals": _Base(*_date(operator.eq)),
    "DateNotEquals": _Base(*_date(operator.eq), negated=True),
    "DateLessThan": _Base(*_date(operator.lt)),
    "DateLessThanEquals": _Base(*_date(operator.le)),
    "DateGreaterThan": _Base(*_date(operator.gt)),
    "DateGreaterThanEquals": _Base(*_date(operator.ge)),
    "Bool": _Base(_compile_bool, _test_bool),
    "BinaryEquals": _Base(_compile_binary, _test_binary),
    "IpAddress": _Base(_compile_ip, _test_ip),
    "NotIpAddress": _Base(_compile_ip, _test_ip, negated=True),
    "ArnEquals": _Base(*_ARN),
    "ArnLike": _Base(*_ARN),
    "ArnNotEquals": _Base(*_ARN, negated=True),
    "ArnNotLike": _Base(*_ARN, negated=True),
}


def _compile_null(value: str, variables: bool) -> bool:
    return _compile_bool(value, variables) == "true"


@dataclass(frozen=True, slots=True)
class Clause:
    """One condition key under one operator, e.g. ``ForAnyValue:StringLike`` on ``s3:prefix``."""

    operator: str
    key: str  # lowercased: condition key names are case-insensitive
    values: tuple[str, ...]
    base: str = field(repr=False)
    quantifier: str | None = field(repr=False)  # "any", "all" or None
    if_exists: bool = field(repr=False)
    compiled: tuple[Any, ...] = field(repr=False, compare=False)

    def holds(self, keys: Keys) -> bool:
        present = keys.get(self.key)
        if self.base == "Null":
            # "true": the key must be absent; "false": present. Values are ORed.
            return (not present) in self.compiled
        if not present:
            if self.if_exists or self.quantifier == "all":
                return True
            if self.quantifier == "any":
                return False
            return OPERATORS[self.base].negated
        op = OPERATORS[self.base]
        test, compiled = op.test, self.compiled

        def matches(value: str) -> bool:
            return any(test(value, c, keys) for c in compiled) != op.negated

        if self.quantifier == "all" or (self.quantifier is None and op.negated):
            # Unqualified negation: no request value matches any policy value.
            return all(map(matches, present))
        return any(map(matches, present))


_QUANTIFIERS = {"ForAnyValue": "any", "ForAllValues": "all"}


def parse_clause(op_name: str, key: str, raw: Any, variables: bool, resource_policy: bool) -> Clause:
    """Compile one ``{"Operator": {"key": value(s)}}`` entry; MalformedPolicy if invalid."""
    quantifier = None
    base = op_name
    if ":" in base:
        prefix, base = base.split(":", 1)
        if prefix not in _QUANTIFIERS:
            raise MalformedPolicy(f"Invalid Condition type : {op_name}")
        quantifier = _QUANTIFIERS[prefix]
    if_exists = base.endswith("IfExists")
    if if_exists:
        base = base[: -len("IfExists")]
    if base == "Null":
        if if_exists:
            raise MalformedPolicy(f"Invalid Condition type : {op_name}")
        compile_value: Callable[[str, bool], Any] = _compile_null
    elif base in OPERATORS:
        compile_value = OPERATORS[base].compile
    else:
        raise MalformedPolicy(f"Invalid Condition type : {op_name}")
    values = condition_values(raw)
    compiled = tuple(compile_value(v, variables) for v in values)
    # Variables are only substituted in string and ARN comparisons.
    return Clause(op_name, check_key(key, resource_policy), values, base, quantifier, if_exists, compiled)


def condition_values(raw: Any) -> tuple[str, ...]:
    """A condition's value or values as strings (JSON numbers and booleans are accepted)."""
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise MalformedPolicy("Policy has an empty condition value list")
    out = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, (int, float)) and math.isfinite(item):
            out.append(str(item))
        elif isinstance(item, str):
            out.append(item)
        else:
            raise _invalid_value()
    return tuple(out)
