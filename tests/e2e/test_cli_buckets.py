"""`basalt bucket versioning | lock | lifecycle` run as users run them, against a real
server: what they change is checked through boto3, --json prints one document,
global options go anywhere, and every refusal (S3's included) is one line."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import uuid

import pytest

from .conftest import BASALT, Server, free_port
from .nbd_e2e_helpers import one_error_line as one_line
from .test_cli import json_error, ok, one_json


def run(server: Server, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """The executable with exactly ``args`` (the endpoint and data dir placed by the test)."""
    env = dict(server.env)
    env.pop("BASALT_ENDPOINT", None)
    return subprocess.run([BASALT, *args], env=env, capture_output=True, text=True, timeout=120,
                          input=stdin)


def many(server: Server, commands: list[tuple[str, ...]]) -> list[subprocess.CompletedProcess]:
    """``server.cli(*command, check=False)`` for each command, run side by side (each
    start of the executable costs about a second)."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda c: server.cli(*c, check=False), commands))


def where(server: Server) -> list[str]:
    return ["--endpoint", server.endpoint, "--data-dir", server.data_dir]


@pytest.fixture
def s3(basalt_http):
    return basalt_http.client()


def new_bucket(s3, **kwargs) -> str:
    name = f"cli-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, **kwargs)
    return name


def status(s3, bucket: str) -> str | None:
    return s3.get_bucket_versioning(Bucket=bucket).get("Status")


# --- versioning -------------------------------------------------------------------------

def test_versioning_on_suspend_off_and_show(basalt_http, s3):
    srv, bucket = basalt_http, new_bucket(s3)
    shown = ok(srv.cli("bucket", "versioning", bucket))
    assert shown.stdout.strip() == f"bucket {bucket}: versioning Unversioned"
    assert one_json(ok(srv.cli("bucket", "versioning", bucket, "--json"))) == \
        {"bucket": bucket, "status": "Unversioned"}
    out = ok(srv.cli("bucket", "versioning", bucket, "on"))
    assert out.stdout.strip() == f"bucket {bucket}: versioning Enabled" and not out.stderr
    assert status(s3, bucket) == "Enabled"
    out = ok(srv.cli("--json", "bucket", "versioning", bucket, "suspend"))
    assert one_json(out) == {"bucket": bucket, "status": "Suspended"}
    assert status(s3, bucket) == "Suspended"
    ok(srv.cli("bucket", "versioning", bucket, "on"))
    assert status(s3, bucket) == "Enabled"
    # "off" suspends (there is no way back to unversioned) and says so.
    out = ok(srv.cli("bucket", "versioning", bucket, "off"))
    assert out.stdout.strip() == f"bucket {bucket}: versioning Suspended"
    assert out.stderr.startswith("note: ") and "unversioned" in out.stderr
    assert status(s3, bucket) == "Suspended"
    ok(srv.cli("bucket", "versioning", bucket, "on"))
    doc = one_json(ok(srv.cli("bucket", "versioning", bucket, "off", "--json")))
    assert doc["bucket"] == bucket and doc["status"] == "Suspended" and "unversioned" in doc["note"]
    assert status(s3, bucket) == "Suspended"


def test_global_options_before_or_after(basalt_http, s3):
    srv, bucket = basalt_http, new_bucket(s3)
    command = ["bucket", "versioning", bucket, "on"]
    ep, dd = ["--endpoint", srv.endpoint], ["--data-dir", srv.data_dir]
    for args in ([*ep, *dd, "--json", *command], [*command, *ep, *dd, "--json"],
                 ["--json", "bucket", *ep, "versioning", bucket, *dd, "on"],
                 ["bucket", "versioning", *dd, bucket, "--json", *ep, "on"]):
        assert one_json(ok(run(srv, *args))) == {"bucket": bucket, "status": "Enabled"}, args


def test_versioning_refusals(basalt_http, s3):
    srv = basalt_http
    missing = f"cli-missing-{uuid.uuid4().hex[:8]}"
    for state in ((), ("on",)):
        line = one_line(srv.cli("bucket", "versioning", missing, *state, check=False))
        assert "NoSuchBucket" in line and missing in line
        assert json_error(srv.cli("bucket", "versioning", missing, *state, "--json",
                                  check=False))["error"] == "NoSuchBucket"
    bad = srv.cli("bucket", "versioning", new_bucket(s3), "maybe", check=False)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and "Traceback" not in bad.stderr
    # A locked bucket cannot be suspended: S3's code and message, versioning unchanged.
    locked = new_bucket(s3, ObjectLockEnabledForBucket=True)
    for state in ("suspend", "off"):
        line = one_line(srv.cli("bucket", "versioning", locked, state, check=False))
        assert "InvalidBucketState" in line and "Object Lock" in line, line
        doc = json_error(srv.cli("bucket", "versioning", locked, state, "--json", check=False))
        assert doc["error"] == "InvalidBucketState"
    assert status(s3, locked) == "Enabled"
    # Unreachable: one line, no traceback.
    gone = f"http://127.0.0.1:{free_port()}"
    line = one_line(run(srv, "--endpoint", gone, "--data-dir", srv.data_dir, "bucket", "versioning",
                        locked))
    assert gone in line


# --- object lock ------------------------------------------------------------------------

def test_lock_show_and_set(basalt_http, s3):
    srv = basalt_http
    bucket = new_bucket(s3, ObjectLockEnabledForBucket=True)
    assert ok(srv.cli("bucket", "lock", bucket)).stdout.strip() == \
        f"bucket {bucket}: object lock enabled, no default retention"
    assert one_json(ok(srv.cli("bucket", "lock", bucket, "--json"))) == \
        {"bucket": bucket, "enabled": True, "mode": None, "days": None, "years": None}
    out = ok(srv.cli("bucket", "lock", bucket, "--mode", "GOVERNANCE", "--days", "3"))
    assert out.stdout.strip() == \
        f"bucket {bucket}: object lock enabled, default retention GOVERNANCE 3 days"
    config = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert config == {"ObjectLockEnabled": "Enabled",
                      "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 3}}}
    # A new object gets the default retention.
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    head = s3.head_object(Bucket=bucket, Key="k", VersionId=put["VersionId"])
    assert head["ObjectLockMode"] == "GOVERNANCE"
    doc = one_json(ok(srv.cli("bucket", "lock", bucket, "--json", "--mode", "compliance",
                              "--years", "1")))
    assert doc == {"bucket": bucket, "enabled": True, "mode": "COMPLIANCE", "days": None,
                   "years": 1}
    config = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert config["Rule"]["DefaultRetention"] == {"Mode": "COMPLIANCE", "Years": 1}
    assert ok(srv.cli("bucket", "lock", bucket)).stdout.strip().endswith("COMPLIANCE 1 years")
    s3.delete_object(Bucket=bucket, Key="k", VersionId=put["VersionId"],
                     BypassGovernanceRetention=True)


def test_lock_on_a_versioned_bucket_without_lock(basalt_http, s3):
    srv, bucket = basalt_http, new_bucket(s3)
    assert one_json(ok(srv.cli("bucket", "lock", bucket, "--json")))["enabled"] is False
    assert ok(srv.cli("bucket", "lock", bucket)).stdout.strip() == \
        f"bucket {bucket}: object lock not enabled"
    # S3 refuses a lock configuration while versioning is not enabled ...
    line = one_line(srv.cli("bucket", "lock", bucket, "--mode", "GOVERNANCE", "--days", "1",
                            check=False))
    assert "InvalidBucketState" in line
    assert one_json(ok(srv.cli("bucket", "lock", bucket, "--json")))["enabled"] is False
    # ... and accepts it once versioning is on.
    ok(srv.cli("bucket", "versioning", bucket, "on"))
    doc = one_json(ok(srv.cli("bucket", "lock", bucket, "--mode", "GOVERNANCE", "--days", "2",
                              "--json")))
    assert doc["enabled"] is True and doc["mode"] == "GOVERNANCE" and doc["days"] == 2


LOCK_USAGE = [("--mode", "GOVERNANCE"), ("--days", "3"), ("--years", "1"),
              ("--mode", "SOMETIMES", "--days", "1"), ("--mode", "GOVERNANCE", "--days", "0"),
              ("--mode", "GOVERNANCE", "--days", "two"),
              ("--mode", "GOVERNANCE", "--days", "1", "--years", "1")]


def test_lock_usage_errors(basalt_http, s3):
    bucket = new_bucket(s3, ObjectLockEnabledForBucket=True)
    outs = many(basalt_http, [("bucket", "lock", bucket, *options, *extra)
                              for options in LOCK_USAGE for extra in ((), ("--json",))])
    for options, text, as_json in zip(LOCK_USAGE, outs[::2], outs[1::2], strict=True):
        assert text.returncode == 2 and "Traceback" not in text.stderr and not text.stdout, \
            (options, text)
        assert json_error(as_json)["error"] == "UsageError", options
    assert "Rule" not in s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]


@pytest.mark.parametrize("options", [
    (),
    ("--mode", "GOVERNANCE", "--days", "1"),
])
def test_lock_missing_bucket(basalt_http, options):
    missing = f"cli-missing-{uuid.uuid4().hex[:8]}"
    text, as_json = many(basalt_http, [("bucket", "lock", missing, *options),
                                       ("bucket", "lock", missing, *options, "--json")])
    line = one_line(text)
    assert "NoSuchBucket" in line and missing in line, line
    assert json_error(as_json)["error"] == "NoSuchBucket"


# --- lifecycle --------------------------------------------------------------------------

RULES = {"Rules": [
    {"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
     "Expiration": {"Days": 30}},
    {"ID": "scratch", "Status": "Enabled",
     "Filter": {"And": {"Prefix": "tmp/", "Tags": [{"Key": "class", "Value": "scratch"}],
                        "ObjectSizeGreaterThan": 10}},
     "Expiration": {"Date": "2031-01-01T00:00:00Z"}},
    {"ID": "versions", "Filter": {"Prefix": ""}, "Status": "Disabled",
     "Expiration": {"ExpiredObjectDeleteMarker": True},
     "NoncurrentVersionExpiration": {"NoncurrentDays": 7, "NewerNoncurrentVersions": 2},
     "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
]}


def write(tmp_path, name: str, content) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_lifecycle_set_show_delete(basalt_http, s3, tmp_path):
    srv, bucket = basalt_http, new_bucket(s3)
    assert one_json(ok(srv.cli("bucket", "lifecycle", bucket, "--show", "--json"))) == {"Rules": []}
    assert ok(srv.cli("bucket", "lifecycle", bucket, "--show")).stdout.strip() == \
        f"bucket {bucket}: no lifecycle configuration"
    path = write(tmp_path, "rules.json", RULES)
    out = ok(srv.cli("bucket", "lifecycle", bucket, path))
    assert out.stdout.strip() == f"bucket {bucket}: lifecycle configuration set (3 rules)"
    stored = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [r["ID"] for r in stored] == ["logs", "scratch", "versions"]
    assert stored[0] == RULES["Rules"][0] and stored[2] == RULES["Rules"][2]
    assert stored[1]["Filter"] == RULES["Rules"][1]["Filter"]
    assert stored[1]["Expiration"]["Date"].isoformat() == "2031-01-01T00:00:00+00:00"
    # --show --json prints the document the command takes: it round-trips.
    shown = one_json(ok(srv.cli("bucket", "lifecycle", bucket, "--show", "--json")))
    assert shown == {"Rules": [RULES["Rules"][0],
                               dict(RULES["Rules"][1], Expiration={"Date": "2031-01-01T00:00:00+00:00"}),
                               RULES["Rules"][2]]}
    other = new_bucket(s3)
    doc = one_json(ok(srv.cli("bucket", "lifecycle", other, write(tmp_path, "shown.json", shown),
                              "--json")))
    assert doc == {"bucket": other, "rules": 3}
    assert s3.get_bucket_lifecycle_configuration(Bucket=other)["Rules"] == stored
    # The table.
    lines = ok(srv.cli("bucket", "lifecycle", bucket, "--show")).stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "FILTER", "ACTIONS"] and len(lines) == 4
    assert lines[1].split()[:3] == ["logs", "Enabled", "prefix=logs/"]
    assert "expire after 30d" in lines[1]
    assert "prefix=tmp/ tag:class=scratch size>10" in lines[2] and "2031-01-01" in lines[2]
    assert lines[3].split()[:3] == ["versions", "Disabled", "(all)"]
    assert "noncurrent after 7d, keep 2" in lines[3] and "abort uploads after 1d" in lines[3]
    # Standard input, and the --cli-input-json shape; a new document replaces the old.
    one = {"Rules": [{"ID": "only", "Prefix": "old/", "Status": "Enabled",
                      "Expiration": {"Days": 4}}]}
    ok(run(srv, *where(srv), "bucket", "lifecycle", bucket, "-", stdin=json.dumps(one)))
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == one["Rules"]
    wrapped = write(tmp_path, "wrapped.json", {"Bucket": bucket, "LifecycleConfiguration": RULES})
    ok(srv.cli("bucket", "lifecycle", bucket, wrapped))
    assert len(s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]) == 3
    # Delete.
    assert one_json(ok(srv.cli("bucket", "lifecycle", bucket, "--delete", "--json"))) == \
        {"bucket": bucket, "deleted": True}
    assert one_json(ok(srv.cli("bucket", "lifecycle", bucket, "--show", "--json"))) == {"Rules": []}


def test_lifecycle_refusals(basalt_http, s3, tmp_path):
    srv, bucket = basalt_http, new_bucket(s3)
    good = write(tmp_path, "good.json", RULES)
    ok(srv.cli("bucket", "lifecycle", bucket, good))
    before = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    missing = f"cli-missing-{uuid.uuid4().hex[:8]}"
    outs = many(srv, [("bucket", "lifecycle", missing, *args, *extra)
                      for args in ((good,), ("--show",), ("--delete",))
                      for extra in ((), ("--json",))])
    for text, as_json in zip(outs[::2], outs[1::2], strict=True):
        line = one_line(text)
        assert "NoSuchBucket" in line and missing in line, line
        assert json_error(as_json)["error"] == "NoSuchBucket"
    cases = [
        ("bad.json", '{"Rules": [', "InvalidJSON", "not valid JSON"),
        ("list.json", "[1, 2]", "InvalidArgument", '"Rules"'),
        ("norules.json", '{"rules": []}', "InvalidArgument", '"Rules"'),
        ("unknown.json", {"Rules": [{"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""},
                                     "Expiration": {"Days": 1}, "Colour": "blue"}]},
         "InvalidArgument", "Colour"),
        ("zero.json", {"Rules": [{"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""},
                                  "Expiration": {"Days": 0}}]}, "InvalidArgument", "Days"),
        ("noaction.json", {"Rules": [{"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""}}]},
         "InvalidRequest", "action"),
        ("status.json", {"Rules": [{"ID": "x", "Status": "On", "Filter": {"Prefix": ""},
                                    "Expiration": {"Days": 1}}]}, "MalformedXML", "MalformedXML"),
    ]
    paths = [write(tmp_path, name, content) for name, content, _, _ in cases]
    outs = many(srv, [("bucket", "lifecycle", bucket, path, *extra)
                      for path in paths for extra in ((), ("--json",))])
    for (name, _, error, words), text, as_json in zip(cases, outs[::2], outs[1::2], strict=True):
        line = one_line(text)
        assert words in line, (name, line)
        doc = json_error(as_json)
        assert doc["error"] == error, (name, doc)
    line = one_line(srv.cli("bucket", "lifecycle", bucket, str(tmp_path / "absent.json"),
                            check=False))
    assert "absent.json" in line and "No such file" in line
    for args in ((), (good, "--show"), ("--show", "--delete")):
        out = srv.cli("bucket", "lifecycle", bucket, *args, check=False)
        assert out.returncode == 2 and "Traceback" not in out.stderr and not out.stdout, out
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == before


def test_bucket_help_lists_the_commands(basalt_http):
    out = ok(basalt_http.cli("bucket", "--help"))
    for word in ("versioning", "lock", "lifecycle"):
        assert word in out.stdout
    assert os.path.basename(BASALT) == "basalt"
