"""Bucket lifecycle through real boto3 against `basalt serve --lifecycle-day-seconds 2`.

The configuration round trip, AWS's error codes for malformed and invalid
documents (and nothing stored after them), the ``x-amz-expiration`` header, and
the rules carried out by the background scanner: expiration by prefix and tag,
delete markers for current versions, NoncurrentVersionExpiration with
NewerNoncurrentVersions, ExpiredObjectDeleteMarker, AbortIncompleteMultipartUpload,
and object lock, which the scanner never overrides. Each of those is counted in
``basalt_lifecycle_actions_total``.

A lifecycle day lasts 2 s here, so "Days: 1" comes due 2 to 4 s after a write
(AWS rounds up to the next day boundary) and the scanner runs every 0.5 s.
"""

from __future__ import annotations

import datetime
import email.utils
import re
import shutil
import tempfile
import time
import urllib.request
import uuid

import pytest
from botocore.exceptions import ClientError

from .conftest import start_server, stop_server
from .test_s3_hostile import Raw, content_md5

DAY = 2.0          # seconds in a lifecycle day, as the server is started
WAIT = 20.0        # how long a rule may take to be carried out


@pytest.fixture(scope="module")
def server():
    tmp = tempfile.mkdtemp(prefix="basalt-e2e-lifecycle-")
    srv = start_server(tmp, extra=("--lifecycle-day-seconds", str(int(DAY))))
    yield srv
    stop_server(srv)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def s3(server):
    return server.client()


def new_bucket(s3, versioned: bool = False, **kwargs) -> str:
    name = f"lc-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, **kwargs)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def code(err: pytest.ExceptionInfo) -> str:
    return err.value.response["Error"]["Code"]


def put_rules(s3, bucket: str, *rules: dict) -> None:
    s3.put_bucket_lifecycle_configuration(Bucket=bucket,
                                          LifecycleConfiguration={"Rules": list(rules)})


def stored_rules(s3, bucket: str) -> list[dict] | None:
    try:
        return s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration", exc.response
        return None


def keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def versions(s3, bucket: str) -> tuple[list[tuple[str, str, bool]], list[tuple[str, str, bool]]]:
    """(versions, delete markers) as (key, version id, is latest), in listing order."""
    page = s3.list_object_versions(Bucket=bucket)
    assert not page["IsTruncated"]
    return ([(v["Key"], v["VersionId"], v["IsLatest"]) for v in page.get("Versions", [])],
            [(m["Key"], m["VersionId"], m["IsLatest"]) for m in page.get("DeleteMarkers", [])])


def wait_for(check, what: str, timeout: float = WAIT):
    """Poll ``check()`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


# --- metrics ----------------------------------------------------------------------------

def actions(server) -> dict[str, float]:
    """basalt_lifecycle_actions_total by action."""
    with urllib.request.urlopen(server.endpoint + "/_basalt/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r'^basalt_lifecycle_actions_total\{[^}]*action="(\w+)"[^}]*\} (\S+)$', line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def wait_counted(server, before: dict[str, float], **expected: int) -> dict[str, float]:
    """Wait until each action's count has grown by exactly ``expected`` since ``before``
    (a count past it fails at the deadline)."""
    def delta():
        now = actions(server)
        got = {a: now.get(a, 0.0) - before.get(a, 0.0) for a in expected}
        return got if got == {a: float(n) for a, n in expected.items()} else None
    try:
        return wait_for(delta, f"lifecycle counts {expected}", timeout=5)
    except AssertionError:
        now = actions(server)
        raise AssertionError(f"counts grew by {dict((a, now.get(a, 0) - before.get(a, 0)) for a in now)},"
                             f" expected {expected}") from None


# --- configuration round trip -----------------------------------------------------------

ROUND_TRIP = [
    {"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
     "Expiration": {"Days": 30}},
    {"ID": "tagged-small", "Status": "Disabled",
     "Filter": {"And": {"Prefix": "tmp/", "Tags": [{"Key": "class", "Value": "scratch"}],
                        "ObjectSizeGreaterThan": 10, "ObjectSizeLessThan": 1000}},
     "Expiration": {"Date": datetime.datetime(2031, 1, 1, tzinfo=datetime.UTC)}},
    {"ID": "old-versions", "Filter": {"Prefix": ""}, "Status": "Enabled",
     "Expiration": {"ExpiredObjectDeleteMarker": True},
     "NoncurrentVersionExpiration": {"NoncurrentDays": 7, "NewerNoncurrentVersions": 3},
     "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}},
    {"ID": "one-tag", "Filter": {"Tag": {"Key": "k", "Value": "v"}}, "Status": "Enabled",
     "Expiration": {"Days": 1}},
]


def test_put_get_delete_round_trip(s3):
    bucket = new_bucket(s3)
    assert stored_rules(s3, bucket) is None
    put_rules(s3, bucket, *ROUND_TRIP)
    assert stored_rules(s3, bucket) == ROUND_TRIP
    # A second PUT replaces the whole configuration; a rule sent without an ID gets one.
    put_rules(s3, bucket, {"Filter": {"Prefix": "a/"}, "Status": "Enabled",
                           "Expiration": {"Days": 5}})
    (rule,) = stored_rules(s3, bucket)
    assert rule["ID"] and rule["Filter"] == {"Prefix": "a/"} and rule["Expiration"] == {"Days": 5}
    s3.delete_bucket_lifecycle(Bucket=bucket)
    with pytest.raises(ClientError) as err:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert code(err) == "NoSuchLifecycleConfiguration"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    s3.delete_bucket_lifecycle(Bucket=bucket)        # deleting none is no error
    missing = f"lc-missing-{uuid.uuid4().hex[:8]}"
    for call in (lambda: put_rules(s3, missing, ROUND_TRIP[0]),
                 lambda: s3.get_bucket_lifecycle_configuration(Bucket=missing),
                 lambda: s3.delete_bucket_lifecycle(Bucket=missing)):
        with pytest.raises(ClientError) as err:
            call()
        assert code(err) == "NoSuchBucket"


# --- invalid documents ------------------------------------------------------------------

GOOD = {"ID": "good", "Filter": {"Prefix": "g/"}, "Status": "Enabled", "Expiration": {"Days": 3}}

INVALID = [
    ("status", [dict(GOOD, Status="Sometimes")], "MalformedXML"),
    ("days-zero", [dict(GOOD, Expiration={"Days": 0})], "InvalidArgument"),
    ("days-negative", [dict(GOOD, Expiration={"Days": -1})], "InvalidArgument"),
    ("no-action", [{"ID": "x", "Filter": {"Prefix": ""}, "Status": "Enabled"}], "InvalidRequest"),
    ("duplicate-id", [GOOD, dict(GOOD, Filter={"Prefix": "h/"})], "InvalidArgument"),
    ("long-id", [dict(GOOD, ID="i" * 256)], "InvalidArgument"),
    ("noncurrent-days-zero", [dict(GOOD, NoncurrentVersionExpiration={"NoncurrentDays": 0})],
     "InvalidArgument"),
    ("newer-too-many", [dict(GOOD, NoncurrentVersionExpiration={
        "NoncurrentDays": 1, "NewerNoncurrentVersions": 101})], "InvalidArgument"),
    ("abort-with-tag", [{"ID": "a", "Status": "Enabled", "Filter": {"Tag": {"Key": "k", "Value": "v"}},
                         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}],
     "InvalidRequest"),
    ("marker-with-tag", [{"ID": "m", "Status": "Enabled", "Filter": {"Tag": {"Key": "k", "Value": "v"}},
                          "Expiration": {"ExpiredObjectDeleteMarker": True}}], "InvalidRequest"),
    ("abort-days-zero", [dict(GOOD, AbortIncompleteMultipartUpload={"DaysAfterInitiation": 0})],
     "InvalidArgument"),
    ("date-not-midnight", [dict(GOOD, Expiration={
        "Date": datetime.datetime(2031, 1, 1, 12, tzinfo=datetime.UTC)})], "InvalidArgument"),
    ("sizes-crossed", [dict(GOOD, Filter={"And": {"Prefix": "", "ObjectSizeGreaterThan": 100,
                                                   "ObjectSizeLessThan": 100}})], "InvalidArgument"),
    ("duplicate-tags", [dict(GOOD, Filter={"And": {"Prefix": "", "Tags": [
        {"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]}})], "InvalidRequest"),
    ("transition", [dict(GOOD, Transitions=[{"Days": 30, "StorageClass": "GLACIER"}])],
     "NotImplemented"),
]


@pytest.mark.parametrize("rules,expected", [(r, c) for _, r, c in INVALID],
                         ids=[name for name, _, _ in INVALID])
def test_invalid_configuration_refused_and_nothing_stored(s3, rules, expected):
    bucket = new_bucket(s3)
    with pytest.raises(ClientError) as err:
        put_rules(s3, bucket, *rules)
    assert code(err) == expected
    assert stored_rules(s3, bucket) is None
    put_rules(s3, bucket, GOOD)
    with pytest.raises(ClientError) as err:
        put_rules(s3, bucket, *rules)
    assert code(err) == expected
    assert stored_rules(s3, bucket) == [GOOD]      # the earlier configuration stands


def _doc(rules: str) -> bytes:
    return (b'<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            + rules.encode() + b"</LifecycleConfiguration>")


_RULE = "<ID>r</ID><Filter><Prefix>p/</Prefix></Filter><Status>Enabled</Status>"
MALFORMED = [
    ("not-xml", b"this is not xml"),
    ("empty", b""),
    ("wrong-root", b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"),
    ("no-rules", _doc("")),
    ("unknown-element", _doc(f"<Rule>{_RULE}<Expiration><Days>1</Days></Expiration>"
                             "<Colour>blue</Colour></Rule>")),
    ("days-and-date", _doc(f"<Rule>{_RULE}<Expiration><Days>1</Days>"
                           "<Date>2031-01-01T00:00:00Z</Date></Expiration></Rule>")),
    ("days-not-a-number", _doc(f"<Rule>{_RULE}<Expiration><Days>soon</Days></Expiration></Rule>")),
    ("no-status", _doc("<Rule><ID>r</ID><Filter><Prefix>p/</Prefix></Filter>"
                       "<Expiration><Days>1</Days></Expiration></Rule>")),
    ("no-filter-nor-prefix", _doc("<Rule><ID>r</ID><Status>Enabled</Status>"
                                  "<Expiration><Days>1</Days></Expiration></Rule>")),
    ("prefix-and-filter", _doc("<Rule><ID>r</ID><Prefix>a</Prefix><Filter><Prefix>p/</Prefix>"
                               "</Filter><Status>Enabled</Status>"
                               "<Expiration><Days>1</Days></Expiration></Rule>")),
    ("two-conditions", _doc("<Rule><ID>r</ID><Filter><Prefix>p/</Prefix><Tag><Key>k</Key>"
                            "<Value>v</Value></Tag></Filter><Status>Enabled</Status>"
                            "<Expiration><Days>1</Days></Expiration></Rule>")),
    ("empty-expiration", _doc(f"<Rule>{_RULE}<Expiration></Expiration></Rule>")),
    ("doctype", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "1">]>'
                + _doc(f"<Rule>{_RULE}<Expiration><Days>&e;</Days></Expiration></Rule>")),
]


@pytest.mark.parametrize("body", [b for _, b in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_documents_refused_and_nothing_stored(server, s3, body):
    raw = Raw(server)
    bucket = new_bucket(s3)
    put_rules(s3, bucket, GOOD)
    resp = raw.signed("PUT", f"/{bucket}", "lifecycle=", {"Content-MD5": content_md5(body)}, body)
    assert (resp.status, resp.code) == (400, "MalformedXML"), resp.body[:500]
    assert stored_rules(s3, bucket) == [GOOD]


def test_raw_put_needs_an_integrity_header_and_legacy_prefix_round_trips(server, s3):
    raw = Raw(server)
    bucket = new_bucket(s3)
    body = _doc("<Rule><ID>legacy</ID><Prefix>old/</Prefix><Status>Enabled</Status>"
                "<Expiration><Days>9</Days></Expiration></Rule>")
    resp = raw.signed("PUT", f"/{bucket}", "lifecycle=", {}, body)
    assert (resp.status, resp.code) == (400, "InvalidRequest"), resp.body[:500]
    assert stored_rules(s3, bucket) is None
    resp = raw.signed("PUT", f"/{bucket}", "lifecycle=", {"Content-MD5": content_md5(b"other")}, body)
    assert (resp.status, resp.code) == (400, "BadDigest"), resp.body[:500]
    assert stored_rules(s3, bucket) is None
    resp = raw.signed("PUT", f"/{bucket}", "lifecycle=", {"Content-MD5": content_md5(body)}, body)
    assert resp.status == 200, resp.body[:500]
    assert stored_rules(s3, bucket) == [{"ID": "legacy", "Prefix": "old/", "Status": "Enabled",
                                         "Expiration": {"Days": 9}}]


# --- x-amz-expiration -------------------------------------------------------------------

_EXPIRATION = re.compile(r'^expiry-date="([^"]+)", rule-id="([^"]*)"$')


def expiration(response: dict) -> tuple[float, str] | None:
    """(expiry as a Unix time, rule id) of a response's x-amz-expiration, else None."""
    value = response.get("Expiration")
    if value is None:
        return None
    m = _EXPIRATION.match(value)
    assert m, value
    return email.utils.parsedate_to_datetime(m.group(1)).timestamp(), m.group(2)


def due(written: float, days: int) -> float:
    """When an object written at ``written`` expires after ``days`` (rounded up to a day)."""
    return -(-(written + days * DAY) // DAY) * DAY


def assert_expires(response: dict, rule_id: str, days: int, written: float) -> None:
    found = expiration(response)
    assert found is not None, response["ResponseMetadata"]["HTTPHeaders"]
    expiry, rule = found
    assert rule == rule_id
    # The header has whole seconds; `written` is the client's clock around the PUT.
    assert abs(expiry - due(written, days)) <= DAY + 1, (expiry, written)


def test_expiration_header_on_get_and_head(s3):
    bucket = new_bucket(s3)
    put_rules(s3, bucket,
              {"ID": "year", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
               "Expiration": {"Days": 365}},
              {"ID": "tagged", "Filter": {"Tag": {"Key": "k", "Value": "v"}}, "Status": "Enabled",
               "Expiration": {"Days": 30}},
              {"ID": "off", "Filter": {"Prefix": "off/"}, "Status": "Disabled",
               "Expiration": {"Days": 1}},
              {"ID": "versions-only", "Filter": {"Prefix": "nc/"}, "Status": "Enabled",
               "NoncurrentVersionExpiration": {"NoncurrentDays": 1}})
    written = time.time()
    s3.put_object(Bucket=bucket, Key="logs/a", Body=b"a")
    s3.put_object(Bucket=bucket, Key="data/b", Body=b"b", Tagging="k=v")
    s3.put_object(Bucket=bucket, Key="logs/both", Body=b"c", Tagging="k=v")
    s3.put_object(Bucket=bucket, Key="data/wrong-tag", Body=b"d", Tagging="k=w")
    for key in ("data/plain", "off/x", "nc/y", "logsx"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"e")
    for call in (s3.head_object, s3.get_object):
        assert_expires(call(Bucket=bucket, Key="logs/a"), "year", 365, written)
        assert_expires(call(Bucket=bucket, Key="data/b"), "tagged", 30, written)
        # Two rules: the earlier expiry is the one announced.
        assert_expires(call(Bucket=bucket, Key="logs/both"), "tagged", 30, written)
        for key in ("data/wrong-tag", "data/plain", "off/x", "nc/y", "logsx"):
            assert expiration(call(Bucket=bucket, Key=key)) is None, key
    s3.delete_bucket_lifecycle(Bucket=bucket)
    assert expiration(s3.head_object(Bucket=bucket, Key="logs/a")) is None


def test_expiration_header_on_put(s3):
    bucket = new_bucket(s3)
    put_rules(s3, bucket, {"ID": "year", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
                           "Expiration": {"Days": 365}})
    written = time.time()
    assert expiration(s3.put_object(Bucket=bucket, Key="other", Body=b"o")) is None
    assert_expires(s3.put_object(Bucket=bucket, Key="logs/a", Body=b"a"), "year", 365, written)


# --- the scanner ------------------------------------------------------------------------

def test_expiration_by_prefix_and_tag_in_unversioned_bucket(server, s3):
    bucket = new_bucket(s3)
    put_rules(s3, bucket,
              {"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled",
               "Expiration": {"Days": 1}},
              {"ID": "scratch", "Filter": {"Tag": {"Key": "class", "Value": "scratch"}},
               "Status": "Enabled", "Expiration": {"Days": 1}},
              {"ID": "disabled", "Filter": {"Prefix": "keep/"}, "Status": "Disabled",
               "Expiration": {"Days": 1}})
    before = actions(server)
    written = time.time()
    for key in ("tmp/a", "tmp/b/c"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x" * 100)
    s3.put_object(Bucket=bucket, Key="keep/scratch", Body=b"s", Tagging="class=scratch")
    s3.put_object(Bucket=bucket, Key="keep/precious", Body=b"p", Tagging="class=precious")
    for key in ("keep/plain", "tmpfile", "TMP/a"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"k")
    survivors = ["TMP/a", "keep/plain", "keep/precious", "tmpfile"]
    if time.time() - written < DAY * 0.9:     # nothing is due before a whole day has passed
        assert sorted(keys(s3, bucket)) == sorted(survivors + ["keep/scratch", "tmp/a", "tmp/b/c"])
    wait_for(lambda: keys(s3, bucket) == survivors, "the matching objects expire")
    assert time.time() - written >= DAY * 0.9
    wait_counted(server, before, expire_current=3, expire_noncurrent=0)
    for key in survivors:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() in (b"k", b"p")
    # Unversioned: expiration deletes outright, leaving no delete marker behind.
    vs, markers = versions(s3, bucket)
    assert [k for k, _, _ in vs] == survivors and markers == []
    s3.delete_bucket_lifecycle(Bucket=bucket)


def test_versioned_expiration_and_newer_noncurrent_versions(server, s3):
    bucket = new_bucket(s3, versioned=True)
    put_rules(s3, bucket, {"ID": "all", "Filter": {"Prefix": ""}, "Status": "Enabled",
                           "Expiration": {"Days": 1},
                           "NoncurrentVersionExpiration": {"NoncurrentDays": 1,
                                                           "NewerNoncurrentVersions": 1}})
    before = actions(server)
    doc = [s3.put_object(Bucket=bucket, Key="doc", Body=f"v{i}".encode())["VersionId"]
           for i in range(4)]
    solo = s3.put_object(Bucket=bucket, Key="solo", Body=b"solo")["VersionId"]

    def settled():
        vs, markers = versions(s3, bucket)
        return (vs, markers) if len(vs) == 2 and len(markers) == 2 else None
    vs, markers = wait_for(settled, "current versions expire and old noncurrent ones go")
    # Each key: a delete marker on top, and only the newest noncurrent version kept.
    assert vs == [("doc", doc[-1], False), ("solo", solo, False)]
    assert [(k, latest) for k, _, latest in markers] == [("doc", True), ("solo", True)]
    assert {m for _, m, _ in markers}.isdisjoint(doc + [solo])
    wait_counted(server, before, expire_current=2, expire_noncurrent=3, remove_delete_marker=0)
    assert keys(s3, bucket) == []
    got = s3.get_object(Bucket=bucket, Key="doc", VersionId=doc[-1])
    assert got["Body"].read() == b"v3"
    for vid in doc[:-1]:
        with pytest.raises(ClientError) as err:
            s3.head_object(Bucket=bucket, Key="doc", VersionId=vid)
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # Stable: the marker still hides a version, so it stays; the kept version stays.
    time.sleep(3 * DAY / 4 + 0.5)
    assert versions(s3, bucket) == (vs, markers)
    s3.delete_bucket_lifecycle(Bucket=bucket)


def test_expired_object_delete_markers_removed(server, s3):
    bucket = new_bucket(s3, versioned=True)
    # A marker over a version (it stays), a marker left alone by deleting the only
    # version, and a marker on a key that never had data (both lone: removed).
    hidden = s3.put_object(Bucket=bucket, Key="hidden", Body=b"h")["VersionId"]
    hidden_marker = s3.delete_object(Bucket=bucket, Key="hidden")["VersionId"]
    gone = s3.put_object(Bucket=bucket, Key="gone", Body=b"g")["VersionId"]
    s3.delete_object(Bucket=bucket, Key="gone")
    s3.delete_object(Bucket=bucket, Key="gone", VersionId=gone)
    s3.delete_object(Bucket=bucket, Key="never")
    assert len(versions(s3, bucket)[1]) == 3
    before = actions(server)
    put_rules(s3, bucket, {"ID": "markers", "Filter": {"Prefix": ""}, "Status": "Enabled",
                           "Expiration": {"ExpiredObjectDeleteMarker": True}})
    wait_for(lambda: len(versions(s3, bucket)[1]) == 1, "lone delete markers are removed")
    wait_counted(server, before, remove_delete_marker=2, expire_current=0, expire_noncurrent=0)
    assert versions(s3, bucket) == ([("hidden", hidden, False)], [("hidden", hidden_marker, True)])
    s3.delete_bucket_lifecycle(Bucket=bucket)


def test_abort_incomplete_multipart_upload(server, s3):
    bucket = new_bucket(s3)
    put_rules(s3, bucket, {"ID": "abort", "Filter": {"Prefix": "up/"}, "Status": "Enabled",
                           "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}})
    before = actions(server)
    stale = s3.create_multipart_upload(Bucket=bucket, Key="up/big")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="up/big", UploadId=stale, PartNumber=1, Body=b"p" * 1000)
    other = s3.create_multipart_upload(Bucket=bucket, Key="down/big")["UploadId"]

    def uploads():
        return [(u["Key"], u["UploadId"]) for u in
                s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert sorted(uploads()) == sorted([("up/big", stale), ("down/big", other)])
    wait_for(lambda: uploads() == [("down/big", other)], "the stale upload is aborted")
    wait_counted(server, before, abort_upload=1)
    with pytest.raises(ClientError) as err:
        s3.upload_part(Bucket=bucket, Key="up/big", UploadId=stale, PartNumber=2, Body=b"q")
    assert code(err) == "NoSuchUpload"
    # The upload the rule does not cover still completes.
    part = s3.upload_part(Bucket=bucket, Key="down/big", UploadId=other, PartNumber=1, Body=b"d")
    s3.complete_multipart_upload(Bucket=bucket, Key="down/big", UploadId=other,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="down/big")["Body"].read() == b"d"
    s3.delete_bucket_lifecycle(Bucket=bucket)


def test_noncurrent_expiration_never_removes_locked_versions(server, s3):
    bucket = new_bucket(s3, ObjectLockEnabledForBucket=True)
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    locked = [s3.put_object(Bucket=bucket, Key="locked", Body=f"l{i}".encode(),
                            ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)["VersionId"]
              for i in range(3)]
    free = [s3.put_object(Bucket=bucket, Key="free", Body=f"f{i}".encode())["VersionId"]
            for i in range(2)]
    before = actions(server)
    put_rules(s3, bucket, {"ID": "nc", "Filter": {"Prefix": ""}, "Status": "Enabled",
                           "NoncurrentVersionExpiration": {"NoncurrentDays": 1}})
    # The unlocked noncurrent version goes: the scanner does walk this bucket.
    wait_for(lambda: [v for k, v, _ in versions(s3, bucket)[0] if k == "free"] == [free[1]],
             "the unlocked noncurrent version expires")
    # Each pass skips both locked noncurrent versions and counts them; wait for several.
    wait_for(lambda: actions(server).get("skipped_locked", 0) - before.get("skipped_locked", 0) >= 8,
             "four scanner passes skip the locked versions")
    now = actions(server)
    assert now.get("expire_noncurrent", 0) - before.get("expire_noncurrent", 0) == 1
    assert (now.get("skipped_locked", 0) - before.get("skipped_locked", 0)) % 2 == 0
    vs, markers = versions(s3, bucket)
    assert markers == []
    assert vs == [("free", free[1], True)] + [("locked", v, v == locked[-1]) for v in reversed(locked)]
    for i, vid in enumerate(locked):
        got = s3.get_object(Bucket=bucket, Key="locked", VersionId=vid)
        assert got["Body"].read() == f"l{i}".encode()
        assert got["ObjectLockMode"] == "GOVERNANCE"
    s3.delete_bucket_lifecycle(Bucket=bucket)
    # Clean up what can be: the locked versions need a governance bypass.
    for vid in locked:
        s3.delete_object(Bucket=bucket, Key="locked", VersionId=vid, BypassGovernanceRetention=True)
