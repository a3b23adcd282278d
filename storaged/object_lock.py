"""Object lock rules: a bucket's default retention, and what a lock allows.

Pure functions over an object version's lock fields (``lock_mode``,
``lock_until_ns``, ``legal_hold``); the store calls them before deleting a
version or changing its retention, and raises :class:`ObjectLocked` when S3
would answer 403. The rules are S3's:

- a legal hold forbids deleting the version, whatever its retention and
  whatever bypass; it is set and cleared freely;
- COMPLIANCE until a future date forbids deleting the version, shortening or
  removing its retention, and changing its mode, for everyone;
- GOVERNANCE until a future date forbids the same unless the request bypasses
  governance retention (``x-amz-bypass-governance-retention: true``);
- extending a retention in the same mode is always allowed, and an expired
  retention protects nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

from .errors import ObjectLocked

GOVERNANCE = "GOVERNANCE"
COMPLIANCE = "COMPLIANCE"
MODES = (GOVERNANCE, COMPLIANCE)
DAY_NS = 86400 * 10**9
YEAR_DAYS = 365  # S3 counts a year as 365 days


@dataclasses.dataclass(frozen=True)
class LockConfig:
    """A bucket's object lock configuration (stored as the bucket config "lock")."""

    enabled: bool
    mode: str = ""   # default retention mode, "" for no default rule
    days: int = 0    # default retention period: days or years, not both
    years: int = 0

    def pack(self) -> bytes:
        return msgpack.packb({"e": self.enabled, "m": self.mode, "d": self.days, "y": self.years})

    @classmethod
    def unpack(cls, raw: bytes | None) -> LockConfig:
        if not raw:
            return cls(False)
        d = msgpack.unpackb(raw)
        return cls(bool(d.get("e")), d.get("m", ""), int(d.get("d", 0)), int(d.get("y", 0)))

    @property
    def period_days(self) -> int:
        return self.days or self.years * YEAR_DAYS

    def default_retention(self, now_ns: int) -> tuple[str, int]:
        """(mode, retain-until ns) a new version gets; ("", 0) without a default rule."""
        if not self.enabled or not self.mode or self.period_days <= 0:
            return "", 0
        return self.mode, now_ns + self.period_days * DAY_NS


def _mode(info: Any) -> str:
    return getattr(info, "lock_mode", "") or ""


def _until(info: Any) -> int:
    return int(getattr(info, "lock_until_ns", 0) or 0)


def retention_active(info: Any, now_ns: int) -> bool:
    """Whether the version's retention still protects it (a mode and a future date)."""
    return _mode(info) in MODES and _until(info) > now_ns


def is_locked(info: Any, now_ns: int) -> bool:
    """Whether the version is protected at all (legal hold or active retention)."""
    return bool(getattr(info, "legal_hold", False)) or retention_active(info, now_ns)


def check_delete(info: Any, now_ns: int, bypass_governance: bool = False) -> None:
    """Raise ObjectLocked if the version may not be deleted (or overwritten in place)."""
    if getattr(info, "legal_hold", False):
        raise ObjectLocked("object version is under legal hold")
    if not retention_active(info, now_ns):
        return
    if _mode(info) == COMPLIANCE:
        raise ObjectLocked("object version is under COMPLIANCE retention")
    if not bypass_governance:
        raise ObjectLocked("object version is under GOVERNANCE retention")


def check_retention_change(info: Any, mode: str, until_ns: int, now_ns: int,
                           bypass_governance: bool = False) -> None:
    """Raise ObjectLocked if the version's retention may not become (mode, until_ns).

    ``("", 0)`` removes the retention. Extending in the same mode is always allowed.
    """
    if not retention_active(info, now_ns):
        return
    current, current_until = _mode(info), _until(info)
    if mode == current and until_ns >= current_until:
        return  # same mode, same or later date: extending
    if current == GOVERNANCE and bypass_governance:
        return
    if not mode:
        raise ObjectLocked(f"cannot remove an active {current} retention")
    if mode != current:
        raise ObjectLocked(f"cannot change an active {current} retention to {mode}")
    raise ObjectLocked(f"cannot shorten an active {current} retention")
