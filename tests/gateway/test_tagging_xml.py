"""Tags (gateway.tagging): the Tagging document botocore sends and reads, the
x-amz-tagging header, and S3's limits with its exact codes."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
from s3_testkit import stubbed_s3

from gateway import errors
from gateway.tagging import (
    parse_tagging,
    render_tagging,
    tagging_count_header,
    tags_for_copy,
    tags_from_header,
)


@contextlib.contextmanager
def raises(code: str, message: str | None = None, status: int = 400):
    with pytest.raises(errors.S3Error) as info:
        yield info
    assert info.value.code == code, str(info.value)
    assert info.value.status == status
    if message is not None:
        assert info.value.message == message


def sent_body(call, **kwargs) -> bytes:
    s3 = stubbed_s3()
    getattr(s3.client, call)(**kwargs)
    return s3.requests[0].body


def tagging(*pairs: tuple[str, str], root: str = "Tagging") -> bytes:
    tags = "".join(f"<Tag><Key>{k}</Key><Value>{v}</Value></Tag>" for k, v in pairs)
    return f"<{root}><TagSet>{tags}</TagSet></{root}>".encode()


TAGS = {"project": "basalt", "empty": "", "ü 中文 ✓": "a+b=c.d_e:f/g@h-i", "x" * 128: "y" * 256,
        "&<>\"'": "ok"}
VALID = {"project": "basalt", "empty": "", "ü 中文": "a+b=c.d_e:f/g@h-i", "x" * 128: "y" * 256}


def test_object_tagging_roundtrip_through_botocore():
    body = sent_body("put_object_tagging", Bucket="b", Key="k",
                     Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in VALID.items()]})
    assert parse_tagging(body) == VALID
    s3 = stubbed_s3()
    s3.responder = lambda request: (200, {"x-amz-version-id": "v1"}, render_tagging(VALID))
    out = s3.client.get_object_tagging(Bucket="b", Key="k")
    assert {t["Key"]: t["Value"] for t in out["TagSet"]} == VALID
    assert [t["Key"] for t in out["TagSet"]] == sorted(VALID)
    assert out["VersionId"] == "v1"


def test_bucket_tagging_roundtrip_through_botocore():
    tags = {f"k{i:02}": f"v{i}" for i in range(50)}
    body = sent_body("put_bucket_tagging", Bucket="b",
                     Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})
    assert parse_tagging(body, limit=50) == tags
    s3 = stubbed_s3()
    s3.responder = lambda request: (200, {}, render_tagging(tags))
    assert {t["Key"]: t["Value"] for t in s3.client.get_bucket_tagging(Bucket="b")["TagSet"]} == tags


def test_render_escapes_and_empty_set():
    body = render_tagging({"a&b": "<c>"})
    assert b"<Key>a&amp;b</Key><Value>&lt;c&gt;</Value>" in body
    s3 = stubbed_s3()
    s3.responder = lambda request: (200, {}, render_tagging({}))
    assert s3.client.get_object_tagging(Bucket="b", Key="k")["TagSet"] == []


def test_empty_tag_set_and_namespaces():
    assert parse_tagging(b"<Tagging><TagSet/></Tagging>") == {}
    assert parse_tagging(b'<Tagging xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><TagSet><Tag>'
                         b"<Key>a</Key><Value></Value></Tag></TagSet></Tagging>") == {"a": ""}


@pytest.mark.parametrize("body", [
    b"",
    b"<Tagging>",
    b"<Tagging/>",                                              # no TagSet
    b"<Tagging><TagSet/><TagSet/></Tagging>",
    b"<Tagging><TagSet><Tag><Value>v</Value></Tag></TagSet></Tagging>",  # no Key
    b"<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>",      # no Value
    b"<Tagging><TagSet><Tag><Key>k</Key><Key>j</Key><Value>v</Value></Tag></TagSet></Tagging>",
    tagging(("k", "v"), root="Tags"),
    b'<!DOCTYPE t [<!ENTITY e "x">]><Tagging><TagSet><Tag><Key>&e;</Key><Value/></Tag></TagSet></Tagging>',
])
def test_malformed(body):
    with raises("MalformedXML"):
        parse_tagging(body)


def test_too_many_object_tags_is_bad_request():
    ten = [(f"k{i}", "v") for i in range(10)]
    assert len(parse_tagging(tagging(*ten))) == 10
    with raises("BadRequest", "Object tags cannot be greater than 10"):
        parse_tagging(tagging(*ten, ("k10", "v")))


def test_too_many_bucket_tags():
    fifty = [(f"k{i}", "v") for i in range(50)]
    assert len(parse_tagging(tagging(*fifty), limit=50)) == 50
    with raises("InvalidTag", "Bucket tag count cannot be greater than 50"):
        parse_tagging(tagging(*fifty, ("k50", "v")), limit=50)


@pytest.mark.parametrize("pairs,message", [
    ([("a", "1"), ("a", "2")], "Cannot provide multiple Tags with the same key"),
    ([("", "v")], "The TagKey you have provided is invalid"),
    ([("k" * 129, "v")], "The TagKey you have provided is invalid"),
    ([("𝐀" * 65, "v")], "The TagKey you have provided is invalid"),     # 130 UTF-16 code units
    ([("k", "v" * 257)], "The TagValue you have provided is invalid"),
    ([("k", "𝐀" * 129)], "The TagValue you have provided is invalid"),
    ([("a,b", "v")], "The TagKey you have provided is invalid"),
    ([("[{Key", "v")], "The TagKey you have provided is invalid"),
    ([("k", "v;")], "The TagValue you have provided is invalid"),
    ([("k", "a*b")], "The TagValue you have provided is invalid"),
    ([("k", "smile 😀")], "The TagValue you have provided is invalid"),  # a symbol, not a letter
    ([("tab\tkey", "v")], "The TagKey you have provided is invalid"),  # control, not a space
    ([("aws:cloudformation", "v")], "Your TagKey cannot be prefixed with aws:"),
    ([("AWS:x", "v")], "Your TagKey cannot be prefixed with aws:"),
])
def test_invalid_tags(pairs, message):
    with raises("InvalidTag", message):
        parse_tagging(tagging(*pairs))


def test_bucket_system_tags():
    with raises("InvalidTag", "System tags cannot be added/updated by requester"):
        parse_tagging(tagging(("aws:x", "v")), limit=50)


def test_limits_accept_the_maximum():
    assert parse_tagging(tagging(("𝐀" * 64, "𝐀" * 128))) == {"𝐀" * 64: "𝐀" * 128}
    assert parse_tagging(tagging(("aws", "v"), ("awsx:y", "v"))) == {"aws": "v", "awsx:y": "v"}


# --- the x-amz-tagging header ------------------------------------------------------------

def test_header_from_botocore():
    s3 = stubbed_s3()
    s3.client.put_object(Bucket="b", Key="k", Body=b"x", Tagging="a=1&b%20c=d%2Be&empty=")
    assert tags_from_header(s3.requests[0].header("x-amz-tagging")) == {"a": "1", "b c": "d+e",
                                                                         "empty": ""}


@pytest.mark.parametrize("value,tags", [
    ("", {}),
    ("foo=bar&bar", {"foo": "bar", "bar": ""}),
    ("a+b=c+d", {"a b": "c d"}),
    ("k=%C3%BC", {"k": "ü"}),
    ("a=1&&b=2", {"a": "1", "b": "2"}),
    ("k=a%3Db", {"k": "a=b"}),
])
def test_header_forms(value, tags):
    assert tags_from_header(value) == tags


HEADER_MESSAGE = ("The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query "
                  "parameters without tag name duplicates.")


@pytest.mark.parametrize("value", ["a=1&a=2", "TagSet=[{Key=string,Value=string}]", "k=%FF", "a=b=c"])
def test_header_invalid_argument(value):
    with raises("InvalidArgument", HEADER_MESSAGE) as exc:
        tags_from_header(value)
    assert exc.value.extra["ArgumentName"] == "x-amz-tagging"


@pytest.mark.parametrize("value,code,message", [
    ("&".join(f"k{i}=v" for i in range(11)), "BadRequest", "Object tags cannot be greater than 10"),
    ("TagSet%3D%5B%7BKey%3Dstring%2CValue%3Dstring%7D%5D", "InvalidTag",
     "The TagKey you have provided is invalid"),
    ("=v", "InvalidTag", "The TagKey you have provided is invalid"),
    ("k=" + "v" * 257, "InvalidTag", "The TagValue you have provided is invalid"),
    ("aws%3Ax=1", "InvalidTag", "Your TagKey cannot be prefixed with aws:"),
])
def test_header_invalid_tags(value, code, message):
    with raises(code, message):
        tags_from_header(value)


def test_tags_for_copy():
    source = {"s": "1"}
    assert tags_for_copy({}, source) == source
    assert tags_for_copy({"x-amz-tagging-directive": "COPY", "x-amz-tagging": "n=2"}, source) == source
    assert tags_for_copy({"X-Amz-Tagging-Directive": "REPLACE", "x-amz-tagging": "n=2"}, source) == {"n": "2"}
    assert tags_for_copy({"x-amz-tagging-directive": "REPLACE"}, source) == {}
    with raises("InvalidArgument"):
        tags_for_copy({"x-amz-tagging-directive": "copy"}, source)


def test_tagging_count_header_read_by_botocore():
    assert tagging_count_header(SimpleNamespace(tags={})) == {}
    headers = tagging_count_header(SimpleNamespace(tags={"a": "1", "b": "2"}))
    assert headers == {"x-amz-tagging-count": "2"}
    s3 = stubbed_s3()
    s3.responder = lambda request: (200, headers, b"")
    assert s3.client.head_object(Bucket="b", Key="k")["ResponseMetadata"]["HTTPHeaders"][
        "x-amz-tagging-count"] == "2"
