"""Bucket policies through boto3, aws-cli and unsigned clients (curl-like urllib and
boto3 with UNSIGNED): stored, validated, and judging anonymous requests."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from botocore.exceptions import ClientError

from tests.e2e.conftest import ACCESS, SECRET
from tests.e2e.conftest import anonymous_fetch as fetch


def public_read(bucket: str, prefix: str = "public/") -> dict:
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "PublicRead", "Effect": "Allow", "Principal": "*",
        "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*"]}]}


@pytest.fixture
def s3(basalt_http):
    return basalt_http.client()


@pytest.fixture
def bkt(s3):
    name = f"pol-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="public/page.html", Body=b"<h1>hello</h1>")
    s3.put_object(Bucket=name, Key="private/secret.txt", Body=b"secret")
    return name


def error_code(err: ClientError) -> str:
    return err.response["Error"]["Code"]


def test_without_a_policy_anonymous_requests_are_refused(basalt_http, s3, anon, bkt):
    status, body = fetch(basalt_http, f"/{bkt}/public/page.html")
    assert status == 403 and b"<Code>AccessDenied</Code>" in body
    with pytest.raises(ClientError) as err:
        s3.get_bucket_policy(Bucket=bkt)
    assert error_code(err.value) == "NoSuchBucketPolicy"
    with pytest.raises(ClientError) as err:
        anon.list_objects_v2(Bucket=bkt)
    assert error_code(err.value) == "AccessDenied"


def test_a_public_read_policy_opens_exactly_what_it_names(basalt_http, s3, anon, bkt):
    policy = public_read(bkt)
    s3.put_bucket_policy(Bucket=bkt, Policy=json.dumps(policy))
    assert json.loads(s3.get_bucket_policy(Bucket=bkt)["Policy"]) == policy
    assert s3.get_bucket_policy_status(Bucket=bkt)["PolicyStatus"]["IsPublic"] is True

    assert fetch(basalt_http, f"/{bkt}/public/page.html") == (200, b"<h1>hello</h1>")
    assert anon.get_object(Bucket=bkt, Key="public/page.html")["Body"].read() == b"<h1>hello</h1>"
    assert anon.head_object(Bucket=bkt, Key="public/page.html")["ContentLength"] == 14
    for key in ("private/secret.txt", "public-not/x"):
        status, body = fetch(basalt_http, f"/{bkt}/{key}")
        assert status == 403 and b"AccessDenied" in body
    with pytest.raises(ClientError) as err:           # reading is not writing
        anon.put_object(Bucket=bkt, Key="public/new.txt", Body=b"x")
    assert error_code(err.value) == "AccessDenied"
    with pytest.raises(ClientError) as err:           # nor listing
        anon.list_objects_v2(Bucket=bkt)
    assert error_code(err.value) == "AccessDenied"
    assert "Contents" not in s3.list_objects_v2(Bucket=bkt, Prefix="public/new")

    s3.delete_bucket_policy(Bucket=bkt)
    assert fetch(basalt_http, f"/{bkt}/public/page.html")[0] == 403
    with pytest.raises(ClientError) as err:
        s3.get_bucket_policy_status(Bucket=bkt)
    assert error_code(err.value) == "NoSuchBucketPolicy"


def test_conditions_deny_and_listing_prefixes(basalt_http, s3, anon, bkt):
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "s3:ListBucket",
         "Resource": f"arn:aws:s3:::{bkt}",
         "Condition": {"StringLike": {"s3:prefix": "public/*"}}},
        {"Effect": "Allow", "Principal": "*", "Action": "s3:Get*",
         "Resource": f"arn:aws:s3:::{bkt}/*",
         "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bkt}/private/*"}]}
    s3.put_bucket_policy(Bucket=bkt, Policy=json.dumps(policy))
    # Listing is granted to everyone (a prefix condition restricts no one): public
    assert s3.get_bucket_policy_status(Bucket=bkt)["PolicyStatus"]["IsPublic"] is True
    listed = anon.list_objects_v2(Bucket=bkt, Prefix="public/")
    assert [o["Key"] for o in listed["Contents"]] == ["public/page.html"]
    with pytest.raises(ClientError) as err:           # another prefix: not allowed
        anon.list_objects_v2(Bucket=bkt, Prefix="private/")
    assert error_code(err.value) == "AccessDenied"
    assert anon.get_object(Bucket=bkt, Key="public/page.html")["Body"].read() == b"<h1>hello</h1>"
    with pytest.raises(ClientError) as err:           # the explicit Deny wins
        anon.get_object(Bucket=bkt, Key="private/secret.txt")
    assert error_code(err.value) == "AccessDenied"
    # An explicit Deny to everyone denies the owner's root too, as in AWS; the root
    # may still change the policy (nothing can lock the owner out of it).
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bkt, Key="private/secret.txt")
    assert error_code(err.value) == "AccessDenied"
    assert s3.get_object(Bucket=bkt, Key="public/page.html")["Body"].read() == b"<h1>hello</h1>"

    outside = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bkt}/*",
         "Condition": {"NotIpAddress": {"aws:SourceIp": "127.0.0.0/8"}}}]}
    s3.put_bucket_policy(Bucket=bkt, Policy=json.dumps(outside))
    assert fetch(basalt_http, f"/{bkt}/public/page.html")[0] == 403
    local_only = {"Version": "2012-10-17", "Statement": [policy["Statement"][1]]}
    s3.put_bucket_policy(Bucket=bkt, Policy=json.dumps(local_only))
    # Granted only to fixed source addresses: not public
    assert s3.get_bucket_policy_status(Bucket=bkt)["PolicyStatus"]["IsPublic"] is False


def test_malformed_policies_are_refused_and_change_nothing(basalt_http, s3, bkt):
    s3.put_bucket_policy(Bucket=bkt, Policy=json.dumps(public_read(bkt)))
    bad = [
        "not json",
        json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*",
                                   "Action": "s3:GetObject"}]}),                # no Resource
        json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Maybe", "Principal": "*", "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bkt}/*"}]}),
        json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::another-bucket/*"}]}),                  # not this bucket
        json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": "*", "Action": "s3:GetObjects",
            "Resource": f"arn:aws:s3:::{bkt}/*"}]}),                          # no such action
    ]
    for text in bad:
        with pytest.raises(ClientError) as err:
            s3.put_bucket_policy(Bucket=bkt, Policy=text)
        assert error_code(err.value) == "MalformedPolicy", text
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert json.loads(s3.get_bucket_policy(Bucket=bkt)["Policy"]) == public_read(bkt)
    with pytest.raises(ClientError) as err:
        s3.put_bucket_policy(Bucket="no-such-bucket-here", Policy=json.dumps(
            public_read("no-such-bucket-here")))
    assert error_code(err.value) == "NoSuchBucket"


def test_anonymous_cannot_touch_the_policy_itself(basalt_http, s3, anon, bkt):
    everything = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bkt}", f"arn:aws:s3:::{bkt}/*"]}]}
    s3.put_bucket_policy(Bucket=bkt, Policy=json.dumps(everything))
    anon.put_object(Bucket=bkt, Key="public/dropped.txt", Body=b"dropped")  # s3:* allows it
    assert s3.get_object(Bucket=bkt, Key="public/dropped.txt")["Body"].read() == b"dropped"
    for call in (lambda: anon.delete_bucket_policy(Bucket=bkt),
                 lambda: anon.put_bucket_policy(Bucket=bkt, Policy="{}"),
                 lambda: anon.get_bucket_policy(Bucket=bkt)):
        with pytest.raises(ClientError) as err:
            call()
        assert error_code(err.value) == "AccessDenied"
    assert json.loads(s3.get_bucket_policy(Bucket=bkt)["Policy"]) == everything


def test_aws_cli_sets_and_reads_a_policy(basalt_http, bkt, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(public_read(bkt)))
    env = dict(basalt_http.env, AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET)
    base = ["aws", "--endpoint-url", basalt_http.endpoint, "s3api"]
    subprocess.run(base + ["put-bucket-policy", "--bucket", bkt, "--policy", f"file://{path}"],
                   env=env, check=True, capture_output=True, timeout=60)
    out = subprocess.run(base + ["get-bucket-policy", "--bucket", bkt, "--output", "json"],
                         env=env, check=True, capture_output=True, text=True, timeout=60)
    assert json.loads(json.loads(out.stdout)["Policy"]) == public_read(bkt)
    assert fetch(basalt_http, f"/{bkt}/public/page.html")[0] == 200


def test_existing_object_tags_condition(basalt_http, s3, anon, bkt):
    """s3:ExistingObjectTag/KEY reads the object's own tags (AWS's example: share
    only what is tagged public)."""
    s3.put_object(Bucket=bkt, Key="doc-public", Body=b"open", Tagging="classification=public")
    s3.put_object(Bucket=bkt, Key="doc-secret", Body=b"closed", Tagging="classification=secret")
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bkt}/*",
        "Condition": {"StringEquals": {"s3:ExistingObjectTag/classification": "public"}}}]}
    s3.put_bucket_policy(Bucket=bkt, Policy=json.dumps(policy))
    assert anon.get_object(Bucket=bkt, Key="doc-public")["Body"].read() == b"open"
    with pytest.raises(ClientError) as err:
        anon.get_object(Bucket=bkt, Key="doc-secret")
    assert error_code(err.value) == "AccessDenied"
    # Retagged: the judgement follows the object's tags as they are now.
    s3.put_object_tagging(Bucket=bkt, Key="doc-secret",
                          Tagging={"TagSet": [{"Key": "classification", "Value": "public"}]})
    assert anon.get_object(Bucket=bkt, Key="doc-secret")["Body"].read() == b"closed"
