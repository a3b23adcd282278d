"""Usage metering as an operator reads it: requests, bytes and byte-hours of a
real server's buckets and volumes reach `basalt usage` within the flush
interval, per account, per bucket, per volume and per day, as a table, JSON
and CSV; another account's buckets are metered to it."""

from __future__ import annotations

import csv
import io
import json
import time
import urllib.request

import boto3
import pytest

from tests.e2e.conftest import start_server, stop_server

FLUSH = "1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(str(tmp_path_factory.mktemp("usage")),
                       extra=("--usage-flush-seconds", FLUSH))
    yield srv
    stop_server(srv)


def usage(server, *args: str) -> list[dict]:
    return json.loads(server.cli("usage", "--json", *args).stdout)


def wait_for(server, args: tuple, ready) -> list[dict]:
    deadline = time.monotonic() + 30
    while True:
        rows = usage(server, *args)
        if ready(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def test_requests_bytes_and_byte_hours_per_bucket(server):
    s3 = server.client()
    s3.create_bucket(Bucket="metered")
    for i in range(5):
        s3.put_object(Bucket="metered", Key=f"k{i}", Body=b"x" * 10_000)
    for i in range(3):
        assert s3.get_object(Bucket="metered", Key=f"k{i}")["Body"].read() == b"x" * 10_000
    s3.head_object(Bucket="metered", Key="k0")
    s3.list_objects_v2(Bucket="metered")
    s3.delete_object(Bucket="metered", Key="k4")

    def ready(rows):
        row = next((r for r in rows if r.get("bucket") == "metered"), None)
        return row is not None and row["requests_get"] >= 4 and row["byte_hours"] > 0 \
            and row["requests_free"] >= 1

    rows = wait_for(server, ("--by", "bucket"), ready)
    row = next(r for r in rows if r["bucket"] == "metered")
    assert row["account"] == "000000000000" and row["account_name"] == "root"
    assert row["requests_put"] == 5 + 1 + 1  # PUTs, the LIST and CreateBucket
    assert row["requests_get"] == 4 and row["requests_free"] == 1
    assert row["bytes_in"] == 50_000 and row["bytes_out"] == 30_000
    assert row["byte_hours"] > 0 and row["object_hours"] > 0
    total = usage(server)  # per account (the default)
    assert [r["account_name"] for r in total] == ["root"]
    assert total[0]["bytes_in"] >= 50_000
    day = usage(server, "--by", "day")
    assert day and day[0]["day"] == time.strftime("%Y-%m-%d", time.gmtime())
    # nothing before the span, nothing after it
    assert usage(server, "--since", "2001-01-01", "--until", "2001-02-01") == []
    table = server.cli("usage", "--by", "bucket").stdout
    assert "metered" in table and "PUT/LIST" in table
    rows = list(csv.DictReader(io.StringIO(server.cli("usage", "--by", "bucket", "--csv").stdout)))
    assert any(r["bucket"] == "metered" and r["bytes_in"] == "50000" for r in rows)
    # the same figures in Prometheus
    with urllib.request.urlopen(server.endpoint + "/_basalt/metrics", timeout=10) as r:
        scrape = r.read().decode()
    line = next(x for x in scrape.splitlines() if x.startswith("basalt_usage_total{")
                and 'name="metered"' in x and 'counter="bytes_in"' in x)
    assert float(line.rsplit(" ", 1)[1]) == 50_000 and 'account="000000000000"' in line


def test_volumes_are_metered_in_gb_hours(server):
    server.cli("volume", "create", "metered-vol", "--size", "1G")
    rows = wait_for(server, ("--by", "volume"),
                    lambda rows: any(r["volume"] == "metered-vol"
                                     and r["provisioned_gb_hours"] > 0 for r in rows))
    row = next(r for r in rows if r["volume"] == "metered-vol")
    # 1 GiB provisioned for at least one flush interval: at least ~1.07e9 B x 1 s
    assert row["provisioned_gb_hours"] >= 1.07 * float(FLUSH) / 3600 * 0.5
    assert row["allocated_gb_hours"] == 0  # nothing written: thin


def test_another_accounts_bucket_is_metered_to_it(server):
    account = json.loads(server.cli("account", "create", "tenant-u", "--json").stdout)
    key = json.loads(server.cli("key", "create", "tenant-u", "--json").stdout)
    s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                      aws_access_key_id=key["access_key"],
                      aws_secret_access_key=key["secret_key"])
    s3.create_bucket(Bucket="tenant-u-bucket")
    s3.put_object(Bucket="tenant-u-bucket", Key="a", Body=b"y" * 777)
    rows = wait_for(server, ("--account", "tenant-u", "--by", "bucket"),
                    lambda rows: any(r["bytes_in"] >= 777 for r in rows))
    assert [(r["account"], r["bucket"], r["bytes_in"]) for r in rows] == [
        (account["id"], "tenant-u-bucket", 777)]
    error = server.cli("usage", "--account", "nobody", "--json", check=False)
    assert error.returncode != 0 and json.loads(error.stdout)["error"] == "NoSuchAccount"


def test_bill_prices_the_month(server, tmp_path):
    s3 = server.client()
    s3.create_bucket(Bucket="billed")
    s3.put_object(Bucket="billed", Key="a", Body=b"z" * 4096)
    wait_for(server, ("--by", "bucket"), lambda rows: any(
        r["bucket"] == "billed" and r["byte_hours"] > 0 for r in rows))
    prices = tmp_path / "prices.toml"
    prices.write_text('currency = "USD"\nstorage_gb_month = 1000000\n'
                      'requests_put_per_1000 = 5\nrequests_get_per_1000 = 0.4\n'
                      'bytes_out_per_gb = 90\nvolume_gb_month = 80\n')
    doc = json.loads(server.cli("bill", "--prices", str(prices), "--format", "json").stdout)
    assert doc["month"] == time.strftime("%Y-%m", time.gmtime()) and doc["currency"] == "USD"
    assert isinstance(doc["total"], float) and doc["total"] > 0
    root = next(a for a in doc["accounts"] if a["account_name"] == "root")
    items = {line["item"] for line in root["lines"]}
    assert {"storage_gb_month", "requests_put_per_1000", "volume_gb_month"} <= items
    assert root["total"] == round(sum(line["amount"] for line in root["lines"]), 2)
    # a month with nothing metered costs nothing; the other formats
    empty = json.loads(server.cli("bill", "--prices", str(prices), "--month", "2001-01",
                                  "--json").stdout)
    assert empty["total"] == 0 and empty["accounts"] == []
    assert "<table>" in server.cli("bill", "--prices", str(prices), "--format", "html").stdout
    assert server.cli("bill", "--prices", str(prices), "--format", "csv").stdout.startswith(
        "month,account")
    assert "total:" in server.cli("bill", "--prices", str(prices)).stdout
    bad = server.cli("bill", "--prices", str(tmp_path / "nope.toml"), "--json", check=False)
    assert bad.returncode != 0 and "nope.toml" in json.loads(bad.stdout)["message"]


def test_metering_off(tmp_path):
    srv = start_server(str(tmp_path), extra=("--usage-flush-seconds", "0"))
    try:
        s3 = srv.client()
        s3.create_bucket(Bucket="unmetered")
        s3.put_object(Bucket="unmetered", Key="k", Body=b"x" * 100)
        time.sleep(1.5)
        assert usage(srv, "--by", "bucket") == []
    finally:
        stop_server(srv)
