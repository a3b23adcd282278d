"""The policy language (gateway.policy): parsing and validation as S3 does it, statement
matching (principals, actions, resources, Not*, variables), the S3 authorization order
of decide(), and is_public() after GetBucketPolicyStatus, mostly on AWS's own examples."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gateway.errors import S3Error
from gateway.policy import (
    ALLOW,
    DENY,
    NOT_APPLICABLE,
    MalformedPolicy,
    Policy,
    RequestContext,
    decide,
    is_public,
    parse_policy,
)

OWNER = "111122223333"
OTHER = "444455556666"
BUCKET = "arn:aws:s3:::examplebucket"


def bucket_policy(*statements: dict, version: str | None = "2012-10-17") -> Policy:
    doc: dict = {"Statement": list(statements)}
    if version is not None:
        doc["Version"] = version
    return parse_policy(doc, bucket="examplebucket")


def identity_policy(*statements: dict) -> Policy:
    return parse_policy({"Version": "2012-10-17", "Statement": list(statements)}, "identity")


def req(action: str = "s3:GetObject", resource: str = BUCKET + "/key", account: str | None = OWNER,
        user: str | None = "alice", **keys) -> RequestContext:
    keys = {k.replace("_", ":"): v for k, v in keys.items()}  # aws_SourceIp= -> aws:SourceIp
    return RequestContext(action, resource, account, user, keys=keys)


def allow(**extra) -> dict:
    """An Allow statement; a keyword set to None removes that element."""
    st = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": BUCKET + "/*", **extra}
    return {k: v for k, v in st.items() if v is not None}


def deny(**extra) -> dict:
    return {**allow(**extra), "Effect": "Deny"}


# --- parsing -------------------------------------------------------------------------

def test_parse_text_and_dict_agree_and_result_is_immutable():
    doc = {"Version": "2012-10-17", "Id": "P1", "Statement": [
        {"Sid": "Read", "Effect": "Allow", "Principal": {"AWS": [OTHER, f"arn:aws:iam::{OWNER}:user/bob"]},
         "Action": ["s3:GetObject", "s3:List*"], "Resource": [BUCKET, BUCKET + "/*"]}]}
    a, b = parse_policy(json.dumps(doc)), parse_policy(doc)
    assert a == b
    assert a.version == "2012-10-17" and a.id == "P1" and a.kind == "resource"
    (st,) = a.statements
    assert st.sid == "Read" and st.effect is ALLOW
    assert st.actions == ("s3:GetObject", "s3:List*")
    assert st.principal.arns == {f"arn:aws:iam::{OTHER}:root", f"arn:aws:iam::{OWNER}:user/bob"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.effect = DENY  # type: ignore[misc]
    assert parse_policy(json.dumps(doc).encode()) == a


def test_single_statement_object_and_default_version():
    policy = parse_policy({"Statement": allow(Principal="*")})
    assert policy.version == "2008-10-17" and len(policy.statements) == 1


def test_malformed_policy_is_the_s3_error():
    with pytest.raises(S3Error) as info:
        parse_policy("not json")
    assert info.value.code == "MalformedPolicy" and info.value.status == 400
    assert b"<Code>MalformedPolicy</Code>" in info.value.to_xml("/b", "r1")


def _statement(**changes) -> dict:
    st = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": BUCKET + "/*"}
    for key, value in changes.items():
        if value is None:
            st.pop(key)
        else:
            st[key] = value
    return st


@pytest.mark.parametrize("document, message", [
    ("", "Policies must be valid JSON and the first byte must be '{'"),
    ("[]", "Policies must be valid JSON and the first byte must be '{'"),
    ('{"Statement": ', "This policy contains invalid Json"),
    ('{"Statement": [], "Statement": []}', "This policy contains invalid Json"),
    ('{"Version": NaN}', "This policy contains invalid Json"),
    ({"Version": "2012-10-17"}, "Missing required field Statement"),
    ({"Statement": []}, "Missing required field Statement"),
    ({"Statement": ["x"]}, "Policy has an invalid statement"),
    ({"Version": "2012-10-18", "Statement": _statement()}, "The policy must contain a valid version string"),
    ({"Version": 2012, "Statement": _statement()}, "The policy must contain a valid version string"),
    ({"Id": 5, "Statement": _statement()}, "Policy has an invalid Id"),
    ({"Statement": _statement(), "Extra": 1}, "Unknown field Extra"),
    ({"Statement": _statement(Effects="Allow")}, "Unknown field Effects"),
    ({"Statement": _statement(Sid=7)}, "Policy has an invalid Sid"),
    ({"Statement": [_statement(Sid="a"), _statement(Sid="a")]},
     "Statement IDs (SID) in a single policy must be unique"),
    ({"Statement": _statement(Effect=None)}, "Missing required field Effect"),
    ({"Statement": _statement(Effect="allow")}, "Invalid effect: allow"),
    ({"Statement": _statement(Principal=None)}, "Missing required field Principal"),
    ({"Statement": _statement(Action=None)}, "Missing required field Action"),
    ({"Statement": _statement(Resource=None)}, "Missing required field Resource"),
    ({"Statement": _statement(NotPrincipal="*")}, "Statement cannot have both Principal and NotPrincipal"),
    ({"Statement": _statement(NotAction="s3:PutObject")}, "Statement cannot have both Action and NotAction"),
    ({"Statement": _statement(NotResource=BUCKET)}, "Statement cannot have both Resource and NotResource"),
    # principals
    ({"Statement": _statement(Principal="arn:aws:iam::111122223333:root")}, "Invalid principal in policy"),
    ({"Statement": _statement(Principal={})}, "Invalid principal in policy"),
    ({"Statement": _statement(Principal={"AWS": []})}, "Invalid principal in policy"),
    ({"Statement": _statement(Principal={"AWS": "12345"})}, "Invalid principal in policy"),
    ({"Statement": _statement(Principal={"AWS": "arn:aws:iam::*:root"})}, "Invalid principal in policy"),
    ({"Statement": _statement(Principal={"AWS": "arn:aws:iam::111122223333:user/*"})},
     "Invalid principal in policy"),
    ({"Statement": _statement(Principal={"AWS": "arn:aws:iam::111122223333:group/g"})},
     "Invalid principal in policy"),
    ({"Statement": _statement(Principal={"aws": "*"})}, "Invalid principal in policy"),
    ({"Statement": _statement(Principal={"CanonicalUser": "abc"})}, "Invalid principal in policy"),
    ({"Statement": _statement(Principal={"AWS": [OWNER, 5]})}, "Invalid principal in policy"),
    # actions
    ({"Statement": _statement(Action="GetObject")}, "Policy has invalid action"),
    ({"Statement": _statement(Action="s3:GetObjects")}, "Policy has invalid action"),
    ({"Statement": _statement(Action="s3:Get/Object")}, "Policy has invalid action"),
    ({"Statement": _statement(Action="iam:CreateUser")}, "Policy has invalid action"),
    ({"Statement": _statement(Action=[])}, "Policy has invalid action"),
    ({"Statement": _statement(Action=["s3:GetObject", ""])}, "Policy has invalid action"),
    ({"Statement": _statement(Action={"s3": "GetObject"})}, "Policy has invalid action"),
    # resources
    ({"Statement": _statement(Resource="examplebucket/*")}, "Policy has invalid resource"),
    ({"Statement": _statement(Resource="arn:aws:s3:::")}, "Policy has invalid resource"),
    ({"Statement": _statement(Resource="arn:aws:s3:::otherbucket/*")}, "Policy has invalid resource"),
    ({"Statement": _statement(Resource="arn:aws:sqs:us-east-1:111122223333:q")},
     "Policy has invalid resource"),
    ({"Statement": _statement(Resource=[])}, "Policy has invalid resource"),
    ({"Statement": _statement(Resource=7)}, "Policy has invalid resource"),
])
def test_malformed_documents(document, message):
    with pytest.raises(MalformedPolicy) as info:
        parse_policy(document, bucket="examplebucket")
    assert info.value.message == message


def test_identity_policies_have_no_principal():
    st = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    assert parse_policy({"Statement": st}, "identity").statements[0].principal is None
    for key in ("Principal", "NotPrincipal"):
        with pytest.raises(MalformedPolicy, match=f"Has prohibited field {key}$"):
            parse_policy({"Statement": {**st, key: "*"}}, "identity")
    # other services' actions and resources are the caller's business in an identity policy
    parse_policy({"Statement": {**st, "Action": "iam:CreateUser",
                                "Resource": "arn:aws:iam::111122223333:user/x"}}, "identity")
    with pytest.raises(MalformedPolicy, match="Missing required field Resource"):
        parse_policy({"Statement": {"Effect": "Allow", "Action": "s3:*"}}, "identity")
    with pytest.raises(ValueError):
        parse_policy({"Statement": st}, "group")


def test_bucket_policy_resources_wildcard_buckets_and_other_kinds():
    parse_policy({"Statement": _statement(Resource=["arn:aws:s3:::example*/*", "arn:aws:s3:::*", "*"])},
                 bucket="examplebucket")
    parse_policy({"Statement": _statement(Resource="arn:aws:s3:::otherbucket/*")})  # no bucket given


def test_size_limit_is_20_kib_for_bucket_policies():
    def doc(n_sids: int) -> dict:
        return {"Version": "2012-10-17",
                "Statement": [_statement(Sid=f"S{i:04d}") for i in range(n_sids)]}
    small = doc(5)
    parse_policy(small)
    big = doc(200)
    assert len(json.dumps(big, separators=(",", ":"))) > 20 * 1024
    for form in (big, json.dumps(big)):
        with pytest.raises(MalformedPolicy, match="maximum allowed document size"):
            parse_policy(form)
    for st in big["Statement"]:
        del st["Principal"]
    parse_policy(big, "identity")  # identity policies have their own (caller's) limit
    with pytest.raises(MalformedPolicy, match="maximum allowed document size"):
        parse_policy(json.dumps(small), max_size=100)
    # exactly at the limit is allowed
    text = json.dumps(small)
    parse_policy(text + " " * (20 * 1024 - len(text)))
    with pytest.raises(MalformedPolicy):
        parse_policy(text + " " * (20 * 1024 - len(text) + 1))


# --- principals ------------------------------------------------------------------------

def test_principal_forms():
    everyone = bucket_policy(allow(Principal="*"))
    aws_everyone = bucket_policy(allow(Principal={"AWS": "*"}))
    for policy in (everyone, aws_everyone):
        assert policy.evaluate(req(account=None, user=None)) is ALLOW
        assert policy.evaluate(req(account=OTHER, user="x")) is ALLOW
    account = bucket_policy(allow(Principal={"AWS": OTHER}))
    same = bucket_policy(allow(Principal={"AWS": f"arn:aws:iam::{OTHER}:root"}))
    for policy in (account, same):
        assert policy.evaluate(req(account=OTHER, user=None)) is ALLOW
        assert policy.evaluate(req(account=OTHER, user="dave")) is ALLOW  # the account's users
        assert policy.evaluate(req(account=OWNER, user=None)) is NOT_APPLICABLE
        assert policy.evaluate(req(account=None, user=None)) is NOT_APPLICABLE
    user = bucket_policy(allow(Principal={"AWS": f"arn:aws:iam::{OTHER}:user/dave"}))
    assert user.evaluate(req(account=OTHER, user="dave")) is ALLOW
    assert user.evaluate(req(account=OTHER, user="erin")) is NOT_APPLICABLE
    assert user.evaluate(req(account=OTHER, user=None)) is NOT_APPLICABLE
    assert user.evaluate(req(account=OWNER, user="dave")) is NOT_APPLICABLE


def test_canonical_user_principal():
    canonical = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"
    policy = bucket_policy(allow(Principal={"CanonicalUser": canonical.upper()}))
    ctx = RequestContext("s3:GetObject", BUCKET + "/k", OTHER, None, canonical_id=canonical)
    assert policy.evaluate(ctx) is ALLOW
    assert policy.evaluate(req(account=OTHER, user=None)) is NOT_APPLICABLE


def test_not_principal_with_deny_must_name_the_account_too():
    # AWS's example: NotPrincipal with Deny naming only the user still denies that user,
    # because the request is also the account's.
    only_user = bucket_policy(deny(NotPrincipal={"AWS": f"arn:aws:iam::{OTHER}:user/bob"}))
    assert only_user.evaluate(req(account=OTHER, user="bob")) is DENY
    both = bucket_policy(deny(NotPrincipal={"AWS": [f"arn:aws:iam::{OTHER}:user/bob",
                                                    f"arn:aws:iam::{OTHER}:root"]}))
    assert both.evaluate(req(account=OTHER, user="bob")) is NOT_APPLICABLE
    assert both.evaluate(req(account=OTHER, user=None)) is NOT_APPLICABLE
    assert both.evaluate(req(account=OTHER, user="carol")) is DENY
    assert both.evaluate(req(account=OWNER, user="bob")) is DENY
    assert both.evaluate(req(account=None, user=None)) is DENY


# --- actions ----------------------------------------------------------------------------

def test_action_wildcards_are_case_insensitive():
    policy = bucket_policy(allow(Principal="*", Action=["s3:Get*", "S3:LISTBUCKET", "s3:?utObject"]))
    for action in ("s3:GetObject", "s3:getobjectacl", "S3:GETBUCKETPOLICY", "s3:ListBucket", "s3:PutObject"):
        assert policy.evaluate(req(action)) is ALLOW, action
    for action in ("s3:ListBucketVersions", "s3:DeleteObject", "s3:PutObjectAcl", "ec2:GetObject"):
        assert policy.evaluate(req(action)) is NOT_APPLICABLE, action
    assert bucket_policy(allow(Principal="*", Action="*")).evaluate(req("s3:DeleteBucket")) is ALLOW
    assert bucket_policy(allow(Principal="*", Action="s3:*")).evaluate(req("s3:DeleteBucket")) is ALLOW


def test_not_action():
    policy = bucket_policy(allow(Principal="*", Action=None, NotAction=["s3:Delete*", "s3:PutBucketPolicy"]))
    assert policy.evaluate(req("s3:GetObject")) is ALLOW
    assert policy.evaluate(req("s3:PutObject")) is ALLOW
    assert policy.evaluate(req("s3:DeleteObject")) is NOT_APPLICABLE
    assert policy.evaluate(req("s3:putbucketpolicy")) is NOT_APPLICABLE


# --- resources ----------------------------------------------------------------------------

def test_resource_wildcards_are_case_sensitive():
    policy = bucket_policy(allow(Principal="*", Resource=[BUCKET + "/public/*", BUCKET + "/file?.txt"]))
    assert policy.evaluate(req(resource=BUCKET + "/public/a/b/c")) is ALLOW
    assert policy.evaluate(req(resource=BUCKET + "/file1.txt")) is ALLOW
    assert policy.evaluate(req(resource=BUCKET + "/file10.txt")) is NOT_APPLICABLE
    assert policy.evaluate(req(resource=BUCKET + "/Public/a")) is NOT_APPLICABLE
    assert policy.evaluate(req(resource=BUCKET)) is NOT_APPLICABLE
    assert policy.evaluate(req(resource=BUCKET + "/public")) is NOT_APPLICABLE
    bucket_only = bucket_policy(allow(Principal="*", Action="s3:ListBucket", Resource=BUCKET))
    assert bucket_only.evaluate(req("s3:ListBucket", BUCKET)) is ALLOW
    assert bucket_only.evaluate(req("s3:ListBucket", BUCKET + "/x")) is NOT_APPLICABLE
    assert bucket_only.evaluate(req("s3:ListBucket", BUCKET + "2")) is NOT_APPLICABLE


def test_not_resource():
    policy = bucket_policy(deny(Principal="*", Action="s3:*", Resource=None,
                                NotResource=BUCKET + "/shared/*"))
    assert policy.evaluate(req(resource=BUCKET + "/private/x")) is DENY
    assert policy.evaluate(req(resource=BUCKET + "/shared/x")) is NOT_APPLICABLE


def test_resource_variables_in_2012_policies():
    # AWS's example: each user gets a home folder.
    home = identity_policy({"Effect": "Allow", "Action": "s3:*",
                            "Resource": "arn:aws:s3:::examplebucket/home/${aws:username}/*"})
    assert home.evaluate(req(resource=BUCKET + "/home/alice/a.txt")) is ALLOW
    assert home.evaluate(req(resource=BUCKET + "/home/bob/a.txt")) is NOT_APPLICABLE
    assert home.evaluate(req(resource=BUCKET + "/home/alice/a.txt", user="bob")) is NOT_APPLICABLE
    # no aws:username for root: the value matches nothing
    assert home.evaluate(req(resource=BUCKET + "/home//a.txt", user=None)) is NOT_APPLICABLE
    by_account = identity_policy({"Effect": "Allow", "Action": "s3:*",
                                  "Resource": "arn:aws:s3:::examplebucket/${aws:PrincipalAccount}/${*}"})
    assert by_account.evaluate(req(resource=f"{BUCKET}/{OWNER}/*")) is ALLOW
    assert by_account.evaluate(req(resource=f"{BUCKET}/{OWNER}/x")) is NOT_APPLICABLE


def test_substituted_values_are_literal_in_resources():
    policy = identity_policy({"Effect": "Allow", "Action": "s3:*",
                              "Resource": "arn:aws:s3:::examplebucket/${s3:prefix}"})
    assert policy.evaluate(req(resource=BUCKET + "/a*", s3_prefix="a*")) is ALLOW
    assert policy.evaluate(req(resource=BUCKET + "/abc", s3_prefix="a*")) is NOT_APPLICABLE


def test_2008_policies_do_not_substitute_variables():
    policy = bucket_policy(allow(Principal="*", Resource=BUCKET + "/home/${aws:username}/*"), version=None)
    assert policy.version == "2008-10-17"
    assert policy.evaluate(req(resource=BUCKET + "/home/alice/x")) is NOT_APPLICABLE
    assert policy.evaluate(req(resource=BUCKET + "/home/${aws:username}/x")) is ALLOW


# --- evaluation ------------------------------------------------------------------------------

def test_explicit_deny_beats_allow_in_any_order():
    allow_all = allow(Principal="*", Action="s3:*")
    deny_http = deny(Principal="*", Action="s3:*", Condition={"Bool": {"aws:SecureTransport": "false"}})
    for statements in ((allow_all, deny_http), (deny_http, allow_all)):
        policy = bucket_policy(*statements)
        assert policy.evaluate(req(aws_SecureTransport="false")) is DENY
        assert policy.evaluate(req(aws_SecureTransport="true")) is ALLOW
    # evaluation is cached per action: a second action still sees its own statements
    policy = bucket_policy(allow_all, deny(Principal="*", Action="s3:DeleteObject"))
    assert policy.evaluate(req("s3:GetObject")) is ALLOW
    assert policy.evaluate(req("s3:DeleteObject")) is DENY
    assert policy.evaluate(req("s3:GetObject")) is ALLOW


def test_conditions_gate_the_statement():
    policy = bucket_policy(allow(Principal="*", Condition={"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}))
    assert policy.evaluate(req(aws_SourceIp="192.0.2.10")) is ALLOW
    assert policy.evaluate(req(aws_SourceIp="198.51.100.1")) is NOT_APPLICABLE
    assert policy.evaluate(req()) is NOT_APPLICABLE


def test_context_fills_principal_keys():
    ctx = req(account=OTHER, user="dave")
    keys = ctx.condition_keys
    assert keys["aws:principalaccount"] == (OTHER,)
    assert keys["aws:username"] == ("dave",)
    assert keys["aws:principalarn"] == (f"arn:aws:iam::{OTHER}:user/dave",)
    assert keys["aws:principaltype"] == ("User",)
    root = req(account=OTHER, user=None).condition_keys
    assert root["aws:userid"] == (OTHER,) and "aws:username" not in root
    anonymous = req(account=None, user=None).condition_keys
    assert "aws:principalaccount" not in anonymous and anonymous["aws:principaltype"] == ("Anonymous",)
    # given keys win
    assert req(aws_username="x").condition_keys["aws:username"] == ("x",)


# --- decide: S3's authorization order ------------------------------------------------------------

READ_ALL = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
IDENTITY_ALLOW = parse_policy({"Version": "2012-10-17", "Statement": READ_ALL}, "identity")
IDENTITY_DENY = parse_policy({"Version": "2012-10-17", "Statement": {**READ_ALL, "Effect": "Deny"}},
                             "identity")
IDENTITY_OTHER = parse_policy({"Version": "2012-10-17", "Statement": {**READ_ALL, "Action": "s3:PutObject"}},
                              "identity")


def test_same_account_either_side_allows():
    ctx = req(account=OWNER, user="alice")
    grant_alice = bucket_policy(allow(Principal={"AWS": f"arn:aws:iam::{OWNER}:user/alice"}))
    assert decide([IDENTITY_ALLOW], None, ctx, OWNER)
    assert decide([], grant_alice, ctx, OWNER)
    assert decide([IDENTITY_OTHER], None, ctx, OWNER, acl_allows=True)
    assert not decide([IDENTITY_OTHER], None, ctx, OWNER)  # default deny
    assert not decide([], None, ctx, OWNER)
    assert decide([], None, req(account=OWNER, user=None), OWNER)  # the owner's root


def test_a_grant_to_the_own_account_reaches_users_through_identity_policies():
    ctx = req(account=OWNER, user="alice")
    grant_account = bucket_policy(allow(Principal={"AWS": OWNER}))
    assert not decide([], grant_account, ctx, OWNER)
    assert not decide([IDENTITY_OTHER], grant_account, ctx, OWNER)
    assert decide([IDENTITY_ALLOW], grant_account, ctx, OWNER)
    assert decide([], grant_account, req(account=OWNER, user=None), OWNER)
    assert decide([], bucket_policy(allow(Principal="*")), ctx, OWNER)
    # a Deny naming the account still binds every user in it
    assert not decide([IDENTITY_ALLOW], bucket_policy(deny(Principal={"AWS": OWNER})), ctx, OWNER)


def test_explicit_deny_anywhere_wins():
    ctx = req(account=OWNER, user="alice")
    grant = bucket_policy(allow(Principal="*"))
    refuse = bucket_policy(deny(Principal="*"))
    assert not decide([IDENTITY_ALLOW, IDENTITY_DENY], grant, ctx, OWNER, acl_allows=True)
    assert not decide([IDENTITY_ALLOW], refuse, ctx, OWNER, acl_allows=True)
    # a bucket policy's Deny binds even the owner's root
    assert not decide([], refuse, req(account=OWNER, user=None), OWNER)
    assert not decide([IDENTITY_ALLOW], refuse, req(account=OTHER, user="x"), OWNER)


def test_cross_account_needs_both_sides():
    dave = req(account=OTHER, user="dave")
    grant_other = bucket_policy(allow(Principal={"AWS": OTHER}))
    assert decide([IDENTITY_ALLOW], grant_other, dave, OWNER)
    assert not decide([], grant_other, dave, OWNER)  # his account has not delegated to him
    assert not decide([IDENTITY_OTHER], grant_other, dave, OWNER)
    assert not decide([IDENTITY_ALLOW], None, dave, OWNER)  # the owner has not granted
    assert decide([IDENTITY_ALLOW], None, dave, OWNER, acl_allows=True)
    # the other account's root needs no identity policy
    assert decide([], grant_other, req(account=OTHER, user=None), OWNER)
    assert not decide([], None, req(account=OTHER, user=None), OWNER)


def test_anonymous_only_bucket_policy_or_acl():
    anon = req(account=None, user=None)
    assert not decide([IDENTITY_ALLOW], None, anon, OWNER)
    assert decide([], bucket_policy(allow(Principal="*")), anon, OWNER)
    assert not decide([], bucket_policy(allow(Principal={"AWS": OWNER})), anon, OWNER)
    assert decide([], None, anon, OWNER, acl_allows=True)
    assert not decide([], bucket_policy(deny(Principal="*")), anon, OWNER, acl_allows=True)


# --- is_public ----------------------------------------------------------------------------------

@pytest.mark.parametrize("statement, public", [
    (allow(Principal="*"), True),
    (allow(Principal={"AWS": "*"}), True),
    (allow(Principal={"AWS": ["*", OTHER]}), True),
    (allow(NotPrincipal={"AWS": OTHER}), True),
    (allow(Principal={"AWS": OTHER}), False),
    (allow(Principal={"AWS": f"arn:aws:iam::{OTHER}:user/dave"}), False),
    (deny(Principal="*"), False),
    (allow(Principal="*", Condition={"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}), False),
    (allow(Principal="*", Condition={"IpAddress": {"aws:SourceIp": "0.0.0.0/1"}}), True),
    (allow(Principal="*", Condition={"IpAddress": {"aws:SourceIp": "::/0"}}), True),
    (allow(Principal="*", Condition={"NotIpAddress": {"aws:SourceIp": "192.0.2.0/24"}}), True),
    (allow(Principal="*", Condition={"IpAddressIfExists": {"aws:SourceIp": "192.0.2.0/24"}}), True),
    (allow(Principal="*", Condition={"StringEquals": {"aws:PrincipalAccount": OTHER}}), False),
    (allow(Principal="*", Condition={"StringEquals": {"aws:PrincipalOrgID": "o-abc"}}), False),
    (allow(Principal="*", Condition={"StringEquals": {"aws:SourceVpc": "vpc-1a2b3c4d"}}), False),
    (allow(Principal="*", Condition={"StringLike": {"aws:SourceVpc": "vpc-*"}}), True),
    (allow(Principal="*", Condition={"StringEquals": {"aws:PrincipalAccount": "${aws:username}"}}), True),
    (allow(Principal="*", Condition={"StringNotEquals": {"aws:PrincipalAccount": OTHER}}), True),
    (allow(Principal="*", Condition={"StringEquals": {"s3:x-amz-acl": "private"}}), True),
    (allow(Principal="*", Condition={"ForAllValues:StringEquals": {"aws:SourceVpc": "vpc-1"}}), True),
    (allow(Principal="*", Condition={"ArnEquals": {"aws:SourceArn": "arn:aws:sns:us-east-1:1:t"}}), False),
])
def test_is_public(statement, public):
    assert is_public(bucket_policy(statement)) is public


def test_is_public_looks_at_every_allow():
    private = allow(Principal={"AWS": OTHER})
    assert not is_public(bucket_policy(private, deny(Principal="*")))
    assert is_public(bucket_policy(private, allow(Principal="*", Sid="open", Action="s3:ListBucket",
                                                  Resource=BUCKET)))
