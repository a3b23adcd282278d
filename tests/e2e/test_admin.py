"""Basalt's own endpoints and `basalt heal` against a running server."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request

import pytest


def get(server, path):
    with urllib.request.urlopen(server.endpoint + path, timeout=10) as r:
        return r.status, r.headers, r.read()


def test_health(basalt_http):
    status, _, body = get(basalt_http, "/_basalt/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["ec"] == "2+2"
    assert [d["state"] for d in health["disks"]] == ["online"] * 4


def test_metrics_count_requests_bytes_and_disks(basalt_http):
    s3 = basalt_http.client()
    s3.create_bucket(Bucket="metered")
    s3.put_object(Bucket="metered", Key="k", Body=b"x" * 1000)
    s3.get_object(Bucket="metered", Key="k")["Body"].read()
    _, headers, body = get(basalt_http, "/_basalt/metrics")
    text = body.decode()
    assert headers["Content-Type"].startswith("text/plain")
    assert 'basalt_s3_requests_total{op="PutObject",status="200"}' in text
    assert 'basalt_s3_request_duration_seconds_bucket{le="0.001",op="GetObject"}' in text \
        or 'basalt_s3_request_duration_seconds_bucket{op="GetObject",le="0.001"}' in text
    received = [line for line in text.splitlines() if line.startswith("basalt_s3_received_bytes_total")]
    assert received and float(received[0].split()[-1]) >= 1000
    assert 'basalt_disk_state{position="0"' in text and 'state="online"} 1' in text


def test_admin_api_needs_a_signature(basalt_http):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(
            basalt_http.endpoint + "/_basalt/v1/heal", method="POST", data=b""))
    assert err.value.code == 403
    assert json.loads(err.value.read())["code"] == "AccessDenied"
    out = basalt_http.cli("heal", check=False)
    assert out.returncode == 0, out.stderr
    env = dict(basalt_http.env, BASALT_SECRET_KEY="wrong")
    import subprocess

    from .conftest import BASALT
    bad = subprocess.run([BASALT, "heal"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "SignatureDoesNotMatch" in bad.stderr
    # one clear line and what to do next, no traceback
    assert bad.stderr.strip().splitlines()[1:] == [
        "  check BASALT_SECRET_KEY: it must be the secret of BASALT_ACCESS_KEY."]


def test_heal_rebuilds_a_wiped_disk_while_serving(basalt_http):
    s3 = basalt_http.client()
    s3.create_bucket(Bucket="healme")
    blobs = {f"k{i}": os.urandom(size) for i, size in enumerate([0, 10, 200_000, 3_000_000])}
    for key, data in blobs.items():
        s3.put_object(Bucket="healme", Key=key, Body=data)
    disk = os.path.join(basalt_http.data_dir, "disks", "disk1")
    shutil.rmtree(disk)
    for key, data in blobs.items():  # degraded reads
        assert s3.get_object(Bucket="healme", Key=key)["Body"].read() == data
    out = basalt_http.cli("heal", "--json")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["failed"] == 0 and report["objects"] >= len(blobs)
    assert os.path.exists(os.path.join(disk, "format.json"))
    # The healed disk now carries its shards: lose two others, still readable.
    for other in ("disk2", "disk3"):
        shutil.rmtree(os.path.join(basalt_http.data_dir, "disks", other))
    for key, data in blobs.items():
        assert s3.get_object(Bucket="healme", Key=key)["Body"].read() == data
    report = json.loads(basalt_http.cli("heal", "--json").stdout.strip().splitlines()[-1])
    assert report["failed"] == 0 and report["disks_offline"] == 0
    # Every worker reattaches the replaced disks within a few seconds.
    deadline = time.monotonic() + 20
    while True:
        try:
            status, _, body = get(basalt_http, "/_basalt/health")
            if all(d["state"] == "online" for d in json.loads(body)["disks"]):
                break
        except urllib.error.HTTPError:
            pass
        assert time.monotonic() < deadline, "disks did not come back online"
        time.sleep(0.2)


def test_vm_and_network_routes_need_a_signature(basalt_http):
    for path in ("/_basalt/v1/vms", "/_basalt/v1/networks"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(basalt_http.endpoint + path, timeout=10)
        assert err.value.code == 403, path


def test_compute_off_says_why_and_storage_keeps_serving(tmp_path):
    from .conftest import start_server, stop_server
    # A libvirt nobody answers at: compute is off, everything else serves.
    server = start_server(str(tmp_path), extra=(
        "--libvirt-uri", f"qemu:///system?socket={tmp_path}/no-libvirt-sock", "--workers", "1"))
    try:
        out = server.cli("vm", "list", check=False)
        assert out.returncode == 2
        assert "ComputeUnavailable" in out.stderr and "no-libvirt-sock" in out.stderr, out.stderr
        assert "layers" in server.log() and "compute=\"off" in server.log()
        server.cli("volume", "create", "still-works", "--size", "1M")
    finally:
        stop_server(server)
