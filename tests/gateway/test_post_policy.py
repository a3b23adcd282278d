"""gateway.post_policy: a POST form's credentials and its policy document."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import (
    AccessDenied,
    EntityTooLarge,
    EntityTooSmall,
    InvalidArgument,
    SignatureDoesNotMatch,
)
from gateway.post_policy import (
    InvalidPolicyDocument,
    form_credentials,
    parse_policy,
)

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
FUTURE = "2999-12-01T12:00:00.000Z"
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def encode(document) -> str:
    text = document if isinstance(document, str) else json.dumps(document)
    return base64.b64encode(text.encode()).decode()


def policy(*conditions, expiration=FUTURE):
    return parse_policy(encode({"expiration": expiration, "conditions": list(conditions)}))


def denied(err) -> str:
    assert err.value.code == "AccessDenied" and err.value.status == 403
    return err.value.message


# --- credentials ------------------------------------------------------------------

def v4_fields(policy_b64: str, secret: str = SECRET, date: str = "20150830") -> dict[str, str]:
    key = ("AWS4" + secret).encode()
    for part in (date, "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return {"policy": policy_b64, "x-amz-algorithm": "AWS4-HMAC-SHA256",
            "x-amz-credential": f"AKIAIOSFODNN7EXAMPLE/{date}/us-east-1/s3/aws4_request",
            "x-amz-date": f"{date}T000000Z",
            "x-amz-signature": hmac.new(key, policy_b64.encode(), hashlib.sha256).hexdigest()}


def test_sigv4_credentials_verify_the_policy_signature():
    fields = v4_fields(encode({"expiration": FUTURE, "conditions": []}))
    creds = form_credentials(fields)
    assert (creds.version, creds.access_key, creds.date, creds.region) == (
        4, "AKIAIOSFODNN7EXAMPLE", "20150830", "us-east-1")
    creds.verify(SECRET)
    with pytest.raises(SignatureDoesNotMatch) as err:
        creds.verify("another secret")
    assert err.value.extra["StringToSign"] == fields["policy"]
    assert err.value.extra["AWSAccessKeyId"] == "AKIAIOSFODNN7EXAMPLE"
    forged = dict(fields, policy=encode({"expiration": FUTURE, "conditions": [["eq", "$a", ""]]}))
    with pytest.raises(SignatureDoesNotMatch):
        form_credentials(forged).verify(SECRET)


def test_sigv4_example_from_the_aws_documentation():
    # sigv4-post-example: the policy and signature AWS publishes for this secret.
    policy_b64 = (
        "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7"
        "ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91"
        "c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3Qi"
        "OiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwi"
        "fSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRh"
        "LXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVT"
        "MjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNy"
        "ZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9"
        "LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAi"
        "MjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9")
    creds = form_credentials({
        "policy": policy_b64, "x-amz-algorithm": "AWS4-HMAC-SHA256",
        "x-amz-credential": "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request",
        "x-amz-date": "20151229T000000Z",
        "x-amz-signature": "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"})
    creds.verify(SECRET)
    document = parse_policy(policy_b64)
    assert document.expiration == datetime(2015, 12, 30, 12, tzinfo=UTC)
    assert [c.field for c in document.conditions][:3] == ["bucket", "key", "acl"]


def test_sigv2_credentials():
    policy_b64 = encode({"expiration": FUTURE, "conditions": []})
    signature = base64.b64encode(hmac.new(SECRET.encode(), policy_b64.encode(),
                                          hashlib.sha1).digest()).decode()
    creds = form_credentials({"awsaccesskeyid": "AK", "policy": policy_b64,
                              "signature": signature})
    assert (creds.version, creds.access_key) == (2, "AK")
    creds.verify(SECRET)
    with pytest.raises(SignatureDoesNotMatch):
        creds.verify(SECRET + "x")


def test_no_credentials_is_anonymous():
    assert form_credentials({}) is None
    assert form_credentials({"key": "k", "policy": "e30="}) is None


@pytest.mark.parametrize("drop,named", [
    ("x-amz-signature", "X-Amz-Signature"), ("x-amz-algorithm", "X-Amz-Algorithm"),
    ("x-amz-credential", "X-Amz-Credential"), ("x-amz-date", "X-Amz-Date"),
    ("policy", "policy"),
])
def test_sigv4_missing_fields(drop, named):
    fields = v4_fields(encode({}))
    del fields[drop]
    with pytest.raises(InvalidArgument) as err:
        form_credentials(fields)
    assert err.value.message == (f"Bucket POST must contain a field named '{named}'.  If it is "
                                 "specified, please check the order of the fields.")
    assert err.value.extra == {"ArgumentName": named, "ArgumentValue": ""}


@pytest.mark.parametrize("fields,named", [
    ({"awsaccesskeyid": "AK", "policy": "e30="}, "Signature"),
    ({"signature": "x", "policy": "e30="}, "AWSAccessKeyId"),
    ({"signature": "x", "awsaccesskeyid": "AK"}, "policy"),
])
def test_sigv2_missing_fields(fields, named):
    with pytest.raises(InvalidArgument) as err:
        form_credentials(fields)
    assert err.value.extra["ArgumentName"] == named


@pytest.mark.parametrize("field,value,named", [
    ("x-amz-algorithm", "AWS4-HMAC-SHA1", "X-Amz-Algorithm"),
    ("x-amz-date", "2015-08-30", "X-Amz-Date"),
    ("x-amz-credential", "AK/20150830/us-east-1/s3", "X-Amz-Credential"),
    ("x-amz-credential", "AK/2015-08-30/us-east-1/s3/aws4_request", "X-Amz-Credential"),
    ("x-amz-credential", "AK/20150830/us-east-1/ec2/aws4_request", "X-Amz-Credential"),
    ("x-amz-credential", "AK/20150830/us-east-1/s3/aws5_request", "X-Amz-Credential"),
    ("x-amz-credential", "/20150830/us-east-1/s3/aws4_request", "X-Amz-Credential"),
])
def test_sigv4_malformed_fields(field, value, named):
    fields = dict(v4_fields(encode({})), **{field: value})
    with pytest.raises(InvalidArgument) as err:
        form_credentials(fields)
    assert err.value.extra["ArgumentName"] == named and err.value.extra["ArgumentValue"] == value


# --- the document -------------------------------------------------------------------

@pytest.mark.parametrize("encoded,message", [
    ("", "Invalid Policy: Expecting '{' but found End-of-Input"),
    ("!!!not base64!!!", "Invalid Policy: invalid Base64 encoding."),
    (encode("not json"), "Invalid Policy: Invalid JSON."),
    (encode("[1, 2]"), "Invalid Policy: Invalid JSON."),
    (encode({"conditions": []}), "Invalid Policy: Policy missing expiration."),
    (encode({"EXPIRATION": FUTURE, "conditions": []}), "Invalid Policy: Policy missing expiration."),
    (encode({"expiration": FUTURE}), "Invalid Policy: Policy missing conditions."),
    (encode({"expiration": FUTURE, "CONDITIONS": []}), "Invalid Policy: Policy missing conditions."),
    (encode({"expiration": FUTURE, "conditions": [], "extra": 1}), 'Invalid Policy: Unexpected: "extra"'),
    (encode({"expiration": 5, "conditions": []}), "Invalid Policy: Invalid JSON."),
    (encode({"expiration": "2030-01-01 12:00:00+00:00", "conditions": []}),
     "Invalid Policy: Invalid 'expiration' value: '2030-01-01 12:00:00+00:00'"),
    (encode({"expiration": "tomorrow", "conditions": []}),
     "Invalid Policy: Invalid 'expiration' value: 'tomorrow'"),
    (encode({"expiration": FUTURE, "conditions": {"bucket": "b"}}),
     "Invalid Policy: Invalid 'conditions' value: must be a List."),
    (encode({"expiration": FUTURE, "conditions": [True]}),
     "Invalid Policy: Invalid condition test: must be a List or Object."),
    (encode({"expiration": FUTURE, "conditions": [{}]}),
     "Invalid Policy: Invalid Simple-Condition: Simple-Conditions must have exactly one property "
     "specified."),
    (encode({"expiration": FUTURE, "conditions": [{"a": "1", "b": "2"}]}),
     "Invalid Policy: Invalid Simple-Condition: Simple-Conditions must have exactly one property "
     "specified."),
    (encode({"expiration": FUTURE, "conditions": [{"a": 1}]}),
     "Invalid Policy: Invalid Simple-Condition: value must be a string."),
    (encode({"expiration": FUTURE, "conditions": [[]]}),
     "Invalid Policy: Invalid Condition: missing operation identifier."),
    (encode({"expiration": FUTURE, "conditions": [["ends-with", "$key", "x"]]}),
     "Invalid Policy: Invalid Condition: unknown operation 'ends-with'."),
    (encode({"expiration": FUTURE, "conditions": [["eq", "$key", "x", "y"]]}),
     "Invalid Policy: Invalid eq: wrong number of arguments."),
    (encode({"expiration": FUTURE, "conditions": [["content-length-range", 0]]}),
     "Invalid Policy: Invalid content-length-range: wrong number of arguments."),
    (encode({"expiration": FUTURE, "conditions": [["content-length-range", -1, 0]]}),
     "Invalid Policy: Invalid content-length-range: the bounds may not be negative."),
    (encode({"expiration": FUTURE, "conditions": [["eq", True, "x"]]}), "Invalid Policy: Invalid JSON."),
    (encode({"expiration": FUTURE, "conditions": [["eq", "$key", None]]}),
     "Invalid Policy: Invalid JSON."),
])
def test_invalid_documents(encoded, message):
    with pytest.raises(InvalidPolicyDocument) as err:
        parse_policy(encoded)
    assert err.value.message == message and err.value.status == 400
    assert err.value.code == "InvalidPolicyDocument"


def test_expiration_forms():
    for text in ("2030-06-01T00:00:00Z", "2030-06-01T00:00:00.000Z", "2030-06-01T02:00:00+02:00"):
        assert policy({"bucket": "b"}, expiration=text).expiration == datetime(2030, 6, 1,
                                                                              tzinfo=UTC)


def test_an_expired_policy_is_refused():
    document = policy({"bucket": "b"}, expiration="2029-12-31T23:59:59Z")
    with pytest.raises(AccessDenied) as err:
        document.check([], "b", "k", now=NOW)
    assert denied(err) == "Invalid according to Policy: Policy expired."
    policy({"bucket": "b"}, expiration="2030-01-01T00:00:01Z").check([], "b", "k", now=NOW)


def test_exact_and_starts_with_conditions():
    document = policy({"bucket": "b"}, ["starts-with", "$key", "user/eric/"], {"acl": "private"},
                      ["eq", "$x-amz-meta-uuid", "14365123651274"],
                      ["starts-with", "$Content-Type", "image/"],
                      ["starts-with", "$x-amz-meta-tag", ""])
    fields = [("key", "user/eric/a.png"), ("acl", "private"), ("x-amz-meta-uuid", "14365123651274"),
              ("Content-Type", "image/png"), ("x-amz-meta-tag", "anything")]
    document.check(fields, "b", "user/eric/a.png", now=NOW)
    for name, value, failed in [
        ("acl", "public-read", '["eq", "$acl", "private"]'),
        ("x-amz-meta-uuid", "1", '["eq", "$x-amz-meta-uuid", "14365123651274"]'),
        ("Content-Type", "text/plain", '["starts-with", "$Content-Type", "image/"]'),
        ("Content-Type", "IMAGE/png", '["starts-with", "$Content-Type", "image/"]'),
    ]:
        changed = [(n, value if n == name else v) for n, v in fields]
        with pytest.raises(AccessDenied) as err:
            document.check(changed, "b", "user/eric/a.png", now=NOW)
        assert denied(err) == f"Invalid according to Policy: Policy Condition failed: {failed}"
    with pytest.raises(AccessDenied) as err:
        document.check(fields, "b", "user/bob/a.png", now=NOW)
    assert denied(err).endswith('["starts-with", "$key", "user/eric/"]')
    with pytest.raises(AccessDenied) as err:
        document.check(fields, "other", "user/eric/a.png", now=NOW)
    assert denied(err).endswith('["eq", "$bucket", "b"]')


def test_field_names_are_case_insensitive_values_are_not():
    document = policy({"bUcKeT": "b"}, ["StArTs-WiTh", "$KeY", "foo"], {"AcL": "private"},
                      ["eq", "$success_Action_REDIRECT", "http://x/y"])
    fields = [("kEy", "foo.txt"), ("aCl", "private"), ("Success_Action_Redirect", "http://x/y")]
    document.check(fields, "b", "foo.txt", now=NOW)
    with pytest.raises(AccessDenied):
        document.check([("key", "foo.txt"), ("acl", "PRIVATE"),
                        ("success_action_redirect", "http://x/y")], "b", "foo.txt", now=NOW)


def test_every_field_must_be_named_by_a_condition():
    document = policy({"bucket": "b"}, {"key": "k"})
    document.check([("key", "k"), ("policy", "p"), ("x-amz-signature", "s"), ("signature", "s"),
                    ("AWSAccessKeyId", "a"), ("x-ignore-foo", "bar"), ("X-Ignore-Bar", "1")],
                   "b", "k", now=NOW)
    with pytest.raises(AccessDenied) as err:
        document.check([("key", "k"), ("X-Amz-Meta-Foo", "v")], "b", "k", now=NOW)
    assert denied(err) == "Invalid according to Policy: Extra input fields: X-Amz-Meta-Foo"
    with pytest.raises(AccessDenied) as err:
        policy({"key": "k"}).check([("key", "k")], "b", "k", now=NOW)
    assert denied(err) == "Invalid according to Policy: Extra input fields: bucket"


def test_a_condition_on_an_absent_field_sees_an_empty_value():
    document = policy({"bucket": "b"}, {"key": "k"}, ["starts-with", "$x-amz-meta-foo", "bar"])
    with pytest.raises(AccessDenied):
        document.check([("key", "k")], "b", "k", now=NOW)
    policy({"bucket": "b"}, {"key": "k"}, ["starts-with", "$Content-Type", ""]).check(
        [("key", "k")], "b", "k", now=NOW)


def test_conditions_s3_cannot_apply_fail_with_their_text():
    for condition, text in [
        (["eq", "key", "k"], '["eq", "key", "k"]'),
        (["starts-with", "$bucket", "b"], '["starts-with", "$bucket", "b"]'),
        (["starts-with", "$success_action_status", "2"],
         '["starts-with", "$success_action_status", "2"]'),
        (["starts-with", "$x-amz-credential", ""], '["starts-with", "$x-amz-credential", ""]'),
        (["content-length-range", "test", "10"], '["content-length-range", "test", "10"]'),
        (["content-length-range", 1.5, 10], '["content-length-range", 1.5, 10]'),
    ]:
        document = policy({"bucket": "b"}, {"key": "k"}, {"success_action_status": "201"},
                          {"x-amz-credential": "c"}, condition)
        fields = [("key", "k"), ("success_action_status", "201"), ("x-amz-credential", "c")]
        policy({"bucket": "b"}, {"key": "k"}, {"success_action_status": "201"},
               {"x-amz-credential": "c"}).check(fields, "b", "k", now=NOW)
        with pytest.raises(AccessDenied) as err:
            document.check(fields, "b", "k", now=NOW)
        assert denied(err) == f"Invalid according to Policy: Policy Condition failed: {text}"


def test_content_type_lists_match_item_by_item():
    document = policy({"bucket": "b"}, ["starts-with", "$Content-Type", "image/"])
    document.check([("Content-Type", "image/jpeg, image/png")], "b", "k", now=NOW)
    with pytest.raises(AccessDenied):
        document.check([("Content-Type", "image/jpeg, text/html")], "b", "k", now=NOW)


def test_content_length_range():
    document = policy({"bucket": "b"}, ["content-length-range", 5, 10])
    assert document.max_size == 10
    document.check([], "b", "k", now=NOW)  # sizes are judged on the file
    for size in (5, 7, 10):
        document.check_size(size)
    with pytest.raises(EntityTooLarge) as err:
        document.check_size(12)
    assert err.value.message == "Your proposed upload exceeds the maximum allowed size"
    assert err.value.extra == {"ProposedSize": "12", "MaxSizeAllowed": "10"}
    with pytest.raises(EntityTooSmall) as err:
        document.check_size(1)
    assert err.value.message == "Your proposed upload is smaller than the minimum allowed size"
    assert err.value.extra == {"ProposedSize": "1", "MinSizeAllowed": "5"}
    quoted = policy({"bucket": "b"}, ["content-length-range", "5", "10"])
    quoted.check_size(10)
    assert quoted.max_size == 10 and policy({"bucket": "b"}).max_size is None
    policy({"bucket": "b"}).check_size(1 << 40)


def test_numbers_as_values():
    document = policy({"bucket": "b"}, ["eq", "$success_action_status", 201])
    document.check([("success_action_status", "201")], "b", "k", now=NOW)


def test_expired_before_anything_else():
    document = policy({"key": "k"}, ["eq", "$acl", "x"], expiration="2000-01-01T00:00:00Z")
    with pytest.raises(AccessDenied) as err:
        document.check([("extra", "1")], "b", "k", now=NOW)
    assert denied(err).endswith("Policy expired.")


def test_real_time_is_used_by_default():
    soon = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    policy({"bucket": "b"}, expiration=soon).check([], "b", "k")
    past = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(AccessDenied):
        policy({"bucket": "b"}, expiration=past).check([], "b", "k")
