"""Object and bucket tags through real boto3 (and aws-cli) against `basalt serve`.

Put/Get/DeleteObjectTagging (per version too), tags given on PutObject,
CreateMultipartUpload and CopyObject (COPY and REPLACE directives), the tag
count of GET and HEAD, S3's limits with the codes S3 answers — and after every
refusal, that nothing changed — and bucket tags.
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote

import pytest

from .s3_errors import refused
from .test_s3_awscli import api, aws, aws_config  # noqa: F401  (fixtures)


def tagset(tags: dict[str, str]) -> dict:
    return {"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}


def tags_of(s3, bucket, key, **kwargs) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key,
                                                                **kwargs)["TagSet"]}


def header(tags: dict[str, str]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in tags.items())


def test_put_get_delete_object_tagging(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    before = s3.head_object(Bucket=bucket, Key="k")
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == []
    assert "TagCount" not in s3.head_object(Bucket=bucket, Key="k")
    tags = {"zeta": "last", "alpha": "", "with space": "a/b:c=d+e-f@g_h.i", "ключ": "значение"}
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tagset(tags))
    got = s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"]
    assert got == [{"Key": k, "Value": tags[k]} for k in sorted(tags)]
    assert s3.head_object(Bucket=bucket, Key="k")["TagCount"] == 4
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["TagCount"] == 4 and got["Body"].read() == b"data"
    # A PUT of tags replaces the whole set.
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tagset({"only": "one"}))
    assert tags_of(s3, bucket, "k") == {"only": "one"}
    assert s3.head_object(Bucket=bucket, Key="k")["TagCount"] == 1
    # Tagging changes neither the ETag nor Last-Modified; an unversioned bucket has no version ids.
    after = s3.head_object(Bucket=bucket, Key="k")
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])
    assert "VersionId" not in s3.get_object_tagging(Bucket=bucket, Key="k")
    deleted = s3.delete_object_tagging(Bucket=bucket, Key="k")
    assert "VersionId" not in deleted
    assert tags_of(s3, bucket, "k") == {}
    assert "TagCount" not in s3.get_object(Bucket=bucket, Key="k")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"data"
    # An overwrite without tags has none.
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tagset({"a": "b"}))
    s3.put_object(Bucket=bucket, Key="k", Body=b"new")
    assert tags_of(s3, bucket, "k") == {} and "TagCount" not in s3.head_object(Bucket=bucket, Key="k")
    refused("NoSuchKey", s3.get_object_tagging, Bucket=bucket, Key="missing")
    refused("NoSuchKey", s3.put_object_tagging, Bucket=bucket, Key="missing",
            Tagging=tagset({"a": "b"}))
    refused("NoSuchKey", s3.delete_object_tagging, Bucket=bucket, Key="missing")
    refused("NoSuchBucket", s3.get_object_tagging, Bucket=bucket + "-none", Key="k")


def test_tagging_by_version(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"1", Tagging="gen=1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"2")["VersionId"]
    # A new version does not inherit the tags of the one before.
    assert tags_of(s3, bucket, "k") == {}
    assert tags_of(s3, bucket, "k", VersionId=v1) == {"gen": "1"}
    put = s3.put_object_tagging(Bucket=bucket, Key="k", VersionId=v1, Tagging=tagset({"old": "yes"}))
    assert put["VersionId"] == v1
    latest = s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tagset({"new": "yes"}))
    assert latest["VersionId"] == v2
    got = s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=v1)
    assert got["VersionId"] == v1 and got["TagSet"] == [{"Key": "old", "Value": "yes"}]
    got = s3.get_object_tagging(Bucket=bucket, Key="k")
    assert got["VersionId"] == v2 and got["TagSet"] == [{"Key": "new", "Value": "yes"}]
    assert s3.head_object(Bucket=bucket, Key="k", VersionId=v1)["TagCount"] == 1
    deleted = s3.delete_object_tagging(Bucket=bucket, Key="k", VersionId=v1)
    assert deleted["VersionId"] == v1
    assert tags_of(s3, bucket, "k", VersionId=v1) == {}
    assert tags_of(s3, bucket, "k", VersionId=v2) == {"new": "yes"}
    # A delete marker has no tags.
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    refused("NoSuchKey", s3.get_object_tagging, Bucket=bucket, Key="k")
    refused("MethodNotAllowed", s3.get_object_tagging, Bucket=bucket, Key="k", VersionId=marker)
    refused("NoSuchVersion", s3.get_object_tagging, Bucket=bucket, Key="k", VersionId="0" * 32)
    assert tags_of(s3, bucket, "k", VersionId=v2) == {"new": "yes"}


def test_tags_on_put_and_multipart(s3, bucket):
    tags = {"project": "basalt", "empty": "", "sp ace": "a+b=c d"}
    s3.put_object(Bucket=bucket, Key="p", Body=b"x", Tagging=header(tags))
    assert tags_of(s3, bucket, "p") == tags
    assert s3.get_object(Bucket=bucket, Key="p")["TagCount"] == 3
    # A key without "=" has the empty value.
    s3.put_object(Bucket=bucket, Key="bare", Body=b"x", Tagging="flag&k=v")
    assert tags_of(s3, bucket, "bare") == {"flag": "", "k": "v"}
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", Tagging=header({"mp": "yes",
                                                                             "n": "2"}))["UploadId"]
    parts = [os.urandom(5 << 20), b"end"]
    etags = [s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=i + 1, Body=p)["ETag"]
             for i, p in enumerate(parts)]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    assert tags_of(s3, bucket, "mp") == {"mp": "yes", "n": "2"}
    assert s3.head_object(Bucket=bucket, Key="mp")["TagCount"] == 2
    # A refused header stores nothing.
    refused("InvalidTag", s3.create_multipart_upload, Bucket=bucket, Key="mp2", Tagging="aws:x=1")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_copy_tagging_directive(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"source", Tagging="a=1&b=2")
    s3.copy_object(Bucket=bucket, Key="default", CopySource={"Bucket": bucket, "Key": "src"})
    assert tags_of(s3, bucket, "default") == {"a": "1", "b": "2"}
    # COPY ignores a Tagging header.
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "src"},
                   TaggingDirective="COPY", Tagging="ignored=yes")
    assert tags_of(s3, bucket, "copy") == {"a": "1", "b": "2"}
    s3.copy_object(Bucket=bucket, Key="replace", CopySource={"Bucket": bucket, "Key": "src"},
                   TaggingDirective="REPLACE", Tagging="c=3")
    assert tags_of(s3, bucket, "replace") == {"c": "3"}
    s3.copy_object(Bucket=bucket, Key="none", CopySource={"Bucket": bucket, "Key": "src"},
                   TaggingDirective="REPLACE")
    assert tags_of(s3, bucket, "none") == {}
    assert "TagCount" not in s3.head_object(Bucket=bucket, Key="none")
    # The metadata directive does not touch the tags.
    s3.copy_object(Bucket=bucket, Key="meta", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"m": "1"})
    assert tags_of(s3, bucket, "meta") == {"a": "1", "b": "2"}
    # Copy onto itself with REPLACE retags it.
    s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"},
                   TaggingDirective="REPLACE", Tagging="self=1", MetadataDirective="REPLACE")
    assert tags_of(s3, bucket, "src") == {"self": "1"}
    refused("InvalidArgument", s3.copy_object, Bucket=bucket, Key="bad",
            CopySource={"Bucket": bucket, "Key": "src"}, TaggingDirective="MERGE")
    refused("InvalidTag", s3.copy_object, Bucket=bucket, Key="bad",
            CopySource={"Bucket": bucket, "Key": "src"}, TaggingDirective="REPLACE", Tagging="aws:k=v")
    refused("NoSuchKey", s3.get_object, Bucket=bucket, Key="bad")
    assert s3.get_object(Bucket=bucket, Key="replace")["Body"].read() == b"source"


def test_copy_tags_of_a_source_version(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="src", Body=b"1", Tagging="v=1")["VersionId"]
    s3.put_object(Bucket=bucket, Key="src", Body=b"2", Tagging="v=2")
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src",
                                                         "VersionId": v1})
    assert tags_of(s3, bucket, "dst") == {"v": "1"}
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"1"


CJK = "\U00020000"  # a letter outside the BMP: two UTF-16 units, as S3 counts


def bad_tag_sets():
    ok = {"keep": "me"}
    return [
        ("eleven", {f"k{i}": "v" for i in range(11)}, "BadRequest"),
        ("key 129", {"k" * 129: "v"}, "InvalidTag"),
        ("key 65 wide", {CJK * 65: "v"}, "InvalidTag"),
        ("value 257", {"k": "v" * 257}, "InvalidTag"),
        ("value 129 wide", {"k": CJK * 129}, "InvalidTag"),
        ("bad key char", {"a#b": "v"}, "InvalidTag"),
        ("bad value char", {"k": "semi;colon"}, "InvalidTag"),
        ("aws prefix", {"aws:cloudformation": "v", **ok}, "InvalidTag"),
        ("aws prefix upper", {"AWS:x": "v"}, "InvalidTag"),
    ]


@pytest.mark.parametrize("name,tags,expected", bad_tag_sets(), ids=[t[0] for t in bad_tag_sets()])
def test_object_tag_limits(s3, bucket, name, tags, expected):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="keep=me")
    refused(expected, s3.put_object_tagging, Bucket=bucket, Key="k", Tagging=tagset(tags))
    assert tags_of(s3, bucket, "k") == {"keep": "me"}
    refused(expected, s3.put_object, Bucket=bucket, Key="new", Body=b"x", Tagging=header(tags))
    refused("NoSuchKey", s3.get_object, Bucket=bucket, Key="new")
    # Overwriting with refused tags leaves the object as it was.
    refused(expected, s3.put_object, Bucket=bucket, Key="k", Body=b"other", Tagging=header(tags))
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == b"x" and got["TagCount"] == 1


def test_object_tags_at_the_limits(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    edge = {f"k{i}": "v" for i in range(8)}
    edge["K" * 128] = "V" * 256
    edge[CJK * 64] = CJK * 128
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tagset(edge))
    assert tags_of(s3, bucket, "k") == edge
    assert s3.head_object(Bucket=bucket, Key="k")["TagCount"] == 10
    s3.put_object(Bucket=bucket, Key="h", Body=b"x", Tagging=header(edge))
    assert tags_of(s3, bucket, "h") == edge


def test_duplicate_tag_keys(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="keep=me")
    refused("InvalidTag", s3.put_object_tagging, Bucket=bucket, Key="k", Tagging={"TagSet": [
        {"Key": "dup", "Value": "1"}, {"Key": "dup", "Value": "2"}]})
    refused("InvalidArgument", s3.put_object, Bucket=bucket, Key="k", Body=b"y", Tagging="dup=1&dup=2")
    refused("InvalidArgument", s3.put_object, Bucket=bucket, Key="k", Body=b"y", Tagging="a=b=c")
    refused("InvalidTag", s3.put_object, Bucket=bucket, Key="k", Body=b"y", Tagging="=v")
    refused("InvalidArgument", s3.put_object, Bucket=bucket, Key="k", Body=b"y", Tagging="k=%FF")
    refused("InvalidTag", s3.put_object, Bucket=bucket, Key="k", Body=b"y", Tagging="k=a%26b")
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == b"x" and tags_of(s3, bucket, "k") == {"keep": "me"}


def test_bucket_tagging(s3, bucket):
    refused("NoSuchTagSet", s3.get_bucket_tagging, Bucket=bucket)
    tags = {"team": "storage", "cost center": "42", "aws-ish": "not reserved"}
    s3.put_bucket_tagging(Bucket=bucket, Tagging=tagset(tags))
    got = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    assert got == [{"Key": k, "Value": tags[k]} for k in sorted(tags)]
    # Fifty is a bucket's limit; refusals change nothing.
    fifty = {f"t{i:02d}": str(i) for i in range(50)}
    s3.put_bucket_tagging(Bucket=bucket, Tagging=tagset(fifty))
    assert len(s3.get_bucket_tagging(Bucket=bucket)["TagSet"]) == 50
    s3.put_bucket_tagging(Bucket=bucket, Tagging=tagset(tags))
    for bad in ({f"t{i}": "v" for i in range(51)}, {"aws:reserved": "v"}, {"k" * 129: "v"},
                {"k": "v" * 257}, {"bad*char": "v"}):
        refused("InvalidTag", s3.put_bucket_tagging, Bucket=bucket, Tagging=tagset(bad))
    refused("InvalidTag", s3.put_bucket_tagging, Bucket=bucket, Tagging={"TagSet": [
        {"Key": "dup", "Value": "1"}, {"Key": "dup", "Value": "2"}]})
    assert {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]} == tags
    # Bucket tags are not object tags.
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert tags_of(s3, bucket, "k") == {}
    s3.delete_bucket_tagging(Bucket=bucket)
    refused("NoSuchTagSet", s3.get_bucket_tagging, Bucket=bucket)
    s3.delete_bucket_tagging(Bucket=bucket)  # idempotent
    refused("NoSuchBucket", s3.get_bucket_tagging, Bucket=bucket + "-none")
    refused("NoSuchBucket", s3.put_bucket_tagging, Bucket=bucket + "-none", Tagging=tagset(tags))


def test_aws_cli_tagging(aws, basalt, s3, bucket):  # noqa: F811
    s3.put_object(Bucket=bucket, Key="cli", Body=b"x")
    api(aws, "put-object-tagging", "--bucket", bucket, "--key", "cli", "--tagging",
        json.dumps(tagset({"from": "cli", "n": "1"})))
    got = api(aws, "get-object-tagging", "--bucket", bucket, "--key", "cli")
    assert got["TagSet"] == [{"Key": "from", "Value": "cli"}, {"Key": "n", "Value": "1"}]
    out = aws("s3api", "put-bucket-tagging", "--bucket", bucket, "--tagging",
              json.dumps(tagset({"aws:nope": "x"})), check=False)
    assert out.returncode != 0 and "InvalidTag" in out.stderr_text
    api(aws, "put-bucket-tagging", "--bucket", bucket, "--tagging", json.dumps(tagset({"b": "1"})))
    assert api(aws, "get-bucket-tagging", "--bucket", bucket)["TagSet"] == [{"Key": "b", "Value": "1"}]
    assert s3.get_object(Bucket=bucket, Key="cli")["TagCount"] == 2
