"""Policy conditions (gateway.policy_conditions): every operator's positive and negative
cases, missing keys, IfExists, ForAnyValue/ForAllValues and variables in values, as
AWS's condition operator reference describes them."""

from __future__ import annotations

import time

import pytest

from gateway.policy import ALLOW, NOT_APPLICABLE, MalformedPolicy, RequestContext, parse_policy


def holds(condition: dict, keys: dict | None = None, *, version: str = "2012-10-17",
          account: str | None = "111122223333", user: str | None = "alice") -> bool:
    """Whether an Allow statement with ``condition`` applies to a request with ``keys``."""
    policy = parse_policy({"Version": version, "Statement": {
        "Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": condition}}, "identity")
    ctx = RequestContext("s3:GetObject", "arn:aws:s3:::b/k", account, user, keys=keys or {})
    decision = policy.evaluate(ctx)
    assert decision in (ALLOW, NOT_APPLICABLE)
    return decision is ALLOW


# --- strings -------------------------------------------------------------------------

def test_string_equals_is_case_sensitive_and_ors_values():
    cond = {"StringEquals": {"s3:x-amz-acl": ["private", "bucket-owner-full-control"]}}
    assert holds(cond, {"s3:x-amz-acl": "bucket-owner-full-control"})
    assert not holds(cond, {"s3:x-amz-acl": "Private"})
    assert not holds(cond, {"s3:x-amz-acl": "public-read"})
    assert not holds(cond, {})


def test_string_equals_takes_wildcards_literally():
    cond = {"StringEquals": {"s3:prefix": "home/*"}}
    assert holds(cond, {"s3:prefix": "home/*"})
    assert not holds(cond, {"s3:prefix": "home/alice"})


def test_string_not_equals_true_on_missing_key():
    cond = {"StringNotEquals": {"s3:x-amz-server-side-encryption": "AES256"}}
    assert holds(cond, {"s3:x-amz-server-side-encryption": "aws:kms"})
    assert not holds(cond, {"s3:x-amz-server-side-encryption": "AES256"})
    assert holds(cond, {})


def test_string_equals_ignore_case():
    cond = {"StringEqualsIgnoreCase": {"aws:username": "ALICE"}}
    assert holds(cond)
    assert not holds(cond, user="bob")
    neg = {"StringNotEqualsIgnoreCase": {"aws:username": "ALICE"}}
    assert not holds(neg)
    assert holds(neg, user="bob")


def test_string_like_wildcards():
    cond = {"StringLike": {"s3:prefix": ["home/", "home/?lice/*"]}}
    assert holds(cond, {"s3:prefix": "home/"})
    assert holds(cond, {"s3:prefix": "home/alice/photos/a.jpg"})
    assert not holds(cond, {"s3:prefix": "home/bob/"})
    assert not holds(cond, {"s3:prefix": "Home/alice/x"})
    assert not holds(cond, {"s3:prefix": "xhome/"})
    assert not holds(cond, {})


def test_string_not_like():
    cond = {"StringNotLike": {"s3:prefix": "private/*"}}
    assert holds(cond, {"s3:prefix": "public/x"})
    assert not holds(cond, {"s3:prefix": "private/x"})
    assert holds(cond, {})


def test_condition_key_names_are_case_insensitive():
    assert holds({"StringEquals": {"S3:X-AMZ-ACL": "private"}}, {"s3:x-amz-acl": "private"})
    assert holds({"StringEquals": {"s3:x-amz-acl": "private"}}, {"S3:x-Amz-Acl": "private"})


# --- numbers and dates -----------------------------------------------------------------

@pytest.mark.parametrize("op, value, yes, no", [
    ("NumericEquals", "10", "10", "11"),
    ("NumericNotEquals", "10", "11", "10"),
    ("NumericLessThan", "10", "9", "10"),
    ("NumericLessThanEquals", "10", "10", "11"),
    ("NumericGreaterThan", "10", "11", "10"),
    ("NumericGreaterThanEquals", "10", "10", "9"),
])
def test_numeric_operators(op, value, yes, no):
    cond = {op: {"s3:max-keys": value}}
    assert holds(cond, {"s3:max-keys": yes})
    assert not holds(cond, {"s3:max-keys": no})


def test_numeric_json_numbers_decimals_and_garbage_request_values():
    assert holds({"NumericLessThanEquals": {"s3:max-keys": 10}}, {"s3:max-keys": "10.0"})
    assert holds({"NumericGreaterThan": {"s3:signatureAge": "1.5"}}, {"s3:signatureAge": "2"})
    assert not holds({"NumericLessThan": {"s3:max-keys": 10}}, {"s3:max-keys": "many"})
    assert not holds({"NumericLessThan": {"s3:max-keys": 10}}, {})
    assert holds({"NumericNotEquals": {"s3:max-keys": 10}}, {})


@pytest.mark.parametrize("op, yes, no", [
    ("DateEquals", "2024-05-01T12:00:00Z", "2024-05-01T12:00:01Z"),
    ("DateNotEquals", "2024-05-01T12:00:01Z", "2024-05-01T12:00:00Z"),
    ("DateLessThan", "2024-05-01T11:59:59Z", "2024-05-01T12:00:00Z"),
    ("DateLessThanEquals", "2024-05-01T12:00:00Z", "2024-05-01T12:00:01Z"),
    ("DateGreaterThan", "2024-05-01T12:00:01Z", "2024-05-01T12:00:00Z"),
    ("DateGreaterThanEquals", "2024-05-01T12:00:00Z", "2024-05-01T11:59:59Z"),
])
def test_date_operators(op, yes, no):
    cond = {op: {"aws:CurrentTime": "2024-05-01T12:00:00Z"}}
    assert holds(cond, {"aws:CurrentTime": yes})
    assert not holds(cond, {"aws:CurrentTime": no})


def test_dates_compare_across_formats_and_zones():
    # 2024-05-01T12:00:00Z is epoch 1714564800.
    assert holds({"DateEquals": {"aws:EpochTime": "1714564800"}}, {"aws:EpochTime": "2024-05-01T12:00:00Z"})
    assert holds({"DateEquals": {"aws:CurrentTime": "2024-05-01T14:00:00+02:00"}},
                 {"aws:CurrentTime": "1714564800"})
    assert holds({"DateLessThan": {"aws:CurrentTime": "2024-05-02"}},
                 {"aws:CurrentTime": "2024-05-01T23:59:59Z"})
    assert not holds({"DateLessThan": {"aws:CurrentTime": "2024-05-02"}},
                     {"aws:CurrentTime": "2024-05-02T00:00:00Z"})
    assert not holds({"DateGreaterThan": {"aws:CurrentTime": "2024-05-02"}}, {"aws:CurrentTime": "yesterday"})


# --- booleans, binary, addresses ----------------------------------------------------

def test_bool():
    deny_http = {"Bool": {"aws:SecureTransport": "false"}}
    assert holds(deny_http, {"aws:SecureTransport": "false"})
    assert not holds(deny_http, {"aws:SecureTransport": "true"})
    assert not holds(deny_http, {})
    assert holds({"Bool": {"aws:SecureTransport": True}}, {"aws:SecureTransport": "TRUE"})


def test_binary_equals_compares_decoded_bytes():
    cond = {"BinaryEquals": {"aws:ResourceTag/blob": "QmluYXJ5VmFsdWU="}}
    assert holds(cond, {"aws:ResourceTag/blob": "QmluYXJ5VmFsdWU="})
    assert not holds(cond, {"aws:ResourceTag/blob": "QmluYXJ5VmFsdWF="})
    assert not holds(cond, {"aws:ResourceTag/blob": "not base64!"})


def test_ip_address_v4_and_v6():
    cond = {"IpAddress": {"aws:SourceIp": ["192.0.2.0/24", "2001:db8:1234:5678::/64", "203.0.113.7"]}}
    assert holds(cond, {"aws:SourceIp": "192.0.2.200"})
    assert holds(cond, {"aws:SourceIp": "203.0.113.7"})
    assert holds(cond, {"aws:SourceIp": "2001:DB8:1234:5678::1"})
    assert holds(cond, {"aws:SourceIp": "::ffff:192.0.2.9"})  # a dual-stack socket's IPv4 client
    assert not holds(cond, {"aws:SourceIp": "192.0.3.1"})
    assert not holds(cond, {"aws:SourceIp": "203.0.113.8"})
    assert not holds(cond, {"aws:SourceIp": "2001:db8:1234:5679::1"})
    assert not holds(cond, {"aws:SourceIp": "garbage"})
    assert not holds(cond, {})


def test_not_ip_address():
    cond = {"NotIpAddress": {"aws:SourceIp": "192.0.2.0/24"}}
    assert holds(cond, {"aws:SourceIp": "198.51.100.1"})
    assert not holds(cond, {"aws:SourceIp": "192.0.2.1"})
    assert holds(cond, {})


# --- ARNs -----------------------------------------------------------------------------

def test_arn_like_matches_component_by_component():
    cond = {"ArnLike": {"aws:SourceArn": "arn:aws:sns:*:111122223333:topic-?"}}
    assert holds(cond, {"aws:SourceArn": "arn:aws:sns:us-east-1:111122223333:topic-a"})
    assert not holds(cond, {"aws:SourceArn": "arn:aws:sns:us-east-1:111122223333:topic-ab"})
    assert not holds(cond, {"aws:SourceArn": "arn:aws:sns:us-east-1:444455556666:topic-a"})
    # '*' in the region does not swallow the colons after it
    assert not holds({"ArnLike": {"aws:SourceArn": "arn:aws:sns:*:topic"}},
                     {"aws:SourceArn": "arn:aws:sns:us-east-1:111122223333:topic"})
    assert not holds(cond, {"aws:SourceArn": "not-an-arn"})
    assert holds({"ArnLike": {"aws:SourceArn": "*"}}, {"aws:SourceArn": "arn:aws:sns:us-east-1:1:t"})
    assert holds({"ArnEquals": {"aws:PrincipalArn": "${aws:PrincipalArn}"}})
    own = {"ArnLike": {"aws:SourceArn": "arn:aws:sns:*:${aws:PrincipalAccount}:*"}}
    assert holds(own, {"aws:SourceArn": "arn:aws:sns:eu-west-1:111122223333:t"})
    assert not holds(own, {"aws:SourceArn": "arn:aws:sns:eu-west-1:444455556666:t"})


def test_arn_equals_and_negations():
    arn = "arn:aws:iam::111122223333:user/alice"
    assert holds({"ArnEquals": {"aws:PrincipalArn": arn}})
    assert not holds({"ArnEquals": {"aws:PrincipalArn": arn}}, user="bob")
    assert holds({"ArnNotEquals": {"aws:PrincipalArn": arn}}, user="bob")
    assert not holds({"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:user/*"}})
    assert holds({"ArnNotLike": {"aws:SourceArn": "arn:aws:s3:::x"}}, {})


# --- Null and IfExists ------------------------------------------------------------------

def test_null():
    assert holds({"Null": {"s3:x-amz-server-side-encryption": "true"}}, {})
    assert not holds({"Null": {"s3:x-amz-server-side-encryption": "true"}},
                     {"s3:x-amz-server-side-encryption": "AES256"})
    assert holds({"Null": {"s3:x-amz-server-side-encryption": "false"}},
                 {"s3:x-amz-server-side-encryption": "AES256"})
    assert not holds({"Null": {"s3:x-amz-server-side-encryption": "false"}}, {})
    # an anonymous request has no aws:username
    assert holds({"Null": {"aws:username": "true"}}, account=None, user=None)
    assert not holds({"Null": {"aws:username": "true"}})


def test_if_exists_is_true_on_missing_key_and_plain_otherwise():
    cond = {"StringEqualsIfExists": {"s3:x-amz-storage-class": "STANDARD"}}
    assert holds(cond, {})
    assert holds(cond, {"s3:x-amz-storage-class": "STANDARD"})
    assert not holds(cond, {"s3:x-amz-storage-class": "GLACIER"})
    assert holds({"NumericLessThanIfExists": {"s3:max-keys": "5"}}, {})
    assert not holds({"NumericLessThanIfExists": {"s3:max-keys": "5"}}, {"s3:max-keys": "6"})
    assert holds({"IpAddressIfExists": {"aws:SourceIp": "10.0.0.0/8"}}, {})
    assert not holds({"StringNotEqualsIfExists": {"s3:x-amz-acl": "public-read"}},
                     {"s3:x-amz-acl": "public-read"})


# --- set operators ------------------------------------------------------------------------

TAG_KEYS = "s3:RequestObjectTagKeys"


def test_for_any_value():
    cond = {"ForAnyValue:StringEquals": {TAG_KEYS: ["project", "team"]}}
    assert holds(cond, {TAG_KEYS: ["colour", "team"]})
    assert not holds(cond, {TAG_KEYS: ["colour", "size"]})
    assert not holds(cond, {TAG_KEYS: []})
    assert not holds(cond, {})


def test_for_all_values_true_on_empty_or_missing_set():
    cond = {"ForAllValues:StringEquals": {TAG_KEYS: ["project", "team"]}}
    assert holds(cond, {TAG_KEYS: ["team", "project"]})
    assert holds(cond, {TAG_KEYS: ["team"]})
    assert not holds(cond, {TAG_KEYS: ["team", "cost"]})
    assert holds(cond, {TAG_KEYS: []})
    assert holds(cond, {})


def test_negated_set_operators_negate_per_request_value():
    all_not = {"ForAllValues:StringNotEquals": {TAG_KEYS: ["secret"]}}
    assert holds(all_not, {TAG_KEYS: ["a", "b"]})
    assert not holds(all_not, {TAG_KEYS: ["a", "secret"]})
    any_not = {"ForAnyValue:StringNotLike": {TAG_KEYS: ["s*"]}}
    assert holds(any_not, {TAG_KEYS: ["secret", "x"]})
    assert not holds(any_not, {TAG_KEYS: ["secret", "shh"]})
    assert not holds(any_not, {})  # ForAnyValue on a missing key is false, negated or not


def test_for_any_value_if_exists_on_missing_key():
    assert holds({"ForAnyValue:StringEqualsIfExists": {TAG_KEYS: "x"}}, {})


def test_unqualified_operator_on_multivalued_key():
    # positive: one pair matching is enough; negated: no value may match
    assert holds({"StringEquals": {TAG_KEYS: "b"}}, {TAG_KEYS: ["a", "b"]})
    assert not holds({"StringNotEquals": {TAG_KEYS: "b"}}, {TAG_KEYS: ["a", "b"]})
    assert holds({"StringNotEquals": {TAG_KEYS: "c"}}, {TAG_KEYS: ["a", "b"]})


# --- combining ----------------------------------------------------------------------------

def test_keys_and_operators_are_anded():
    cond = {
        "StringEquals": {"s3:x-amz-acl": "private", "s3:x-amz-server-side-encryption": "AES256"},
        "IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
    }
    full = {"s3:x-amz-acl": "private", "s3:x-amz-server-side-encryption": "AES256",
            "aws:SourceIp": "10.1.1.1"}
    assert holds(cond, full)
    for drop in full:
        assert not holds(cond, {k: v for k, v in full.items() if k != drop}), drop
    assert not holds(cond, {**full, "aws:SourceIp": "11.0.0.1"})


# --- variables in values ------------------------------------------------------------------

def test_variables_in_condition_values():
    cond = {"StringLike": {"s3:prefix": ["home/${aws:username}/*", "${aws:username}"]}}
    assert holds(cond, {"s3:prefix": "home/alice/docs"})
    assert holds(cond, {"s3:prefix": "alice"})
    assert not holds(cond, {"s3:prefix": "home/bob/docs"})
    # a substituted value is literal text, never a wildcard
    assert not holds({"StringLike": {"s3:prefix": "${s3:delimiter}"}},
                     {"s3:prefix": "abc", "s3:delimiter": "*"})
    assert holds({"StringEquals": {"aws:PrincipalAccount": "${aws:PrincipalAccount}"}})


def test_missing_or_unknown_variable_matches_nothing():
    assert not holds({"StringLike": {"s3:prefix": "home/${aws:username}/*"}},
                     {"s3:prefix": "home//x"}, account=None, user=None)
    assert not holds({"StringEquals": {"s3:prefix": "${no:such}"}}, {"s3:prefix": ""})
    assert holds({"StringEquals": {"s3:prefix": ["${no:such}", "x"]}}, {"s3:prefix": "x"})
    # the default of ${key, 'default'} stands in for a missing key
    assert holds({"StringEquals": {"s3:prefix": "${aws:PrincipalTag/team, 'shared'}"}},
                 {"s3:prefix": "shared"})


def test_escape_variables_and_2008_policies():
    assert holds({"StringEquals": {"s3:prefix": "a${*}b${?}${$}"}}, {"s3:prefix": "a*b?$"})
    assert not holds({"StringLike": {"s3:prefix": "a${*}"}}, {"s3:prefix": "ab"})
    # 2008-10-17: no substitution; "${aws:username}" is text (and '*' inside is a wildcard)
    old = {"StringEquals": {"s3:prefix": "${aws:username}"}}
    assert holds(old, {"s3:prefix": "${aws:username}"}, version="2008-10-17")
    assert not holds(old, {"s3:prefix": "alice"}, version="2008-10-17")
    assert holds({"StringLike": {"s3:prefix": "a${*}"}}, {"s3:prefix": "a${xyz}"}, version="2008-10-17")


# --- malformed conditions ---------------------------------------------------------------

@pytest.mark.parametrize("condition, message", [
    ({"StringEqualz": {"s3:prefix": "a"}}, "Invalid Condition type : StringEqualz"),
    ({"stringequals": {"s3:prefix": "a"}}, "Invalid Condition type : stringequals"),
    ({"ForSomeValues:StringEquals": {"s3:prefix": "a"}},
     "Invalid Condition type : ForSomeValues:StringEquals"),
    ({"NullIfExists": {"s3:prefix": "true"}}, "Invalid Condition type : NullIfExists"),
    ({"StringEquals": {"s3:no-such-key": "a"}}, "Policy has an invalid condition key"),
    ({"StringEquals": {"dynamodb:LeadingKeys": "a"}}, "Policy has an invalid condition key"),
    ({"StringEquals": {"prefix": "a"}}, "Policy has an invalid condition key"),
    ({"StringEquals": {"s3:ExistingObjectTag/": "a"}}, "Policy has an invalid condition key"),
    ({"StringEquals": {"s3:prefix": []}}, "Policy has an empty condition value list"),
    ({"StringEquals": {"s3:prefix": {"a": 1}}}, "Policy has an invalid condition value"),
    ({"StringEquals": {"s3:prefix": None}}, "Policy has an invalid condition value"),
    ({"NumericLessThan": {"s3:max-keys": "ten"}}, "Policy has an invalid condition value"),
    ({"DateLessThan": {"aws:CurrentTime": "tomorrow"}}, "Policy has an invalid condition value"),
    ({"Bool": {"aws:SecureTransport": "yes"}}, "Policy has an invalid condition value"),
    ({"Null": {"s3:prefix": "maybe"}}, "Policy has an invalid condition value"),
    ({"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}}, "Policy has an invalid condition value"),
    ({"IpAddress": {"aws:SourceIp": "10.0.0.256"}}, "Policy has an invalid condition value"),
    ({"BinaryEquals": {"aws:ResourceTag/b": "!!"}}, "Policy has an invalid condition value"),
    ({"StringEquals": "s3:prefix"}, "Policy has an invalid condition block"),
    (["StringEquals"], "Policy has an invalid condition block"),
])
def test_malformed_conditions(condition, message):
    with pytest.raises(MalformedPolicy) as info:
        parse_policy({"Version": "2012-10-17", "Statement": {
            "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*",
            "Condition": condition}})
    assert info.value.message == message
    assert info.value.code == "MalformedPolicy" and info.value.status == 400


def test_identity_policies_accept_other_services_condition_keys():
    assert holds({"StringEquals": {"ec2:Region": "eu-west-1"}}, {"ec2:Region": "eu-west-1"})


def test_dates_without_a_zone_are_utc_whatever_the_local_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert holds({"DateEquals": {"aws:CurrentTime": "2024-05-01T12:00:00"}},
                     {"aws:CurrentTime": "1714564800"})
    finally:
        monkeypatch.undo()
        time.tzset()
