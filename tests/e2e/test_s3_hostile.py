"""Hostile and malformed S3 requests, sent raw (http.client and sockets) to `basalt serve`.

Requests are signed with the small SigV4 signer below (so tests control every byte:
the date, the payload hash, the chunk signatures) and each refusal is checked for
S3's XML error code, its HTTP status and ``x-amz-request-id``, and for having
stored nothing: the key is still absent, or an existing object is unchanged.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import hmac
import http.client
import socket
import time
import uuid
import xml.etree.ElementTree as ET
import zlib
from urllib.parse import parse_qsl, quote

import pytest

from .conftest import ACCESS, SECRET

KIB, MIB = 1024, 1 << 20
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
REGION = "us-east-1"


# --- a small SigV4 signer -------------------------------------------------------------

def amz_now(offset: datetime.timedelta = datetime.timedelta()) -> str:
    return (datetime.datetime.now(datetime.UTC) + offset).strftime("%Y%m%dT%H%M%SZ")


def signing_key(secret: str, date: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


@dataclasses.dataclass
class Signed:
    headers: dict[str, str]
    signature: str
    key: bytes
    amz_date: str
    scope: str


def sign(host: str, method: str, path: str, query: str = "", headers: dict | None = None, *,
         payload: str = EMPTY_SHA256, amz_date: str | None = None,
         secret: str = SECRET) -> Signed:
    """SigV4 ``Authorization`` for a request; ``path`` is already percent-encoded.

    Signs Host, every ``x-amz-*`` header and any other header given."""
    amz_date = amz_date or amz_now()
    date = amz_date[:8]
    hdrs = {k.lower(): str(v) for k, v in (headers or {}).items()}
    hdrs.update({"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload})
    names = sorted(hdrs)
    canonical_query = "&".join(sorted(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in parse_qsl(query, keep_blank_values=True)))
    canonical = "\n".join([method, path, canonical_query,
                           "".join(f"{n}:{hdrs[n].strip()}\n" for n in names),
                           ";".join(names), payload])
    scope = f"{date}/{REGION}/s3/aws4_request"
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                                hashlib.sha256(canonical.encode()).hexdigest()])
    key = signing_key(secret, date)
    signature = hmac_hex(key, string_to_sign)
    hdrs["authorization"] = (f"AWS4-HMAC-SHA256 Credential={ACCESS}/{scope}, "
                             f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return Signed(hdrs, signature, key, amz_date, scope)


# --- raw HTTP ---------------------------------------------------------------------------

@dataclasses.dataclass
class Resp:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def code(self) -> str | None:
        try:
            return ET.fromstring(self.body).findtext("Code") if self.body else None
        except ET.ParseError:
            return None  # not XML (e.g. a plain-text error from the HTTP layer)


class Raw:
    """Raw requests against one server."""

    def __init__(self, server) -> None:
        self.server = server
        self.hostport = server.endpoint.split("//", 1)[1]
        self.host, port = self.hostport.rsplit(":", 1)
        self.port = int(port)

    def send(self, method: str, path: str, query: str = "", headers: dict | None = None,
             body: bytes = b"") -> Resp:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path + ("?" + query if query else ""), body=body or None,
                         headers=headers or {})
            resp = conn.getresponse()
            return Resp(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def signed(self, method: str, path: str, query: str = "", headers: dict | None = None,
               body: bytes = b"", *, payload: str | None = None, **kw) -> Resp:
        payload = payload if payload is not None else hashlib.sha256(body).hexdigest()
        s = sign(self.hostport, method, path, query, headers, payload=payload, **kw)
        return self.send(method, path, query, s.headers, body)

    def put(self, bucket: str, key: str, data: bytes, headers: dict | None = None) -> Resp:
        return self.signed("PUT", f"/{bucket}/{quote(key)}", headers=headers, body=data)

    def get(self, bucket: str, key: str, headers: dict | None = None) -> Resp:
        return self.signed("GET", f"/{bucket}/{quote(key)}", headers=headers)

    def head(self, bucket: str, key: str) -> Resp:
        return self.signed("HEAD", f"/{bucket}/{quote(key)}")

    def healthy(self) -> bool:
        return self.send("GET", "/_basalt/health").status == 200


def assert_error(resp: Resp, status: int, code: str) -> None:
    """An S3 error document with ``code``, ``status`` and a request id that agree."""
    assert (resp.status, resp.code) == (status, code), (resp.status, resp.body[:600])
    request_id = resp.headers.get("x-amz-request-id")
    assert request_id
    root = ET.fromstring(resp.body)
    assert root.tag == "Error" and root.findtext("RequestId") == request_id
    assert resp.headers.get("Content-Type", "").startswith("application/xml")


def assert_absent(raw: Raw, bucket: str, key: str) -> None:
    resp = raw.head(bucket, key)
    assert resp.status == 404 and resp.body == b"", f"{key} was stored: {resp.status}"


def assert_content(raw: Raw, bucket: str, key: str, data: bytes) -> None:
    resp = raw.get(bucket, key)
    assert resp.status == 200 and resp.body == data, (resp.status, len(resp.body))


def content_md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@pytest.fixture(scope="module")
def raw(basalt_http):
    return Raw(basalt_http)


@pytest.fixture(scope="module")
def bkt(raw):
    name = f"hostile-{uuid.uuid4().hex[:10]}"
    assert raw.signed("PUT", f"/{name}").status == 200
    return name


@pytest.fixture
def key():
    return f"k-{uuid.uuid4().hex[:12]}"


# --- authentication ---------------------------------------------------------------------

def test_valid_signed_put_and_get_work(raw, bkt, key):
    """The positive control for the signer used by every other test."""
    resp = raw.put(bkt, key, b"signed body")
    assert resp.status == 200 and resp.headers["x-amz-request-id"]
    assert resp.headers["ETag"] == f'"{hashlib.md5(b"signed body").hexdigest()}"'
    assert_content(raw, bkt, key, b"signed body")


def test_anonymous_request_is_access_denied(raw, bkt, key):
    assert_error(raw.send("PUT", f"/{bkt}/{key}", body=b"anonymous"), 403, "AccessDenied")
    assert_error(raw.send("GET", f"/{bkt}"), 403, "AccessDenied")
    assert_error(raw.send("GET", "/"), 403, "AccessDenied")
    assert_absent(raw, bkt, key)


def test_bad_signature(raw, bkt, key):
    body = b"forged"
    s = sign(raw.hostport, "PUT", f"/{bkt}/{key}", payload=hashlib.sha256(body).hexdigest(),
             secret="not-the-secret")
    assert_error(raw.send("PUT", f"/{bkt}/{key}", headers=s.headers, body=body),
                 403, "SignatureDoesNotMatch")
    # signed for one key, sent to another
    s = sign(raw.hostport, "PUT", f"/{bkt}/other", payload=hashlib.sha256(body).hexdigest())
    assert_error(raw.send("PUT", f"/{bkt}/{key}", headers=s.headers, body=body),
                 403, "SignatureDoesNotMatch")
    # an x-amz-meta header added after signing
    headers = dict(s.headers, **{"x-amz-meta-late": "1"})
    resp = raw.send("PUT", f"/{bkt}/other", headers=headers, body=body)
    assert resp.status == 403 and resp.code in ("AccessDenied", "SignatureDoesNotMatch")
    assert_absent(raw, bkt, key)
    assert_absent(raw, bkt, "other")


@pytest.mark.parametrize("minutes", [-20, 20])
def test_request_time_too_skewed(raw, bkt, key, minutes):
    resp = raw.signed("PUT", f"/{bkt}/{key}", body=b"late",
                      amz_date=amz_now(datetime.timedelta(minutes=minutes)))
    assert_error(resp, 403, "RequestTimeTooSkewed")
    assert_absent(raw, bkt, key)


@pytest.mark.parametrize("authorization", [
    "AWS4-HMAC-SHA256 Credential=garbage",
    "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature=00",
    f"AWS4-HMAC-SHA256 Credential={ACCESS}/2020/us-east-1/s3, SignedHeaders=host, "
    "Signature=" + "0" * 64,
    f"AWS4-HMAC-SHA256 Credential={ACCESS}/{{date}}/us-east-1/ec2/aws4_request, "
    "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + "0" * 64,
])
def test_malformed_authorization_header(raw, bkt, key, authorization):
    headers = {"Host": raw.hostport, "x-amz-date": amz_now(), "x-amz-content-sha256": UNSIGNED,
               "Authorization": authorization.replace("{date}", amz_now()[:8])}
    resp = raw.send("PUT", f"/{bkt}/{key}", headers=headers, body=b"x")
    assert_error(resp, 400, "AuthorizationHeaderMalformed")
    assert_absent(raw, bkt, key)


def test_unsigned_payload_is_accepted(raw, bkt, key):
    body = b"unsigned payload " * 100
    resp = raw.signed("PUT", f"/{bkt}/{key}", body=body, payload=UNSIGNED)
    assert resp.status == 200, resp.body
    assert_content(raw, bkt, key, body)


def test_content_sha256_mismatch_stores_nothing(raw, bkt, key):
    body = b"the body actually sent"
    lie = hashlib.sha256(b"the body that was signed").hexdigest()
    resp = raw.signed("PUT", f"/{bkt}/{key}", body=body, payload=lie)
    assert_error(resp, 400, "XAmzContentSHA256Mismatch")
    assert_absent(raw, bkt, key)
    # over an existing object: the old content stays
    assert raw.put(bkt, key, b"old").status == 200
    big = bytes(range(256)) * 4096  # 1 MiB, several engine blocks
    resp = raw.signed("PUT", f"/{bkt}/{key}", body=big,
                      payload=hashlib.sha256(big[:-1] + b"\0").hexdigest())
    assert_error(resp, 400, "XAmzContentSHA256Mismatch")
    assert_content(raw, bkt, key, b"old")


# --- malformed XML bodies ---------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Delete><Object><Key>&lol9;</Key></Object><Object><Key>keep</Key></Object></Delete>"""


def delete_body(keys) -> bytes:
    return ("<Delete>" + "".join(f"<Object><Key>{k}</Key></Object>" for k in keys)
            + "</Delete>").encode()


@pytest.mark.parametrize("body", [
    b"this is not XML <<<",
    b"<Delete><Object><Key>keep</Key></Object>",                       # unterminated
    b"<Remove><Object><Key>keep</Key></Object></Remove>",              # wrong root
    b"<Delete><Object><Key>keep</Key></Object><Quiet>maybe</Quiet></Delete>",
    b"<Delete></Delete>",                                              # no objects
    b"<Delete><Object><VersionId>1</VersionId></Object></Delete>",     # no key
    delete_body(["keep"] + [f"k{i}" for i in range(1000)]),           # 1001 keys
    BILLION_LAUGHS,
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<Delete><Object><Key>&x;</Key></Object></Delete>",               # external entity
], ids=["garbage", "unterminated", "wrong-root", "bad-quiet", "empty", "no-key", "1001-keys",
        "billion-laughs", "external-entity"])
def test_delete_objects_malformed_xml(raw, bkt, body):
    assert raw.put(bkt, "keep", b"still here").status == 200
    started = time.monotonic()
    resp = raw.signed("POST", f"/{bkt}", "delete", {"Content-MD5": content_md5(body)}, body)
    assert_error(resp, 400, "MalformedXML")
    assert time.monotonic() - started < 10
    assert raw.healthy()
    assert_content(raw, bkt, "keep", b"still here")


def test_delete_objects_thousand_keys_is_the_limit(raw, bkt):
    assert raw.put(bkt, "k999", b"x").status == 200
    body = delete_body([f"k{i}" for i in range(1000)])
    resp = raw.signed("POST", f"/{bkt}", "delete", {"Content-MD5": content_md5(body)}, body)
    assert resp.status == 200, resp.body[:300]
    assert len(ET.fromstring(resp.body).findall("{*}Deleted")) == 1000
    assert_absent(raw, bkt, "k999")


@pytest.mark.parametrize("body", [
    b"<CreateBucketConfiguration><LocationConstraint>eu-west-1",
    b"garbage garbage",
    b"<NotAConfiguration><LocationConstraint>eu-west-1</LocationConstraint></NotAConfiguration>",
    b"<CreateBucketConfiguration><LocationConstraint>a</LocationConstraint>"
    b"<LocationConstraint>b</LocationConstraint></CreateBucketConfiguration>",
    BILLION_LAUGHS.replace(b"<Delete><Object><Key>&lol9;</Key></Object><Object><Key>keep</Key>"
                           b"</Object></Delete>",
                           b"<CreateBucketConfiguration><LocationConstraint>&lol9;"
                           b"</LocationConstraint></CreateBucketConfiguration>"),
], ids=["unterminated", "garbage", "wrong-root", "repeated", "billion-laughs"])
def test_create_bucket_malformed_configuration(raw, body):
    name = f"never-{uuid.uuid4().hex[:10]}"
    assert_error(raw.signed("PUT", f"/{name}", body=body), 400, "MalformedXML")
    assert raw.healthy()
    assert raw.signed("HEAD", f"/{name}").status == 404


# --- truncated bodies ---------------------------------------------------------------------

def truncated_put(raw: Raw, bucket: str, key: str, payload_mode: str) -> bytes:
    """PUT declaring 1 MiB, send 100 KiB, close; returns whatever the server answered."""
    full = bytes(range(256)) * 4096
    payload = UNSIGNED if payload_mode == "unsigned" else hashlib.sha256(full).hexdigest()
    s = sign(raw.hostport, "PUT", f"/{bucket}/{key}", payload=payload)
    head = [f"PUT /{bucket}/{key} HTTP/1.1", f"Content-Length: {len(full)}"]
    head += [f"{k}: {v}" for k, v in s.headers.items()]
    sock = socket.create_connection((raw.host, raw.port), timeout=10)
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + full[:100 * KIB])
        time.sleep(0.2)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
        return answer
    finally:
        sock.close()


@pytest.mark.parametrize("payload_mode", ["unsigned", "sha256"])
def test_truncated_body_stores_nothing(raw, bkt, key, payload_mode):
    answer = truncated_put(raw, bkt, key, payload_mode)
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:300]
    time.sleep(0.5)
    assert_absent(raw, bkt, key)
    # over an existing object: the old content stays
    assert raw.put(bkt, key, b"old content").status == 200
    answer = truncated_put(raw, bkt, key, payload_mode)
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:300]
    time.sleep(0.5)
    assert_content(raw, bkt, key, b"old content")
    assert raw.healthy()


# --- aws-chunked bodies ---------------------------------------------------------------------

def unsigned_trailer_body(data: bytes, *, chunk: int = 64 * KIB, crc: str | None = None,
                          size_text: str | None = None, drop_crlf: bool = False) -> bytes:
    out = b""
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    for n, piece in enumerate(pieces):
        size = size_text if (size_text is not None and n == 0) else f"{len(piece):x}"
        out += size.encode() + b"\r\n" + piece + (b"" if drop_crlf and n == 0 else b"\r\n")
    out += b"0\r\n" + f"x-amz-checksum-crc32:{crc or crc32_b64(data)}\r\n\r\n".encode()
    return out


def put_unsigned_trailer(raw: Raw, bucket: str, key: str, body: bytes, decoded: int) -> Resp:
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(decoded),
               "x-amz-trailer": "x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm": "CRC32"}
    return raw.signed("PUT", f"/{bucket}/{key}", headers=headers, body=body,
                      payload=STREAMING_UNSIGNED_TRAILER)


DATA = bytes(range(256)) * 600  # 150 KiB: three chunks of 64, 64 and 22 KiB


def test_unsigned_trailer_upload_works(raw, bkt, key):
    resp = put_unsigned_trailer(raw, bkt, key, unsigned_trailer_body(DATA), len(DATA))
    assert resp.status == 200, resp.body
    assert resp.headers["x-amz-checksum-crc32"] == crc32_b64(DATA)
    assert_content(raw, bkt, key, DATA)
    head = raw.head(bkt, key)
    assert "aws-chunked" not in head.headers.get("Content-Encoding", "")


@pytest.mark.parametrize("case,status,code", [
    ("non-hex-size", 400, "InvalidRequest"),
    ("missing-crlf", 400, "InvalidRequest"),
    ("decoded-length-larger", 400, "IncompleteBody"),
    ("decoded-length-smaller", 400, "IncompleteBody"),
    ("truncated", 400, "IncompleteBody"),
    ("wrong-crc32", 400, "BadDigest"),
])
def test_unsigned_trailer_framing_errors(raw, bkt, key, case, status, code):
    decoded = len(DATA)
    if case == "non-hex-size":
        body = unsigned_trailer_body(DATA, size_text="zz10000")
    elif case == "missing-crlf":
        body = unsigned_trailer_body(DATA, drop_crlf=True)
    elif case == "decoded-length-larger":
        body, decoded = unsigned_trailer_body(DATA), len(DATA) + 10
    elif case == "decoded-length-smaller":
        body, decoded = unsigned_trailer_body(DATA), len(DATA) - 10
    elif case == "truncated":
        body = unsigned_trailer_body(DATA)[:100 * KIB]  # a complete HTTP body, short chunks
    else:
        body = unsigned_trailer_body(DATA, crc=crc32_b64(DATA + b"!"))
    assert raw.put(bkt, key, b"previous").status == 200
    resp = put_unsigned_trailer(raw, bkt, key, body, decoded)
    assert_error(resp, status, code)
    assert_content(raw, bkt, key, b"previous")
    fresh = key + "-fresh"
    assert_error(put_unsigned_trailer(raw, bkt, fresh, body, decoded), status, code)
    assert_absent(raw, bkt, fresh)


def signed_chunked_body(s: Signed, data: bytes, chunk: int = 64 * KIB,
                        tamper: str | None = None) -> bytes:
    previous, out = s.signature, b""
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
    for n, piece in enumerate(pieces):
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", s.amz_date, s.scope, previous,
                         EMPTY_SHA256, hashlib.sha256(piece).hexdigest()])
        signature = previous = hmac_hex(s.key, sts)
        if n == 1 and tamper == "signature":
            signature = ("1" if signature[0] == "0" else "0") + signature[1:]
        if n == 1 and tamper == "data":
            piece = b"X" + piece[1:]
        out += f"{len(piece):x};chunk-signature={signature}\r\n".encode() + piece + b"\r\n"
    return out


def put_signed_chunks(raw: Raw, bucket: str, key: str, data: bytes,
                      tamper: str | None = None) -> Resp:
    body_len = len(signed_chunked_body(sign(raw.hostport, "PUT", "/"), data))
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
               "Content-Length": str(body_len)}
    s = sign(raw.hostport, "PUT", f"/{bucket}/{quote(key)}", headers=headers,
             payload=STREAMING_SIGNED)
    body = signed_chunked_body(s, data, tamper=tamper)
    assert len(body) == body_len
    return raw.send("PUT", f"/{bucket}/{quote(key)}", headers=s.headers, body=body)


def test_signed_chunks_upload_works(raw, bkt, key):
    resp = put_signed_chunks(raw, bkt, key, DATA)
    assert resp.status == 200, resp.body
    assert resp.headers["ETag"] == f'"{hashlib.md5(DATA).hexdigest()}"'
    assert_content(raw, bkt, key, DATA)


@pytest.mark.parametrize("tamper", ["signature", "data"])
def test_signed_chunks_tampered(raw, bkt, key, tamper):
    assert_error(put_signed_chunks(raw, bkt, key, DATA, tamper), 403, "SignatureDoesNotMatch")
    assert_absent(raw, bkt, key)
    assert raw.put(bkt, key, b"previous").status == 200
    assert_error(put_signed_chunks(raw, bkt, key, DATA, tamper), 403, "SignatureDoesNotMatch")
    assert_content(raw, bkt, key, b"previous")


# --- oversized headers and metadata ---------------------------------------------------------

def test_oversized_header_is_refused_and_server_keeps_serving(raw, bkt, key):
    resp = raw.signed("PUT", f"/{bkt}/{key}", headers={"x-custom-huge": "h" * (20 * KIB)},
                      body=b"x")
    assert 400 <= resp.status < 500, resp.status
    assert raw.healthy()
    assert_absent(raw, bkt, key)
    assert raw.put(bkt, key, b"fine").status == 200


def test_oversized_header_gets_s3_error(raw, bkt, key):
    resp = raw.signed("PUT", f"/{bkt}/{key}", headers={"x-custom-huge": "h" * (20 * KIB)},
                      body=b"x")
    assert_error(resp, 400, "RequestHeaderSectionTooLarge")


def test_metadata_too_large(raw, bkt, key):
    # S3 counts the UTF-8 bytes of every name (without x-amz-meta-) and value: 2 KiB at most
    at_limit = {"x-amz-meta-k": "v" * 2047}
    assert raw.put(bkt, key, b"ok", headers=at_limit).status == 200
    over = {"x-amz-meta-k": "v" * 2048}
    fresh = key + "-over"
    assert_error(raw.put(bkt, fresh, b"no", headers=over), 400, "MetadataTooLarge")
    many = {f"x-amz-meta-field{i:02d}": "m" * 100 for i in range(20)}  # 20 * 107 bytes
    assert_error(raw.put(bkt, fresh, b"no", headers=many), 400, "MetadataTooLarge")
    assert_absent(raw, bkt, fresh)
    assert_error(raw.put(bkt, key, b"replaced", headers=many), 400, "MetadataTooLarge")
    assert_content(raw, bkt, key, b"ok")


# --- ranges and HEAD ---------------------------------------------------------------------------

RANGE_DATA = bytes(range(100))


@pytest.mark.parametrize("header,status,expect", [
    ("bytes=0-9", 206, RANGE_DATA[:10]),
    ("bytes=-0", 416, None),
    ("bytes=100-", 416, None),
    ("bytes=0-1,5-6", 200, RANGE_DATA),
    ("bytes=5-2", 200, RANGE_DATA),
    ("bytes=-200", 206, RANGE_DATA),
    ("items=0-5", 200, RANGE_DATA),
])
def test_range_edge_cases(raw, bkt, header, status, expect):
    assert raw.put(bkt, "ranged", RANGE_DATA).status == 200
    resp = raw.get(bkt, "ranged", headers={"Range": header})
    if status == 416:
        assert_error(resp, 416, "InvalidRange")
        assert resp.headers["Content-Range"] == "bytes */100"
        return
    assert resp.status == status, (resp.status, resp.body[:300])
    assert resp.body == expect
    assert int(resp.headers["Content-Length"]) == len(expect)
    if status == 206:
        assert resp.headers["Content-Range"].endswith("/100")
    else:
        assert "Content-Range" not in resp.headers


def test_head_of_missing_key_is_404_without_body(raw, bkt):
    s = sign(raw.hostport, "HEAD", f"/{bkt}/no-such-key")
    request = "\r\n".join([f"HEAD /{bkt}/no-such-key HTTP/1.1", "Connection: close"]
                          + [f"{k}: {v}" for k, v in s.headers.items()]) + "\r\n\r\n"
    with socket.create_connection((raw.host, raw.port), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404"), head
    assert b"x-amz-request-id:" in head.lower()
    assert rest == b""  # not a byte after the headers
    resp = raw.signed("HEAD", f"/no-such-bucket-{uuid.uuid4().hex[:6]}/k")
    assert resp.status == 404 and resp.body == b""


# --- HTTP framing -------------------------------------------------------------------------

def raw_exchange(raw: Raw, lines: list[str], body: bytes) -> bytes:
    """Send one request (with Connection: close) on a socket; everything the server answers."""
    with socket.create_connection((raw.host, raw.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines + ["Connection: close"]) + "\r\n\r\n").encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_content_length_with_transfer_encoding_is_refused(raw, bkt, key):
    """A request-smuggling shape: both framings at once is a 400, and nothing is stored."""
    s = sign(raw.hostport, "PUT", f"/{bkt}/{key}", payload=UNSIGNED)
    answer = raw_exchange(raw, [f"PUT /{bkt}/{key} HTTP/1.1", "Transfer-Encoding: chunked",
                                "Content-Length: 5"] + [f"{k}: {v}" for k, v in s.headers.items()],
                          b"5\r\nhello\r\n0\r\n\r\n")
    assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == b"400", answer[:200]
    assert_absent(raw, bkt, key)
    assert raw.healthy()


def test_transfer_encoding_chunked_put_is_not_implemented(raw, bkt, key):
    s = sign(raw.hostport, "PUT", f"/{bkt}/{key}", payload=UNSIGNED)
    answer = raw_exchange(raw, [f"PUT /{bkt}/{key} HTTP/1.1", "Transfer-Encoding: chunked"]
                          + [f"{k}: {v}" for k, v in s.headers.items()],
                          b"5\r\nhello\r\n0\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 501"), head
    assert b"<Code>NotImplemented</Code>" in body and b"x-amz-request-id:" in head.lower()
    assert_absent(raw, bkt, key)


# --- unsupported sub-resources -------------------------------------------------------------

@pytest.mark.parametrize("method,target,query", [
    ("GET", "bucket", "logging"),
    ("PUT", "bucket", "replication"),
    ("PUT", "bucket", "website"),
    ("GET", "object", "torrent"),
])
def test_unsupported_subresource_is_not_implemented(raw, bkt, key, method, target, query):
    path = f"/{bkt}" if target == "bucket" else f"/{bkt}/{key}"
    body = b"<Policy/>" if method == "PUT" else b""
    resp = raw.signed(method, path, query, body=body)
    assert_error(resp, 501, "NotImplemented")
    assert_absent(raw, bkt, key)


def test_unsupported_subresource_is_authenticated_first(raw, bkt):
    assert_error(raw.send("GET", f"/{bkt}", "logging"), 403, "AccessDenied")


def test_rejected_upload_body_is_not_read(raw, bkt, key):
    """A refused 100 MiB upload is answered and the connection closed, not drained."""
    headers = {"Host": raw.hostport, "Content-Length": str(100 << 20),
               "x-amz-content-sha256": UNSIGNED, "x-amz-date": amz_now(),
               "Authorization": "AWS4-HMAC-SHA256 Credential=NOBODY/20250101/us-east-1/s3/"
                                "aws4_request, SignedHeaders=host, Signature=" + "0" * 64}
    lines = [f"PUT /{bkt}/{key} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((raw.host, raw.port), timeout=3) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"x" * 65536)
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(65536):  # EOF arrives quickly: the server hung up
            answer += chunk
        assert time.monotonic() - started < 2.5
    assert answer.startswith(b"HTTP/1.1 4"), answer[:100]
    assert_absent(raw, bkt, key)
