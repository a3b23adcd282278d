"""Usage records: counted per process, written as running totals of each hour,
summed over processes, read back by span and rolled up; they survive the loss
of disks like all metadata."""

import shutil

import pytest

from storaged import metering
from storaged.healing import heal_all

H = 3600.0
T0 = 1_790_000_000.0 // H * H  # the start of an hour


def test_request_classes():
    put = ["PutObject", "CopyObject", "PostObject", "ListObjectsV2", "ListBuckets",
           "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "PutBucketPolicy"]
    get = ["GetObject", "HeadObject", "HeadBucket", "GetBucketPolicy", "GetObjectAcl"]
    free = ["DeleteObject", "DeleteObjects", "AbortMultipartUpload", "DeleteBucket"]
    assert {metering.request_class(op) for op in put} == {"put"}
    assert {metering.request_class(op) for op in get} == {"get"}
    assert {metering.request_class(op) for op in free} == {"free"}


async def test_hours_long_over_take_no_more_and_leave_memory(open_store):
    store = await open_store(4)
    now = [T0 + 10]
    meter = metering.Meter(store, "w", clock=lambda: now[0])
    meter.count_request("acct", "b", "PutObject", 1, 0)
    await meter.flush()
    now[0] = T0 + 3 * H + 10
    meter.count_request("acct", "b", "PutObject", 1, 0, moment=T0 + 20)  # late: counted now
    await meter.flush()
    assert list(meter._hours) == [metering.hour_of(now[0])]
    rows = await metering.read_usage(store, T0, T0 + 4 * H)
    assert [(r["hour"], r["requests_put"]) for r in rows] == [
        (metering.hour_of(T0), 1), (metering.hour_of(now[0]), 1)]


def test_moments_and_hours():
    assert metering.hour_of(T0 + 59 * 60) == metering.hour_of(T0)
    assert metering.hour_of(T0 + H) != metering.hour_of(T0)
    assert metering.parse_moment("2026-11-01") == metering.parse_moment("2026-11-01T00:00:00Z")
    assert metering.parse_moment("2026-11-01T01:00:00+01:00") == metering.parse_moment(
        "2026-11-01T00:00:00Z")


async def test_processes_are_summed_and_rewrites_never_count_twice(open_store):
    store = await open_store(4)
    clock = lambda: T0 + H + 100  # noqa: E731  (in the second hour)
    a, b = metering.Meter(store, "w1", clock=clock), metering.Meter(store, "w2", clock=clock)
    a.count_request("acct", "photos", "PutObject", 1000, 0, moment=T0 + 10)
    await a.flush()
    a.count_request("acct", "photos", "GetObject", 0, 400, moment=T0 + 20)
    await a.flush()  # the same record again, with running totals
    await a.flush()  # nothing new: nothing written, nothing added
    b.count_request("acct", "photos", "GetObject", 0, 600, moment=T0 + 30)
    b.count_request("acct", "photos", "DeleteObject", 0, 0, moment=T0 + 40)
    b.count_request("other", "docs", "ListObjectsV2", 0, 300, moment=T0 + H + 5)
    b.add("acct", "bucket", "photos", {"byte_hours": 1.5, "object_hours": 2}, moment=T0 + 50)
    b.add("acct", "volume", "vm-disk", {"provisioned_gb_hours": 4.0}, moment=T0 + 60)
    await b.flush()
    rows = await metering.read_usage(store, T0, T0 + 2 * H)
    photos = next(r for r in rows if r["name"] == "photos")
    assert (photos["requests_put"], photos["requests_get"], photos["requests_free"]) == (1, 2, 1)
    assert (photos["bytes_in"], photos["bytes_out"], photos["byte_hours"]) == (1000, 1000, 1.5)
    assert photos["hour"] == metering.hour_of(T0)
    # spans select hours: only the second hour, then only the first
    assert [r["name"] for r in await metering.read_usage(store, T0 + H, T0 + 2 * H)] == ["docs"]
    assert {r["name"] for r in await metering.read_usage(store, T0, T0 + H)} == {
        "photos", "vm-disk"}
    assert await metering.read_usage(store, T0 + 5 * H, T0 + 6 * H) == []
    by_account = metering.summarize(rows)
    assert [(r["account"], r["requests_get"]) for r in by_account] == [("acct", 2), ("other", 0)]
    assert [r["volume"] for r in metering.summarize(rows, "volume")] == ["vm-disk"]
    assert [(r["account"], r["bucket"], r["requests_put"], r["requests_get"])
            for r in metering.summarize(rows, "bucket")] == [("acct", "photos", 1, 2),
                                                             ("other", "docs", 1, 0)]
    days = metering.summarize(rows, "day")
    assert {r["day"] for r in days} == {metering.hour_of(T0)[:10], metering.hour_of(T0 + H)[:10]}


async def test_a_failed_flush_is_written_by_the_next(open_store, monkeypatch):
    store = await open_store(4)
    meter = metering.Meter(store, "w", clock=lambda: T0)
    meter.count_request("acct", "b", "PutObject", 5, 0)
    real = metering._put

    async def broken(*args):
        raise OSError("no quorum")
    monkeypatch.setattr(metering, "_put", broken)
    with pytest.raises(OSError):
        await meter.flush()
    monkeypatch.setattr(metering, "_put", real)
    await meter.flush()
    [row] = await metering.read_usage(store, T0, T0 + H)
    assert row["requests_put"] == 1 and row["bytes_in"] == 5


async def test_records_survive_losing_two_disks(open_store, roots):
    dirs = roots(4)
    store = await open_store(dirs=dirs)
    meter = metering.Meter(store, "w", clock=lambda: T0)
    meter.count_request("acct", "b", "PutObject", 7, 0)
    await meter.flush()
    await store.close()
    for d in dirs[:2]:
        shutil.rmtree(d)
    store = await open_store(dirs=dirs)
    await heal_all(store)
    [row] = await metering.read_usage(store, T0, T0 + H)
    assert row["bytes_in"] == 7
