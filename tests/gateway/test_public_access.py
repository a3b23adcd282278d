"""Ownership controls and the public access block: their documents (botocore writes
what we parse and reads what we render), S3's errors for bad ones, their packing,
and what RestrictPublicBuckets sets aside."""

from __future__ import annotations

import pytest
from botocore.serialize import create_serializer
from botocore.session import get_session

from gateway.errors import MalformedXML
from gateway.public_access import (
    NO_BLOCK,
    PublicAccessBlock,
    parse_ownership_controls,
    parse_public_access_block,
    policy_restricted,
    render_ownership_controls,
    render_public_access_block,
    settings_ownership,
    settings_pab,
)
from tests.gateway.s3_testkit import stubbed_s3


def serialized(operation: str, params: dict) -> bytes:
    model = get_session().get_service_model("s3")
    return create_serializer("rest-xml").serialize_to_request(
        params, model.operation_model(operation))["body"]


@pytest.mark.parametrize("value", ["BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter"])
def test_ownership_controls_round_trip_through_botocore(value):
    body = serialized("PutBucketOwnershipControls", {
        "Bucket": "b", "OwnershipControls": {"Rules": [{"ObjectOwnership": value}]}})
    assert parse_ownership_controls(body) == value
    stub = stubbed_s3()
    stub.responder = lambda _: (200, {}, render_ownership_controls(value))
    assert stub.client.get_bucket_ownership_controls(Bucket="b")["OwnershipControls"] == {
        "Rules": [{"ObjectOwnership": value}]}


@pytest.mark.parametrize("body", [
    b"", b"junk", b"<OwnershipControls/>",
    b"<OwnershipControls><Rule><ObjectOwnership>Mine</ObjectOwnership></Rule></OwnershipControls>",
    b"<OwnershipControls><Rule/></OwnershipControls>",
    b"<OwnershipControls><Rule><ObjectOwnership>ObjectWriter</ObjectOwnership></Rule>"
    b"<Rule><ObjectOwnership>ObjectWriter</ObjectOwnership></Rule></OwnershipControls>",
    b"<Other><Rule><ObjectOwnership>ObjectWriter</ObjectOwnership></Rule></Other>",
])
def test_bad_ownership_controls(body):
    with pytest.raises(MalformedXML):
        parse_ownership_controls(body)


def test_public_access_block_round_trips_through_botocore():
    config = {"BlockPublicAcls": True, "IgnorePublicAcls": False, "BlockPublicPolicy": True,
              "RestrictPublicBuckets": False}
    body = serialized("PutPublicAccessBlock", {"Bucket": "b",
                                               "PublicAccessBlockConfiguration": config})
    pab = parse_public_access_block(body)
    assert pab == PublicAccessBlock(True, False, True, False)
    assert PublicAccessBlock.unpack(pab.pack()) == pab and pab.pack() == b"1010"
    stub = stubbed_s3()
    stub.responder = lambda _: (200, {}, render_public_access_block(pab))
    assert stub.client.get_public_access_block(Bucket="b")[
        "PublicAccessBlockConfiguration"] == config


def test_switches_left_out_are_off():
    assert parse_public_access_block(
        b"<PublicAccessBlockConfiguration><RestrictPublicBuckets>TRUE</RestrictPublicBuckets>"
        b"</PublicAccessBlockConfiguration>") == PublicAccessBlock(restrict_public_buckets=True)
    assert parse_public_access_block(b"<PublicAccessBlockConfiguration/>") == NO_BLOCK


@pytest.mark.parametrize("body", [
    b"", b"<PublicAccessBlockConfiguration>", b"<Other/>",
    b"<PublicAccessBlockConfiguration><BlockPublicAcls>yes</BlockPublicAcls>"
    b"</PublicAccessBlockConfiguration>",
    b"<PublicAccessBlockConfiguration><BlockPublicAcls>true</BlockPublicAcls>"
    b"<BlockPublicAcls>true</BlockPublicAcls></PublicAccessBlockConfiguration>",
    b"<PublicAccessBlockConfiguration><BlockEverything>true</BlockEverything>"
    b"</PublicAccessBlockConfiguration>",
])
def test_bad_public_access_blocks(body):
    with pytest.raises(MalformedXML):
        parse_public_access_block(body)


def test_settings_defaults():
    assert settings_ownership({}) == "ObjectWriter"      # buckets from before ownership controls
    assert settings_ownership({"ownership": b"BucketOwnerEnforced"}) == "BucketOwnerEnforced"
    assert settings_pab({}) == NO_BLOCK
    assert settings_pab({"pab": b"0001"}).restrict_public_buckets
    assert policy_restricted(PublicAccessBlock(restrict_public_buckets=True), True)
    assert not policy_restricted(PublicAccessBlock(restrict_public_buckets=True), False)
    assert not policy_restricted(PublicAccessBlock(block_public_policy=True), True)
