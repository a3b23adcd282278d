"""Operating a running server: shutdown under load, health, metrics, heal reports."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from .conftest import start_server, stop_server
from .nbd_e2e_helpers import RawNBD, new_volume

MiB = 1024 * 1024


def get(server, path):
    """(status, parsed JSON or text) of a GET, HTTP errors included."""
    try:
        with urllib.request.urlopen(server.endpoint + path, timeout=10) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def poll(what, predicate, timeout: float = 30.0, interval: float = 0.1):
    """The first value of ``what()`` that satisfies ``predicate`` (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if predicate(value):
            return value
        assert time.monotonic() < deadline, f"gave up waiting; last value: {value}"
        time.sleep(interval)


@pytest.mark.parametrize("signame,target", [("SIGTERM", "main"), ("SIGINT", "main"),
                                            ("SIGINT", "group")])
def test_signal_during_a_200_mib_upload(tmp_path, signame, target):
    server = start_server(str(tmp_path))
    try:
        s3 = server.client(retries={"max_attempts": 1})
        s3.create_bucket(Bucket="ops")
        small = {f"small{i}": os.urandom(1000 + 100_000 * i) for i in range(4)}
        for key, data in small.items():
            s3.put_object(Bucket="ops", Key=key, Body=data)
        big = os.urandom(200 * MiB)
        outcome: dict[str, object] = {}

        def upload() -> None:
            try:
                s3.upload_fileobj(io.BytesIO(big), "ops", "big")
                outcome["acked"] = True
            except Exception as exc:  # the server went away: not acknowledged
                outcome["error"] = exc

        thread = threading.Thread(target=upload)
        thread.start()
        # Signal once parts are flowing, so requests are in flight.
        poll(server.log, lambda text: "UploadPart" in text, timeout=60, interval=0.02)
        sig = getattr(signal, signame)
        started = time.monotonic()
        if target == "group":  # Ctrl-C in a terminal: every process gets it
            os.killpg(server.proc.pid, sig)
        else:
            os.kill(server.proc.pid, sig)
        while (server.proc.poll() is None or group_alive(server.proc.pid)) \
                and time.monotonic() - started < 15:
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        thread.join(120)
        log = server.log()
        assert elapsed < 5, f"the server took {elapsed:.1f} s to exit:\n{log[-3000:]}"
        assert "Traceback" not in log, log
        assert not [line for line in log.splitlines() if "level=error" in line], log
        assert server.proc.returncode == 0 or server.proc.returncode == -sig, \
            server.proc.returncode
        # The owner's and NBD's Unix sockets are closed and removed.
        assert not glob.glob(os.path.join(server.data_dir, "run", "*.sock"))
    finally:
        stop_server(server)
    server = start_server(str(tmp_path))  # same data dir
    try:
        s3 = server.client()
        for key, data in small.items():
            assert s3.get_object(Bucket="ops", Key=key)["Body"].read() == data, key
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ops").get("Contents", [])]
        if outcome.get("acked"):
            got = s3.get_object(Bucket="ops", Key="big")["Body"].read()
            assert hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
        else:  # an aborted upload leaves nothing visible
            assert "big" not in keys, keys
        assert sorted(keys) == sorted(small) + (["big"] if outcome.get("acked") else [])
    finally:
        stop_server(server)


def test_health_degraded_ok_and_unavailable(tmp_path):
    server = start_server(str(tmp_path))
    try:
        status, health = get(server, "/_basalt/health")
        assert status == 200 and health["status"] == "ok", health
        assert [d["state"] for d in health["disks"]] == ["online"] * 4
        assert get(server, "/_basalt/health?strict=1")[0] == 200
        s3 = server.client()
        s3.create_bucket(Bucket="health")
        blobs = {f"k{i}": os.urandom(300_000) for i in range(6)}
        for key, data in blobs.items():
            s3.put_object(Bucket="health", Key=key, Body=data)

        # A file where disk1's directory was: nobody can reformat it, it stays
        # offline, and writes still reach the quorum (3 of 4 for 2+2).
        disks = os.path.join(server.data_dir, "disks")
        lost = os.path.join(disks, "disk1")
        shutil.rmtree(lost)
        with open(lost, "w") as f:
            f.write("not a disk")
        status, health = poll(lambda: get(server, "/_basalt/health"),
                              lambda r: r[1]["status"] != "ok")
        assert status == 200 and health["status"] == "degraded", health
        assert [d["state"] for d in health["disks"]].count("offline") == 1, health
        status, health = poll(lambda: get(server, "/_basalt/health?strict=1"),
                              lambda r: r[0] != 200)  # every worker sees it within 1 s
        assert status == 503 and health["status"] == "degraded", health
        s3.put_object(Bucket="health", Key="while-degraded", Body=b"still writable")

        # The directory back (empty): the owner reformats it and heals it.
        os.unlink(lost)
        seen = set()

        def state():
            status, health = get(server, "/_basalt/health")
            seen.add(health["status"])
            if any(d["state"] == "healing" for d in health["disks"]):
                assert health["status"] == "degraded", health
                assert health["heal"]["objects_checked"] >= 0, health  # progress shown
            return status, health
        status, health = poll(state, lambda r: r[1]["status"] == "ok", timeout=60, interval=0.02)
        assert status == 200 and [d["state"] for d in health["disks"]] == ["online"] * 4
        assert seen <= {"ok", "degraded"}, seen
        # Info lines reach the log file within a fraction of a second (batched).
        heal_lines = poll(lambda: [line for line in server.log().splitlines()
                                   if 'msg="heal pass"' in line], bool, timeout=10)
        assert "bytes_rebuilt=" in heal_lines[0] and "healed=" in heal_lines[0], heal_lines
        assert "background heal: {" not in server.log()

        # Three disks of four gone: below the write quorum.
        for name in ("disk1", "disk2", "disk3"):
            path = os.path.join(disks, name)
            shutil.rmtree(path)
            with open(path, "w") as f:
                f.write("not a disk")
        status, health = poll(lambda: get(server, "/_basalt/health"),
                              lambda r: r[1]["status"] == "unavailable")
        assert status == 503 and health["disks_online"] == 1, health
    finally:
        stop_server(server)


def metric(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples ``name`` whose labels include ``labels``."""
    values = []
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            values.append(float(m.group(3)))
    return values


def test_metrics_capacity_objects_uploads_nbd_and_heal(tmp_path):
    server = start_server(str(tmp_path))
    try:
        s3 = server.client()
        s3.create_bucket(Bucket="met1")
        s3.create_bucket(Bucket="met2")
        sizes = [10, 5000, 200_000, 2_000_000, 3_000_000]
        for i, size in enumerate(sizes):
            s3.put_object(Bucket="met1", Key=f"o{i}", Body=os.urandom(size))
        s3.create_multipart_upload(Bucket="met2", Key="pending")
        new_volume(server, "metered", 8 * MiB)
        written = 0
        with RawNBD(server.nbd_port, "metered") as nbd:
            for i in range(5):
                nbd.pwrite(i * 64 * 1024, os.urandom(64 * 1024))
                written += 64 * 1024
            nbd.flush()
        # A corrupt shard, healed by `basalt heal`, shows in the heal counters.
        shard = max(glob.glob(os.path.join(server.data_dir, "disks", "disk0", "data", "*", "*")),
                    key=os.path.getsize)
        with open(shard, "r+b") as f:
            f.seek(1000)
            f.write(b"\x00" * 8)
        report = json.loads(server.cli("heal", "--json").stdout.strip().splitlines()[-1])
        assert report["shards_rebuilt"] == 1 and report["failed"] == 0, report

        status, text = get(server, "/_basalt/metrics")
        assert status == 200
        from prometheus_client.parser import text_string_to_metric_families
        names = [f.name for f in text_string_to_metric_families(text)]  # valid exposition
        assert len(names) == len(set(names)), names
        totals = metric(text, "basalt_disk_total_bytes")
        assert len(totals) == 4 and all(v > 0 for v in totals), totals
        assert all(v > 0 for v in metric(text, "basalt_disk_used_bytes"))
        assert len(metric(text, "basalt_disk_free_bytes")) == 4
        assert metric(text, "basalt_disk_state", position="0", state="online") == [1.0]
        assert metric(text, "basalt_buckets") == [2.0]
        assert metric(text, "basalt_objects")[0] >= len(sizes)
        assert metric(text, "basalt_stored_bytes")[0] >= sum(sizes)
        assert metric(text, "basalt_multipart_uploads")[0] >= 1
        # NBD is served by the main process: its figures are in the same scrape.
        assert sum(metric(text, "basalt_nbd_bytes_total", volume="metered", op="write")) \
            >= written
        assert sum(metric(text, "basalt_nbd_requests_total", volume="metered",
                          op="flush")) >= 1
        assert sum(metric(text, "basalt_nbd_requests_total", volume="metered",
                          op="write")) >= 5
        assert sum(metric(text, "basalt_nbd_request_seconds_total", volume="metered",
                          op="write")) > 0
        assert sum(metric(text, "basalt_heal_objects_checked_total")) >= len(sizes)
        assert sum(metric(text, "basalt_heal_shards_rebuilt_total")) >= 1
        assert sum(metric(text, "basalt_heal_rebuilt_bytes_total")) >= report["bytes_rebuilt"]
    finally:
        stop_server(server)


def test_heal_reports_the_shard_bytes_it_rewrote(tmp_path):
    server = start_server(str(tmp_path))
    try:
        s3 = server.client()
        s3.create_bucket(Bucket="rot")
        data = os.urandom(20 * MiB)
        s3.put_object(Bucket="rot", Key="big", Body=data)
        shards = glob.glob(os.path.join(server.data_dir, "disks", "disk2", "data", "*", "*"))
        assert len(shards) == 1, shards
        shard_size = os.path.getsize(shards[0])
        with open(shards[0], "r+b") as f:  # 8 bytes of bitrot
            f.seek(shard_size // 2)
            f.write(b"\xff" * 8)
        report = json.loads(server.cli("heal", "--json").stdout.strip().splitlines()[-1])
        assert report["shards_rebuilt"] == 1 and report["failed"] == 0, report
        # The shard file was rewritten, not the object: at most one shard's size.
        assert 0 < report["bytes_rebuilt"] <= shard_size < len(data), (report, shard_size)
        assert s3.get_object(Bucket="rot", Key="big")["Body"].read() == data
    finally:
        stop_server(server)


def test_sigterm_with_nbd_clients_keeps_acknowledged_writes(tmp_path):
    """Open NBD connections (one idle with unflushed writes, one writing) do not
    hold the shutdown back, and every acknowledged write survives it."""
    server = start_server(str(tmp_path))
    try:
        new_volume(server, "vol", 16 * MiB)
        acked: dict[int, bytes] = {}
        idle = RawNBD(server.nbd_port, "vol")
        for i in range(4):  # acknowledged, never flushed by the client
            acked[i] = os.urandom(64 * 1024)
            idle.pwrite(i * 64 * 1024, acked[i])
        stop = threading.Event()
        busy_acked: dict[int, bytes] = {}

        def writer() -> None:
            nbd = RawNBD(server.nbd_port, "vol")
            i = 0
            while not stop.is_set() and i < 190:  # each slot written once: an
                data = os.urandom(64 * 1024)      # unacknowledged write hides no acked one
                slot = 64 + i
                try:
                    nbd.pwrite(slot * 64 * 1024, data)
                except (OSError, AssertionError):
                    return  # the server went away: this write was not acknowledged
                busy_acked[slot] = data
                i += 1

        thread = threading.Thread(target=writer)
        thread.start()
        poll(lambda: len(busy_acked), lambda n: n >= 20, timeout=30, interval=0.02)
        started = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        while (server.proc.poll() is None or group_alive(server.proc.pid)) \
                and time.monotonic() - started < 15:
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        stop.set()
        thread.join(30)
        idle.sock.close()
        log = server.log()
        assert elapsed < 5, f"the server took {elapsed:.1f} s to exit:\n{log[-3000:]}"
        assert "Traceback" not in log and "level=error" not in log, log
    finally:
        stop_server(server)
    server = start_server(str(tmp_path))
    try:
        with RawNBD(server.nbd_port, "vol") as nbd:
            for i, data in acked.items():
                assert nbd.pread(i * 64 * 1024, len(data)) == data, f"write {i} lost"
            for slot, data in dict(busy_acked).items():
                assert nbd.pread(slot * 64 * 1024, len(data)) == data, f"slot {slot} lost"
    finally:
        stop_server(server)


def test_one_structured_log_line_per_request(basalt_http):
    """Operators follow the server's log: every S3 request is one logfmt line."""
    s3 = basalt_http.client()
    s3.create_bucket(Bucket="logged-requests")
    marker = f"logged-{os.getpid()}-{time.time_ns()}"
    s3.put_object(Bucket="logged-requests", Key=marker, Body=b"x")
    s3.get_object(Bucket="logged-requests", Key=marker)["Body"].read()
    deadline = time.monotonic() + 5  # lines are flushed in batches
    while True:
        lines = [x for x in basalt_http.log().splitlines() if marker in x and "msg=request" in x]
        if len(lines) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [("op=PutObject" in x, "op=GetObject" in x) for x in lines] == [(True, False),
                                                                            (False, True)]
    assert all("status=200" in x and "level=info" in x and " id=" in x for x in lines)
