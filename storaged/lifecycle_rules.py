"""Bucket lifecycle rules: the stored model and what it decides (pure, no I/O).

A :class:`LifecycleConfig` is what ``PutBucketLifecycleConfiguration`` stored
(parsed and validated by gateway/lifecycle_xml.py). The functions here answer
the two questions asked of it: when a current object expires (the
``x-amz-expiration`` header) and which versions or uploads a scan removes now
(:class:`KeyWalk`, :func:`abort_rule`).

Times are ns since the epoch. A "day" is ``day_ns`` long (86400 s, shorter in
tests): AWS counts an age of N days from the moment an object was written (or
became noncurrent, or an upload started) and rounds the result up to the next
midnight UTC; with a shortened day that is the next multiple of ``day_ns``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

DAY_NS = 86400 * 10**9
FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Filter:
    """The objects a rule applies to; every condition given must hold.

    ``prefix`` None means "not given" (so the XML comes back as it was sent);
    ``conjunction`` says it was written as ``<And>``.
    """

    prefix: str | None = None
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    size_gt: int | None = None
    size_lt: int | None = None
    conjunction: bool = False

    def matches(self, key: str, size: int, tags: Mapping[str, str]) -> bool:
        if self.prefix and not key.startswith(self.prefix):
            return False
        if any(tags.get(k) != v for k, v in self.tags.items()):
            return False
        if self.size_gt is not None and not size > self.size_gt:
            return False
        return self.size_lt is None or size < self.size_lt


@dataclasses.dataclass(frozen=True)
class Rule:
    id: str
    enabled: bool = True
    filter: Filter = dataclasses.field(default_factory=Filter)
    legacy_prefix: bool = False              # <Prefix> directly in the Rule, not in a Filter
    expiration_days: int = 0
    expiration_date_ns: int = 0
    expired_object_delete_marker: bool | None = None   # None: element absent
    noncurrent_days: int = 0
    newer_noncurrent_versions: int = 0       # 0: not given
    abort_days: int = 0

    def matches(self, key: str, size: int, tags: Mapping[str, str]) -> bool:
        return self.filter.matches(key, size, tags)

    def current_expiry(self, mtime_ns: int, day_ns: int) -> int | None:
        """When a current version written at ``mtime_ns`` expires under this rule."""
        if self.expiration_days:
            return after_days(mtime_ns, self.expiration_days, day_ns)
        if self.expiration_date_ns:
            return self.expiration_date_ns
        return None

    def _pack(self) -> dict[str, Any]:
        f = self.filter
        d: dict[str, Any] = {"id": self.id, "on": self.enabled}
        if f.prefix is not None:
            d["pfx"] = f.prefix
        if f.tags:
            d["tags"] = sorted(f.tags.items())
        for name, value in (("gt", f.size_gt), ("lt", f.size_lt)):
            if value is not None:
                d[name] = value
        if f.conjunction:
            d["and"] = True
        if self.legacy_prefix:
            d["legacy"] = True
        for name, value in (("days", self.expiration_days), ("date", self.expiration_date_ns),
                            ("ncdays", self.noncurrent_days),
                            ("newer", self.newer_noncurrent_versions), ("abort", self.abort_days)):
            if value:
                d[name] = value
        if self.expired_object_delete_marker is not None:
            d["eodm"] = self.expired_object_delete_marker
        return d

    @classmethod
    def _unpack(cls, d: Mapping[str, Any]) -> Rule:
        return cls(
            id=d["id"], enabled=d["on"],
            filter=Filter(d.get("pfx"), {k: v for k, v in d.get("tags", ())}, d.get("gt"),
                          d.get("lt"), d.get("and", False)),
            legacy_prefix=d.get("legacy", False), expiration_days=d.get("days", 0),
            expiration_date_ns=d.get("date", 0), expired_object_delete_marker=d.get("eodm"),
            noncurrent_days=d.get("ncdays", 0), newer_noncurrent_versions=d.get("newer", 0),
            abort_days=d.get("abort", 0))


@dataclasses.dataclass(frozen=True)
class LifecycleConfig:
    rules: tuple[Rule, ...]

    def pack(self) -> bytes:
        """msgpack bytes; the same configuration always packs to the same bytes."""
        return msgpack.packb({"v": FORMAT, "rules": [r._pack() for r in self.rules]})

    @staticmethod
    def unpack(raw: bytes) -> LifecycleConfig:
        return _unpack(bytes(raw))

    @property
    def enabled(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled)


# GET and HEAD ask for the configuration on every request; it changes rarely.
@functools.lru_cache(maxsize=256)
def _unpack(raw: bytes) -> LifecycleConfig:
    d = msgpack.unpackb(raw)
    return LifecycleConfig(tuple(Rule._unpack(r) for r in d["rules"]))


def after_days(start_ns: int, days: int, day_ns: int = DAY_NS) -> int:
    """``start + days``, rounded up to the next day boundary (midnight UTC)."""
    return -(-(start_ns + days * day_ns) // day_ns) * day_ns


def expiration(config: LifecycleConfig, info: Any, day_ns: int = DAY_NS) -> tuple[int, str] | None:
    """(expiry ns, rule id) of a current object version, for ``x-amz-expiration``:
    the earliest of the enabled rules that match it; None when none does.

    ``info`` is an ObjectInfo (key, size, tags, mtime_ns, delete_marker).
    """
    if getattr(info, "delete_marker", False):
        return None
    best: tuple[int, str] | None = None
    for rule in config.enabled:
        if not rule.matches(info.key, info.size, info.tags):
            continue
        expiry = rule.current_expiry(info.mtime_ns, day_ns)
        if expiry is not None and (best is None or expiry < best[0]):
            best = (expiry, rule.id)
    return best


def abort_rule(config: LifecycleConfig, key: str, initiated_ns: int, now_ns: int,
               day_ns: int = DAY_NS) -> str | None:
    """The rule that aborts an upload of ``key`` started at ``initiated_ns`` by now.

    Only the key prefix applies: AWS refuses tag and size filters beside
    AbortIncompleteMultipartUpload (an upload has neither yet).
    """
    for rule in config.enabled:
        prefix = rule.filter.prefix or ""
        if rule.abort_days and key.startswith(prefix) \
                and now_ns >= after_days(initiated_ns, rule.abort_days, day_ns):
            return rule.id
    return None


@dataclasses.dataclass(frozen=True)
class Action:
    kind: str      # expire_current | expire_noncurrent | remove_delete_marker
    info: Any      # the version acted on (ObjectInfo)
    rule_id: str


class KeyWalk:
    """The versions of one key, fed newest first, and what the rules do to them.

    Streaming, so a key with many versions spanning list pages needs no more
    memory than one: :meth:`step` answers for each version as it comes,
    :meth:`finish` for the key's delete marker once all are seen. The caller
    reports a removal that did not happen (object lock) with :meth:`kept`, so a
    delete marker that still hides versions is never removed.
    """

    def __init__(self, config: LifecycleConfig, now_ns: int, day_ns: int = DAY_NS) -> None:
        self.rules, self.now, self.day = config.enabled, now_ns, day_ns
        self.latest: Any = None
        self.newer_mtime = 0       # when the previous (newer) version was written
        self.noncurrent = 0        # noncurrent versions seen so far
        self.left = 0              # noncurrent versions that stay

    def step(self, info: Any) -> Action | None:
        action = self._current(info) if self.latest is None else self._noncurrent(info)
        if self.latest is None:
            self.latest = info
        self.newer_mtime = info.mtime_ns
        return action

    def kept(self) -> None:
        self.left += 1

    def _current(self, info: Any) -> Action | None:
        if info.delete_marker:
            return None
        for rule in self.rules:
            expiry = rule.current_expiry(info.mtime_ns, self.day)
            if expiry is not None and self.now >= expiry \
                    and rule.matches(info.key, info.size, info.tags):
                return Action("expire_current", info, rule.id)
        return None

    def _noncurrent(self, info: Any) -> Action | None:
        # A version became noncurrent when the next newer one was written;
        # NewerNoncurrentVersions counts every newer noncurrent version (markers too).
        newer, since = self.noncurrent, self.newer_mtime
        self.noncurrent += 1
        for rule in self.rules:
            if rule.noncurrent_days and newer >= rule.newer_noncurrent_versions \
                    and self.now >= after_days(since, rule.noncurrent_days, self.day) \
                    and rule.matches(info.key, info.size, info.tags):
                return Action("expire_noncurrent", info, rule.id)
        self.left += 1
        return None

    def finish(self) -> Action | None:
        """Remove the latest version if it is a delete marker with nothing left behind
        it: ExpiredObjectDeleteMarker, or an Expiration by Days the marker has outlived
        (AWS removes such "expired object delete markers" under Days rules too)."""
        marker = self.latest
        if marker is None or not marker.delete_marker or self.left:
            return None
        for rule in self.rules:
            if not rule.matches(marker.key, 0, {}):
                continue
            if rule.expired_object_delete_marker or (
                    rule.expiration_days
                    and self.now >= after_days(marker.mtime_ns, rule.expiration_days, self.day)):
                return Action("remove_delete_marker", marker, rule.id)
        return None


def plan_key(config: LifecycleConfig, versions: Sequence[Any], now_ns: int,
             day_ns: int = DAY_NS) -> list[Action]:
    """Everything the rules do now to one key's versions (newest first), assuming
    every removal succeeds."""
    walk = KeyWalk(config, now_ns, day_ns)
    actions = [a for a in map(walk.step, versions) if a is not None]
    last = walk.finish()
    return actions + ([last] if last else [])

