"""Object lock through real boto3 (and aws-cli) against `basalt serve`.

Every rule with the code S3 answers: a bucket created with object lock is
versioned for good; its configuration (default retention in days or years,
GOVERNANCE or COMPLIANCE) and what a new version gets from it; retention and
legal hold per version; who may delete or shorten what (AccessDenied), and
the refusals of malformed or misplaced requests — each followed by a check
that nothing changed. Locks outlive a restart and `basalt heal`.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from .conftest import ACCESS, SECRET, Server, start_server, stop_server
from .s3_errors import refused
from .test_s3_awscli import api, aws, aws_config  # noqa: F401  (fixtures)

DAY = timedelta(days=1)


def ahead(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def near(a: datetime, b: datetime, slack: float = 30) -> bool:
    return abs((a - b).total_seconds()) <= slack


def raw(server: Server, method: str, path: str, body: bytes = b"",
        headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A SigV4-signed request with a body boto3 would not build (Content-MD5 set)."""
    headers = dict(headers or {})
    headers.setdefault("Content-MD5", base64.b64encode(hashlib.md5(body).digest()).decode())
    req = AWSRequest(method=method, url=server.endpoint + path, data=body, headers=headers)
    S3SigV4Auth(Credentials(ACCESS, SECRET), "s3", "us-east-1").add_auth(req)
    prepared = req.prepare()
    ctx = ssl.create_default_context(cafile=server.ca_path) if server.ca_path else None
    request = urllib.request.Request(prepared.url, data=body, method=method,
                                     headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(request, timeout=30, context=ctx) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def error_code(body: bytes) -> str:
    return ET.fromstring(body).findtext("Code") or ""


def new_name() -> str:
    return f"lk-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def lock_bucket(s3):
    name = new_name()
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def retention(s3, bucket, key, vid):
    return s3.get_object_retention(Bucket=bucket, Key=key, VersionId=vid)["Retention"]


def versions(s3, bucket, key):
    listed = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return [v["VersionId"] for v in listed.get("Versions", []) if v["Key"] == key]


# --- the bucket's configuration ----------------------------------------------------------

def test_bucket_created_with_lock_is_versioned_for_good(s3, lock_bucket):
    assert s3.get_bucket_versioning(Bucket=lock_bucket)["Status"] == "Enabled"
    config = s3.get_object_lock_configuration(Bucket=lock_bucket)["ObjectLockConfiguration"]
    assert config == {"ObjectLockEnabled": "Enabled"}
    refused("InvalidBucketState", s3.put_bucket_versioning, Bucket=lock_bucket,
            VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=lock_bucket)["Status"] == "Enabled"
    # Without a default rule a new version is not locked.
    vid = s3.put_object(Bucket=lock_bucket, Key="free", Body=b"x")["VersionId"]
    head = s3.head_object(Bucket=lock_bucket, Key="free")
    assert "ObjectLockMode" not in head and "ObjectLockRetainUntilDate" not in head
    refused("NoSuchObjectLockConfiguration", s3.get_object_retention, Bucket=lock_bucket,
            Key="free", VersionId=vid)
    s3.delete_object(Bucket=lock_bucket, Key="free", VersionId=vid)


@pytest.mark.parametrize("mode,period", [("GOVERNANCE", {"Days": 3}), ("COMPLIANCE", {"Years": 1}),
                                         ("GOVERNANCE", {"Years": 2}), ("COMPLIANCE", {"Days": 1})])
def test_default_retention_applies_to_new_versions(s3, lock_bucket, mode, period):
    rule = {"DefaultRetention": {"Mode": mode, **period}}
    s3.put_object_lock_configuration(Bucket=lock_bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": rule})
    got = s3.get_object_lock_configuration(Bucket=lock_bucket)["ObjectLockConfiguration"]
    assert got == {"ObjectLockEnabled": "Enabled", "Rule": rule}
    days = period.get("Days", 0) + 365 * period.get("Years", 0)
    put = s3.put_object(Bucket=lock_bucket, Key="doc", Body=b"hello")
    expected = datetime.now(UTC) + days * DAY
    head = s3.head_object(Bucket=lock_bucket, Key="doc")
    assert head["ObjectLockMode"] == mode
    assert near(head["ObjectLockRetainUntilDate"], expected)
    got = s3.get_object(Bucket=lock_bucket, Key="doc")
    assert got["ObjectLockMode"] == mode and got["Body"].read() == b"hello"
    stored = retention(s3, lock_bucket, "doc", put["VersionId"])
    assert stored["Mode"] == mode and stored["RetainUntilDate"] == head["ObjectLockRetainUntilDate"]
    # Explicit headers win over the default.
    until = ahead(3600).replace(microsecond=0)
    other = "COMPLIANCE" if mode == "GOVERNANCE" else "GOVERNANCE"
    s3.put_object(Bucket=lock_bucket, Key="explicit", Body=b"e", ObjectLockMode=other,
                  ObjectLockRetainUntilDate=until)
    head = s3.head_object(Bucket=lock_bucket, Key="explicit")
    assert head["ObjectLockMode"] == other and head["ObjectLockRetainUntilDate"] == until
    # A configuration without a rule removes the default.
    s3.put_object_lock_configuration(Bucket=lock_bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled"})
    assert s3.get_object_lock_configuration(Bucket=lock_bucket)["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled"}
    s3.put_object(Bucket=lock_bucket, Key="after", Body=b"a")
    assert "ObjectLockMode" not in s3.head_object(Bucket=lock_bucket, Key="after")


def test_explicit_lock_on_put(s3, lock_bucket):
    until = ahead(7200).replace(microsecond=0)
    put = s3.put_object(Bucket=lock_bucket, Key="k", Body=b"v", ObjectLockMode="GOVERNANCE",
                        ObjectLockRetainUntilDate=until, ObjectLockLegalHoldStatus="ON")
    head = s3.head_object(Bucket=lock_bucket, Key="k", VersionId=put["VersionId"])
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] == until
    assert head["ObjectLockLegalHoldStatus"] == "ON"
    hold = s3.get_object_legal_hold(Bucket=lock_bucket, Key="k", VersionId=put["VersionId"])
    assert hold["LegalHold"]["Status"] == "ON"
    s3.put_object_legal_hold(Bucket=lock_bucket, Key="k", VersionId=put["VersionId"],
                             LegalHold={"Status": "OFF"})
    # A date in the past, a mode alone, an unknown mode: InvalidArgument, nothing stored.
    refused("InvalidArgument", s3.put_object, Bucket=lock_bucket, Key="bad", Body=b"x",
            ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=ahead(-60))
    refused("InvalidArgument", s3.put_object, Bucket=lock_bucket, Key="bad", Body=b"x",
            ObjectLockMode="COMPLIANCE")
    refused("InvalidArgument", s3.put_object, Bucket=lock_bucket, Key="bad", Body=b"x",
            ObjectLockMode="FOREVER", ObjectLockRetainUntilDate=until)
    refused("InvalidArgument", s3.put_object, Bucket=lock_bucket, Key="bad", Body=b"x",
            ObjectLockLegalHoldStatus="MAYBE")
    assert versions(s3, lock_bucket, "bad") == []


def test_lock_on_a_bucket_without_lock(s3, bucket):
    until = ahead(3600)
    refused("InvalidRequest", s3.put_object, Bucket=bucket, Key="k", Body=b"x",
            ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    refused("InvalidRequest", s3.put_object, Bucket=bucket, Key="k", Body=b"x",
            ObjectLockLegalHoldStatus="ON")
    refused("InvalidRequest", s3.create_multipart_upload, Bucket=bucket, Key="k",
            ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
    refused("404", s3.head_object, Bucket=bucket, Key="k")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    s3.put_object(Bucket=bucket, Key="k", Body=b"plain")
    refused("InvalidRequest", s3.put_object_retention, Bucket=bucket, Key="k",
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})
    refused("InvalidRequest", s3.get_object_retention, Bucket=bucket, Key="k")
    refused("InvalidRequest", s3.put_object_legal_hold, Bucket=bucket, Key="k",
            LegalHold={"Status": "ON"})
    refused("InvalidRequest", s3.get_object_legal_hold, Bucket=bucket, Key="k")
    refused("ObjectLockConfigurationNotFoundError", s3.get_object_lock_configuration, Bucket=bucket)
    head = s3.head_object(Bucket=bucket, Key="k")
    assert "ObjectLockMode" not in head and "ObjectLockLegalHoldStatus" not in head
    s3.delete_object(Bucket=bucket, Key="k")
    refused("404", s3.head_object, Bucket=bucket, Key="k")


def test_lock_configuration_needs_versioning(s3, bucket):
    config = {"ObjectLockEnabled": "Enabled",
              "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}
    refused("InvalidBucketState", s3.put_object_lock_configuration, Bucket=bucket,
            ObjectLockConfiguration=config)
    refused("ObjectLockConfigurationNotFoundError", s3.get_object_lock_configuration, Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    refused("InvalidBucketState", s3.put_object_lock_configuration, Bucket=bucket,
            ObjectLockConfiguration=config)
    refused("ObjectLockConfigurationNotFoundError", s3.get_object_lock_configuration, Bucket=bucket)
    # A versioned bucket can turn object lock on, and then cannot suspend versioning.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=config)
    assert s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"] == config
    refused("InvalidBucketState", s3.put_bucket_versioning, Bucket=bucket,
            VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert s3.head_object(Bucket=bucket, Key="k")["ObjectLockMode"] == "GOVERNANCE"


MALFORMED = [
    (b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled", "MalformedXML"),
    (b"not xml at all", "MalformedXML"),
    (b"<ObjectLockConfiguration><ObjectLockEnabled>Disabled</ObjectLockEnabled>"
     b"</ObjectLockConfiguration>", "MalformedXML"),
    (b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>"
     b"<Mode>GOVERNANCE</Mode><Days>1</Days><Years>1</Years></DefaultRetention></Rule>"
     b"</ObjectLockConfiguration>", "MalformedXML"),
    (b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>"
     b"<Mode>FOREVER</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>",
     "MalformedXML"),
    (b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>"
     b"<Mode>GOVERNANCE</Mode><Days>one</Days></DefaultRetention></Rule></ObjectLockConfiguration>",
     "MalformedXML"),
    (b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>"
     b"<Mode>GOVERNANCE</Mode><Days>0</Days></DefaultRetention></Rule></ObjectLockConfiguration>",
     "InvalidArgument"),
    (b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>"
     b"<Mode>COMPLIANCE</Mode><Years>-1</Years></DefaultRetention></Rule></ObjectLockConfiguration>",
     "InvalidArgument"),
]


def test_malformed_lock_configuration_changes_nothing(basalt, s3, lock_bucket):
    rule = {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 2}}
    s3.put_object_lock_configuration(Bucket=lock_bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": rule})
    for body, expected in MALFORMED:
        status, answer = raw(basalt, "PUT", f"/{lock_bucket}?object-lock", body)
        assert (status, error_code(answer)) == (400, expected), body
    # boto3-built documents S3 refuses the same way.
    refused("InvalidArgument", s3.put_object_lock_configuration, Bucket=lock_bucket,
            ObjectLockConfiguration={"ObjectLockEnabled": "Enabled",
                                     "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 0}}})
    refused("MalformedXML", s3.put_object_lock_configuration, Bucket=lock_bucket,
            ObjectLockConfiguration={"ObjectLockEnabled": "Enabled",
                                     "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE"}}})
    got = s3.get_object_lock_configuration(Bucket=lock_bucket)["ObjectLockConfiguration"]
    assert got == {"ObjectLockEnabled": "Enabled", "Rule": rule}
    # Retention and legal hold documents.
    s3.put_object_lock_configuration(Bucket=lock_bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled"})
    vid = s3.put_object(Bucket=lock_bucket, Key="k", Body=b"x")["VersionId"]
    for body in (b"<Retention><Mode>GOVERNANCE</Mode></Retention>",
                 b"<Retention><Mode>SOMETIMES</Mode><RetainUntilDate>2099-01-01T00:00:00Z"
                 b"</RetainUntilDate></Retention>",
                 b"<Retention><Mode>GOVERNANCE</Mode><RetainUntilDate>soon</RetainUntilDate></Retention>",
                 b"<Retention"):
        status, answer = raw(basalt, "PUT", f"/{lock_bucket}/k?retention&versionId={vid}", body)
        assert (status, error_code(answer)) == (400, "MalformedXML"), body
    for body in (b"<LegalHold><Status>on</Status></LegalHold>", b"<LegalHold/>"):
        status, answer = raw(basalt, "PUT", f"/{lock_bucket}/k?legal-hold&versionId={vid}", body)
        assert (status, error_code(answer)) == (400, "MalformedXML"), body
    refused("NoSuchObjectLockConfiguration", s3.get_object_retention, Bucket=lock_bucket, Key="k",
            VersionId=vid)
    assert s3.get_object_legal_hold(Bucket=lock_bucket, Key="k",
                                    VersionId=vid)["LegalHold"]["Status"] == "OFF"
    s3.delete_object(Bucket=lock_bucket, Key="k", VersionId=vid)


# --- what a lock allows --------------------------------------------------------------------

def test_locked_version_cannot_be_deleted_but_gets_a_marker(s3, lock_bucket):
    until = ahead(3600)
    for mode in ("GOVERNANCE", "COMPLIANCE"):
        key = mode.lower()
        vid = s3.put_object(Bucket=lock_bucket, Key=key, Body=b"keep", ObjectLockMode=mode,
                            ObjectLockRetainUntilDate=until)["VersionId"]
        refused("AccessDenied", s3.delete_object, Bucket=lock_bucket, Key=key, VersionId=vid)
        marker = s3.delete_object(Bucket=lock_bucket, Key=key)
        assert marker["DeleteMarker"] is True and marker["VersionId"] != vid
        refused("NoSuchKey", s3.get_object, Bucket=lock_bucket, Key=key)
        got = s3.get_object(Bucket=lock_bucket, Key=key, VersionId=vid)
        assert got["Body"].read() == b"keep" and got["ObjectLockMode"] == mode
        # The marker itself carries no lock and goes.
        s3.delete_object(Bucket=lock_bucket, Key=key, VersionId=marker["VersionId"])
        assert s3.get_object(Bucket=lock_bucket, Key=key)["Body"].read() == b"keep"


def test_governance_bypass(s3, lock_bucket):
    until = ahead(3600).replace(microsecond=0)
    vids = [s3.put_object(Bucket=lock_bucket, Key="g", Body=b"g", ObjectLockMode="GOVERNANCE",
                          ObjectLockRetainUntilDate=until)["VersionId"] for _ in range(2)]
    shorter = until - timedelta(minutes=30)
    refused("AccessDenied", s3.put_object_retention, Bucket=lock_bucket, Key="g", VersionId=vids[0],
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": shorter})
    refused("AccessDenied", s3.put_object_retention, Bucket=lock_bucket, Key="g", VersionId=vids[0],
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": shorter},
            BypassGovernanceRetention=False)
    assert retention(s3, lock_bucket, "g", vids[0])["RetainUntilDate"] == until
    s3.put_object_retention(Bucket=lock_bucket, Key="g", VersionId=vids[0],
                            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": shorter},
                            BypassGovernanceRetention=True)
    assert retention(s3, lock_bucket, "g", vids[0]) == {"Mode": "GOVERNANCE",
                                                        "RetainUntilDate": shorter}
    # Extending needs no bypass.
    longer = until + DAY
    s3.put_object_retention(Bucket=lock_bucket, Key="g", VersionId=vids[1],
                            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": longer})
    assert retention(s3, lock_bucket, "g", vids[1])["RetainUntilDate"] == longer
    refused("AccessDenied", s3.delete_object, Bucket=lock_bucket, Key="g", VersionId=vids[0])
    refused("AccessDenied", s3.delete_object, Bucket=lock_bucket, Key="g", VersionId=vids[0],
            BypassGovernanceRetention=False)
    s3.delete_object(Bucket=lock_bucket, Key="g", VersionId=vids[0], BypassGovernanceRetention=True)
    assert versions(s3, lock_bucket, "g") == [vids[1]]
    # GOVERNANCE can become COMPLIANCE with a bypass; then nothing shortens it.
    s3.put_object_retention(Bucket=lock_bucket, Key="g", VersionId=vids[1],
                            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": longer},
                            BypassGovernanceRetention=True)
    refused("AccessDenied", s3.delete_object, Bucket=lock_bucket, Key="g", VersionId=vids[1],
            BypassGovernanceRetention=True)


def test_compliance_cannot_be_shortened_even_with_bypass(s3, lock_bucket):
    until = ahead(3600).replace(microsecond=0)
    vid = s3.put_object(Bucket=lock_bucket, Key="c", Body=b"c", ObjectLockMode="COMPLIANCE",
                        ObjectLockRetainUntilDate=until)["VersionId"]
    for bypass in (False, True):
        refused("AccessDenied", s3.put_object_retention, Bucket=lock_bucket, Key="c", VersionId=vid,
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - timedelta(seconds=60)},
                BypassGovernanceRetention=bypass)
        refused("AccessDenied", s3.put_object_retention, Bucket=lock_bucket, Key="c", VersionId=vid,
                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until + DAY},
                BypassGovernanceRetention=bypass)
        refused("AccessDenied", s3.delete_object, Bucket=lock_bucket, Key="c", VersionId=vid,
                BypassGovernanceRetention=bypass)
    assert retention(s3, lock_bucket, "c", vid) == {"Mode": "COMPLIANCE", "RetainUntilDate": until}
    s3.put_object_retention(Bucket=lock_bucket, Key="c", VersionId=vid,
                            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until + DAY})
    assert retention(s3, lock_bucket, "c", vid) == {"Mode": "COMPLIANCE",
                                                    "RetainUntilDate": until + DAY}
    assert s3.get_object(Bucket=lock_bucket, Key="c", VersionId=vid)["Body"].read() == b"c"


def test_retention_and_legal_hold_by_version(s3, lock_bucket):
    vids = [s3.put_object(Bucket=lock_bucket, Key="v", Body=bytes([i]))["VersionId"] for i in range(3)]
    until = ahead(3600).replace(microsecond=0)
    s3.put_object_retention(Bucket=lock_bucket, Key="v", VersionId=vids[0],
                            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})
    s3.put_object_legal_hold(Bucket=lock_bucket, Key="v", VersionId=vids[1],
                             LegalHold={"Status": "ON"})
    assert retention(s3, lock_bucket, "v", vids[0]) == {"Mode": "GOVERNANCE", "RetainUntilDate": until}
    for vid in vids[1:]:
        refused("NoSuchObjectLockConfiguration", s3.get_object_retention, Bucket=lock_bucket,
                Key="v", VersionId=vid)
    holds = [s3.get_object_legal_hold(Bucket=lock_bucket, Key="v", VersionId=v)["LegalHold"]["Status"]
             for v in vids]
    assert holds == ["OFF", "ON", "OFF"]
    # Without a version id the latest is meant.
    s3.put_object_retention(Bucket=lock_bucket, Key="v",
                            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
    assert retention(s3, lock_bucket, "v", vids[2])["Mode"] == "COMPLIANCE"
    assert s3.get_object_retention(Bucket=lock_bucket, Key="v")["Retention"]["Mode"] == "COMPLIANCE"
    # A retention in the past: InvalidArgument, unchanged.
    refused("InvalidArgument", s3.put_object_retention, Bucket=lock_bucket, Key="v",
            VersionId=vids[0], Retention={"Mode": "GOVERNANCE", "RetainUntilDate": ahead(-3600)})
    assert retention(s3, lock_bucket, "v", vids[0])["RetainUntilDate"] == until
    refused("NoSuchVersion", s3.get_object_retention, Bucket=lock_bucket, Key="v",
            VersionId="0" * 32)
    refused("NoSuchKey", s3.get_object_legal_hold, Bucket=lock_bucket, Key="nothing")
    # Every one of the three is protected now.
    for vid in vids:
        refused("AccessDenied", s3.delete_object, Bucket=lock_bucket, Key="v", VersionId=vid)
    s3.put_object_legal_hold(Bucket=lock_bucket, Key="v", VersionId=vids[1],
                             LegalHold={"Status": "OFF"})
    s3.delete_object(Bucket=lock_bucket, Key="v", VersionId=vids[1])
    assert versions(s3, lock_bucket, "v") == [vids[2], vids[0]]


def test_delete_objects_reports_locked_versions(s3, lock_bucket):
    until = ahead(3600)
    locked = s3.put_object(Bucket=lock_bucket, Key="a", Body=b"a", ObjectLockMode="COMPLIANCE",
                           ObjectLockRetainUntilDate=until)["VersionId"]
    held = s3.put_object(Bucket=lock_bucket, Key="b", Body=b"b",
                         ObjectLockLegalHoldStatus="ON")["VersionId"]
    gov = s3.put_object(Bucket=lock_bucket, Key="c", Body=b"c", ObjectLockMode="GOVERNANCE",
                        ObjectLockRetainUntilDate=until)["VersionId"]
    free = s3.put_object(Bucket=lock_bucket, Key="d", Body=b"d")["VersionId"]
    result = s3.delete_objects(Bucket=lock_bucket, Delete={"Objects": [
        {"Key": "a", "VersionId": locked}, {"Key": "b", "VersionId": held},
        {"Key": "c", "VersionId": gov}, {"Key": "d", "VersionId": free}, {"Key": "a"}]})
    errors = sorted((e["Key"], e.get("VersionId"), e["Code"]) for e in result["Errors"])
    assert errors == [("a", locked, "AccessDenied"), ("b", held, "AccessDenied"),
                      ("c", gov, "AccessDenied")]
    deleted = sorted((d["Key"], d.get("VersionId"), d.get("DeleteMarker", False))
                     for d in result["Deleted"])
    assert deleted == [("a", None, True), ("d", free, False)]
    assert versions(s3, lock_bucket, "a") == [locked]
    assert versions(s3, lock_bucket, "b") == [held]
    # With the bypass only the GOVERNANCE version goes.
    result = s3.delete_objects(Bucket=lock_bucket, BypassGovernanceRetention=True, Delete={"Objects": [
        {"Key": "a", "VersionId": locked}, {"Key": "b", "VersionId": held},
        {"Key": "c", "VersionId": gov}]})
    assert sorted(e["Key"] for e in result["Errors"]) == ["a", "b"]
    assert [(d["Key"], d["VersionId"]) for d in result["Deleted"]] == [("c", gov)]
    assert versions(s3, lock_bucket, "c") == []


def test_multipart_upload_gets_the_lock(s3, lock_bucket):
    until = ahead(3600).replace(microsecond=0)
    up = s3.create_multipart_upload(Bucket=lock_bucket, Key="mp", ObjectLockMode="COMPLIANCE",
                                    ObjectLockRetainUntilDate=until,
                                    ObjectLockLegalHoldStatus="ON")["UploadId"]
    parts = [os.urandom(5 << 20), b"tail"]
    etags = [s3.upload_part(Bucket=lock_bucket, Key="mp", UploadId=up, PartNumber=i + 1,
                            Body=p)["ETag"] for i, p in enumerate(parts)]
    done = s3.complete_multipart_upload(Bucket=lock_bucket, Key="mp", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    vid = done["VersionId"]
    head = s3.head_object(Bucket=lock_bucket, Key="mp", VersionId=vid)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] == until
    assert head["ObjectLockLegalHoldStatus"] == "ON" and head["ContentLength"] == len(b"".join(parts))
    refused("AccessDenied", s3.delete_object, Bucket=lock_bucket, Key="mp", VersionId=vid,
            BypassGovernanceRetention=True)
    # The bucket's default applies to multipart uploads too.
    s3.put_object_lock_configuration(Bucket=lock_bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE",
                                                                      "Days": 5}}})
    up = s3.create_multipart_upload(Bucket=lock_bucket, Key="mp2")["UploadId"]
    etag = s3.upload_part(Bucket=lock_bucket, Key="mp2", UploadId=up, PartNumber=1,
                          Body=b"only")["ETag"]
    s3.complete_multipart_upload(Bucket=lock_bucket, Key="mp2", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": etag}]})
    head = s3.head_object(Bucket=lock_bucket, Key="mp2")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert near(head["ObjectLockRetainUntilDate"], datetime.now(UTC) + 5 * DAY)


def test_copy_gets_the_destination_lock(s3, lock_bucket):
    until = ahead(3600).replace(microsecond=0)
    src = s3.put_object(Bucket=lock_bucket, Key="src", Body=b"s", ObjectLockMode="COMPLIANCE",
                        ObjectLockRetainUntilDate=until, ObjectLockLegalHoldStatus="ON")
    # A copy does not inherit the source's lock; it takes its own headers.
    plain = s3.copy_object(Bucket=lock_bucket, Key="dst", CopySource={
        "Bucket": lock_bucket, "Key": "src", "VersionId": src["VersionId"]})
    head = s3.head_object(Bucket=lock_bucket, Key="dst", VersionId=plain["VersionId"])
    assert "ObjectLockMode" not in head and head.get("ObjectLockLegalHoldStatus", "OFF") == "OFF"
    locked = s3.copy_object(Bucket=lock_bucket, Key="dst", CopySource={"Bucket": lock_bucket,
                                                                       "Key": "src"},
                            ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    head = s3.head_object(Bucket=lock_bucket, Key="dst", VersionId=locked["VersionId"])
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] == until
    refused("AccessDenied", s3.delete_object, Bucket=lock_bucket, Key="dst",
            VersionId=locked["VersionId"])
    s3.delete_object(Bucket=lock_bucket, Key="dst", VersionId=plain["VersionId"])


def test_aws_cli_object_lock(aws, basalt, s3, lock_bucket):  # noqa: F811
    until = ahead(3600).replace(microsecond=0)
    vid = s3.put_object(Bucket=lock_bucket, Key="cli", Body=b"x")["VersionId"]
    api(aws, "put-object-retention", "--bucket", lock_bucket, "--key", "cli", "--version-id", vid,
        "--retention", json.dumps({"Mode": "GOVERNANCE",
                                   "RetainUntilDate": until.strftime("%Y-%m-%dT%H:%M:%SZ")}))
    got = api(aws, "get-object-retention", "--bucket", lock_bucket, "--key", "cli",
              "--version-id", vid)
    assert got["Retention"]["Mode"] == "GOVERNANCE"
    assert datetime.fromisoformat(got["Retention"]["RetainUntilDate"].replace("Z", "+00:00")) == until
    out = aws("s3api", "delete-object", "--bucket", lock_bucket, "--key", "cli", "--version-id", vid,
              check=False)
    assert out.returncode != 0 and "AccessDenied" in out.stderr_text
    api(aws, "delete-object", "--bucket", lock_bucket, "--key", "cli", "--version-id", vid,
        "--bypass-governance-retention")
    assert versions(s3, lock_bucket, "cli") == []
    config = api(aws, "get-object-lock-configuration", "--bucket", lock_bucket)
    assert config["ObjectLockConfiguration"] == {"ObjectLockEnabled": "Enabled"}


# --- expiry, restart and heal (one scheme: they wait or restart) ----------------------------

def test_expired_retention_and_legal_hold(basalt_http):
    s3 = basalt_http.client()
    bucket = new_name()
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    until = ahead(3)
    put = {}
    for key, mode, hold in [("gov", "GOVERNANCE", None), ("comp", "COMPLIANCE", None),
                            ("held", "COMPLIANCE", "ON")]:
        extra = {"ObjectLockLegalHoldStatus": hold} if hold else {}
        put[key] = s3.put_object(Bucket=bucket, Key=key, Body=b"x", ObjectLockMode=mode,
                                 ObjectLockRetainUntilDate=until, **extra)["VersionId"]
    bare = s3.put_object(Bucket=bucket, Key="bare", Body=b"x",
                         ObjectLockLegalHoldStatus="ON")["VersionId"]
    for key, vid in put.items():
        refused("AccessDenied", s3.delete_object, Bucket=bucket, Key=key, VersionId=vid)
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.0)
    # An expired retention protects nothing ...
    s3.delete_object(Bucket=bucket, Key="gov", VersionId=put["gov"])
    s3.delete_object(Bucket=bucket, Key="comp", VersionId=put["comp"])
    # ... a legal hold does, with or without a retention, whatever bypass.
    refused("AccessDenied", s3.delete_object, Bucket=bucket, Key="held", VersionId=put["held"],
            BypassGovernanceRetention=True)
    refused("AccessDenied", s3.delete_object, Bucket=bucket, Key="bare", VersionId=bare)
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "bare", "VersionId": bare}]})
    assert [e["Code"] for e in result["Errors"]] == ["AccessDenied"]
    # An expired retention may be set anew (any mode) without a bypass.
    s3.put_object_retention(Bucket=bucket, Key="held", VersionId=put["held"],
                            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": ahead(3600)})
    assert retention(s3, bucket, "held", put["held"])["Mode"] == "GOVERNANCE"
    for key, vid in (("held", put["held"]), ("bare", bare)):
        s3.put_object_legal_hold(Bucket=bucket, Key=key, VersionId=vid, LegalHold={"Status": "OFF"})
    s3.delete_object(Bucket=bucket, Key="bare", VersionId=bare)
    s3.delete_object(Bucket=bucket, Key="held", VersionId=put["held"], BypassGovernanceRetention=True)
    assert s3.list_object_versions(Bucket=bucket).get("Versions", []) == []


def test_locks_survive_restart_and_heal(tmp_path):
    server = start_server(str(tmp_path))
    try:
        s3 = server.client()
        bucket = new_name()
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE",
                                                                          "Days": 1}}})
        until = ahead(86400 * 30).replace(microsecond=0)
        comp = s3.put_object(Bucket=bucket, Key="comp", Body=os.urandom(300_000),
                             ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)["VersionId"]
        held = s3.put_object(Bucket=bucket, Key="held", Body=b"small")["VersionId"]
        s3.put_object_legal_hold(Bucket=bucket, Key="held", VersionId=held, LegalHold={"Status": "ON"})
        s3.put_object_retention(Bucket=bucket, Key="held", VersionId=held, BypassGovernanceRetention=True,
                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})

        def check():
            assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
            rule = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]["Rule"]
            assert rule == {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}
            assert retention(s3, bucket, "comp", comp) == {"Mode": "COMPLIANCE",
                                                           "RetainUntilDate": until}
            assert retention(s3, bucket, "held", held) == {"Mode": "GOVERNANCE",
                                                           "RetainUntilDate": until}
            assert s3.get_object_legal_hold(Bucket=bucket, Key="held",
                                            VersionId=held)["LegalHold"]["Status"] == "ON"
            for key, vid in (("comp", comp), ("held", held)):
                refused("AccessDenied", s3.delete_object, Bucket=bucket, Key=key, VersionId=vid,
                        BypassGovernanceRetention=True)
            refused("AccessDenied", s3.put_object_retention, Bucket=bucket, Key="comp", VersionId=comp,
                    BypassGovernanceRetention=True,
                    Retention={"Mode": "COMPLIANCE", "RetainUntilDate": ahead(60)})
            refused("InvalidBucketState", s3.put_bucket_versioning, Bucket=bucket,
                    VersioningConfiguration={"Status": "Suspended"})

        check()
        stop_server(server)
        server = start_server(str(tmp_path))
        s3 = server.client()
        check()
        # Heal a wiped disk, then lose two others: the healed records still carry the lock.
        shutil.rmtree(os.path.join(server.data_dir, "disks", "disk1"))
        report = json.loads(server.cli("heal", "--json").stdout.strip().splitlines()[-1])
        assert report["failed"] == 0
        check()
        for other in ("disk2", "disk3"):
            shutil.rmtree(os.path.join(server.data_dir, "disks", other))
        check()
        server.cli("heal")
        stop_server(server)
        server = start_server(str(tmp_path))
        s3 = server.client()
        check()
        # The default still applies to new versions.
        s3.put_object(Bucket=bucket, Key="new", Body=b"n")
        assert s3.head_object(Bucket=bucket, Key="new")["ObjectLockMode"] == "GOVERNANCE"
    finally:
        stop_server(server)


# --- concurrent requests on several workers ------------------------------------------------

@pytest.fixture(scope="module")
def workers4():
    tmp = tempfile.mkdtemp(prefix="basalt-e2e-")
    server = start_server(tmp, extra=("--workers", "4"))
    yield server
    stop_server(server)
    shutil.rmtree(tmp, ignore_errors=True)


def race(server: Server, rounds: int, *calls) -> list[list[object]]:
    """For each round, ``calls[j](client, round)`` all at once (each on its own client, so
    on its own connection and likely its own worker); per round the results (True or the
    error code)."""
    clients = [server.client(max_pool_connections=4) for _ in range(8)]
    pool = concurrent.futures.ThreadPoolExecutor(16)

    def attempt(fn, client, n, barrier):
        barrier.wait()
        try:
            fn(client, n)
            return True
        except ClientError as exc:
            return exc.response["Error"]["Code"]

    futures = []
    for n in range(rounds):
        barrier = threading.Barrier(len(calls))
        picked = random.sample(clients, len(calls))
        futures.append([pool.submit(attempt, fn, c, n, barrier) for fn, c in zip(calls, picked)])
    try:
        return [[f.result() for f in round_] for round_ in futures]
    finally:
        pool.shutdown()


def test_concurrent_updates_of_one_version_keep_every_change(workers4):
    s3 = workers4.client()
    bucket = new_name()
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    rounds = 48
    vids = [s3.put_object(Bucket=bucket, Key=f"k{n}", Body=b"x")["VersionId"] for n in range(rounds)]
    until = ahead(3600).replace(microsecond=0)
    results = race(
        workers4, rounds,
        lambda c, n: c.put_object_legal_hold(Bucket=bucket, Key=f"k{n}", VersionId=vids[n],
                                             LegalHold={"Status": "ON"}),
        lambda c, n: c.put_object_retention(Bucket=bucket, Key=f"k{n}", VersionId=vids[n], Retention={
            "Mode": "COMPLIANCE", "RetainUntilDate": until}),
        lambda c, n: c.put_object_tagging(Bucket=bucket, Key=f"k{n}", VersionId=vids[n],
                                          Tagging={"TagSet": [{"Key": "t", "Value": str(n)}]}))
    assert all(r == [True, True, True] for r in results), results
    lost = []
    for n, vid in enumerate(vids):
        head = s3.head_object(Bucket=bucket, Key=f"k{n}", VersionId=vid)
        got = (head.get("ObjectLockLegalHoldStatus"), head.get("ObjectLockMode"),
               head.get("ObjectLockRetainUntilDate"), head.get("TagCount"))
        if got != ("ON", "COMPLIANCE", until, 1):
            lost.append((n, got))
    assert lost == []


def test_legal_hold_racing_a_delete_never_both_succeed(workers4):
    s3 = workers4.client()
    bucket = new_name()
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    rounds = 240
    vids = [s3.put_object(Bucket=bucket, Key=f"d{n}", Body=b"x")["VersionId"] for n in range(rounds)]
    results = race(
        workers4, rounds,
        lambda c, n: c.put_object_legal_hold(Bucket=bucket, Key=f"d{n}", VersionId=vids[n],
                                             LegalHold={"Status": "ON"}),
        lambda c, n: c.delete_object(Bucket=bucket, Key=f"d{n}", VersionId=vids[n]))
    # Either the delete came first (the hold finds no version) or the hold did (the delete
    # is AccessDenied); both acknowledged means a version under legal hold was deleted.
    held = {n for n, r in enumerate(results) if r[0] is True}
    gone = []
    for n in sorted(held):
        try:
            s3.head_object(Bucket=bucket, Key=f"d{n}", VersionId=vids[n])
        except ClientError:
            gone.append(n)
    assert gone == [], f"{len(gone)} versions put under legal hold were deleted"
    for n, (hold, deleted) in enumerate(results):
        assert (hold is True) != (deleted is True), (n, hold, deleted)
