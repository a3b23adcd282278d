"""Volume backups and restores as admin API jobs (basalt/volume_jobs.py) against a real
`basalt serve`: back up through the API, restore onto a new volume, the same bytes over
NBD; refusals up front, a job that fails with the CLI's message, cancelling, root only.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from basalt.admin_client import AdminClient, AdminError
from basalt.credentials import Credentials

from .conftest import ACCESS, SECRET, start_server, stop_server
from .nbd_e2e_helpers import RawNBD

MIB = 1 << 20
BUCKET = "backups"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(str(tmp_path_factory.mktemp("jobs")))
    s.client().create_bucket(Bucket=BUCKET)
    yield s
    stop_server(s)


def admin(server, access: str = ACCESS, secret: str = SECRET) -> AdminClient:
    return AdminClient(server.endpoint, Credentials(access, secret))


def refused(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(AdminError) as exc:
        call(*args, **kwargs)
    return exc.value.status, exc.value.code


def finished(api: AdminClient, job: dict, timeout: float = 120) -> tuple[dict, list[dict]]:
    """Poll a job until it ends: its last state and what each poll saw."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = api.call("GET", f"/_basalt/v1/jobs/{job['id']}")
        seen.append(doc)
        if doc["state"] != "running":
            return doc, seen
        time.sleep(0.1)
    raise AssertionError(f"job still running: {seen[-1]}")


def volume_with_data(server, api: AdminClient, name: str, size: int,
                     writes: list[tuple[int, int]]) -> None:
    api.call("POST", "/_basalt/v1/volumes", body={"name": name, "size": size})
    with RawNBD(server.nbd_port, name) as nbd:
        for offset, length in writes:
            nbd.pwrite(offset, os.urandom(length))
        nbd.flush()


def digest(server, name: str) -> str:
    h = hashlib.sha256()
    with RawNBD(server.nbd_port, name) as nbd:
        for offset in range(0, nbd.size, 4 * MIB):
            h.update(nbd.pread(offset, min(4 * MIB, nbd.size - offset)))
    return h.hexdigest()


def test_backup_then_restore_through_the_api_gives_the_same_bytes(server):
    api = admin(server)
    volume_with_data(server, api, "vol", 64 * MIB, [(0, 16 * MIB), (40 * MIB, MIB)])
    job = api.call("POST", "/_basalt/v1/volumes/vol/backup", body={"to": f"s3://{BUCKET}/vol"})
    assert (job["kind"], job["volume"], job["target"], job["state"]) == \
        ("backup", "vol", f"s3://{BUCKET}/vol", "running")
    done, seen = finished(api, job)
    assert done["state"] == "done", done
    assert done["done_bytes"] == done["total_bytes"] == 17 * MIB  # the allocated chunks
    assert done["result"]["kind"] == "full" and done["ended"] >= done["started"]
    counts = [s["done_bytes"] for s in seen]
    assert counts == sorted(counts)

    restore = api.call("POST", "/_basalt/v1/volume-restores",
                       body={"from": f"s3://{BUCKET}/vol", "to": "copy"})
    restored, _ = finished(api, restore)
    assert restored["state"] == "done" and restored["kind"] == "restore", restored
    assert restored["result"]["volume"]["name"] == "copy"
    assert digest(server, "copy") == digest(server, "vol")

    # the CLI's chain: the next backup to the same place is incremental
    with RawNBD(server.nbd_port, "vol") as nbd:
        nbd.pwrite(8 * MIB, os.urandom(64 << 10))
        nbd.flush()
    again, _ = finished(api, api.call("POST", "/_basalt/v1/volumes/vol/backup",
                                      body={"to": f"s3://{BUCKET}/vol"}))
    assert again["state"] == "done" and again["result"]["kind"] == "incremental"
    assert again["total_bytes"] == 64 << 10
    listed = [j["id"] for j in api.call("GET", "/_basalt/v1/jobs")]
    assert listed[-3:] == [job["id"], restore["id"], again["id"]]


def test_refusals_up_front_and_a_job_failing_with_the_clis_message(server):
    api = admin(server)
    api.call("POST", "/_basalt/v1/volumes", body={"name": "small", "size": MIB})
    backup = "/_basalt/v1/volumes/small/backup"
    assert refused(api.call, "POST", backup, body={"to": "http://x/y"}) == \
        (400, "InvalidArgument")
    assert refused(api.call, "POST", backup, body={"to": "s3://no-such-bucket/x"}) == \
        (404, "NoSuchBucket")
    assert refused(api.call, "POST", "/_basalt/v1/volumes/nope/backup",
                   body={"to": f"s3://{BUCKET}/x"}) == (404, "NoSuchVolume")
    restores = "/_basalt/v1/volume-restores"
    assert refused(api.call, "POST", restores, body={"from": f"s3://{BUCKET}/x",
                                                     "to": "small"}) == (409, "VolumeExists")
    assert refused(api.call, "POST", restores, body={"from": "s3://no-such-bucket/x",
                                                     "to": "new"}) == (404, "NoSuchBucket")
    assert refused(api.call, "GET", "/_basalt/v1/jobs/nope") == (404, "NoSuchJob")

    job = api.call("POST", restores, body={"from": f"s3://{BUCKET}/empty", "to": "new"})
    failed, _ = finished(api, job)
    assert failed["state"] == "failed"
    assert f"no backups at s3://{BUCKET}/empty" in failed["error"], failed
    assert refused(api.call, "GET", "/_basalt/v1/volumes/new") == (404, "NoSuchVolume")


def test_cancel_stops_a_job_and_the_server_goes_on(server):
    api = admin(server)
    volume_with_data(server, api, "cvol", 16 * MIB, [(0, 4 * MIB)])
    job = api.call("POST", "/_basalt/v1/volumes/cvol/backup", body={"to": f"s3://{BUCKET}/cvol"})
    assert refused(api.call, "POST", "/_basalt/v1/volumes/cvol/backup",
                   body={"to": f"s3://{BUCKET}/other"}) == (409, "JobRunning")
    cancelled = api.call("DELETE", f"/_basalt/v1/jobs/{job['id']}")
    assert cancelled["state"] == "cancelled" and cancelled["ended"]
    assert refused(api.call, "DELETE", f"/_basalt/v1/jobs/{job['id']}") == \
        (409, "JobNotRunning")
    # the server goes on: the next backup to the same place ends well
    again, _ = finished(api, api.call("POST", "/_basalt/v1/volumes/cvol/backup",
                                      body={"to": f"s3://{BUCKET}/cvol"}))
    assert again["state"] == "done", again
    # a cancelled restore leaves no half-made volume behind
    restore = api.call("POST", "/_basalt/v1/volume-restores",
                       body={"from": f"s3://{BUCKET}/cvol", "to": "cvol2"})
    assert api.call("DELETE", f"/_basalt/v1/jobs/{restore['id']}")["state"] == "cancelled"
    assert refused(api.call, "GET", "/_basalt/v1/volumes/cvol2") == (404, "NoSuchVolume")


def test_jobs_are_for_root_only(server):
    api = admin(server)
    api.call("POST", "/_basalt/v1/accounts", body={"name": "tenant"})
    key = api.call("POST", "/_basalt/v1/accounts/tenant/keys")
    other = admin(server, key["access_key"], key["secret_key"])
    assert refused(other.call, "GET", "/_basalt/v1/jobs")[0] == 403
    assert refused(other.call, "POST", "/_basalt/v1/volume-restores",
                   body={"from": f"s3://{BUCKET}/vol", "to": "theirs"})[0] == 403


def test_jobs_over_tls_trust_the_servers_own_certificate(tmp_path, tls_files, monkeypatch):
    """Over TLS the child CLI talks to the server on a loopback address: it trusts
    the server's certificate as it is (pinned), not through a CA it may not have."""
    cert, key, ca = tls_files  # a leaf issued by a CA only this test knows
    tls = start_server(str(tmp_path / "tls"), tls=(cert, key, ca))
    try:
        monkeypatch.setenv("BASALT_CA_BUNDLE", ca)  # the test's own admin client
        tls.client().create_bucket(Bucket=BUCKET)
        api = admin(tls)
        volume_with_data(tls, api, "tv", 16 * MIB, [(0, 2 * MIB)])
        backup, _ = finished(api, api.call("POST", "/_basalt/v1/volumes/tv/backup",
                                           body={"to": f"s3://{BUCKET}/tv"}))
        assert backup["state"] == "done", backup
        restore, _ = finished(api, api.call("POST", "/_basalt/v1/volume-restores",
                                            body={"from": f"s3://{BUCKET}/tv", "to": "tv2"}))
        assert restore["state"] == "done", restore
        assert digest(tls, "tv2") == digest(tls, "tv")
    finally:
        stop_server(tls)
