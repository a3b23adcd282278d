"""The lifecycle scanner against an in-memory store: pages, object lock, every action."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import types

import pytest

from storaged.errors import DeleteMarker, NoSuchKey, NoSuchUpload, NoSuchVersion, ObjectLocked
from storaged.lifecycle import LifecycleScanner, run_lifecycle
from storaged.lifecycle_rules import Filter, LifecycleConfig, Rule

DAY = 100          # a day of 100 ns keeps the arithmetic readable
_ids = itertools.count(1)


@dataclasses.dataclass
class Info:
    bucket: str
    key: str
    mtime_ns: int
    size: int = 10
    tags: dict = dataclasses.field(default_factory=dict)
    delete_marker: bool = False
    versioned: bool = True
    locked: bool = False
    version_id: str = dataclasses.field(default_factory=lambda: f"{next(_ids):032x}")

    @property
    def version(self) -> str:
        return self.version_id if self.versioned else "null"


class FakeStore:
    """Just what run_lifecycle calls, with real paging and object lock semantics."""

    def __init__(self, versioning: str = "Enabled", clock: int = 10**6) -> None:
        self.mode = versioning
        self.clock = clock
        self.config: dict[str, bytes] = {}
        self.keys: dict[str, list[Info]] = {}          # newest first
        self.uploads: list[types.SimpleNamespace] = []
        self.pages: list[int] = []                     # max_keys of every listing call
        self.upload_pages: list[int] = []

    # setup helpers
    def put(self, key: str, *mtimes: int, **kw) -> list[Info]:
        versions = [Info("b", key, t, versioned=self.mode != "", **kw) for t in mtimes]
        self._add(key, versions)
        return versions

    def _add(self, key: str, versions: list[Info]) -> None:
        self.keys[key] = sorted(self.keys.get(key, []) + versions, key=lambda v: -v.mtime_ns)

    def marker(self, key: str, mtime: int) -> Info:
        info = Info("b", key, mtime, size=0, delete_marker=True)
        self._add(key, [info])
        return info

    def left(self, key: str) -> list[tuple[int, bool]]:
        return [(v.mtime_ns, v.delete_marker) for v in self.keys.get(key, [])]

    # the store API
    async def list_buckets(self):
        return [types.SimpleNamespace(name="b", created_ns=0)]

    async def bucket_config(self, bucket: str, kind: str) -> bytes | None:
        return self.config.get(kind)

    async def versioning(self, bucket: str) -> str:
        return self.mode

    async def list_versions(self, bucket, prefix="", delimiter="", key_marker="", version_marker="",
                      max_keys=1000):
        self.pages.append(max_keys)
        flat = [v for k in sorted(self.keys) for v in self.keys[k] if k.startswith(prefix)]
        start = 0
        if key_marker:
            # After the marker version; a marker version that is gone resumes after the
            # whole key (as S3 does for a key marker alone, and the engine for "null").
            at = [i for i, v in enumerate(flat) if (v.key, v.version) == (key_marker, version_marker)]
            start = at[0] + 1 if at and version_marker else next(
                (i for i, v in enumerate(flat) if v.key > key_marker), len(flat))
        chunk = flat[start:start + max_keys]
        truncated = start + max_keys < len(flat)
        last = chunk[-1] if chunk else None
        return types.SimpleNamespace(
            entries=[types.SimpleNamespace(info=v, is_latest=self.keys[v.key][0] is v) for v in chunk],
            prefixes=[], truncated=truncated,
            next_key_marker=last.key if truncated else "",
            next_version_marker=last.version if truncated else "")

    async def head_object(self, bucket, key, version_id=None):
        versions = self.keys.get(key)
        if not versions:
            raise NoSuchKey(bucket, key)
        if versions[0].delete_marker:
            raise DeleteMarker(bucket, key, versions[0].version, False)
        return versions[0]

    async def delete_object(self, bucket, key, version_id=None, *, bypass_governance=False,
                            expect=None):
        assert not bypass_governance, "lifecycle must never bypass object lock"
        versions = self.keys.get(key, [])
        if expect is not None and (not versions or versions[0].delete_marker or (
                versions[0].mtime_ns, versions[0].version_id) != expect):
            return
        if version_id is None:
            if self.mode == "":
                versions.pop(0)
            else:
                if self.mode == "Suspended":
                    versions[:] = [v for v in versions if v.versioned]
                self.clock += 1
                versions.insert(0, Info(bucket, key, self.clock, size=0, delete_marker=True,
                                        versioned=self.mode == "Enabled"))
            return
        for i, v in enumerate(versions):
            if v.version == version_id:
                if v.locked:
                    raise ObjectLocked("locked")
                del versions[i]
                return
        raise NoSuchVersion(bucket, key, version_id)

    async def list_uploads(self, bucket, prefix="", delimiter="", key_marker="", upload_id_marker="",
                     max_uploads=1000):
        self.upload_pages.append(max_uploads)
        ordered = sorted(self.uploads, key=lambda u: (u.key, u.upload_id))
        rest = [u for u in ordered if (u.key, u.upload_id) > (key_marker, upload_id_marker)]
        chunk = rest[:max_uploads]
        truncated = len(rest) > max_uploads
        return types.SimpleNamespace(
            uploads=chunk, prefixes=[], truncated=truncated,
            next_key=chunk[-1].key if truncated else "",
            next_upload_id=chunk[-1].upload_id if truncated else "")

    async def abort_upload(self, bucket, key, upload_id):
        for u in self.uploads:
            if (u.key, u.upload_id) == (key, upload_id):
                self.uploads.remove(u)
                return
        raise NoSuchUpload(upload_id)


def configure(store: FakeStore, *rules: Rule) -> None:
    store.config["lifecycle"] = LifecycleConfig(tuple(rules)).pack()


async def run(store: FakeStore, now: int = 10**6, batch: int = 1000):
    return await run_lifecycle(store, DAY, now_ns=now, batch=batch)


async def test_the_fake_pages_like_the_store():
    store = FakeStore()
    for i in range(5):
        store.put(f"k{i}", 30, 20, 10)
    seen, km, vm = [], "", ""
    while True:
        page = await store.list_versions("b", key_marker=km, version_marker=vm, max_keys=4)
        seen += [(e.info.key, e.info.mtime_ns) for e in page.entries]
        if not page.truncated:
            break
        km, vm = page.next_key_marker, page.next_version_marker
    assert seen == [(f"k{i}", t) for i in range(5) for t in (30, 20, 10)]


async def test_no_configuration_no_action():
    store = FakeStore()
    store.put("k", 10, 5)
    report = await run(store)
    assert report.buckets == 0 and store.left("k") == [(10, False), (5, False)]
    assert store.pages == []


async def test_every_page_is_read_and_keys_split_across_pages_are_judged_whole():
    store = FakeStore()
    configure(store, Rule("nc", noncurrent_days=1, newer_noncurrent_versions=1))
    for i in range(25):
        store.put(f"k{i:02}", 30, 20, 10)          # current, kept noncurrent, expired noncurrent
    report = await run(store, batch=4)
    assert report.expired_noncurrent == 25
    for i in range(25):
        assert store.left(f"k{i:02}") == [(30, False), (20, False)]
    assert len(store.pages) > 10 and set(store.pages) == {4}     # bounded pages, all of them


async def test_a_locked_version_is_skipped_and_counted_never_deleted():
    store = FakeStore()
    configure(store, Rule("nc", noncurrent_days=1), Rule("m", expired_object_delete_marker=True))
    store.put("a", 30)
    store.put("a", 20, locked=True)
    store.put("a", 10)
    store.marker("gone", 50)
    store.put("gone", 40, locked=True)
    report = await run(store, batch=2)
    assert store.left("a") == [(30, False), (20, False)]
    assert report.skipped_locked == 2 and report.expired_noncurrent == 1
    # the marker still hides a locked version: it stays
    assert store.left("gone") == [(50, True), (40, False)]
    assert report.delete_markers_removed == 0


async def test_a_lone_delete_marker_goes_with_its_last_version():
    store = FakeStore()
    configure(store, Rule("nc", noncurrent_days=1), Rule("m", expired_object_delete_marker=True))
    store.marker("x", 50)
    store.put("x", 40, 30)
    store.marker("y", 70)
    report = await run(store, batch=1)
    assert store.keys["x"] == [] and store.keys["y"] == []
    assert (report.expired_noncurrent, report.delete_markers_removed) == (2, 2)


async def test_current_expiration_deletes_in_an_unversioned_bucket():
    store = FakeStore(versioning="")
    configure(store, Rule("old", filter=Filter(prefix="tmp/"), expiration_days=2))
    store.put("tmp/a", 150)        # expires at 400
    store.put("tmp/b", 350)        # at 600
    store.put("keep", 0)
    report = await run(store, now=400)
    assert store.left("tmp/a") == [] and store.left("tmp/b") == [(350, False)]
    assert store.left("keep") == [(0, False)] and report.expired_current == 1


async def test_current_expiration_adds_a_delete_marker_when_versioned():
    store = FakeStore(versioning="Enabled", clock=1000)
    configure(store, Rule("old", expiration_days=1))
    store.put("k", 10)
    report = await run(store, now=1000)
    assert store.left("k") == [(1001, True), (10, False)] and report.expired_current == 1


async def test_tag_and_size_filters_select_versions():
    store = FakeStore(versioning="")
    configure(store, Rule("t", filter=Filter(tags={"tmp": "1"}, size_gt=5, conjunction=True),
                          expiration_days=1))
    store.put("tagged", 10, tags={"tmp": "1"})
    store.put("small", 10, size=3, tags={"tmp": "1"})
    store.put("plain", 10)
    await run(store)
    assert sorted(k for k, v in store.keys.items() if v) == ["plain", "small"]


async def test_disabled_rules_do_nothing():
    store = FakeStore(versioning="")
    configure(store, Rule("off", enabled=False, expiration_days=1))
    store.put("k", 0)
    report = await run(store)
    assert store.left("k") == [(0, False)] and report.buckets == 0


async def test_incomplete_uploads_are_aborted_page_by_page():
    store = FakeStore()
    configure(store, Rule("mpu", filter=Filter(prefix="up/"), abort_days=1))
    store.uploads = [types.SimpleNamespace(key=f"up/{i}", upload_id=f"u{i}", initiated_ns=i * 10)
                     for i in range(10)]
    store.uploads.append(types.SimpleNamespace(key="other", upload_id="o", initiated_ns=0))
    store.uploads.append(types.SimpleNamespace(key="up/new", upload_id="n", initiated_ns=950))
    report = await run(store, now=1000, batch=3)
    assert report.uploads_aborted == 10
    assert sorted(u.key for u in store.uploads) == ["other", "up/new"]
    assert len(store.upload_pages) >= 4 and set(store.upload_pages) == {3}


async def test_the_scan_yields_to_the_event_loop_between_pages():
    store = FakeStore()
    configure(store, Rule("nc", noncurrent_days=1))
    for i in range(50):
        store.put(f"k{i:02}", 20, 10)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    before = ticks
    await run(store, batch=5)
    task.cancel()
    assert ticks - before >= 10


async def test_counts_reach_prometheus():
    prometheus = pytest.importorskip("prometheus_client")
    store = FakeStore(versioning="")
    configure(store, Rule("old", expiration_days=1))
    store.put("k", 0)

    def value():
        return prometheus.REGISTRY.get_sample_value("basalt_lifecycle_actions_total",
                                                    {"action": "expire_current"}) or 0

    before = value()
    await run(store)
    assert value() == before + 1


async def test_scanner_runs_in_the_background_until_stopped():
    store = FakeStore(versioning="")
    store.lifecycle_day_ns = 4 * 10**7            # a 40 ms day: a pass every 10 ms
    configure(store, Rule("old", expiration_days=1))
    store.put("k", 0)
    scanner = LifecycleScanner(store)
    assert scanner.interval == pytest.approx(0.01)
    assert LifecycleScanner(store, day_ns=86400 * 10**9).interval == 3600
    scanner.start()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if scanner.last is not None:
            break
    await scanner.stop()
    assert scanner.last is not None and scanner.last.expired_current == 1
    assert store.left("k") == []


async def test_the_scanner_runs_only_where_the_store_leads_the_job():
    store = FakeStore(versioning="")
    store.lifecycle_day_ns = 4 * 10**7
    configure(store, Rule("old", expiration_days=1))
    store.put("k", 0)
    asked = []
    store.leads = lambda job: asked.append(job) or False   # another node leads
    scanner = LifecycleScanner(store)
    scanner.start()
    await asyncio.sleep(0.1)
    await scanner.stop()
    assert scanner.last is None and len(store.left("k")) == 1
    assert set(asked) == {"lifecycle"}
