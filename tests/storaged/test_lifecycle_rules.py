"""Lifecycle rules: matching, packing, expiry rounding and the per-key decisions."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from storaged.lifecycle_rules import (
    DAY_NS,
    Filter,
    KeyWalk,
    LifecycleConfig,
    Rule,
    abort_rule,
    after_days,
    expiration,
    plan_key,
)

S = 10**9


@dataclasses.dataclass
class V:
    """The ObjectInfo fields the rules read."""

    key: str
    mtime_ns: int
    size: int = 10
    tags: dict = dataclasses.field(default_factory=dict)
    delete_marker: bool = False
    version_id: str = ""

    @property
    def version(self) -> str:
        return f"v{self.mtime_ns}"


def ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * S


def config(*rules: Rule) -> LifecycleConfig:
    return LifecycleConfig(tuple(rules))


def test_filter_matching_combines_every_condition():
    f = Filter(prefix="logs/", tags={"a": "1", "b": "2"}, size_gt=5, size_lt=100, conjunction=True)
    assert f.matches("logs/x", 50, {"a": "1", "b": "2", "c": "3"})
    assert not f.matches("data/x", 50, {"a": "1", "b": "2"})
    assert not f.matches("logs/x", 50, {"a": "1"})
    assert not f.matches("logs/x", 50, {"a": "1", "b": "3"})
    assert not f.matches("logs/x", 5, {"a": "1", "b": "2"})      # strictly greater
    assert not f.matches("logs/x", 100, {"a": "1", "b": "2"})    # strictly less
    assert Filter().matches("anything", 0, {})
    assert Filter(prefix="").matches("anything", 0, {})
    assert Rule("r", filter=Filter(tags={"k": "v"})).matches("x", 1, {"k": "v"})


def test_pack_round_trips_and_is_stable():
    rules = (
        Rule("a", True, Filter("p/", {"z": "1", "a": "2"}, 1, 9, True), expiration_days=3,
             noncurrent_days=2, newer_noncurrent_versions=5, abort_days=7),
        Rule("b", False, Filter(prefix="old/"), legacy_prefix=True,
             expiration_date_ns=ns("2030-01-01")),
        Rule("c", True, Filter(), expired_object_delete_marker=False),
    )
    packed = LifecycleConfig(rules).pack()
    assert LifecycleConfig.unpack(packed) == LifecycleConfig(rules)
    same = (dataclasses.replace(rules[0], filter=Filter("p/", {"a": "2", "z": "1"}, 1, 9, True)),
            ) + rules[1:]
    assert LifecycleConfig(same).pack() == packed      # tag order does not change the bytes


def test_days_round_up_to_the_next_midnight_utc():
    written = ns("2012-12-20T10:30:00")
    rule = Rule("rule", expiration_days=2)
    assert expiration(config(rule), V("k", written), DAY_NS) == (ns("2012-12-23"), "rule")
    # exactly at midnight: already on the boundary
    assert after_days(ns("2012-12-20"), 2) == ns("2012-12-22")


def test_shortened_days_round_to_multiples_of_the_day():
    day = 10 * S
    assert after_days(123 * S, 1, day) == 140 * S
    assert after_days(130 * S, 1, day) == 140 * S
    assert expiration(config(Rule("r", expiration_days=3)), V("k", 5 * S), day) == (40 * S, "r")


def test_expiration_picks_the_earliest_matching_enabled_rule():
    date = ns("2013-01-01")
    cfg = config(Rule("late", expiration_days=30),
                 Rule("date", expiration_date_ns=date),
                 Rule("off", enabled=False, expiration_days=1),
                 Rule("other", filter=Filter(prefix="x/"), expiration_days=1),
                 Rule("abort-only", abort_days=1))
    assert expiration(cfg, V("k", ns("2012-12-20T10:00:00"))) == (date, "date")
    assert expiration(cfg, V("x/k", ns("2012-12-20T10:00:00")))[1] == "other"
    assert expiration(cfg, V("k", 0, delete_marker=True)) is None
    assert expiration(config(Rule("a", abort_days=1)), V("k", 0)) is None
    assert expiration(config(Rule("t", filter=Filter(tags={"a": "b"}), expiration_days=1)),
                      V("k", 0)) is None


def test_current_version_expires_once_its_day_comes():
    day = 100
    cfg = config(Rule("r", expiration_days=2))
    v = V("k", 150)                    # expires at after_days(150, 2) = 400
    assert plan_key(cfg, [v], 399, day) == []
    [action] = plan_key(cfg, [v], 400, day)
    assert (action.kind, action.info, action.rule_id) == ("expire_current", v, "r")
    # a latest delete marker is not "expired" again
    assert plan_key(cfg, [V("k", 0, delete_marker=True), V("k", -50)], 10**6, day) == []


def test_noncurrent_days_count_from_when_the_next_version_was_written():
    day = 100
    cfg = config(Rule("nc", noncurrent_days=1))
    versions = [V("k", 1000), V("k", 550), V("k", 100)]
    # v550 noncurrent since 1000 -> after_days(1000,1)=1100; v100 since 550 -> 700
    kinds = lambda now: [(a.kind, a.info.mtime_ns) for a in plan_key(cfg, versions, now, day)]  # noqa: E731
    assert kinds(699) == []
    assert kinds(700) == [("expire_noncurrent", 100)]
    assert kinds(1100) == [("expire_noncurrent", 550), ("expire_noncurrent", 100)]


def test_newer_noncurrent_versions_keeps_the_newest_noncurrent_ones():
    day = 1
    cfg = config(Rule("keep2", noncurrent_days=1, newer_noncurrent_versions=2))
    versions = [V("k", t) for t in (100, 90, 80, 70, 60)]
    actions = plan_key(cfg, versions, 10**6, day)
    assert [a.info.mtime_ns for a in actions] == [70, 60]
    # ... and only once they are old enough, counted from when each became noncurrent
    assert [a.info.mtime_ns for a in plan_key(cfg, versions, 80, day)] == [60]


def test_noncurrent_filters_apply_to_each_version():
    cfg = config(Rule("big", filter=Filter(size_gt=100), noncurrent_days=1))
    versions = [V("k", 10), V("k", 5, size=500), V("k", 1, size=50)]
    assert [a.info.mtime_ns for a in plan_key(cfg, versions, 10**6, 1)] == [5]


def test_expired_object_delete_marker_removed_only_when_alone():
    cfg = config(Rule("m", expired_object_delete_marker=True))
    marker = V("k", 100, delete_marker=True)
    [action] = plan_key(cfg, [marker], 101, DAY_NS)
    assert (action.kind, action.info) == ("remove_delete_marker", marker)
    assert plan_key(cfg, [marker, V("k", 50)], 10**20, DAY_NS) == []
    assert plan_key(config(Rule("m", expired_object_delete_marker=False)), [marker], 10**20) == []


def test_marker_removed_in_the_same_pass_as_its_last_noncurrent_version():
    cfg = config(Rule("nc", noncurrent_days=1), Rule("m", expired_object_delete_marker=True))
    marker, old = V("k", 100, delete_marker=True), V("k", 50)
    assert [a.kind for a in plan_key(cfg, [marker, old], 10**6, 10)] == [
        "expire_noncurrent", "remove_delete_marker"]
    # but not when that version could not be removed (object lock)
    walk = KeyWalk(cfg, 10**6, 10)
    assert walk.step(marker) is None
    assert walk.step(old).kind == "expire_noncurrent"
    walk.kept()
    assert walk.finish() is None


def test_days_rule_also_removes_an_expired_object_delete_marker():
    cfg = config(Rule("d", expiration_days=1))
    marker = V("k", 100, delete_marker=True)
    assert plan_key(cfg, [marker], after_days(100, 1, 10) - 1, 10) == []
    assert [a.kind for a in plan_key(cfg, [marker], after_days(100, 1, 10), 10)] == [
        "remove_delete_marker"]


def test_abort_rule_uses_the_prefix_and_the_initiation_time():
    cfg = config(Rule("off", enabled=False, abort_days=1),
                 Rule("tmp", filter=Filter(prefix="tmp/"), abort_days=2))
    assert abort_rule(cfg, "tmp/a", 150, after_days(150, 2, 100), 100) == "tmp"
    assert abort_rule(cfg, "tmp/a", 150, after_days(150, 2, 100) - 1, 100) is None
    assert abort_rule(cfg, "keep/a", 0, 10**9, 100) is None
