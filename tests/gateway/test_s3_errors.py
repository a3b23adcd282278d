"""S3 error codes: statuses, default messages and the XML document, which botocore must
parse into the same code and message."""

from __future__ import annotations

import inspect
import xml.etree.ElementTree as ET

import pytest
from botocore.exceptions import ClientError
from s3_testkit import stubbed_s3

from gateway import errors

EXPECTED = {
    "AccessDenied": 403, "SignatureDoesNotMatch": 403, "InvalidAccessKeyId": 403,
    "RequestTimeTooSkewed": 403, "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400, "XAmzContentSHA256Mismatch": 400, "BadDigest": 400,
    "InvalidDigest": 400, "IncompleteBody": 400, "InvalidRequest": 400, "InvalidArgument": 400,
    "MalformedXML": 400, "InvalidBucketName": 400, "KeyTooLongError": 400, "MetadataTooLarge": 400,
    "EntityTooSmall": 400, "EntityTooLarge": 400, "InvalidPart": 400, "InvalidPartOrder": 400,
    "MissingContentLength": 411, "NoSuchBucket": 404, "NoSuchKey": 404, "NoSuchUpload": 404,
    "BucketAlreadyExists": 409, "BucketAlreadyOwnedByYou": 409, "BucketNotEmpty": 409,
    "OperationAborted": 409, "InvalidRange": 416, "PreconditionFailed": 412, "NotModified": 304,
    "MethodNotAllowed": 405, "NotImplemented": 501, "InternalError": 500, "SlowDown": 503,
    "ServiceUnavailable": 503, "RequestHeaderSectionTooLarge": 400, "InvalidChunkSizeError": 403,
    "InvalidStorageClass": 400, "MalformedTrailerError": 400,
}

ALL = {cls.code: cls for _, cls in inspect.getmembers(errors, inspect.isclass)
       if issubclass(cls, errors.S3Error) and cls is not errors.S3Error}


@pytest.mark.parametrize("code,status", EXPECTED.items())
def test_codes_and_statuses(code, status):
    cls = ALL[code]
    assert cls.status == status
    error = cls()
    assert error.code == code and error.message and isinstance(error, Exception)


def test_every_class_has_a_message_and_a_real_status():
    for code, cls in ALL.items():
        assert cls.message and 300 <= cls.status < 600, code


def test_not_implemented_keeps_the_builtin():
    assert errors.S3NotImplemented.code == "NotImplemented"
    assert not hasattr(errors, "NotImplemented") or errors.NotImplemented is NotImplemented


def test_document_layout():
    error = errors.NoSuchKey(Key="a&b")
    document = error.to_xml("/bucket/a&b", "4442587FB7D0A2F9", host_id="host")
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error>')
    root = ET.fromstring(document)
    assert [child.tag for child in root] == ["Code", "Message", "Key", "Resource", "RequestId", "HostId"]
    assert root.findtext("Code") == "NoSuchKey"
    assert root.findtext("Message") == "The specified key does not exist."
    assert root.findtext("Resource") == "/bucket/a&b" and root.findtext("Key") == "a&b"
    assert root.findtext("RequestId") == "4442587FB7D0A2F9"


def test_custom_message_resource_and_headers():
    error = errors.InvalidRange(resource="/b/k", headers={"Content-Range": "bytes */10"},
                                ActualObjectSize=10, RangeRequested="bytes=20-")
    root = ET.fromstring(error.to_xml("/ignored", "r"))
    assert root.findtext("Resource") == "/b/k" and root.findtext("ActualObjectSize") == "10"
    assert error.headers == {"Content-Range": "bytes */10"}
    assert str(errors.InvalidArgument("bad thing")) == "InvalidArgument: bad thing"


def test_not_modified_has_no_body():
    assert errors.NotModified(headers={"ETag": '"x"'}).to_xml("/b/k", "r") == b""


def test_control_characters_survive_as_references():
    document = errors.NoSuchKey(resource="/b/a\rb\x01").to_xml("", "r")
    assert b"&#xd;" in document and b"&#x1;" in document


def test_checksum_mismatch_message():
    error = errors.checksum_mismatch("crc32")
    assert isinstance(error, errors.BadDigest)
    assert error.message == "The CRC32 you specified did not match the calculated checksum."


@pytest.mark.parametrize("cls", [errors.NoSuchKey, errors.SignatureDoesNotMatch, errors.SlowDown,
                                 errors.InvalidRange, errors.MalformedXML])
def test_botocore_parses_the_error(cls):
    error = cls(resource="/b/k", RequestTime="x")
    s3 = stubbed_s3()
    s3.responder = lambda request: (cls.status, {"x-amz-request-id": "REQ"},
                                    error.to_xml("/b/k", "REQ"))
    with pytest.raises(ClientError) as info:
        s3.client.get_object(Bucket="b", Key="k")
    parsed = info.value.response
    assert parsed["Error"]["Code"] == cls.code
    assert parsed["Error"]["Message"] == cls.message
    assert parsed["ResponseMetadata"]["HTTPStatusCode"] == cls.status
