"""GetObjectAttributes (gateway.attributes): the header botocore sends, and the document
we render read back by botocore."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from s3_testkit import raises, stubbed_s3

from gateway.attributes import parse_object_attributes, parts_paging, render_attributes

WHEN = datetime(2024, 3, 1, 12, 30, 45, tzinfo=UTC)
ALL = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]




def part(number, size, checksums=None):
    return SimpleNamespace(number=number, size=size, etag=f"e{number}", checksums=checksums or {})


def obj(etag="0cc175b9c0f1b6a831c399e269772661", size=1, checksums=None, checksum_type="",
        parts=(), headers=None):
    return SimpleNamespace(etag=etag, size=size, checksums=checksums or {}, checksum_type=checksum_type,
                           parts=tuple(parts), headers=headers or {})


def attributes(body: bytes, headers: dict | None = None, **kwargs):
    s3 = stubbed_s3()
    s3.responder = lambda request: (200, headers or {}, body)
    out = s3.client.get_object_attributes(Bucket="b", Key="k", ObjectAttributes=kwargs.pop("wanted", ALL),
                                          **kwargs)
    out.pop("ResponseMetadata")
    return out, s3.requests[0]


# --- the request header -------------------------------------------------------------------

def test_header_from_botocore():
    s3 = stubbed_s3()
    s3.responder = lambda request: (200, {}, render_attributes(obj(), ALL))
    s3.client.get_object_attributes(Bucket="b", Key="k", ObjectAttributes=ALL, MaxParts=5,
                                    PartNumberMarker=2)
    request = s3.requests[0]
    assert "attributes" in request.query
    assert parse_object_attributes([request.header("x-amz-object-attributes")]) == set(ALL)
    headers = {k.lower(): v for k, v in request.headers}
    assert parts_paging(headers) == (5, 2)


@pytest.mark.parametrize("values,expected", [
    (["ETag"], {"ETag"}), (["ETag, ObjectSize"], {"ETag", "ObjectSize"}),
    (["ETag", "Checksum,StorageClass"], {"ETag", "Checksum", "StorageClass"}),
    (["ETag,,ETag"], {"ETag"}),
])
def test_parse_attributes(values, expected):
    assert parse_object_attributes(values) == expected


@pytest.mark.parametrize("values", [[], [""], [" , "], ["etag"], ["ETag,Size"], ["InvalidAttribute"]])
def test_parse_attributes_refused(values):
    with raises("InvalidArgument", "Invalid attribute name specified.") as exc:
        parse_object_attributes(values)
    assert exc.value.extra["ArgumentName"] == "x-amz-object-attributes"


@pytest.mark.parametrize("headers,expected", [
    ({}, (1000, 0)), ({"x-amz-max-parts": "3"}, (3, 0)), ({"x-amz-max-parts": "5000"}, (1000, 0)),
    ({"x-amz-part-number-marker": "7"}, (1000, 7)), ({"x-amz-max-parts": "0"}, (0, 0)),
])
def test_parts_paging(headers, expected):
    assert parts_paging(headers) == expected


@pytest.mark.parametrize("headers", [{"x-amz-max-parts": "-1"}, {"x-amz-max-parts": "x"},
                                     {"x-amz-part-number-marker": "1.5"},
                                     {"x-amz-part-number-marker": "99999999999"}])
def test_parts_paging_refused(headers):
    with raises("InvalidArgument"):
        parts_paging(headers)


# --- the document -----------------------------------------------------------------------

def test_single_part_object():
    info = obj(checksums={"CRC64NVME": "M3eFcAZSQlc="}, checksum_type="FULL_OBJECT")
    http = {"Last-Modified": "Fri, 01 Mar 2024 12:30:45 GMT", "x-amz-version-id": "3HL4kqtJlcpXroDTDmJ"}
    out, _ = attributes(render_attributes(info, ALL), http)
    assert out == {"ETag": "0cc175b9c0f1b6a831c399e269772661",
                   "Checksum": {"ChecksumCRC64NVME": "M3eFcAZSQlc=", "ChecksumType": "FULL_OBJECT"},
                   "StorageClass": "STANDARD", "ObjectSize": 1,
                   "LastModified": WHEN, "VersionId": "3HL4kqtJlcpXroDTDmJ"}


def test_only_what_is_asked():
    info = obj(checksums={"crc32": "AAAAAA=="})
    out, _ = attributes(render_attributes(info, ["ObjectSize"]), wanted=["ObjectSize"])
    assert out == {"ObjectSize": 1}
    body = render_attributes(info, ["ETag"])
    assert b"<ETag>0cc175b9c0f1b6a831c399e269772661</ETag>" in body and b"Checksum" not in body


def test_no_checksum_no_element_and_lowercase_algorithms():
    assert b"<Checksum>" not in render_attributes(obj(), ["Checksum"])
    out, _ = attributes(render_attributes(obj(checksums={"sha256": "x" * 44}), ["Checksum"]),
                        wanted=["Checksum"])
    assert out["Checksum"] == {"ChecksumSHA256": "x" * 44, "ChecksumType": "FULL_OBJECT"}


def test_storage_class_and_quoted_etag():
    info = obj(etag='"abc"', headers={"x-amz-storage-class": "STANDARD_IA"})
    out, _ = attributes(render_attributes(info, ["ETag", "StorageClass"]), wanted=["ETag", "StorageClass"])
    assert out == {"ETag": "abc", "StorageClass": "STANDARD_IA"}


def test_object_parts_absent_for_a_single_put():
    body = render_attributes(obj(parts=[part(1, 1)]), ALL)
    assert b"ObjectParts" not in body
    out, _ = attributes(body)
    assert "ObjectParts" not in out


def test_multipart_without_checksums_answers_the_count_only():
    info = obj(etag="abc-3", size=12, parts=[part(1, 5), part(2, 5), part(3, 2)])
    out, _ = attributes(render_attributes(info, ALL))
    assert out["ObjectParts"] == {"TotalPartsCount": 3}
    assert out["ETag"] == "abc-3"
    assert b"<PartsCount>3</PartsCount>" in render_attributes(info, ["ObjectParts"])


def test_single_part_multipart_upload_counts():
    info = obj(etag="abc-1", size=5, parts=[part(1, 5)])
    out, _ = attributes(render_attributes(info, ["ObjectParts"]), wanted=["ObjectParts"])
    assert out["ObjectParts"] == {"TotalPartsCount": 1}


def crc_parts(n):
    return [part(i, 10 + i, {"CRC32": f"crc{i}=="}) for i in range(1, n + 1)]


def test_multipart_with_checksums_lists_parts():
    info = obj(etag="abc-3", size=36, checksums={"CRC32": "all=="}, checksum_type="COMPOSITE",
               parts=crc_parts(3))
    out, _ = attributes(render_attributes(info, ALL))
    assert out["Checksum"] == {"ChecksumCRC32": "all==", "ChecksumType": "COMPOSITE"}
    assert out["ObjectParts"] == {
        "TotalPartsCount": 3, "PartNumberMarker": 0, "MaxParts": 1000, "IsTruncated": False,
        "Parts": [{"PartNumber": i, "Size": 10 + i, "ChecksumCRC32": f"crc{i}=="} for i in (1, 2, 3)]}


def test_multipart_paging():
    info = obj(etag="abc-5", parts=crc_parts(5))
    first, _ = attributes(render_attributes(info, ["ObjectParts"], max_parts=2), wanted=["ObjectParts"])
    page = first["ObjectParts"]
    assert [p["PartNumber"] for p in page["Parts"]] == [1, 2]
    assert page["IsTruncated"] is True and page["NextPartNumberMarker"] == 2 and page["MaxParts"] == 2
    assert page["TotalPartsCount"] == 5
    second, _ = attributes(render_attributes(info, ["ObjectParts"], max_parts=2, part_number_marker=2),
                           wanted=["ObjectParts"])
    assert [p["PartNumber"] for p in second["ObjectParts"]["Parts"]] == [3, 4]
    assert second["ObjectParts"]["PartNumberMarker"] == 2
    last, _ = attributes(render_attributes(info, ["ObjectParts"], max_parts=2, part_number_marker=4),
                         wanted=["ObjectParts"])
    assert [p["PartNumber"] for p in last["ObjectParts"]["Parts"]] == [5]
    assert last["ObjectParts"]["IsTruncated"] is False and "NextPartNumberMarker" not in last["ObjectParts"]
    beyond, _ = attributes(render_attributes(info, ["ObjectParts"], part_number_marker=9),
                           wanted=["ObjectParts"])
    assert "Parts" not in beyond["ObjectParts"] and beyond["ObjectParts"]["TotalPartsCount"] == 5


def test_document_shape():
    body = render_attributes(obj(), ["ETag"])
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<GetObjectAttributesResponse xmlns=')
