"""Object lock rules (storaged.object_lock): the bucket default and the table of what
a lock allows — delete, shorten, extend, remove, change mode — by mode, bypass and
legal hold."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from storaged.errors import ObjectLocked
from storaged.object_lock import (
    COMPLIANCE,
    DAY_NS,
    GOVERNANCE,
    LockConfig,
    check_delete,
    check_retention_change,
    is_locked,
)

NOW = 1_700_000_000 * 10**9
LATER = NOW + 10 * DAY_NS
PAST = NOW - DAY_NS


def version(mode="", until=0, hold=False):
    return SimpleNamespace(lock_mode=mode, lock_until_ns=until, legal_hold=hold)


# --- the bucket configuration ---------------------------------------------------------

@pytest.mark.parametrize("config", [
    LockConfig(True), LockConfig(True, GOVERNANCE, days=3), LockConfig(True, COMPLIANCE, years=2),
    LockConfig(False),
])
def test_lock_config_roundtrips(config):
    assert LockConfig.unpack(config.pack()) == config


def test_lock_config_unpack_of_nothing_is_disabled():
    assert LockConfig.unpack(None) == LockConfig(False)
    assert LockConfig.unpack(b"") == LockConfig(False)


def test_default_retention():
    assert LockConfig(True).default_retention(NOW) == ("", 0)
    assert LockConfig(True, GOVERNANCE, days=1).default_retention(NOW) == (GOVERNANCE, NOW + DAY_NS)
    assert LockConfig(True, COMPLIANCE, years=1).default_retention(NOW) == (COMPLIANCE, NOW + 365 * DAY_NS)
    assert LockConfig(True, COMPLIANCE, years=2).default_retention(NOW) == (COMPLIANCE, NOW + 730 * DAY_NS)
    assert LockConfig(False, GOVERNANCE, days=1).default_retention(NOW) == ("", 0)


# --- is_locked and check_delete --------------------------------------------------------

# (mode, until, legal hold, bypass) -> may the version be deleted?
DELETE_TABLE = [
    ("", 0, False, False, True),
    ("", 0, False, True, True),
    ("", 0, True, False, False),
    ("", 0, True, True, False),              # bypass never lifts a legal hold
    (GOVERNANCE, LATER, False, False, False),
    (GOVERNANCE, LATER, False, True, True),
    (GOVERNANCE, LATER, True, True, False),
    (GOVERNANCE, PAST, False, False, True),  # expired
    (GOVERNANCE, NOW, False, False, True),   # retain-until reached
    (GOVERNANCE, PAST, True, True, False),
    (COMPLIANCE, LATER, False, False, False),
    (COMPLIANCE, LATER, False, True, False),  # bypass does not apply to COMPLIANCE
    (COMPLIANCE, PAST, False, False, True),
    (COMPLIANCE, PAST, False, True, True),
    (COMPLIANCE, PAST, True, False, False),
]


@pytest.mark.parametrize("mode,until,hold,bypass,allowed", DELETE_TABLE)
def test_check_delete(mode, until, hold, bypass, allowed):
    info = version(mode, until, hold)
    if allowed:
        check_delete(info, NOW, bypass)
    else:
        with pytest.raises(ObjectLocked):
            check_delete(info, NOW, bypass)


@pytest.mark.parametrize("mode,until,hold,locked", [
    ("", 0, False, False), ("", 0, True, True), (GOVERNANCE, LATER, False, True),
    (COMPLIANCE, LATER, False, True), (COMPLIANCE, PAST, False, False), (GOVERNANCE, PAST, True, True),
])
def test_is_locked(mode, until, hold, locked):
    assert is_locked(version(mode, until, hold), NOW) is locked


def test_objects_without_lock_fields_are_unlocked():
    bare = SimpleNamespace()
    assert not is_locked(bare, NOW)
    check_delete(bare, NOW, False)
    check_retention_change(bare, COMPLIANCE, LATER, NOW, False)


# --- check_retention_change ------------------------------------------------------------

LONGER = LATER + DAY_NS
SHORTER = LATER - DAY_NS

# (current mode, current until, new mode, new until, bypass) -> allowed?
RETENTION_TABLE = [
    # nothing yet, or expired: anything goes
    ("", 0, GOVERNANCE, LATER, False, True),
    ("", 0, COMPLIANCE, LATER, False, True),
    (COMPLIANCE, PAST, GOVERNANCE, LATER, False, True),
    (COMPLIANCE, PAST, "", 0, False, True),
    (GOVERNANCE, PAST, COMPLIANCE, NOW + DAY_NS, False, True),
    # GOVERNANCE, active
    (GOVERNANCE, LATER, GOVERNANCE, LONGER, False, True),     # extend
    (GOVERNANCE, LATER, GOVERNANCE, LATER, False, True),      # same date
    (GOVERNANCE, LATER, GOVERNANCE, SHORTER, False, False),   # shorten
    (GOVERNANCE, LATER, GOVERNANCE, SHORTER, True, True),
    (GOVERNANCE, LATER, "", 0, False, False),                 # remove
    (GOVERNANCE, LATER, "", 0, True, True),
    (GOVERNANCE, LATER, COMPLIANCE, LONGER, False, False),    # change mode
    (GOVERNANCE, LATER, COMPLIANCE, LONGER, True, True),
    (GOVERNANCE, LATER, COMPLIANCE, SHORTER, True, True),
    # COMPLIANCE, active: bypass changes nothing
    (COMPLIANCE, LATER, COMPLIANCE, LONGER, False, True),     # extend
    (COMPLIANCE, LATER, COMPLIANCE, LONGER, True, True),
    (COMPLIANCE, LATER, COMPLIANCE, LATER, False, True),
    (COMPLIANCE, LATER, COMPLIANCE, SHORTER, False, False),   # shorten
    (COMPLIANCE, LATER, COMPLIANCE, SHORTER, True, False),
    (COMPLIANCE, LATER, "", 0, False, False),                 # remove
    (COMPLIANCE, LATER, "", 0, True, False),
    (COMPLIANCE, LATER, GOVERNANCE, LONGER, False, False),    # change mode
    (COMPLIANCE, LATER, GOVERNANCE, LONGER, True, False),
]


@pytest.mark.parametrize("mode,until,new_mode,new_until,bypass,allowed", RETENTION_TABLE)
def test_check_retention_change(mode, until, new_mode, new_until, bypass, allowed):
    info = version(mode, until)
    if allowed:
        check_retention_change(info, new_mode, new_until, NOW, bypass)
    else:
        with pytest.raises(ObjectLocked):
            check_retention_change(info, new_mode, new_until, NOW, bypass)


@pytest.mark.parametrize("hold", [False, True])
def test_legal_hold_does_not_affect_retention_changes(hold):
    # A legal hold is independent of the retention: it neither blocks extending nor
    # allows shortening.
    check_retention_change(version(GOVERNANCE, LATER, hold), GOVERNANCE, LONGER, NOW, False)
    with pytest.raises(ObjectLocked):
        check_retention_change(version(COMPLIANCE, LATER, hold), COMPLIANCE, SHORTER, NOW, True)
