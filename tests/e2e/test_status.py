"""`basalt status` against a real server: one screen (and one JSON document) that
says how the server is doing and what it holds, and notices a lost disk."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from tests.e2e.conftest import start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(str(tmp_path_factory.mktemp("status")))
    yield srv
    stop_server(srv)


def status(server, *extra: str, check: bool = True):
    out = server.cli("status", "--json", *extra, check=check)
    return json.loads(out.stdout), out.returncode


def test_status_tells_the_whole_server(server):
    s3 = server.client()
    s3.create_bucket(Bucket="status-a")
    for i in range(3):
        s3.put_object(Bucket="status-a", Key=f"k{i}", Body=b"x" * 1000)
    server.cli("volume", "create", "status-vol", "--size", "16M")
    doc, code = status(server)
    assert code == 0 and doc["status"] == "ok"
    assert doc["version"] and doc["uptime_seconds"] >= 0 and doc["started"].endswith("Z")
    assert doc["endpoints"]["s3"] == server.endpoint
    assert doc["endpoints"]["nbd"].endswith(f":{server.nbd_port}/VOLUME")
    assert doc["layers"]["storage"] == "on" and doc["layers"]["block"] == "on"
    assert {"network", "compute"} <= set(doc["layers"])  # on, or off with the reason
    assert doc["ec"] == "2+2" and len(doc["disks"]) == 4
    assert all(d["state"] == "online" and d["free_bytes"] > 0 for d in doc["disks"])
    assert 0 < doc["capacity"]["free"] <= doc["capacity"]["raw"]
    # the fields `basalt volume` has read from this endpoint since before
    assert doc["nbd"] == f"127.0.0.1:{server.nbd_port}" and doc["nbd_socket"]
    assert doc["capacity"]["volumes"] == doc["capacity"]["raw"] // 3
    assert doc["counts"]["buckets"] >= 1 and doc["counts"]["volumes"] >= 1
    assert doc["counts"]["objects"] >= 3
    # the same as text, with the options after the command
    text = server.cli("status").stdout
    assert "Basalt" in text and server.endpoint in text and "2+2" in text
    assert "no disk healing" in text and "volumes" in text


def test_status_shows_a_lost_disk(tmp_path):
    srv = start_server(str(tmp_path))
    try:
        disk = json.loads(srv.cli("status", "--json").stdout)["disks"][0]["path"]
        shutil.rmtree(disk)
        for _ in range(100):  # the server notices at its next disk check
            doc, code = status(srv, check=False)
            if doc["status"] != "ok":
                break
            time.sleep(0.2)
        assert doc["status"] == "degraded" and code == 0
        text = srv.cli("status").stdout
        assert "offline" in text or "healing" in text
    finally:
        stop_server(srv)
