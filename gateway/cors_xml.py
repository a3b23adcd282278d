"""CORSConfiguration documents and the rules in them: parsed and validated as S3 does,
rendered back for GetBucketCors, packed for the bucket's settings, and matched
against a cross-origin request.

Validation runs in two passes, as S3 answers: the shape of every rule first
(unknown or repeated elements, a rule without an AllowedOrigin or an AllowedMethod,
no rule at all, a MaxAgeSeconds that is not a number: MalformedXML), then the count
and the values (InvalidRequest with S3's messages).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import xml.etree.ElementTree as ET

from .errors import InvalidRequest, MalformedXML, xml_text
from .s3xml import S3_NAMESPACE, _local, _parse

MAX_RULES = 100
MAX_ID = 255
MAX_DOCUMENT = 64 * 1024
METHODS = ("GET", "PUT", "HEAD", "POST", "DELETE")
# S3 answers every matched cross-origin request with this one Vary value.
VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
_LISTS = {"AllowedOrigin": "origins", "AllowedMethod": "methods",
          "AllowedHeader": "headers", "ExposeHeader": "expose"}
_MAX_AGE = re.compile(r"[+-]?\d{1,10}")
# An exposed header is echoed in a response header: a header name's characters only.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclasses.dataclass(frozen=True)
class CorsRule:
    origins: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    max_age: int | None = None
    id: str | None = None

    def allows(self, origin: str, method: str, headers: list[str] | None) -> bool:
        """Whether this rule lets ``origin`` send ``method`` with (lowercase) ``headers``."""
        if method not in self.methods:
            return False
        if not any(wildcard_match(pattern, origin) for pattern in self.origins):
            return False
        if headers:
            allowed = [pattern.lower() for pattern in self.headers]
            return all(any(wildcard_match(p, name) for p in allowed) for name in headers)
        return True

    @functools.cached_property
    def _fixed_headers(self) -> dict[str, str]:
        # Built once per stored rule (configs are cached by their bytes).
        out = {"Access-Control-Allow-Methods": ", ".join(self.methods)}
        if self.expose:
            out["Access-Control-Expose-Headers"] = ", ".join(self.expose)
        if self.max_age is not None:
            out["Access-Control-Max-Age"] = str(self.max_age)
        out["Vary"] = VARY
        return out

    def response_headers(self, origin: str, headers: list[str] | None) -> dict[str, str]:
        """The CORS headers S3 sends when this rule matched a request from ``origin``."""
        out: dict[str, str] = {}
        if "*" in self.origins:
            out["Access-Control-Allow-Origin"] = "*"
        else:
            # Credentials may only be allowed when the answer names the origin.
            out["Access-Control-Allow-Origin"] = origin
            out["Access-Control-Allow-Credentials"] = "true"
        if headers:
            out["Access-Control-Allow-Headers"] = ", ".join(headers)
        out.update(self._fixed_headers)
        return out


def wildcard_match(pattern: str, value: str) -> bool:
    """``pattern`` with at most one ``*`` (any run of characters, empty included)."""
    star = pattern.find("*")
    if star < 0:
        return pattern == value
    prefix, suffix = pattern[:star], pattern[star + 1:]
    return (len(value) >= len(prefix) + len(suffix) and value.startswith(prefix)
            and value.endswith(suffix))


def request_headers(value: str | None) -> list[str] | None:
    """The names in Access-Control-Request-Headers, lowercase (None when it names none)."""
    if not value:
        return None
    names = [name.strip().lower() for name in value.split(",")]
    return [name for name in names if name] or None


@dataclasses.dataclass(frozen=True)
class CorsConfig:
    rules: tuple[CorsRule, ...]

    def match(self, origin: str, method: str, headers: list[str] | None) -> CorsRule | None:
        """The first rule allowing the request, as S3 picks it."""
        for rule in self.rules:
            if rule.allows(origin, method, headers):
                return rule
        return None

    def pack(self) -> bytes:
        return json.dumps([{"id": r.id, "origins": r.origins, "methods": r.methods,
                            "headers": r.headers, "expose": r.expose, "max_age": r.max_age}
                           for r in self.rules], separators=(",", ":")).encode()

    @staticmethod
    def unpack(raw: bytes) -> CorsConfig:
        return _unpack(bytes(raw))


@functools.lru_cache(maxsize=512)
def _unpack(raw: bytes) -> CorsConfig:
    return CorsConfig(tuple(
        CorsRule(tuple(r["origins"]), tuple(r["methods"]), tuple(r["headers"]),
                 tuple(r["expose"]), r["max_age"], r["id"])
        for r in json.loads(raw)))


# --- parsing ------------------------------------------------------------------

def parse_cors(body: bytes) -> CorsConfig:
    """A PutBucketCors body → its rules; S3's error for anything S3 refuses."""
    if len(body) > MAX_DOCUMENT:
        raise MalformedXML("The CORS XML document is limited to 64 KB in size.")
    root = _parse(body, "CORSConfiguration")
    if root is None or (root.text or "").strip():
        raise MalformedXML()
    elements = []
    for child in root:
        if _local(child.tag) != "CORSRule":
            raise MalformedXML()
        elements.append(child)
    if not elements:
        raise MalformedXML()
    rules = [_rule_shape(element) for element in elements]
    if len(rules) > MAX_RULES:
        raise InvalidRequest("The number of CORS rules should not exceed allowed limit of "
                             f"{MAX_RULES} rules.")
    for rule in rules:
        _check_values(rule)
    return CorsConfig(tuple(rules))


def _rule_shape(element: ET.Element) -> CorsRule:
    if (element.text or "").strip():
        raise MalformedXML()
    lists: dict[str, list[str]] = {name: [] for name in _LISTS.values()}
    rule_id = max_age = None
    for child in element:
        name = _local(child.tag)
        if len(child) or (child.tail or "").strip():
            raise MalformedXML()
        text = child.text or ""
        if name in _LISTS:
            lists[_LISTS[name]].append(text.strip())
        elif name == "ID" and rule_id is None:
            if len(text) > MAX_ID:
                raise MalformedXML()
            rule_id = text
        elif name == "MaxAgeSeconds" and max_age is None:
            if not _MAX_AGE.fullmatch(text.strip()) or not 0 <= int(text) < 2**31:
                raise MalformedXML()
            max_age = int(text)
        else:  # unknown or repeated
            raise MalformedXML()
    if not lists["origins"] or not lists["methods"]:
        raise MalformedXML()
    return CorsRule(tuple(lists["origins"]), tuple(lists["methods"]), tuple(lists["headers"]),
                    tuple(lists["expose"]), max_age, rule_id or None)


def _check_values(rule: CorsRule) -> None:
    for method in rule.methods:
        if method not in METHODS:
            raise InvalidRequest("Found unsupported HTTP method in CORS config. "
                                 f"Unsupported method is {method}")
    for origin in rule.origins:
        if origin.count("*") > 1:
            raise InvalidRequest(f'AllowedOrigin "{origin}" can not have more than one wildcard.')
    for header in rule.headers:
        if header.count("*") > 1:
            raise InvalidRequest(f'AllowedHeader "{header}" can not have more than one wildcard.')
    for header in rule.expose:
        if "*" in header:
            raise InvalidRequest(f'ExposeHeader "{header}" contains wildcard. We currently do '
                                 "not support wildcard for ExposeHeader.")
        if not _HEADER_NAME.fullmatch(header):
            raise InvalidRequest(f'ExposeHeader "{header}" contains invalid character.')


# --- rendering ----------------------------------------------------------------

def render_cors(config: CorsConfig) -> bytes:
    """The GetBucketCors document (elements in the order of S3's API reference)."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n',
             f'<CORSConfiguration xmlns="{S3_NAMESPACE}">']
    for rule in config.rules:
        parts.append("<CORSRule>")
        for tag, values in (("AllowedHeader", rule.headers), ("AllowedMethod", rule.methods),
                            ("AllowedOrigin", rule.origins), ("ExposeHeader", rule.expose)):
            parts += (f"<{tag}>{xml_text(value)}</{tag}>" for value in values)
        if rule.id is not None:
            parts.append(f"<ID>{xml_text(rule.id)}</ID>")
        if rule.max_age is not None:
            parts.append(f"<MaxAgeSeconds>{rule.max_age}</MaxAgeSeconds>")
        parts.append("</CORSRule>")
    parts.append("</CORSConfiguration>")
    return "".join(parts).encode()
