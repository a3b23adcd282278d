"""A day of traffic on a compressed clock (a metered hour lasts half a second): the
requests and bytes are metered exactly, the byte-hours as the script computes
them from its own timings (within the sampling interval), and the records
survive a restart and a wiped disk."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime

from tests.e2e.conftest import start_server, stop_server

HOUR = 0.5      # real seconds per metered hour
FLUSH = 0.05    # the meters' flush and sampling interval (real seconds)
A, B = 100_000, 50_000


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_compressed_day_is_metered_as_the_script_counts_it(tmp_path):
    srv = start_server(str(tmp_path), extra=("--usage-hour-seconds", str(HOUR),
                                             "--usage-flush-seconds", str(FLUSH)))
    try:
        clock = json.loads(srv.cli("status", "--json").stdout)["usage_clock"]
        epoch, scale = clock["epoch"], 3600 / clock["hour_seconds"]

        def metered(wall: float) -> float:
            return epoch + (wall - epoch) * scale

        s3 = srv.client()
        s3.create_bucket(Bucket="day")
        start = time.time()
        s3.put_object(Bucket="day", Key="a", Body=b"a" * A)
        put_a = time.time()
        reads = 0
        while time.time() < start + 8 * HOUR:  # morning: reads
            assert len(s3.get_object(Bucket="day", Key="a")["Body"].read()) == A
            reads += 1
            time.sleep(0.5)
        s3.put_object(Bucket="day", Key="b", Body=b"b" * B)
        put_b = time.time()
        time.sleep(max(0.0, start + 16 * HOUR - time.time()))
        s3.delete_object(Bucket="day", Key="a")
        del_a = time.time()
        # The day ends at the first metered hour boundary 8 hours later.
        end_metered = (metered(start + 24 * HOUR) // 3600) * 3600
        end_wall = epoch + (end_metered - epoch) / scale
        time.sleep(max(0.0, end_wall - time.time()) + 3 * FLUSH + 0.5)  # + a last flush

        def totals() -> dict:
            rows = json.loads(srv.cli("usage", "--json", "--by", "bucket", "--since",
                                      iso(metered(start) - 3600), "--until",
                                      iso(end_metered)).stdout)
            [row] = [r for r in rows if r["bucket"] == "day"]
            return row

        row = totals()
        assert (row["requests_put"], row["requests_get"], row["requests_free"]) == (3, reads, 1)
        assert (row["bytes_in"], row["bytes_out"]) == (A + B, A * reads)
        # byte-hours as the script counts them, from its own clock (hours of the compressed day)
        expected = (A * (del_a - put_a) + B * (end_wall - put_b)) / HOUR
        # each change is seen at the next sample, and the last sample before the day's
        # end may fall after it: at most a sampling interval (with room for a loaded
        # machine) of the bytes held then, per change
        slack = 4 * FLUSH / HOUR * (A + B + A + B)
        assert abs(row["byte_hours"] - expected) <= slack, (row["byte_hours"], expected, slack)
        assert row["object_hours"] > 0
        hours = json.loads(srv.cli("usage", "--json", "--by", "hour", "--since",
                                   iso(metered(start) - 3600), "--until",
                                   iso(end_metered)).stdout)
        assert len({r["hour"] for r in hours if r["name"] == "day"}) >= 23  # one record per hour
    finally:
        stop_server(srv)

    # After a restart with a wiped disk, the day reads back the same.
    shutil.rmtree(f"{srv.data_dir}/disks/disk0")
    again = start_server(str(tmp_path))
    try:
        rows = json.loads(again.cli("usage", "--json", "--by", "bucket", "--since",
                                    iso(metered(start) - 3600), "--until",
                                    iso(end_metered)).stdout)
        [after] = [r for r in rows if r["bucket"] == "day"]
        for counter in ("requests_put", "requests_get", "requests_free", "bytes_in",
                        "bytes_out", "byte_hours"):
            assert after[counter] == row[counter], counter
    finally:
        stop_server(again)
