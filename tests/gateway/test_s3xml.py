"""S3 XML: every built document goes through a real boto3 client (botocore's parser and
its after-call handlers), and the parsers read bodies that botocore serialized."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from s3_testkit import stubbed_s3

from gateway import errors
from gateway.s3xml import (
    BucketEntry,
    DeletedEntry,
    DeleteErrorEntry,
    ObjectEntry,
    Owner,
    PartEntry,
    UploadEntry,
    complete_multipart_upload_result,
    copy_object_result,
    copy_part_result,
    delete_result,
    format_timestamp,
    initiate_multipart_upload_result,
    list_buckets,
    list_multipart_uploads_result,
    list_objects_v1,
    list_objects_v2,
    list_parts_result,
    location_constraint,
    parse_complete_multipart_upload,
    parse_create_bucket,
    parse_delete,
)

WHEN = datetime(2024, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)
OWNER = Owner("75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a", "basalt")
KEYS = ["plain", "dir/sub/file.txt", "a b+c", "ü/中文/😀", "a&b<c>d\"e'f", "%2F%25", "tab\there",
        "new\nline", "cr\rreturn", " lead and trail "]


def respond(body: bytes, status: int = 200, headers: dict | None = None):
    s3 = stubbed_s3()
    s3.responder = lambda request: (status, headers or {}, body)
    return s3


def objects(keys=KEYS, owner=None):
    return [ObjectEntry(key, i * 100, f"etag{i}", WHEN, owner=owner) for i, key in enumerate(keys)]


# --- builders through boto3 ------------------------------------------------------------

def test_list_buckets():
    body = list_buckets(OWNER, [BucketEntry("alpha", WHEN, "us-east-1"), BucketEntry("beta", 0.0)],
                        prefix="a", continuation_token="tok")
    out = respond(body).client.list_buckets()
    assert [b["Name"] for b in out["Buckets"]] == ["alpha", "beta"]
    assert out["Buckets"][0]["CreationDate"] == WHEN.replace(microsecond=123000)
    assert out["Buckets"][0]["BucketRegion"] == "us-east-1"
    assert out["Buckets"][1]["CreationDate"] == datetime(1970, 1, 1, tzinfo=UTC)
    assert out["Owner"] == {"ID": OWNER.id, "DisplayName": "basalt"}
    assert out["ContinuationToken"] == "tok" and out["Prefix"] == "a"


@pytest.mark.parametrize("encoding_type", ["url", None])
def test_list_objects_v2_roundtrips_every_key(encoding_type):
    body = list_objects_v2("bucket", objects(owner=OWNER), ["dir/", "ü/ x+/"], prefix="", delimiter="/",
                           max_keys=1000, is_truncated=True, continuation_token="ct",
                           next_continuation_token="nct", start_after="a b", encoding_type=encoding_type,
                           fetch_owner=True)
    s3 = respond(body)
    out = s3.client.list_objects_v2(Bucket="bucket", Delimiter="/", StartAfter="a b")
    assert "encoding-type=url" in s3.requests[0].query  # botocore asks for it on its own
    if encoding_type == "url":
        assert [o["Key"] for o in out["Contents"]] == KEYS
        assert [p["Prefix"] for p in out["CommonPrefixes"]] == ["dir/", "ü/ x+/"]
        assert out["StartAfter"] == "a b"
    first = out["Contents"][0]
    assert first["ETag"] == '"etag0"' and first["Size"] == 0 and first["StorageClass"] == "STANDARD"
    assert first["LastModified"] == WHEN.replace(microsecond=123000)
    assert first["Owner"]["ID"] == OWNER.id
    assert out["KeyCount"] == len(KEYS) + 2 and out["IsTruncated"] is True
    assert out["NextContinuationToken"] == "nct" and out["ContinuationToken"] == "ct"
    assert out["Delimiter"] == "/" and out["MaxKeys"] == 1000 and out["Name"] == "bucket"


def test_list_objects_v2_escapes_keys_without_url_encoding():
    body = list_objects_v2("bucket", objects(), [], encoding_type=None)
    out = respond(body).client.list_objects_v2(Bucket="bucket", EncodingType="url")
    # EncodingType set by the caller: botocore leaves decoding to it, so keys come back verbatim.
    assert [o["Key"] for o in out["Contents"]] == KEYS
    assert b"&amp;" in body and b"&lt;" in body and b"&#xd;" in body


def test_list_objects_v2_without_owner_and_empty():
    out = respond(list_objects_v2("bucket", objects(), [])).client.list_objects_v2(Bucket="bucket")
    assert "Owner" not in out["Contents"][0]
    empty = respond(list_objects_v2("b", [], [])).client.list_objects_v2(Bucket="b")
    assert empty["KeyCount"] == 0 and "Contents" not in empty and empty["IsTruncated"] is False


def test_list_objects_v1_roundtrips_and_shows_owner():
    body = list_objects_v1("bucket", objects(owner=OWNER), ["p q/"], prefix="", marker="m n",
                           delimiter="/", is_truncated=True, next_marker="ü x", encoding_type="url")
    out = respond(body).client.list_objects(Bucket="bucket", Marker="m n", Delimiter="/")
    assert [o["Key"] for o in out["Contents"]] == KEYS
    assert out["Marker"] == "m n" and out["NextMarker"] == "ü x"
    assert out["CommonPrefixes"] == [{"Prefix": "p q/"}]
    assert out["Contents"][3]["Owner"]["DisplayName"] == "basalt"


def test_checksum_fields_in_listings():
    entry = ObjectEntry("k", 1, "e", WHEN, checksum_algorithm="CRC64NVME", checksum_type="FULL_OBJECT")
    out = respond(list_objects_v2("b", [entry], [])).client.list_objects_v2(Bucket="b")
    assert out["Contents"][0]["ChecksumAlgorithm"] == ["CRC64NVME"]
    assert out["Contents"][0]["ChecksumType"] == "FULL_OBJECT"


@pytest.mark.parametrize("region,expected", [(None, None), ("us-east-1", None), ("eu-west-1", "eu-west-1")])
def test_location_constraint(region, expected):
    out = respond(location_constraint(region)).client.get_bucket_location(Bucket="b")
    assert out.get("LocationConstraint") == expected


def test_copy_object_and_copy_part_results():
    body = copy_object_result("abc", WHEN, checksums={"CRC32": "y/Q5Jg=="}, checksum_type="FULL_OBJECT")
    out = respond(body).client.copy_object(Bucket="b", Key="k", CopySource="src/key")
    assert out["CopyObjectResult"] == {"ETag": '"abc"', "LastModified": WHEN.replace(microsecond=123000),
                                       "ChecksumCRC32": "y/Q5Jg==", "ChecksumType": "FULL_OBJECT"}
    body = copy_part_result('"def"', WHEN, checksums={"sha256": "x" * 44})
    out = respond(body).client.upload_part_copy(Bucket="b", Key="k", CopySource="s/k", PartNumber=1,
                                                UploadId="u")
    assert out["CopyPartResult"]["ETag"] == '"def"'
    assert out["CopyPartResult"]["ChecksumSHA256"] == "x" * 44


@pytest.mark.parametrize("quiet", [False, True])
def test_delete_result(quiet):
    body = delete_result([DeletedEntry("a b"), DeletedEntry("v", version_id="1", delete_marker=True,
                                                            delete_marker_version_id="2")],
                         [DeleteErrorEntry("bad<key>", "AccessDenied", "Access Denied")], quiet=quiet)
    out = respond(body).client.delete_objects(Bucket="b", Delete={"Objects": [{"Key": "a b"}]})
    if quiet:
        assert "Deleted" not in out
    else:
        assert out["Deleted"] == [{"Key": "a b"}, {"Key": "v", "VersionId": "1", "DeleteMarker": True,
                                                   "DeleteMarkerVersionId": "2"}]
    assert out["Errors"] == [{"Key": "bad<key>", "Code": "AccessDenied", "Message": "Access Denied"}]


def test_multipart_results():
    out = respond(initiate_multipart_upload_result("b", "ü k", "upload-1")).client.create_multipart_upload(
        Bucket="b", Key="ü k")
    assert (out["Bucket"], out["Key"], out["UploadId"]) == ("b", "ü k", "upload-1")
    body = complete_multipart_upload_result("http://h/b/k", "b", "k", "abc-2",
                                            checksums={"CRC32C": "4waSgw=="}, checksum_type="COMPOSITE")
    out = respond(body).client.complete_multipart_upload(
        Bucket="b", Key="k", UploadId="u", MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": "x"}]})
    assert out["ETag"] == '"abc-2"' and out["Location"] == "http://h/b/k"
    assert out["ChecksumCRC32C"] == "4waSgw==" and out["ChecksumType"] == "COMPOSITE"


def test_list_parts_result():
    parts = [PartEntry(n, n * 10, f"e{n}", WHEN + timedelta(seconds=n), {"CRC32": "y/Q5Jg=="})
             for n in (1, 2, 3)]
    body = list_parts_result("b", "k", "u", parts, part_number_marker=0, next_part_number_marker=3,
                             max_parts=3, is_truncated=True, initiator=OWNER, owner=OWNER,
                             checksum_algorithm="CRC32", checksum_type="COMPOSITE")
    out = respond(body).client.list_parts(Bucket="b", Key="k", UploadId="u")
    assert [p["PartNumber"] for p in out["Parts"]] == [1, 2, 3]
    assert out["Parts"][1] == {"PartNumber": 2, "Size": 20, "ETag": '"e2"', "ChecksumCRC32": "y/Q5Jg==",
                               "LastModified": (WHEN + timedelta(seconds=2)).replace(microsecond=123000)}
    assert out["NextPartNumberMarker"] == 3 and out["IsTruncated"] is True and out["MaxParts"] == 3
    assert out["Initiator"]["ID"] == OWNER.id and out["StorageClass"] == "STANDARD"
    assert out["ChecksumAlgorithm"] == "CRC32" and out["ChecksumType"] == "COMPOSITE"


@pytest.mark.parametrize("encoding_type", [None, "url"])
def test_list_multipart_uploads_result(encoding_type):
    uploads = [UploadEntry("a b", "u1", WHEN, owner=OWNER, initiator=OWNER, checksum_algorithm="CRC32"),
               UploadEntry("plain", "u2", 0)]
    body = list_multipart_uploads_result("b", uploads, ["dir/"], key_marker="", next_key_marker="plain",
                                         next_upload_id_marker="u2", max_uploads=2, is_truncated=True,
                                         delimiter="/", encoding_type=encoding_type)
    out = respond(body).client.list_multipart_uploads(Bucket="b")
    keys = [u["Key"] for u in out["Uploads"]]
    assert keys == (["a%20b", "plain"] if encoding_type else ["a b", "plain"])  # botocore won't decode
    assert out["Uploads"][0]["UploadId"] == "u1" and out["Uploads"][0]["Owner"]["ID"] == OWNER.id
    assert out["NextKeyMarker"] == "plain" and out["NextUploadIdMarker"] == "u2"
    assert out["CommonPrefixes"] == [{"Prefix": "dir/"}] and out["MaxUploads"] == 2


def test_documents_have_declaration_and_namespace():
    body = initiate_multipart_upload_result("b", "k", "u")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult '
                           b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">')
    assert b"<ETag>&quot;abc&quot;</ETag>" in copy_object_result("abc", WHEN)


@pytest.mark.parametrize("moment,expected", [
    (WHEN, "2024-03-01T12:30:45.123Z"),
    (datetime(2024, 3, 1, 12, 0), "2024-03-01T12:00:00.000Z"),
    (datetime(2024, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))), "2024-03-01T12:00:00.000Z"),
    (1.5, "1970-01-01T00:00:01.500Z"),
])
def test_format_timestamp(moment, expected):
    assert format_timestamp(moment) == expected


# --- parsers on botocore's request bodies -------------------------------------------------

def captured_body(call, **params) -> bytes:
    s3 = stubbed_s3()
    getattr(s3.client, call)(**params)
    return s3.requests[0].body


def test_parse_create_bucket_from_botocore():
    body = captured_body("create_bucket", Bucket="b",
                         CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert parse_create_bucket(body) == "eu-west-1"
    assert parse_create_bucket(captured_body("create_bucket", Bucket="b")) is None
    assert parse_create_bucket(b"  \n") is None
    assert parse_create_bucket(b"<CreateBucketConfiguration/>") is None


@pytest.mark.parametrize("quiet", [True, False])
def test_parse_delete_from_botocore(quiet):
    objects = [{"Key": key} for key in KEYS] + [{"Key": "v", "VersionId": "3", "ETag": '"e"'}]
    body = captured_body("delete_objects", Bucket="b", Delete={"Objects": objects, "Quiet": quiet})
    request = parse_delete(body)
    assert request.quiet is quiet
    assert [o.key for o in request.objects] == KEYS + ["v"]
    assert (request.objects[-1].version_id, request.objects[-1].etag) == ("3", "e")


def test_parse_complete_multipart_upload_from_botocore():
    parts = [{"PartNumber": 1, "ETag": '"aaa"', "ChecksumCRC32": "y/Q5Jg=="},
             {"PartNumber": 2, "ETag": "bbb", "ChecksumSHA256": "x" * 44},
             {"PartNumber": 10000, "ETag": '"ccc"'}]
    body = captured_body("complete_multipart_upload", Bucket="b", Key="k", UploadId="u",
                         MultipartUpload={"Parts": parts})
    parsed = parse_complete_multipart_upload(body)
    assert [(p.part_number, p.etag) for p in parsed] == [(1, "aaa"), (2, "bbb"), (10000, "ccc")]
    assert parsed[0].checksums == {"CRC32": "y/Q5Jg=="} and parsed[1].checksums == {"SHA256": "x" * 44}


def test_parsers_accept_bodies_without_namespace():
    assert parse_delete(b"<Delete><Object><Key>k</Key></Object></Delete>").objects[0].key == "k"
    parts = parse_complete_multipart_upload(
        b"<CompleteMultipartUpload><Part><PartNumber> 1 </PartNumber><ETag>&quot;x&quot;</ETag></Part>"
        b"</CompleteMultipartUpload>")
    assert parts[0].part_number == 1 and parts[0].etag == "x"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Delete><Object><Key>&lol3;</Key></Object></Delete>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Delete><Object><Key>&x;</Key></Object></Delete>"""
DTD_ONLY = b"""<?xml version="1.0"?><!DOCTYPE Delete SYSTEM "http://example.com/x.dtd">
<Delete><Object><Key>k</Key></Object></Delete>"""


@pytest.mark.parametrize("body", [
    BILLION_LAUGHS, EXTERNAL, DTD_ONLY, b"<Delete>", b"not xml", b"\xff\xfe<", b"<Other/>",
    b"<Delete/>", b"<Delete><Object/></Delete>", b"", b"<Delete><Quiet>maybe</Quiet>"
    b"<Object><Key>k</Key></Object></Delete>",
    b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>",
    b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>",
])
def test_bad_delete_bodies_are_malformed_xml(body):
    with pytest.raises(errors.MalformedXML):
        parse_delete(body)


def test_a_thousand_objects_are_fine():
    body = b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1000 + b"</Delete>"
    assert len(parse_delete(body).objects) == 1000


@pytest.mark.parametrize("body,error", [
    (b"", errors.MalformedXML),
    (b"<CompleteMultipartUpload/>", errors.MalformedXML),
    (b"<CompleteMultipartUpload><Part><ETag>x</ETag></Part></CompleteMultipartUpload>", errors.MalformedXML),
    (b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
     errors.MalformedXML),
    (b"<CompleteMultipartUpload><Part><PartNumber>one</PartNumber><ETag>x</ETag></Part>"
     b"</CompleteMultipartUpload>", errors.MalformedXML),
    (b"<CompleteMultipartUpload><Part><PartNumber>0</PartNumber><ETag>x</ETag></Part>"
     b"</CompleteMultipartUpload>", errors.InvalidArgument),
    (b"<CompleteMultipartUpload><Part><PartNumber>10001</PartNumber><ETag>x</ETag></Part>"
     b"</CompleteMultipartUpload>", errors.InvalidArgument),
    (b"<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>x</ETag></Part>"
     b"<Part><PartNumber>1</PartNumber><ETag>y</ETag></Part></CompleteMultipartUpload>",
     errors.InvalidPartOrder),
    (b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part>"
     b"<Part><PartNumber>1</PartNumber><ETag>y</ETag></Part></CompleteMultipartUpload>",
     errors.InvalidPartOrder),
    (BILLION_LAUGHS.replace(b"Delete", b"CompleteMultipartUpload"), errors.MalformedXML),
    (b"<Delete/>", errors.MalformedXML),
])
def test_bad_complete_multipart_upload_bodies(body, error):
    with pytest.raises(error):
        parse_complete_multipart_upload(body)


@pytest.mark.parametrize("body", [b"<CreateBucketConfiguration>", BILLION_LAUGHS, b"<Delete/>",
                                  b"<CreateBucketConfiguration><LocationConstraint>a</LocationConstraint>"
                                  b"<LocationConstraint>b</LocationConstraint></CreateBucketConfiguration>"])
def test_bad_create_bucket_bodies(body):
    with pytest.raises(errors.MalformedXML):
        parse_create_bucket(body)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_parsers_never_crash(body):
    for parse in (parse_delete, parse_complete_multipart_upload, parse_create_bucket):
        with contextlib.suppress(errors.S3Error):
            parse(body)
