"""S3 error codes: one exception class per code, rendered as S3's XML error document.

Every class carries the HTTP status and the default message that AWS S3 sends for
that code, so a handler only ever writes ``raise NoSuchKey()`` (or passes a more
specific message and the extra fields AWS adds, e.g. ``RequestTime``) and the
gateway's error middleware turns it into the response with :meth:`S3Error.to_xml`.
"""

from __future__ import annotations

import re
from typing import ClassVar
from xml.sax.saxutils import escape

_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

# Control characters may not appear raw in XML 1.0, so they are written as
# character references as S3 does (strict parsers still refuse most of them, which
# is why SDKs list with encoding-type=url); \r too, or parsers would turn it into \n.
_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0d\x0e-\x1f\ufffe\uffff]")


def xml_text(value: object) -> str:
    """Escape ``value`` for use as XML character data."""
    text = escape(str(value))
    if _XML_UNSAFE.search(text):
        text = _XML_UNSAFE.sub(lambda m: f"&#x{ord(m.group()):x};", text)
    return text


class S3Error(Exception):
    """Base of all S3 errors; subclasses set ``code``, ``status`` and ``message``.

    ``extra`` holds the additional child elements AWS sends for some codes
    (e.g. ``RequestTime``/``ServerTime``); ``headers`` are response headers the
    handler must add (e.g. ``ETag`` on 304). ``code`` defaults to the class name.
    """

    code: ClassVar[str] = "InternalError"
    status: ClassVar[int] = 500
    message: str = "We encountered an internal error. Please try again."
    has_body: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            cls.code = cls.__name__

    def __init__(
        self,
        message: str | None = None,
        *,
        resource: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: object,
    ) -> None:
        if message is not None:
            self.message = message
        self.resource = resource
        self.headers = dict(headers or {})
        self.extra = {k: str(v) for k, v in extra.items() if v is not None}
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_xml(self, resource: str, request_id: str, *, host_id: str | None = None) -> bytes:
        """Render the ``<Error>`` document (empty for codes that have no body, e.g. 304)."""
        if not self.has_body:
            return b""
        parts = [
            "<Error><Code>", self.code, "</Code><Message>", xml_text(self.message), "</Message>",
        ]
        for name, value in self.extra.items():
            parts += ("<", name, ">", xml_text(value), "</", name, ">")
        parts += ("<Resource>", xml_text(self.resource if self.resource is not None else resource),
                  "</Resource><RequestId>", xml_text(request_id), "</RequestId>")
        if host_id is not None:
            parts += ("<HostId>", xml_text(host_id), "</HostId>")
        parts.append("</Error>")
        return _XML_DECLARATION + "".join(parts).encode("utf-8")


# --- authentication -----------------------------------------------------------

class AccessDenied(S3Error):
    status = 403
    message = "Access Denied"


class SignatureDoesNotMatch(S3Error):
    status = 403
    message = ("The request signature we calculated does not match the signature you provided. "
               "Check your key and signing method.")


class InvalidAccessKeyId(S3Error):
    status = 403
    message = "The AWS Access Key Id you provided does not exist in our records."


class RequestTimeTooSkewed(S3Error):
    status = 403
    message = "The difference between the request time and the current time is too large."


class AuthorizationHeaderMalformed(S3Error):
    status = 400
    message = "The authorization header is malformed."


class AuthorizationQueryParametersError(S3Error):
    status = 400
    message = "Error parsing the query-string authentication parameters."


class InvalidToken(S3Error):
    status = 400
    message = "The provided token is malformed or otherwise invalid."


# --- request body and integrity -----------------------------------------------

class XAmzContentSHA256Mismatch(S3Error):
    status = 400
    message = "The provided 'x-amz-content-sha256' header does not match what was computed."


class BadDigest(S3Error):
    status = 400
    message = "The Content-MD5 you specified did not match what we received."


class InvalidDigest(S3Error):
    status = 400
    message = "The Content-MD5 you specified was invalid."


class IncompleteBody(S3Error):
    status = 400
    message = "The request body terminated unexpectedly"


class MalformedTrailerError(S3Error):
    status = 400
    message = ("The request contained trailing data that was not well-formed "
               "or did not conform to our published schema.")


class InvalidChunkSizeError(S3Error):
    status = 403
    message = "Only the last chunk is allowed to have a size less than 8192 bytes"


class MissingContentLength(S3Error):
    status = 411
    message = "You must provide the Content-Length HTTP header."


class RequestHeaderSectionTooLarge(S3Error):
    status = 400
    message = "Your request header section exceeds the maximum allowed size."


class EntityTooSmall(S3Error):
    status = 400
    message = "Your proposed upload is smaller than the minimum allowed object size."


class EntityTooLarge(S3Error):
    status = 400
    message = "Your proposed upload exceeds the maximum allowed object size."


class MetadataTooLarge(S3Error):
    status = 400
    message = "Your metadata headers exceed the maximum allowed metadata size."


class KeyTooLongError(S3Error):
    status = 400
    message = "Your key is too long"


class MalformedXML(S3Error):
    status = 400
    message = ("The XML you provided was not well-formed or did not validate "
               "against our published schema")


class InvalidRequest(S3Error):
    status = 400
    message = "Invalid Request"


class InvalidArgument(S3Error):
    status = 400
    message = "Invalid Argument"


class InvalidURI(S3Error):
    status = 400
    message = "Couldn't parse the specified URI."


class InvalidStorageClass(S3Error):
    status = 400
    message = "The storage class you specified is not valid"


class UnexpectedContent(S3Error):
    status = 400
    message = "This request does not support content"


# --- buckets and objects ------------------------------------------------------

class InvalidBucketName(S3Error):
    status = 400
    message = "The specified bucket is not valid."


class InvalidLocationConstraint(S3Error):
    status = 400
    message = "The specified location-constraint is not valid"


class NoSuchBucket(S3Error):
    status = 404
    message = "The specified bucket does not exist"


class NoSuchKey(S3Error):
    status = 404
    message = "The specified key does not exist."


class NoSuchUpload(S3Error):
    status = 404
    message = ("The specified upload does not exist. The upload ID may be invalid, "
               "or the upload may have been aborted or completed.")


class NoSuchVersion(S3Error):
    status = 404
    message = "The specified version does not exist."


class BucketAlreadyExists(S3Error):
    status = 409
    message = ("The requested bucket name is not available. The bucket namespace is shared by "
               "all users of the system. Please select a different name and try again.")


class BucketAlreadyOwnedByYou(S3Error):
    status = 409
    message = "Your previous request to create the named bucket succeeded and you already own it."


class BucketNotEmpty(S3Error):
    status = 409
    message = "The bucket you tried to delete is not empty"


class OperationAborted(S3Error):
    status = 409
    message = ("A conflicting conditional operation is currently in progress against this "
               "resource. Please try again.")


class InvalidPart(S3Error):
    status = 400
    message = ("One or more of the specified parts could not be found. The part may not have "
               "been uploaded, or the specified entity tag may not match the part's entity tag.")


class InvalidPartOrder(S3Error):
    status = 400
    message = ("The list of parts was not in ascending order. Parts must be ordered "
               "by part number.")


class InvalidRange(S3Error):
    status = 416
    message = "The requested range is not satisfiable"


class InvalidPartNumber(S3Error):
    status = 416
    message = "The requested partnumber is not satisfiable"


class PreconditionFailed(S3Error):
    status = 412
    message = "At least one of the pre-conditions you specified did not hold"


class NotModified(S3Error):
    status = 304
    message = "Not Modified"
    has_body = False


# --- versioning, object lock, lifecycle, tagging --------------------------------

class InvalidBucketState(S3Error):
    status = 409
    message = "The request is not valid with the current state of the bucket."


class BadRequest(S3Error):
    """What S3 answers an object with more than 10 tags."""

    status = 400
    message = "Bad Request"


class InvalidTag(S3Error):
    status = 400
    message = "The TagSet is not valid."


class NoSuchTagSet(S3Error):
    status = 404
    message = "The TagSet does not exist"


class NoSuchBucketPolicy(S3Error):
    status = 404
    message = "The bucket policy does not exist"


class NoSuchLifecycleConfiguration(S3Error):
    status = 404
    message = "The lifecycle configuration does not exist"


class ObjectLockConfigurationNotFoundError(S3Error):
    status = 404
    message = "Object Lock configuration does not exist for this bucket"


class NoSuchObjectLockConfiguration(S3Error):
    status = 404
    message = "The specified object does not have a ObjectLock configuration"


# --- service ------------------------------------------------------------------

class MethodNotAllowed(S3Error):
    status = 405
    message = "The specified method is not allowed against this resource."


class S3NotImplemented(S3Error):
    # Not named NotImplemented: that would shadow the Python builtin.
    code = "NotImplemented"
    status = 501
    message = "A header you provided implies functionality that is not implemented"


class InternalError(S3Error):
    status = 500
    message = "We encountered an internal error. Please try again."


class SlowDown(S3Error):
    status = 503
    message = "Please reduce your request rate."


class ServiceUnavailable(S3Error):
    status = 503
    message = "Service is unable to handle request."


def checksum_mismatch(algorithm: str) -> BadDigest:
    """The BadDigest S3 returns when an ``x-amz-checksum-*`` value does not match the body."""
    return BadDigest(f"The {algorithm.upper()} you specified did not match the calculated checksum.")
