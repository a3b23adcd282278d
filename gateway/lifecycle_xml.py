"""LifecycleConfiguration documents: parsed and validated as AWS does, and rendered back.

Two passes, as S3 answers: the shape first (unknown or repeated elements, a
missing Status, two conditions in one Filter, non-numbers: MalformedXML), then
the values (InvalidArgument / InvalidRequest with AWS's messages). Transitions
between storage classes are refused (501): Basalt has one storage class, and a
rule it would store but never apply is worse than a refusal.
"""

from __future__ import annotations

import base64
import re
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as _safe_fromstring

from storaged.lifecycle_rules import Filter, LifecycleConfig, Rule

from .errors import InvalidArgument, InvalidRequest, MalformedXML, S3NotImplemented, xml_text

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_RULES = 1000
MAX_ID = 255
MAX_NEWER_NONCURRENT = 100
MAX_BODY_SIZE = 4 * 1024 * 1024
_RULE_CHILDREN = {"ID", "Prefix", "Filter", "Status", "Expiration", "Transition",
                  "NoncurrentVersionTransition", "NoncurrentVersionExpiration",
                  "AbortIncompleteMultipartUpload"}
_CONDITIONS = ("Prefix", "Tag", "ObjectSizeGreaterThan", "ObjectSizeLessThan")
_INTEGER = re.compile(r"[+-]?\d{1,18}")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, allowed: set[str] | tuple[str, ...]) -> dict[str, list[ET.Element]]:
    """Children by name; an unknown child is a schema violation."""
    out: dict[str, list[ET.Element]] = {}
    for child in element:
        name = _local(child.tag)
        if name not in allowed:
            raise MalformedXML()
        out.setdefault(name, []).append(child)
    return out


def _one(found: dict[str, list[ET.Element]], name: str) -> ET.Element | None:
    elements = found.get(name, [])
    if len(elements) > 1:
        raise MalformedXML()
    return elements[0] if elements else None


def _leaf(found: dict[str, list[ET.Element]], name: str) -> str | None:
    element = _one(found, name)
    if element is None:
        return None
    if len(element):
        raise MalformedXML()
    return element.text or ""


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    if not _INTEGER.fullmatch(text.strip()):
        raise MalformedXML()
    return int(text)


def _date(text: str) -> int:
    """A Date as ns since the epoch; it must be a midnight UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise MalformedXML() from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment.utcoffset() or (moment.hour, moment.minute, moment.second, moment.microsecond) != (0, 0, 0, 0):
        raise InvalidArgument("'Date' must be at midnight GMT", ArgumentName="Date",
                              ArgumentValue=text.strip())
    if moment.year < 1971:
        raise MalformedXML()   # 0 ns means "no date" in the stored rule
    return int(moment.timestamp()) * 10**9


def _tag(element: ET.Element) -> tuple[str, str]:
    found = _children(element, ("Key", "Value"))
    key, value = _leaf(found, "Key"), _leaf(found, "Value")
    if key is None:
        raise MalformedXML()
    return key, value or ""


def _parse_filter(element: ET.Element) -> tuple[Filter, list[tuple[str, str]]]:
    """The Filter and its tags as written (duplicates are judged in the second pass)."""
    found = _children(element, _CONDITIONS + ("And",))
    if sum(len(v) for v in found.values()) > 1:
        raise MalformedXML()
    conjunction = _one(found, "And")
    if conjunction is not None:
        found = _children(conjunction, _CONDITIONS)
        if not found:
            raise MalformedXML()
    tags = [_tag(t) for t in found.get("Tag", [])]
    return Filter(prefix=_leaf(found, "Prefix"), tags=dict(tags),
                  size_gt=_int(_leaf(found, "ObjectSizeGreaterThan")),
                  size_lt=_int(_leaf(found, "ObjectSizeLessThan")),
                  conjunction=conjunction is not None), tags


class _Draft:
    """One rule after the shape pass: values still to be judged."""

    def __init__(self, element: ET.Element) -> None:
        found = _children(element, _RULE_CHILDREN)
        self.id = _leaf(found, "ID")
        status = _leaf(found, "Status")
        if status not in ("Enabled", "Disabled"):
            raise MalformedXML()
        self.enabled = status == "Enabled"
        legacy = _leaf(found, "Prefix")
        element_filter = _one(found, "Filter")
        if (legacy is None) == (element_filter is None):
            raise MalformedXML()     # exactly one of the legacy Prefix and Filter
        self.filter, self.tags = (Filter(prefix=legacy), []) if element_filter is None \
            else _parse_filter(element_filter)
        self.legacy = legacy is not None
        self.days = self.date = self.marker = None
        expiration = _one(found, "Expiration")
        self.has_expiration = expiration is not None
        if expiration is not None:
            parts = _children(expiration, ("Days", "Date", "ExpiredObjectDeleteMarker"))
            if len(parts) != 1 or any(len(v) > 1 for v in parts.values()):
                # none, or Days with Date, or ExpiredObjectDeleteMarker with either
                raise MalformedXML()
            self.days = _int(_leaf(parts, "Days"))
            self.date = _leaf(parts, "Date")
            marker = _leaf(parts, "ExpiredObjectDeleteMarker")
            if marker is not None:
                if marker.strip() not in ("true", "false"):
                    raise MalformedXML()
                self.marker = marker.strip() == "true"
        noncurrent = _one(found, "NoncurrentVersionExpiration")
        self.has_noncurrent = noncurrent is not None
        self.noncurrent_days = self.newer = None
        if noncurrent is not None:
            parts = _children(noncurrent, ("NoncurrentDays", "NewerNoncurrentVersions"))
            self.noncurrent_days = _int(_leaf(parts, "NoncurrentDays"))
            self.newer = _int(_leaf(parts, "NewerNoncurrentVersions"))
        abort = _one(found, "AbortIncompleteMultipartUpload")
        self.abort = None
        if abort is not None:
            self.abort = _int(_leaf(_children(abort, ("DaysAfterInitiation",)), "DaysAfterInitiation"))
            if self.abort is None:
                raise MalformedXML()
        self.transitions = bool(found.get("Transition") or found.get("NoncurrentVersionTransition"))

    def rule(self, rule_id: str) -> Rule:
        f = self.filter
        if self.transitions:
            raise S3NotImplemented("Lifecycle transitions are not implemented: Basalt has one "
                                   "storage class")
        for key, value in self.tags:
            if not key or len(key) > 128:
                raise InvalidArgument("The TagKey you have provided is invalid")
            if len(value) > 256:
                raise InvalidArgument("The TagValue you have provided is invalid")
        if len({k for k, _ in self.tags}) != len(self.tags):
            raise InvalidRequest("Duplicate Tag Keys are not allowed.")
        if f.size_gt is not None and f.size_gt < 0:
            raise InvalidArgument("'ObjectSizeGreaterThan' must be a non-negative integer")
        if f.size_lt is not None and f.size_lt <= 0:
            raise InvalidArgument("'ObjectSizeLessThan' must be a positive integer")
        if f.size_gt is not None and f.size_lt is not None and f.size_gt >= f.size_lt:
            raise InvalidArgument("'ObjectSizeGreaterThan' must be less than 'ObjectSizeLessThan'")
        if not (self.has_expiration or self.has_noncurrent or self.abort is not None):
            raise InvalidRequest("At least one action needs to be specified in a rule")
        if self.days is not None and self.days <= 0:
            raise InvalidArgument("'Days' for Expiration action must be a positive integer",
                                  ArgumentName="Days", ArgumentValue=self.days)
        date_ns = _date(self.date) if self.date is not None else 0
        if self.has_noncurrent:
            if self.noncurrent_days is None or self.noncurrent_days <= 0:
                raise InvalidArgument("'NoncurrentDays' for NoncurrentVersionExpiration action "
                                      "must be a positive integer")
            if self.newer is not None and not 1 <= self.newer <= MAX_NEWER_NONCURRENT:
                raise InvalidArgument("'NewerNoncurrentVersions' for NoncurrentVersionExpiration "
                                      f"action must be between 1 and {MAX_NEWER_NONCURRENT}")
        if self.abort is not None and self.abort <= 0:
            raise InvalidArgument("'DaysAfterInitiation' for AbortIncompleteMultipartUpload "
                                  "action must be a positive integer")
        sized = f.size_gt is not None or f.size_lt is not None
        for action, present in (("AbortIncompleteMultipartUpload", self.abort is not None),
                                ("ExpiredObjectDeleteMarker", bool(self.marker))):
            if present and self.tags:
                raise InvalidRequest(f"{action} cannot be specified with Tags.")
            if present and sized:
                raise InvalidRequest(f"{action} cannot be specified with Object Size.")
        return Rule(id=rule_id, enabled=self.enabled, filter=f, legacy_prefix=self.legacy,
                    expiration_days=self.days or 0, expiration_date_ns=date_ns,
                    expired_object_delete_marker=self.marker,
                    noncurrent_days=self.noncurrent_days or 0,
                    newer_noncurrent_versions=self.newer or 0, abort_days=self.abort or 0)


def _new_id() -> str:
    # What S3 assigns a rule sent without an ID: base64 of a random UUID.
    return base64.b64encode(str(uuid.uuid4()).encode()).decode()


def parse_lifecycle(body: bytes) -> LifecycleConfig:
    """A PutBucketLifecycleConfiguration body → the configuration to store.

    Raises MalformedXML, InvalidArgument, InvalidRequest or S3NotImplemented.
    """
    if not body.strip() or len(body) > MAX_BODY_SIZE:
        raise MalformedXML()
    try:
        root = _safe_fromstring(body, forbid_dtd=True, forbid_entities=True,
                                forbid_external=True)
    except (ET.ParseError, DefusedXmlException, ValueError):
        raise MalformedXML() from None
    if _local(root.tag) != "LifecycleConfiguration":
        raise MalformedXML()
    elements = _children(root, ("Rule",)).get("Rule", [])
    if not elements:
        raise MalformedXML()
    drafts = [_Draft(e) for e in elements]          # the shape of every rule first
    if len(drafts) > MAX_RULES:
        raise InvalidArgument(f"The number of lifecycle rules must not exceed {MAX_RULES}")
    seen: set[str] = set()
    for draft in drafts:
        if draft.id is None or draft.id == "":
            continue
        if len(draft.id) > MAX_ID:
            raise InvalidArgument(f"ID length should not exceed allowed limit of {MAX_ID}")
        if draft.id in seen:
            raise InvalidArgument("Rule ID must be unique. Found same ID for more than one rule")
        seen.add(draft.id)
    return LifecycleConfig(tuple(d.rule(d.id or _new_id()) for d in drafts))


def _el(name: str, value: object) -> str:
    return f"<{name}>{xml_text(value)}</{name}>"


def _date_text(ns: int) -> str:
    return datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _render_filter(rule: Rule) -> str:
    f = rule.filter
    if rule.legacy_prefix:
        return _el("Prefix", f.prefix or "")
    parts = []
    if f.prefix is not None:
        parts.append(_el("Prefix", f.prefix))
    parts += ["<Tag>" + _el("Key", k) + _el("Value", v) + "</Tag>" for k, v in f.tags.items()]
    if f.size_gt is not None:
        parts.append(_el("ObjectSizeGreaterThan", f.size_gt))
    if f.size_lt is not None:
        parts.append(_el("ObjectSizeLessThan", f.size_lt))
    body = "".join(parts)
    return f"<Filter><And>{body}</And></Filter>" if f.conjunction else f"<Filter>{body}</Filter>"


def _render_rule(rule: Rule) -> str:
    parts = [_el("ID", rule.id), _render_filter(rule),
             _el("Status", "Enabled" if rule.enabled else "Disabled")]
    if rule.expiration_days:
        parts.append("<Expiration>" + _el("Days", rule.expiration_days) + "</Expiration>")
    elif rule.expiration_date_ns:
        parts.append("<Expiration>" + _el("Date", _date_text(rule.expiration_date_ns))
                     + "</Expiration>")
    elif rule.expired_object_delete_marker is not None:
        parts.append("<Expiration>" + _el("ExpiredObjectDeleteMarker",
                                          str(rule.expired_object_delete_marker).lower())
                     + "</Expiration>")
    if rule.noncurrent_days:
        newer = rule.newer_noncurrent_versions
        parts.append("<NoncurrentVersionExpiration>" + _el("NoncurrentDays", rule.noncurrent_days)
                     + (_el("NewerNoncurrentVersions", newer) if newer else "")
                     + "</NoncurrentVersionExpiration>")
    if rule.abort_days:
        parts.append("<AbortIncompleteMultipartUpload>"
                     + _el("DaysAfterInitiation", rule.abort_days)
                     + "</AbortIncompleteMultipartUpload>")
    return "<Rule>" + "".join(parts) + "</Rule>"


def render_lifecycle(config: LifecycleConfig) -> bytes:
    """The GetBucketLifecycleConfiguration document."""
    rules = "".join(_render_rule(r) for r in config.rules)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<LifecycleConfiguration xmlns="{S3_NAMESPACE}">{rules}</LifecycleConfiguration>'
            ).encode()
