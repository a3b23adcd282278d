"""LifecycleConfiguration parsing, validation (AWS's error codes) and rendering."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from gateway.errors import InvalidArgument, InvalidRequest, MalformedXML, S3NotImplemented
from gateway.lifecycle_xml import parse_lifecycle, render_lifecycle
from storaged.lifecycle_rules import DAY_NS, Filter, LifecycleConfig, Rule

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def doc(*rules: str, ns: bool = True) -> bytes:
    xmlns = f' xmlns="{NS}"' if ns else ""
    return f"<LifecycleConfiguration{xmlns}>{''.join(rules)}</LifecycleConfiguration>".encode()


def rule(body: str, *, rid: str | None = "r", status: str | None = "Enabled",
         filt: str | None = "<Filter><Prefix>logs/</Prefix></Filter>") -> str:
    parts = []
    if rid is not None:
        parts.append(f"<ID>{rid}</ID>")
    if filt is not None:
        parts.append(filt)
    if status is not None:
        parts.append(f"<Status>{status}</Status>")
    return "<Rule>" + "".join(parts) + body + "</Rule>"


DAYS = "<Expiration><Days>3</Days></Expiration>"


def one(body: bytes) -> Rule:
    [r] = parse_lifecycle(body).rules
    return r


def test_a_full_rule_parses():
    r = one(doc(rule(DAYS + "<NoncurrentVersionExpiration><NoncurrentDays>4</NoncurrentDays>"
                     "<NewerNoncurrentVersions>2</NewerNoncurrentVersions>"
                     "</NoncurrentVersionExpiration>"
                     "<AbortIncompleteMultipartUpload><DaysAfterInitiation>5"
                     "</DaysAfterInitiation></AbortIncompleteMultipartUpload>")))
    assert r == Rule("r", True, Filter(prefix="logs/"), expiration_days=3, noncurrent_days=4,
                     newer_noncurrent_versions=2, abort_days=5)


def test_filters_in_every_form():
    assert one(doc(rule(DAYS, filt="<Filter/>"))).filter == Filter()
    assert one(doc(rule(DAYS, filt="<Filter><Tag><Key>a</Key><Value>b</Value></Tag></Filter>"))
               ).filter == Filter(tags={"a": "b"})
    assert one(doc(rule(DAYS, filt="<Filter><ObjectSizeGreaterThan>7</ObjectSizeGreaterThan>"
                                   "</Filter>"))).filter == Filter(size_gt=7)
    assert one(doc(rule(DAYS, filt="<Filter><And><Prefix>p/</Prefix>"
                                   "<Tag><Key>a</Key><Value>1</Value></Tag>"
                                   "<Tag><Key>b</Key><Value>2</Value></Tag>"
                                   "<ObjectSizeGreaterThan>1</ObjectSizeGreaterThan>"
                                   "<ObjectSizeLessThan>9</ObjectSizeLessThan></And></Filter>"))
               ).filter == Filter("p/", {"a": "1", "b": "2"}, 1, 9, True)


def test_legacy_prefix_in_the_rule_and_no_namespace():
    r = one(doc(rule(DAYS, filt="<Prefix>old/</Prefix>"), ns=False))
    assert r.legacy_prefix and r.filter.prefix == "old/"


def test_dates_at_midnight_and_a_missing_id_gets_one():
    r = one(doc(rule("<Expiration><Date>2030-01-01T00:00:00.000Z</Date></Expiration>", rid=None)))
    assert r.expiration_date_ns == 1893456000 * 10**9 and 0 < len(r.id) <= 255
    assert one(doc(rule("<Expiration><Date>2030-01-01</Date></Expiration>"))
               ).expiration_date_ns == 1893456000 * 10**9
    first, second = parse_lifecycle(doc(rule(DAYS, rid=None), rule(DAYS, rid=None))).rules
    assert first.id != second.id


def test_expired_object_delete_marker_and_disabled_rules():
    r = one(doc(rule("<Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker>"
                     "</Expiration>", status="Disabled", filt="<Filter><Prefix></Prefix></Filter>")))
    assert r.expired_object_delete_marker is True and not r.enabled and r.filter.prefix == ""


@pytest.mark.parametrize("body", [
    b"not xml",
    b"",
    b"<Other/>",
    doc(),                                                               # no rule
    doc(rule(DAYS, status=None)),                                        # Status missing
    doc(rule(DAYS, status="On")),
    doc(rule(DAYS + "<Bogus/>")),                                        # unknown element
    doc(rule(DAYS, filt=None)),                                          # neither Filter nor Prefix
    doc(rule(DAYS, filt="<Prefix>a</Prefix><Filter/>")),                 # both
    doc(rule(DAYS, filt="<Filter><Prefix>a</Prefix><Tag><Key>k</Key><Value>v</Value></Tag>"
                        "</Filter>")),                                   # two conditions
    doc(rule(DAYS, filt="<Filter><Prefix>a</Prefix><ObjectSizeLessThan>5</ObjectSizeLessThan>"
                        "</Filter>")),
    doc(rule(DAYS, filt="<Filter><Prefix>a</Prefix><And><Prefix>b</Prefix></And></Filter>")),
    doc(rule(DAYS, filt="<Filter><And></And></Filter>")),
    doc(rule(DAYS, filt="<Filter><Tag><Value>v</Value></Tag></Filter>")),
    doc(rule("<Expiration><Days>x</Days></Expiration>")),
    doc(rule("<Expiration></Expiration>")),
    doc(rule("<Expiration><Days>1</Days><Date>2030-01-01T00:00:00Z</Date></Expiration>")),
    doc(rule("<Expiration><Days>1</Days><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker>"
             "</Expiration>")),
    doc(rule("<Expiration><Date>2030-01-01T00:00:00Z</Date>"
             "<ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration>")),
    doc(rule("<Expiration><ExpiredObjectDeleteMarker>yes</ExpiredObjectDeleteMarker></Expiration>")),
    doc(rule("<Expiration><Date>soon</Date></Expiration>")),
    doc(rule(DAYS + DAYS)),                                              # repeated action
    doc(rule("<AbortIncompleteMultipartUpload></AbortIncompleteMultipartUpload>")),
    b'<!DOCTYPE x [<!ENTITY a "b">]>' + doc(rule(DAYS)),
])
def test_malformed(body):
    with pytest.raises(MalformedXML):
        parse_lifecycle(body)


@pytest.mark.parametrize("body, message", [
    (doc(rule("<Expiration><Days>0</Days></Expiration>")),
     "'Days' for Expiration action must be a positive integer"),
    (doc(rule("<Expiration><Days>-2</Days></Expiration>")),
     "'Days' for Expiration action must be a positive integer"),
    (doc(rule("<Expiration><Date>2030-01-01T10:00:00Z</Date></Expiration>")),
     "'Date' must be at midnight GMT"),
    (doc(rule("<Expiration><Date>2030-01-01T00:00:00+02:00</Date></Expiration>")),
     "'Date' must be at midnight GMT"),
    (doc(rule(DAYS), rule(DAYS)), "Rule ID must be unique. Found same ID for more than one rule"),
    (doc(rule(DAYS, rid="x" * 256)), "ID length should not exceed allowed limit of 255"),
    (doc(*[rule(DAYS, rid=str(i)) for i in range(1001)]),
     "The number of lifecycle rules must not exceed 1000"),
    (doc(rule("<NoncurrentVersionExpiration><NoncurrentDays>0</NoncurrentDays>"
              "</NoncurrentVersionExpiration>")),
     "'NoncurrentDays' for NoncurrentVersionExpiration action must be a positive integer"),
    (doc(rule("<NoncurrentVersionExpiration><NewerNoncurrentVersions>3</NewerNoncurrentVersions>"
              "</NoncurrentVersionExpiration>")),
     "'NoncurrentDays' for NoncurrentVersionExpiration action must be a positive integer"),
    (doc(rule("<NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays>"
              "<NewerNoncurrentVersions>0</NewerNoncurrentVersions></NoncurrentVersionExpiration>")),
     "'NewerNoncurrentVersions' for NoncurrentVersionExpiration action must be between 1 and 100"),
    (doc(rule("<NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays>"
              "<NewerNoncurrentVersions>101</NewerNoncurrentVersions></NoncurrentVersionExpiration>")),
     "'NewerNoncurrentVersions' for NoncurrentVersionExpiration action must be between 1 and 100"),
    (doc(rule("<AbortIncompleteMultipartUpload><DaysAfterInitiation>0</DaysAfterInitiation>"
              "</AbortIncompleteMultipartUpload>")),
     "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer"),
    (doc(rule(DAYS, filt="<Filter><ObjectSizeLessThan>0</ObjectSizeLessThan></Filter>")),
     "'ObjectSizeLessThan' must be a positive integer"),
    (doc(rule(DAYS, filt="<Filter><And><ObjectSizeGreaterThan>9</ObjectSizeGreaterThan>"
                         "<ObjectSizeLessThan>9</ObjectSizeLessThan></And></Filter>")),
     "'ObjectSizeGreaterThan' must be less than 'ObjectSizeLessThan'"),
])
def test_invalid_argument(body, message):
    with pytest.raises(InvalidArgument) as caught:
        parse_lifecycle(body)
    assert caught.value.message == message


TAG = "<Filter><Tag><Key>a</Key><Value>b</Value></Tag></Filter>"
SIZE = "<Filter><ObjectSizeGreaterThan>5</ObjectSizeGreaterThan></Filter>"
ABORT = ("<AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation>"
         "</AbortIncompleteMultipartUpload>")
MARKER = "<Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration>"


@pytest.mark.parametrize("body, message", [
    (doc(rule("")), "At least one action needs to be specified in a rule"),
    (doc(rule(ABORT, filt=TAG)), "AbortIncompleteMultipartUpload cannot be specified with Tags."),
    (doc(rule(ABORT, filt=SIZE)),
     "AbortIncompleteMultipartUpload cannot be specified with Object Size."),
    (doc(rule(MARKER, filt=TAG)), "ExpiredObjectDeleteMarker cannot be specified with Tags."),
    (doc(rule(MARKER, filt=SIZE)),
     "ExpiredObjectDeleteMarker cannot be specified with Object Size."),
    (doc(rule(DAYS, filt="<Filter><And><Tag><Key>a</Key><Value>1</Value></Tag>"
                         "<Tag><Key>a</Key><Value>2</Value></Tag></And></Filter>")),
     "Duplicate Tag Keys are not allowed."),
])
def test_invalid_request(body, message):
    with pytest.raises(InvalidRequest) as caught:
        parse_lifecycle(body)
    assert caught.value.message == message


def test_transitions_are_refused_not_ignored():
    with pytest.raises(S3NotImplemented):
        parse_lifecycle(doc(rule("<Transition><Days>30</Days><StorageClass>GLACIER</StorageClass>"
                                 "</Transition>")))


def test_shape_errors_come_before_value_errors():
    with pytest.raises(MalformedXML):
        parse_lifecycle(doc(rule("<Expiration><Days>0</Days></Expiration>"), rule(DAYS, status=None,
                                                                                   rid="b")))


def test_render_round_trips_through_the_parser():
    body = doc(
        rule(DAYS + "<NoncurrentVersionExpiration><NoncurrentDays>4</NoncurrentDays>"
             "<NewerNoncurrentVersions>2</NewerNoncurrentVersions></NoncurrentVersionExpiration>",
             rid="a&amp;b"),
        rule("<Expiration><Date>2030-01-01T00:00:00Z</Date></Expiration>", rid="d",
             filt="<Filter><And><Prefix>p/</Prefix><Tag><Key>k</Key><Value>v</Value></Tag>"
                  "</And></Filter>"),
        rule(MARKER, rid="m", filt="<Prefix>legacy/</Prefix>", status="Disabled"),
        rule(ABORT, rid="e", filt="<Filter></Filter>"),
    )
    config = parse_lifecycle(body)
    rendered = render_lifecycle(config)
    assert parse_lifecycle(rendered) == config
    assert LifecycleConfig.unpack(config.pack()) == config
    root = ET.fromstring(rendered)
    assert root.tag == f"{{{NS}}}LifecycleConfiguration"
    rules = root.findall(f"{{{NS}}}Rule")
    assert rules[0].findtext(f"{{{NS}}}ID") == "a&b"
    assert rules[1].findtext(f"{{{NS}}}Expiration/{{{NS}}}Date") == "2030-01-01T00:00:00.000Z"
    assert rules[2].findtext(f"{{{NS}}}Prefix") == "legacy/"
    assert rules[2].find(f"{{{NS}}}Filter") is None
    assert DAY_NS == 86400 * 10**9
