"""S3's XML documents: response builders and safe request-body parsers.

Builders take the plain dataclasses below (not storage-engine types) and return
the UTF-8 document with S3's declaration and namespace, byte-compatible enough for
the SDK parsers (the tests parse every document with botocore). Parsers accept the
request bodies of CreateBucket, DeleteObjects and CompleteMultipartUpload; any
malformed document, unexpected root, DTD or entity declaration is MalformedXML.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as _safe_fromstring

from gateway.errors import InvalidArgument, InvalidPartOrder, MalformedXML, xml_text

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_DELETE_OBJECTS = 1000
MAX_PARTS = 10000
# Largest request body the parsers take: 10000 parts with checksums fit in ~2.5 MB.
# Handlers should refuse bigger Content-Length before reading the body.
MAX_BODY_SIZE = 4 * 1024 * 1024
_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
_CHECKSUM_ELEMENTS = {"CRC32": "ChecksumCRC32", "CRC32C": "ChecksumCRC32C",
                      "CRC64NVME": "ChecksumCRC64NVME", "SHA1": "ChecksumSHA1",
                      "SHA256": "ChecksumSHA256"}


@dataclass(slots=True)
class Owner:
    id: str
    display_name: str | None = None


@dataclass(slots=True)
class BucketEntry:
    name: str
    creation_date: datetime | float
    region: str | None = None


@dataclass(slots=True)
class ObjectEntry:
    key: str
    size: int
    etag: str
    last_modified: datetime | float
    storage_class: str = "STANDARD"
    owner: Owner | None = None
    checksum_algorithm: str | None = None
    checksum_type: str | None = None


@dataclass(slots=True)
class PartEntry:
    part_number: int
    size: int
    etag: str
    last_modified: datetime | float
    checksums: Mapping[str, str] = field(default_factory=dict)  # algorithm -> base64


@dataclass(slots=True)
class UploadEntry:
    key: str
    upload_id: str
    initiated: datetime | float
    storage_class: str = "STANDARD"
    owner: Owner | None = None
    initiator: Owner | None = None
    checksum_algorithm: str | None = None
    checksum_type: str | None = None


@dataclass(slots=True)
class DeletedEntry:
    key: str
    version_id: str | None = None
    delete_marker: bool = False
    delete_marker_version_id: str | None = None


@dataclass(slots=True)
class DeleteErrorEntry:
    key: str
    code: str
    message: str
    version_id: str | None = None


# --- rendering helpers --------------------------------------------------------

def format_timestamp(moment: datetime | float) -> str:
    """S3's timestamp form: ``2009-10-12T17:50:30.000Z`` (naive datetimes are UTC)."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    elif moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def quote_etag(etag: str) -> str:
    """ETags travel quoted in XML and headers; accept them with or without quotes."""
    return etag if etag.startswith('"') or etag.startswith('W/"') else f'"{etag}"'


def url_encode(value: str) -> str:
    """``encoding-type=url`` form: all but unreserved and ``/`` percent-encoded (space → %20)."""
    return quote(value, safe="/")


def _el(name: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{name}>{xml_text(value)}</{name}>"


def _etag(etag: str) -> str:
    # S3 writes the quotes as entities; both forms parse the same.
    return "<ETag>" + xml_text(quote_etag(etag)).replace('"', "&quot;") + "</ETag>"


def _owner(tag: str, owner: Owner | None) -> str:
    if owner is None:
        return ""
    return f"<{tag}>{_el('ID', owner.id)}{_el('DisplayName', owner.display_name)}</{tag}>"


def _checksums(checksums: Mapping[str, str] | None) -> str:
    if not checksums:
        return ""
    return "".join(_el(_CHECKSUM_ELEMENTS[alg.upper()], value) for alg, value in checksums.items())


def _document(root: str, body: Iterable[str]) -> bytes:
    return (f'{_DECLARATION}<{root} xmlns="{S3_NAMESPACE}">{"".join(body)}</{root}>'
            .encode())


def _prefixes(prefixes: Iterable[str], encode) -> str:
    return "".join(f"<CommonPrefixes>{_el('Prefix', encode(p))}</CommonPrefixes>" for p in prefixes)


def _encoder(encoding_type: str | None):
    return url_encode if encoding_type == "url" else (lambda value: value)


def _maybe(encode, value: str | None) -> str | None:
    return None if value is None else encode(value)


def _contents(entries: Iterable[ObjectEntry], encode, with_owner: bool) -> str:
    out = []
    for e in entries:
        out.append("<Contents>" + _el("Key", encode(e.key))
                   + _el("LastModified", format_timestamp(e.last_modified)) + _etag(e.etag)
                   + _el("ChecksumAlgorithm", e.checksum_algorithm)
                   + _el("ChecksumType", e.checksum_type) + _el("Size", e.size)
                   + (_owner("Owner", e.owner) if with_owner else "")
                   + _el("StorageClass", e.storage_class) + "</Contents>")
    return "".join(out)


# --- builders -----------------------------------------------------------------

def list_buckets(owner: Owner, buckets: Iterable[BucketEntry], *, prefix: str | None = None,
                 continuation_token: str | None = None) -> bytes:
    """ListAllMyBucketsResult (ListBuckets)."""
    items = "".join("<Bucket>" + _el("Name", b.name)
                    + _el("CreationDate", format_timestamp(b.creation_date))
                    + _el("BucketRegion", b.region) + "</Bucket>" for b in buckets)
    return _document("ListAllMyBucketsResult", (
        _owner("Owner", owner), "<Buckets>", items, "</Buckets>",
        _el("ContinuationToken", continuation_token), _el("Prefix", prefix)))


def list_objects_v1(bucket: str, entries: Sequence[ObjectEntry], common_prefixes: Sequence[str],
                    *, prefix: str = "", marker: str = "", max_keys: int = 1000,
                    delimiter: str | None = None, is_truncated: bool = False,
                    next_marker: str | None = None, encoding_type: str | None = None) -> bytes:
    """ListBucketResult of ListObjects (v1); owners are shown, as v1 always does."""
    enc = _encoder(encoding_type)
    return _document("ListBucketResult", (
        _el("Name", bucket), _el("Prefix", enc(prefix)), _el("Marker", enc(marker)),
        _el("MaxKeys", max_keys), _el("Delimiter", _maybe(enc, delimiter)),
        _el("IsTruncated", is_truncated), _el("NextMarker", _maybe(enc, next_marker)),
        _el("EncodingType", encoding_type), _contents(entries, enc, True),
        _prefixes(common_prefixes, enc)))


def list_objects_v2(bucket: str, entries: Sequence[ObjectEntry], common_prefixes: Sequence[str],
                    *, prefix: str = "", max_keys: int = 1000, delimiter: str | None = None,
                    is_truncated: bool = False, continuation_token: str | None = None,
                    next_continuation_token: str | None = None, start_after: str | None = None,
                    encoding_type: str | None = None, fetch_owner: bool = False) -> bytes:
    """ListBucketResult of ListObjectsV2; KeyCount counts keys plus common prefixes."""
    enc = _encoder(encoding_type)
    return _document("ListBucketResult", (
        _el("Name", bucket), _el("Prefix", enc(prefix)), _el("Delimiter", _maybe(enc, delimiter)),
        _el("MaxKeys", max_keys), _el("EncodingType", encoding_type),
        _el("KeyCount", len(entries) + len(common_prefixes)), _el("IsTruncated", is_truncated),
        _el("ContinuationToken", continuation_token),
        _el("NextContinuationToken", next_continuation_token),
        _el("StartAfter", _maybe(enc, start_after)), _contents(entries, enc, fetch_owner),
        _prefixes(common_prefixes, enc)))


def location_constraint(region: str | None) -> bytes:
    """GetBucketLocation result; us-east-1 is written as an empty element, like S3."""
    value = "" if region in (None, "", "us-east-1") else xml_text(region)
    return (f'{_DECLARATION}<LocationConstraint xmlns="{S3_NAMESPACE}">{value}'
            "</LocationConstraint>").encode()


def copy_object_result(etag: str, last_modified: datetime | float, *,
                       checksums: Mapping[str, str] | None = None,
                       checksum_type: str | None = None) -> bytes:
    """CopyObjectResult."""
    return _document("CopyObjectResult", (
        _el("LastModified", format_timestamp(last_modified)), _etag(etag),
        _el("ChecksumType", checksum_type), _checksums(checksums)))


def copy_part_result(etag: str, last_modified: datetime | float, *,
                     checksums: Mapping[str, str] | None = None) -> bytes:
    """CopyPartResult (UploadPartCopy)."""
    return _document("CopyPartResult", (
        _el("LastModified", format_timestamp(last_modified)), _etag(etag), _checksums(checksums)))


def delete_result(deleted: Iterable[DeletedEntry], errors: Iterable[DeleteErrorEntry], *,
                  quiet: bool = False) -> bytes:
    """DeleteResult of DeleteObjects; quiet mode lists only the errors."""
    body = []
    if not quiet:
        for d in deleted:
            body.append("<Deleted>" + _el("Key", d.key) + _el("VersionId", d.version_id)
                        + (_el("DeleteMarker", True) if d.delete_marker else "")
                        + _el("DeleteMarkerVersionId", d.delete_marker_version_id) + "</Deleted>")
    for e in errors:
        body.append("<Error>" + _el("Key", e.key) + _el("VersionId", e.version_id)
                    + _el("Code", e.code) + _el("Message", e.message) + "</Error>")
    return _document("DeleteResult", body)


def initiate_multipart_upload_result(bucket: str, key: str, upload_id: str) -> bytes:
    """InitiateMultipartUploadResult (CreateMultipartUpload)."""
    return _document("InitiateMultipartUploadResult", (
        _el("Bucket", bucket), _el("Key", key), _el("UploadId", upload_id)))


def complete_multipart_upload_result(location: str, bucket: str, key: str, etag: str, *,
                                     checksums: Mapping[str, str] | None = None,
                                     checksum_type: str | None = None) -> bytes:
    """CompleteMultipartUploadResult."""
    return _document("CompleteMultipartUploadResult", (
        _el("Location", location), _el("Bucket", bucket), _el("Key", key), _etag(etag),
        _checksums(checksums), _el("ChecksumType", checksum_type)))


def list_parts_result(bucket: str, key: str, upload_id: str, parts: Iterable[PartEntry], *,
                      part_number_marker: int = 0, next_part_number_marker: int | None = None,
                      max_parts: int = 1000, is_truncated: bool = False,
                      initiator: Owner | None = None, owner: Owner | None = None,
                      storage_class: str = "STANDARD", checksum_algorithm: str | None = None,
                      checksum_type: str | None = None) -> bytes:
    """ListPartsResult."""
    items = "".join("<Part>" + _el("PartNumber", p.part_number)
                    + _el("LastModified", format_timestamp(p.last_modified)) + _etag(p.etag)
                    + _el("Size", p.size) + _checksums(p.checksums) + "</Part>" for p in parts)
    return _document("ListPartsResult", (
        _el("Bucket", bucket), _el("Key", key), _el("UploadId", upload_id),
        _el("PartNumberMarker", part_number_marker),
        _el("NextPartNumberMarker", next_part_number_marker), _el("MaxParts", max_parts),
        _el("IsTruncated", is_truncated), items, _owner("Initiator", initiator),
        _owner("Owner", owner), _el("StorageClass", storage_class),
        _el("ChecksumAlgorithm", checksum_algorithm), _el("ChecksumType", checksum_type)))


def list_multipart_uploads_result(bucket: str, uploads: Iterable[UploadEntry],
                                  common_prefixes: Sequence[str] = (), *, key_marker: str = "",
                                  upload_id_marker: str = "", next_key_marker: str | None = None,
                                  next_upload_id_marker: str | None = None,
                                  max_uploads: int = 1000, is_truncated: bool = False,
                                  prefix: str = "", delimiter: str | None = None,
                                  encoding_type: str | None = None) -> bytes:
    """ListMultipartUploadsResult."""
    enc = _encoder(encoding_type)
    items = "".join("<Upload>" + _el("Key", enc(u.key)) + _el("UploadId", u.upload_id)
                    + _owner("Initiator", u.initiator) + _owner("Owner", u.owner)
                    + _el("StorageClass", u.storage_class)
                    + _el("Initiated", format_timestamp(u.initiated))
                    + _el("ChecksumAlgorithm", u.checksum_algorithm)
                    + _el("ChecksumType", u.checksum_type) + "</Upload>" for u in uploads)
    return _document("ListMultipartUploadsResult", (
        _el("Bucket", bucket), _el("KeyMarker", enc(key_marker)),
        _el("UploadIdMarker", upload_id_marker),
        _el("NextKeyMarker", _maybe(enc, next_key_marker)),
        _el("NextUploadIdMarker", next_upload_id_marker), _el("Prefix", enc(prefix)),
        _el("Delimiter", _maybe(enc, delimiter)), _el("MaxUploads", max_uploads),
        _el("EncodingType", encoding_type), _el("IsTruncated", is_truncated), items,
        _prefixes(common_prefixes, enc)))


# --- parsers ------------------------------------------------------------------

@dataclass(slots=True)
class DeleteObject:
    key: str
    version_id: str | None = None
    etag: str | None = None


@dataclass(slots=True)
class DeleteRequest:
    objects: list[DeleteObject]
    quiet: bool = False


@dataclass(slots=True)
class CompletedPart:
    part_number: int
    etag: str  # without quotes
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> base64


def _parse(body: bytes, root: str) -> ET.Element | None:
    """Parse safely; None for an empty body. Wrong root or any XML trouble → MalformedXML."""
    if not body.strip():
        return None
    if len(body) > MAX_BODY_SIZE:
        raise MalformedXML()
    try:
        element = _safe_fromstring(body, forbid_dtd=True, forbid_entities=True,
                                   forbid_external=True)
    except (ET.ParseError, DefusedXmlException, ValueError):
        raise MalformedXML() from None
    if _local(element.tag) != root:
        raise MalformedXML()
    return element


def _local(tag: str) -> str:
    # Namespaced or not: SDKs send the S3 namespace, hand-written bodies often none.
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: ET.Element, name: str, *, required: bool = False) -> str | None:
    found = _children(element, name)
    if not found:
        if required:
            raise MalformedXML()
        return None
    if len(found) > 1 or len(found[0]):  # repeated, or not a leaf
        raise MalformedXML()
    return found[0].text or ""


def parse_create_bucket(body: bytes) -> str | None:
    """The LocationConstraint of a CreateBucketConfiguration body (None if empty/absent)."""
    root = _parse(body, "CreateBucketConfiguration")
    if root is None:
        return None
    value = _text(root, "LocationConstraint")
    if value is None:
        return None
    return value.strip() or None


def parse_delete(body: bytes) -> DeleteRequest:
    """A DeleteObjects body: 1 to 1000 objects, each with a Key."""
    root = _parse(body, "Delete")
    if root is None:
        raise MalformedXML()
    quiet_text = _text(root, "Quiet")
    quiet = False
    if quiet_text is not None:
        if quiet_text.strip().lower() not in ("true", "false"):
            raise MalformedXML()
        quiet = quiet_text.strip().lower() == "true"
    objects = []
    for element in _children(root, "Object"):
        etag = _text(element, "ETag")
        objects.append(DeleteObject(_text(element, "Key", required=True),
                                    _text(element, "VersionId"),
                                    etag.strip().strip('"') if etag is not None else None))
    if not objects or len(objects) > MAX_DELETE_OBJECTS:
        raise MalformedXML()
    return DeleteRequest(objects, quiet)


def parse_complete_multipart_upload(body: bytes) -> list[CompletedPart]:
    """A CompleteMultipartUpload body: parts in strictly ascending PartNumber order."""
    root = _parse(body, "CompleteMultipartUpload")
    if root is None:
        raise MalformedXML()
    parts: list[CompletedPart] = []
    for element in _children(root, "Part"):
        number_text = _text(element, "PartNumber", required=True).strip()
        if not number_text.isascii() or not number_text.isdigit():
            raise MalformedXML()
        number = int(number_text)
        if not 1 <= number <= MAX_PARTS:
            raise InvalidArgument("Part number must be an integer between 1 and 10000, inclusive",
                                  ArgumentName="partNumber", ArgumentValue=number_text)
        if parts and number <= parts[-1].part_number:
            raise InvalidPartOrder()
        etag = _text(element, "ETag", required=True).strip().strip('"')
        checksums = {}
        for algorithm, tag in _CHECKSUM_ELEMENTS.items():
            value = _text(element, tag)
            if value is not None:
                checksums[algorithm] = value.strip()
        parts.append(CompletedPart(number, etag, checksums))
        if len(parts) > MAX_PARTS:
            raise MalformedXML()
    if not parts:
        raise MalformedXML()
    return parts


def policy_status(public: bool) -> bytes:
    """GetBucketPolicyStatus."""
    return _document("PolicyStatus", (_el("IsPublic", "true" if public else "false"),))


def versioning_configuration(status: str = "") -> bytes:
    """GetBucketVersioning: empty for a bucket that never had versioning enabled."""
    return _document("VersioningConfiguration", (_el("Status", status or None),))


def parse_versioning(body: bytes) -> str | None:
    """The Status of a PutBucketVersioning body (None when absent: no change)."""
    root = _parse(body, "VersioningConfiguration")
    if root is None:
        raise MalformedXML()
    status = _text(root, "Status")
    if status is not None and status not in ("Enabled", "Suspended"):
        raise MalformedXML()
    mfa = _text(root, "MfaDelete")
    if mfa is not None and mfa not in ("Enabled", "Disabled"):
        raise MalformedXML()
    if mfa == "Enabled":
        raise InvalidArgument("MFA delete is not supported.", ArgumentName="MfaDelete")
    return status


@dataclass(slots=True)
class VersionEntry:
    entry: ObjectEntry
    version_id: str
    is_latest: bool
    delete_marker: bool


def list_versions(bucket: str, versions: Sequence[VersionEntry], common_prefixes: Sequence[str],
                  *, prefix: str, key_marker: str, version_id_marker: str, max_keys: int,
                  delimiter: str | None, is_truncated: bool, next_key_marker: str | None,
                  next_version_id_marker: str | None, encoding_type: str | None,
                  owner: Owner) -> bytes:
    """ListVersionsResult (ListObjectVersions): versions and delete markers in order."""
    enc = _encoder(encoding_type)
    items = []
    for v in versions:
        e = v.entry
        head = (_el("Key", enc(e.key)) + _el("VersionId", v.version_id)
                + _el("IsLatest", v.is_latest)
                + _el("LastModified", format_timestamp(e.last_modified)))
        if v.delete_marker:
            items.append("<DeleteMarker>" + head + _owner("Owner", owner) + "</DeleteMarker>")
        else:
            items.append("<Version>" + head + _etag(e.etag)
                         + _el("ChecksumAlgorithm", e.checksum_algorithm)
                         + _el("ChecksumType", e.checksum_type) + _el("Size", e.size)
                         + _el("StorageClass", e.storage_class) + _owner("Owner", owner)
                         + "</Version>")
    return _document("ListVersionsResult", (
        _el("Name", bucket), _el("Prefix", enc(prefix)), _el("KeyMarker", enc(key_marker)),
        _el("VersionIdMarker", version_id_marker),
        _el("NextKeyMarker", _maybe(enc, next_key_marker)),
        _el("NextVersionIdMarker", next_version_id_marker), _el("MaxKeys", max_keys),
        _el("Delimiter", _maybe(enc, delimiter)), _el("IsTruncated", is_truncated),
        _el("EncodingType", encoding_type), "".join(items), _prefixes(common_prefixes, enc)))


def access_control_policy(owner: Owner) -> bytes:
    """GetBucketAcl / GetObjectAcl: the owner has full control, nobody else anything."""
    grantee = ('<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
               'xsi:type="CanonicalUser">' + _el("ID", owner.id)
               + _el("DisplayName", owner.display_name) + "</Grantee>")
    return _document("AccessControlPolicy", (
        _owner("Owner", owner), "<AccessControlList><Grant>", grantee,
        _el("Permission", "FULL_CONTROL"), "</Grant></AccessControlList>"))
