"""Object lock documents and headers (gateway.object_lock): what botocore sends parses,
what we render botocore reads back, and every refusal carries S3's code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from s3_testkit import raises, stubbed_s3

from gateway.object_lock import (
    LockConfig,
    bypass_governance,
    bypass_requested,
    format_ns,
    lock_for_write,
    lock_from_headers,
    lock_response_headers,
    parse_iso8601,
    parse_legal_hold,
    parse_lock_configuration,
    parse_retention,
    render_legal_hold,
    render_lock_configuration,
    render_retention,
)

NOW_DT = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
NOW = int(NOW_DT.timestamp()) * 10**9
FUTURE = datetime(2030, 1, 1, tzinfo=UTC)
FUTURE_NS = int(FUTURE.timestamp()) * 10**9
DAY_NS = 86400 * 10**9


def sent_body(call, **kwargs) -> bytes:
    """The body botocore sends for one request."""
    s3 = stubbed_s3()
    getattr(s3.client, call)(**kwargs)
    return s3.requests[0].body


def respond(body: bytes, headers: dict | None = None):
    s3 = stubbed_s3()
    s3.responder = lambda request: (200, headers or {}, body)
    return s3.client




def xml(inner: str, root: str = "ObjectLockConfiguration") -> bytes:
    return f'<{root} xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{inner}</{root}>'.encode()


# --- ObjectLockConfiguration ----------------------------------------------------------

@pytest.mark.parametrize("conf,expected", [
    ({"ObjectLockEnabled": "Enabled"}, LockConfig(True)),
    ({"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}},
     LockConfig(True, "GOVERNANCE", days=1)),
    ({"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 100}}},
     LockConfig(True, "COMPLIANCE", years=100)),
    ({"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 36500}}},
     LockConfig(True, "COMPLIANCE", days=36500)),
])
def test_lock_configuration_from_botocore(conf, expected):
    body = sent_body("put_object_lock_configuration", Bucket="b", ObjectLockConfiguration=conf)
    config = parse_lock_configuration(body)
    assert config == expected
    # ...and back: what we render, botocore reads as what was sent.
    out = respond(render_lock_configuration(config)).get_object_lock_configuration(Bucket="b")
    assert out["ObjectLockConfiguration"] == conf


def test_lock_configuration_without_namespace():
    body = (b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule>"
            b"<DefaultRetention><Years>2</Years><Mode>GOVERNANCE</Mode></DefaultRetention></Rule>"
            b"</ObjectLockConfiguration>")
    assert parse_lock_configuration(body) == LockConfig(True, "GOVERNANCE", years=2)


RULE = "<ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>{}</DefaultRetention></Rule>"


@pytest.mark.parametrize("body", [
    b"",
    b"not xml",
    xml(""),                                                          # no ObjectLockEnabled
    xml("<ObjectLockEnabled>Disabled</ObjectLockEnabled>"),
    xml("<ObjectLockEnabled>enabled</ObjectLockEnabled>"),
    xml("<ObjectLockEnabled>Enabled</ObjectLockEnabled><ObjectLockEnabled>Enabled</ObjectLockEnabled>"),
    xml("<Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days></DefaultRetention></Rule>"),
    xml("<ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule></Rule>"),
    xml(RULE.format("")),
    xml(RULE.format("<Mode>GOVERNANCE</Mode>")),                      # mode without a period
    xml(RULE.format("<Days>1</Days>")),                               # period without a mode
    xml(RULE.format("<Mode>GOVERNANCE</Mode><Days>1</Days><Years>1</Years>")),
    xml(RULE.format("<Mode>governance</Mode><Days>1</Days>")),
    xml(RULE.format("<Mode>abc</Mode><Years>1</Years>")),
    xml(RULE.format("<Mode>GOVERNANCE</Mode><Days>one</Days>")),
    xml(RULE.format("<Mode>GOVERNANCE</Mode><Days>1.5</Days>")),
    xml("<ObjectLockEnabled>Enabled</ObjectLockEnabled>", root="Retention"),
    b'<!DOCTYPE x [<!ENTITY a "b">]><ObjectLockConfiguration>&a;</ObjectLockConfiguration>',
])
def test_lock_configuration_malformed(body):
    with raises("MalformedXML"):
        parse_lock_configuration(body)


@pytest.mark.parametrize("period,name,value,message", [
    ("<Days>0</Days>", "Days", "0", "Default retention period must be a positive integer value."),
    ("<Days>-1</Days>", "Days", "-1", "Default retention period must be a positive integer value."),
    ("<Years>-1</Years>", "Years", "-1", "Default retention period must be a positive integer value."),
    ("<Years>0</Years>", "Years", "0", "Default retention period must be a positive integer value."),
    ("<Days>36501</Days>", "Days", "36501", "Default retention period too large."),
    ("<Days>999999999</Days>", "Days", "999999999", "Default retention period too large."),
    ("<Years>101</Years>", "Years", "101", "Default retention period too large."),
])
def test_lock_configuration_bad_period(period, name, value, message):
    with raises("InvalidArgument", message) as exc:
        parse_lock_configuration(xml(RULE.format("<Mode>COMPLIANCE</Mode>" + period)))
    assert exc.value.extra == {"ArgumentName": name, "ArgumentValue": value}
    assert exc.value.status == 400


def test_lock_configuration_botocore_sends_bad_periods_unchecked():
    conf = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 0}}}
    body = sent_body("put_object_lock_configuration", Bucket="b", ObjectLockConfiguration=conf)
    with raises("InvalidArgument"):
        parse_lock_configuration(body)


# --- Retention -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
@pytest.mark.parametrize("until", [FUTURE, FUTURE.replace(microsecond=250000)])
def test_retention_from_botocore(mode, until):
    body = sent_body("put_object_retention", Bucket="b", Key="k",
                     Retention={"Mode": mode, "RetainUntilDate": until})
    assert parse_retention(body, NOW) == (mode, int(until.timestamp() * 10**6) * 1000)


def test_retention_renders_for_botocore():
    out = respond(render_retention("COMPLIANCE", FUTURE_NS + 123_456_789)).get_object_retention(
        Bucket="b", Key="k")
    assert out["Retention"] == {"Mode": "COMPLIANCE",
                                "RetainUntilDate": FUTURE + timedelta(milliseconds=123)}
    assert b"<RetainUntilDate>2030-01-01T00:00:00.123Z</RetainUntilDate>" in render_retention(
        "COMPLIANCE", FUTURE_NS + 123_456_789)


def test_empty_retention_removes_it():
    assert parse_retention(xml("", root="Retention"), NOW) == ("", 0)
    assert parse_retention(b"<Retention/>", NOW) == ("", 0)


@pytest.mark.parametrize("body", [
    b"",
    xml("<Mode>GOVERNANCE</Mode>", root="Retention"),                       # only a mode
    xml("<RetainUntilDate>2030-01-01T00:00:00Z</RetainUntilDate>", root="Retention"),
    xml("<Mode>governance</Mode><RetainUntilDate>2030-01-01T00:00:00Z</RetainUntilDate>", root="Retention"),
    xml("<Mode>abc</Mode><RetainUntilDate>2030-01-01T00:00:00Z</RetainUntilDate>", root="Retention"),
    xml("<Mode>GOVERNANCE</Mode><RetainUntilDate>tomorrow</RetainUntilDate>", root="Retention"),
    xml("<Mode>GOVERNANCE</Mode><RetainUntilDate>2030-01-01T00:00:00Z</RetainUntilDate>", root="LegalHold"),
])
def test_retention_malformed(body):
    with raises("MalformedXML"):
        parse_retention(body, NOW)


def test_retention_in_the_past():
    body = sent_body("put_object_retention", Bucket="b", Key="k",
                     Retention={"Mode": "GOVERNANCE", "RetainUntilDate": NOW_DT - timedelta(days=1)})
    with raises("InvalidArgument", "The retain until date must be in the future!") as exc:
        parse_retention(body, NOW)
    assert exc.value.extra["ArgumentName"] == "RetainUntilDate"
    with raises("InvalidArgument"):  # now is not in the future either
        parse_retention(xml("<Mode>GOVERNANCE</Mode><RetainUntilDate>2025-06-01T12:00:00Z"
                            "</RetainUntilDate>", root="Retention"), NOW)


# --- LegalHold ---------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["ON", "OFF"])
def test_legal_hold_roundtrip(status):
    body = sent_body("put_object_legal_hold", Bucket="b", Key="k", LegalHold={"Status": status})
    on = parse_legal_hold(body)
    assert on is (status == "ON")
    out = respond(render_legal_hold(on)).get_object_legal_hold(Bucket="b", Key="k")
    assert out["LegalHold"] == {"Status": status}


@pytest.mark.parametrize("body", [
    b"", xml("", root="LegalHold"), xml("<Status>on</Status>", root="LegalHold"),
    xml("<Status>abc</Status>", root="LegalHold"), xml("<Status>ON</Status>", root="Retention"),
    xml("<Status>ON</Status><Status>OFF</Status>", root="LegalHold"),
])
def test_legal_hold_malformed(body):
    with raises("MalformedXML"):
        parse_legal_hold(body)


# --- headers ---------------------------------------------------------------------------

def test_lock_headers_from_botocore():
    s3 = stubbed_s3()
    s3.client.put_object(Bucket="b", Key="k", Body=b"x", ObjectLockMode="COMPLIANCE",
                         ObjectLockRetainUntilDate=FUTURE, ObjectLockLegalHoldStatus="ON")
    headers = dict(s3.requests[0].headers)
    assert lock_from_headers(headers, NOW) == ("COMPLIANCE", FUTURE_NS, True)


@pytest.mark.parametrize("headers,expected", [
    ({}, ("", 0, None)),
    ({"x-amz-object-lock-legal-hold": "OFF"}, ("", 0, False)),
    ({"X-Amz-Object-Lock-Legal-Hold": "ON"}, ("", 0, True)),
    ({"x-amz-object-lock-mode": "GOVERNANCE", "x-amz-object-lock-retain-until-date": "2030-01-01T00:00:00Z"},
     ("GOVERNANCE", FUTURE_NS, None)),
    ({"x-amz-object-lock-mode": "COMPLIANCE",
      "x-amz-object-lock-retain-until-date": "2030-01-01T00:00:00.000Z"}, ("COMPLIANCE", FUTURE_NS, None)),
])
def test_lock_from_headers(headers, expected):
    assert lock_from_headers(headers, NOW) == expected


MODE, UNTIL, HOLD = ("x-amz-object-lock-mode", "x-amz-object-lock-retain-until-date",
                     "x-amz-object-lock-legal-hold")


@pytest.mark.parametrize("headers,message,name", [
    ({MODE: "GOVERNANCE"}, f"{UNTIL} and {MODE} must both be supplied", UNTIL),
    ({UNTIL: "2030-01-01T00:00:00Z"}, f"{UNTIL} and {MODE} must both be supplied", MODE),
    ({MODE: "governance", UNTIL: "2030-01-01T00:00:00Z"}, "Unknown wormMode directive.", MODE),
    ({MODE: "GOVERNANCE", UNTIL: "abc"}, "The retain until date must be provided in ISO 8601 format", UNTIL),
    ({MODE: "GOVERNANCE", UNTIL: "2020-01-01T00:00:00Z"}, "The retain until date must be in the future!",
     UNTIL),
    ({HOLD: "wrong"}, "Legal Hold must be either of 'ON' or 'OFF'", HOLD),
    ({HOLD: "on"}, "Legal Hold must be either of 'ON' or 'OFF'", HOLD),
])
def test_lock_from_headers_refusals(headers, message, name):
    with raises("InvalidArgument", message) as exc:
        lock_from_headers(headers, NOW)
    assert exc.value.extra["ArgumentName"] == name


def test_lock_response_headers_read_by_botocore():
    info = SimpleNamespace(lock_mode="GOVERNANCE", lock_until_ns=FUTURE_NS + 5_000_000, legal_hold=True)
    headers = lock_response_headers(info)
    assert headers == {MODE: "GOVERNANCE", UNTIL: "2030-01-01T00:00:00.005Z", HOLD: "ON"}
    out = respond(b"", headers).head_object(Bucket="b", Key="k")
    assert out["ObjectLockMode"] == "GOVERNANCE" and out["ObjectLockLegalHoldStatus"] == "ON"
    assert out["ObjectLockRetainUntilDate"] == FUTURE + timedelta(milliseconds=5)
    assert lock_response_headers(SimpleNamespace(lock_mode="", lock_until_ns=0, legal_hold=False)) == {}


# --- lock_for_write and bypass ----------------------------------------------------------

class FakeStore:
    def __init__(self, lock: LockConfig | None):
        self.lock = lock

    async def bucket_config(self, bucket, kind):
        assert kind == "lock"
        return self.lock.pack() if self.lock else None


MD5 = {"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="}
CRC = {"x-amz-checksum-crc32": "AAAAAA=="}
TRAILER = {"x-amz-trailer": "x-amz-checksum-crc32"}


async def test_lock_for_write_explicit_and_default():
    headers = {MODE: "COMPLIANCE", UNTIL: "2030-01-01T00:00:00Z", **MD5}
    assert await lock_for_write(FakeStore(LockConfig(True)), "b", headers, NOW) == (
        "COMPLIANCE", FUTURE_NS, False)
    default = FakeStore(LockConfig(True, "GOVERNANCE", days=2))
    assert await lock_for_write(default, "b", CRC, NOW) == ("GOVERNANCE", NOW + 2 * DAY_NS, False)
    # explicit headers win over the bucket default
    assert await lock_for_write(default, "b", headers, NOW) == ("COMPLIANCE", FUTURE_NS, False)
    assert await lock_for_write(default, "b", {HOLD: "ON", **TRAILER}, NOW) == ("GOVERNANCE",
                                                                          NOW + 2 * DAY_NS, True)
    # nothing asked, nothing configured: no integrity header needed
    assert await lock_for_write(FakeStore(None), "b", {}, NOW) == ("", 0, False)
    assert await lock_for_write(FakeStore(LockConfig(True)), "b", {}, NOW) == ("", 0, False)


@pytest.mark.parametrize("store,headers", [
    (FakeStore(LockConfig(True)), {HOLD: "OFF"}),
    (FakeStore(LockConfig(True)), {MODE: "GOVERNANCE", UNTIL: "2030-01-01T00:00:00Z"}),
    (FakeStore(LockConfig(True, "COMPLIANCE", years=1)), {}),
])
async def test_lock_for_write_needs_an_integrity_header(store, headers):
    message = ("Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests "
               "with Object Lock parameters")
    with raises("InvalidRequest", message):
        await lock_for_write(store, "b", headers, NOW)
    await lock_for_write(store, "b", headers, NOW, with_body=False)  # CopyObject, CreateMultipartUpload


@pytest.mark.parametrize("headers", [{HOLD: "ON"}, {MODE: "GOVERNANCE", UNTIL: "2030-01-01T00:00:00Z"}])
async def test_lock_for_write_on_bucket_without_lock(headers):
    with raises("InvalidRequest", "Bucket is missing ObjectLockConfiguration"):
        await lock_for_write(FakeStore(None), "b", {**headers, **MD5}, NOW)


async def test_lock_for_write_checks_headers_before_the_bucket():
    with raises("InvalidArgument"):
        await lock_for_write(FakeStore(None), "b", {HOLD: "maybe"}, NOW)


async def test_bypass():
    assert bypass_requested({"x-amz-bypass-governance-retention": "True"})
    assert not bypass_requested({"x-amz-bypass-governance-retention": "false"})
    assert not bypass_requested({})
    locked = FakeStore(LockConfig(True))
    assert await bypass_governance(locked, "b", {"X-Amz-Bypass-Governance-Retention": "true"}) is True
    assert await bypass_governance(locked, "b", {"x-amz-bypass-governance-retention": "false"}) is False
    assert await bypass_governance(FakeStore(None), "b", {}) is False
    with raises("InvalidArgument", "x-amz-bypass-governance-retention is only applicable to Object Lock "
                "enabled buckets.") as exc:
        await bypass_governance(FakeStore(None), "b", {"x-amz-bypass-governance-retention": "false"})
    assert exc.value.extra == {"ArgumentName": "x-amz-bypass-governance-retention"}


def test_botocore_sends_bypass_header():
    s3 = stubbed_s3()
    s3.client.delete_object(Bucket="b", Key="k", VersionId="v", BypassGovernanceRetention=True)
    assert bypass_requested(dict(s3.requests[0].headers))


# --- timestamps --------------------------------------------------------------------------

@pytest.mark.parametrize("text,ns", [
    ("2030-01-01T00:00:00Z", FUTURE_NS),
    ("2030-01-01T00:00:00.5Z", FUTURE_NS + 500_000_000),
    ("2030-01-01T02:00:00+02:00", FUTURE_NS),
    ("2030-01-01T00:00:00", FUTURE_NS),
    ("abc", None), ("", None), ("2030-13-01T00:00:00Z", None), ("T2030", None),
])
def test_parse_iso8601(text, ns):
    assert parse_iso8601(text) == ns


def test_format_ns():
    assert format_ns(FUTURE_NS) == "2030-01-01T00:00:00.000Z"
    assert format_ns(FUTURE_NS + 999_999_999) == "2030-01-01T00:00:00.999Z"
