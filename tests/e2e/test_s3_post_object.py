"""POST Object (browser uploads with a signed policy) against a real `basalt serve`.

Forms come from boto3's ``generate_presigned_post`` (SigV4, and SigV2 with
``signature_version="s3"``) and are posted as browsers post them: multipart/form-data
built by urllib3 (the encoder under requests) and by curl ``-F``. Every refusal is
checked for S3's status and code, and for leaving no object behind.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import urllib3
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.e2e.conftest import ACCESS, SECRET

HTTP = urllib3.PoolManager(retries=False, timeout=60)


@pytest.fixture(scope="module")
def server(basalt_http):
    return basalt_http


@pytest.fixture(scope="module")
def s3(server):
    return server.client()


@pytest.fixture(scope="module")
def v4(server):
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=ACCESS,
                        aws_secret_access_key=SECRET, region_name="us-east-1",
                        config=Config(signature_version="s3v4"))


@pytest.fixture(scope="module")
def v2(server):
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=ACCESS,
                        aws_secret_access_key=SECRET, region_name="us-east-1",
                        config=Config(signature_version="s3"))


@pytest.fixture
def bucket(s3):
    name = f"post-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


class Reply:
    def __init__(self, resp: urllib3.BaseHTTPResponse) -> None:
        self.status, self.headers, self.body = resp.status, resp.headers, resp.data

    @property
    def error(self) -> tuple[str, str]:
        root = ET.fromstring(self.body)
        return root.findtext("Code"), root.findtext("Message")

    def element(self, name: str) -> str | None:
        return ET.fromstring(self.body).findtext(name)


def post(url: str, fields, file=b"hello, world", *, after=(), file_name: str | None = "f.txt",
         headers: dict | None = None) -> Reply:
    """POST ``fields`` (a dict or pairs, in order), then the file, then ``after``."""
    items = list(fields.items()) if isinstance(fields, dict) else list(fields)
    if file is not None:
        items.append(("file", (file_name, file, "application/octet-stream")
                      if file_name is not None else file))
    items += list(after)
    body, content_type = urllib3.encode_multipart_formdata(items)
    resp = HTTP.request("POST", url, body=body, redirect=False,
                        headers={"Content-Type": content_type, **(headers or {})})
    return Reply(resp)


def presigned(client, bucket: str, key: str, **kwargs) -> tuple[str, dict]:
    form = client.generate_presigned_post(bucket, key, **kwargs)
    return form["url"], form["fields"]


def refused(reply: Reply, status: int, code: str, message: str | None = None) -> None:
    assert reply.status == status, (reply.status, reply.body)
    got_code, got_message = reply.error
    assert got_code == code, reply.body
    if message is not None:
        assert got_message == message, reply.body


def nothing_stored(s3, bucket: str) -> None:
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def content(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


# --- uploads that succeed ---------------------------------------------------------------

@pytest.mark.parametrize("signer", ["v4", "v2"])
def test_a_presigned_post_uploads_the_file(request, s3, bucket, signer):
    client = request.getfixturevalue(signer)
    url, fields = presigned(client, bucket, "docs/report.txt")
    assert ("x-amz-signature" in fields) == (signer == "v4")
    reply = post(url, fields, b"the report")
    assert reply.status == 204 and reply.body == b""
    etag = '"' + hashlib.md5(b"the report").hexdigest() + '"'
    assert reply.headers["ETag"] == etag
    assert reply.headers["Location"] == f"{url}/docs/report.txt"
    head = s3.head_object(Bucket=bucket, Key="docs/report.txt")
    assert head["ETag"] == etag and head["ContentType"] == "binary/octet-stream"
    assert content(s3, bucket, "docs/report.txt") == b"the report"


def test_curl_posts_a_presigned_form(server, s3, v4, bucket, tmp_path):
    path = tmp_path / "photo.jpg"
    data = os.urandom(300_000)
    path.write_bytes(data)
    url, fields = presigned(v4, bucket, "uploads/${filename}",
                            Fields={"Content-Type": "image/jpeg"},
                            Conditions=[["starts-with", "$Content-Type", "image/"]])
    args = ["curl", "-s", "-o", str(tmp_path / "out"), "-w", "%{http_code}", url]
    for name, value in fields.items():
        args += ["--form-string", f"{name}={value}"]
    args += ["-F", f"file=@{path}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.stdout == "204", (out.stdout, out.stderr, (tmp_path / "out").read_bytes())
    assert content(s3, bucket, "uploads/photo.jpg") == data
    assert s3.head_object(Bucket=bucket, Key="uploads/photo.jpg")["ContentType"] == "image/jpeg"
    # A refusal reaches curl as S3's XML error.
    bad = [a.replace(fields["x-amz-signature"], "0" * 64) for a in args]
    out = subprocess.run(bad, capture_output=True, text=True, timeout=60)
    assert out.stdout == "403"
    assert b"<Code>SignatureDoesNotMatch</Code>" in (tmp_path / "out").read_bytes()


def test_a_large_file_streams_in_intact(s3, v4, bucket):
    data = os.urandom(24 << 20)
    url, fields = presigned(v4, bucket, "big.bin",
                            Conditions=[["content-length-range", 0, 32 << 20]])
    reply = post(url, fields, data)
    assert reply.status == 204
    assert reply.headers["ETag"] == '"' + hashlib.md5(data).hexdigest() + '"'
    assert content(s3, bucket, "big.bin") == data


def test_filename_replaces_the_variable_in_the_key(s3, v2, bucket):
    url, fields = presigned(v2, bucket, "user/eric/${filename}")
    assert post(url, fields, b"one", file_name="notes.txt").status == 204
    assert content(s3, bucket, "user/eric/notes.txt") == b"one"
    # A file sent as a plain field has no name: the key keeps the variable.
    assert post(url, fields, b"two", file_name=None).status == 204
    assert content(s3, bucket, "user/eric/${filename}") == b"two"


def test_every_kind_of_condition_and_the_attributes_it_sets(s3, v4, bucket):
    expires = "Thu, 01 Dec 2094 16:00:00 GMT"
    tagging = ("<Tagging><TagSet><Tag><Key>project</Key><Value>blue</Value></Tag>"
               "</TagSet></Tagging>")
    extra = {"Content-Type": "text/plain", "Cache-Control": "max-age=60",
             "Content-Disposition": 'attachment; filename="${filename}"', "Expires": expires,
             "x-amz-meta-uuid": "14365123651274", "x-amz-meta-tag": "anything at all",
             "x-amz-storage-class": "STANDARD_IA", "success_action_status": "201",
             "tagging": tagging, "acl": "private", "Content-Encoding": "identity"}
    conditions = [
        {"Content-Type": "text/plain"},                              # exact, object form
        ["eq", "$Cache-Control", "max-age=60"],                      # exact, list form
        ["starts-with", "$Content-Disposition", "attachment"],       # prefix
        ["starts-with", "$Expires", ""],                             # anything
        ["eq", "$x-amz-meta-uuid", "14365123651274"],
        ["starts-with", "$x-amz-meta-tag", ""],
        {"x-amz-storage-class": "STANDARD_IA"},
        ["eq", "$success_action_status", "201"],
        ["starts-with", "$tagging", "<Tagging>"],
        {"acl": "private"},
        ["starts-with", "$Content-Encoding", ""],
        ["content-length-range", 1, 100],
    ]
    url, fields = presigned(v4, bucket, "in/${filename}", Fields=extra, Conditions=conditions)
    reply = post(url, fields, b"attributes", file_name="a.txt")
    assert reply.status == 201, reply.body
    etag = '"' + hashlib.md5(b"attributes").hexdigest() + '"'
    assert reply.element("Bucket") == bucket and reply.element("Key") == "in/a.txt"
    assert reply.element("ETag") == etag == reply.headers["ETag"]
    assert reply.element("Location") == reply.headers["Location"] == f"{url}/in/a.txt"
    head = s3.head_object(Bucket=bucket, Key="in/a.txt")
    assert head["ContentType"] == "text/plain" and head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == 'attachment; filename="a.txt"'
    assert head["ExpiresString"] == expires and head["StorageClass"] == "STANDARD_IA"
    assert head["Metadata"] == {"uuid": "14365123651274", "tag": "anything at all"}
    assert s3.get_object_tagging(Bucket=bucket, Key="in/a.txt")["TagSet"] == [
        {"Key": "project", "Value": "blue"}]


def test_field_names_are_case_insensitive(s3, v2, bucket):
    url, fields = presigned(v2, bucket, "case.txt", Fields={"Content-Type": "text/csv"},
                            Conditions=[["StArTs-WiTh", "$CoNtEnT-TyPe", "text/"]])
    renamed = {("KEY" if k == "key" else "Policy" if k == "policy"
                else "content-type" if k == "Content-Type" else k): v for k, v in fields.items()}
    assert post(url, renamed, b"a,b").status == 204
    assert s3.head_object(Bucket=bucket, Key="case.txt")["ContentType"] == "text/csv"


def test_ignored_fields_and_fields_after_the_file(s3, v4, bucket):
    url, fields = presigned(v4, bucket, "order.txt")
    reply = post(url, {**fields, "x-ignore-tracking": "42"}, b"body",
                 after=[("x-amz-meta-late", "ignored"), ("success_action_status", "201")])
    assert reply.status == 204
    assert s3.head_object(Bucket=bucket, Key="order.txt")["Metadata"] == {}
    # The file may come first: then every field is after it, the key too.
    reply = post(url, [], b"body", after=list(fields.items()))
    refused(reply, 400, "InvalidArgument", "Bucket POST must contain a field named 'key'.  If "
            "it is specified, please check the order of the fields.")


@pytest.mark.parametrize("status,expected", [("200", 200), ("201", 201), ("204", 204),
                                             ("404", 204), ("", 204)])
def test_success_action_status(s3, v4, bucket, status, expected):
    url, fields = presigned(v4, bucket, "status.txt", Fields={"success_action_status": status},
                            Conditions=[{"success_action_status": status}])
    reply = post(url, fields, b"x")
    assert reply.status == expected
    assert (reply.body != b"") == (expected == 201)
    assert content(s3, bucket, "status.txt") == b"x"


def test_success_action_redirect(s3, v4, bucket):
    target = "https://app.example.com/done?upload=1"
    url, fields = presigned(v4, bucket, "photos/me & you.jpg",
                            Fields={"success_action_redirect": target},
                            Conditions=[["starts-with", "$success_action_redirect",
                                         "https://app.example.com/"]])
    reply = post(url, fields, b"img")
    assert reply.status == 303 and reply.body == b""
    location = urlsplit(reply.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "app.example.com",
                                                                 "/done")
    query = parse_qs(location.query)
    etag = '"' + hashlib.md5(b"img").hexdigest() + '"'
    assert query == {"upload": ["1"], "bucket": [bucket], "key": ["photos/me & you.jpg"],
                     "etag": [etag]}
    assert content(s3, bucket, "photos/me & you.jpg") == b"img"
    # The older field name, and a URL S3 cannot use (then it is as if absent).
    for field, value, status in [("redirect", "http://x.test/", 303),
                                 ("success_action_redirect", "/relative/page", 204)]:
        url, fields = presigned(v4, bucket, "r.txt", Fields={field: value},
                                Conditions=[{field: value}])
        assert post(url, fields, b"r").status == status


def test_checksum_fields(s3, v4, bucket):
    data = b"checked"
    good = base64.b64encode(hashlib.sha256(data).digest()).decode()
    url, fields = presigned(v4, bucket, "sum.txt", Fields={"x-amz-checksum-sha256": good},
                            Conditions=[{"x-amz-checksum-sha256": good}])
    reply = post(url, fields, data)
    assert reply.status == 204 and reply.headers["x-amz-checksum-sha256"] == good
    refused(post(url, fields, b"tampered"), 400, "BadDigest")
    assert content(s3, bucket, "sum.txt") == data


# --- refusals -----------------------------------------------------------------------

def test_an_expired_policy(s3, v4, bucket):
    url, fields = presigned(v4, bucket, "late.txt", ExpiresIn=-10)
    refused(post(url, fields), 403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    nothing_stored(s3, bucket)


@pytest.mark.parametrize("signer", ["v4", "v2"])
def test_a_forged_signature_or_policy(request, s3, bucket, signer):
    client = request.getfixturevalue(signer)
    url, fields = presigned(client, bucket, "user/${filename}")
    name = "x-amz-signature" if signer == "v4" else "signature"
    forged = dict(fields, **{name: fields[name][:-4] + ("0000" if signer == "v4" else "AAA=")})
    refused(post(url, forged), 403, "SignatureDoesNotMatch")
    document = json.loads(base64.b64decode(fields["policy"]))
    document["conditions"] = [c for c in document["conditions"] if "$key" not in c]
    loosened = dict(fields, policy=base64.b64encode(json.dumps(document).encode()).decode(),
                    key="anywhere.txt")
    reply = post(url, loosened)
    refused(reply, 403, "SignatureDoesNotMatch")
    assert ET.fromstring(reply.body).findtext("StringToSign") == loosened["policy"]
    nothing_stored(s3, bucket)


def test_fields_the_policy_does_not_name(s3, v4, bucket):
    url, fields = presigned(v4, bucket, "extra.txt")
    reply = post(url, {**fields, "x-amz-meta-owner": "mallory"})
    refused(reply, 403, "AccessDenied", "Invalid according to Policy: Extra input fields: "
            "x-amz-meta-owner")
    # boto3 puts Fields in the form, not in the policy: S3 wants both.
    url, fields = presigned(v4, bucket, "extra.txt", Fields={"Content-Type": "text/html"})
    refused(post(url, fields), 403, "AccessDenied",
            "Invalid according to Policy: Extra input fields: Content-Type")
    nothing_stored(s3, bucket)


def test_failed_conditions(s3, v4, bucket):
    url, fields = presigned(v4, bucket, "user/eric/${filename}",
                            Fields={"Content-Type": "image/png", "x-amz-meta-uuid": "7"},
                            Conditions=[["starts-with", "$Content-Type", "image/"],
                                        {"x-amz-meta-uuid": "7"}])
    cases = [({"key": "user/bob/x"}, '["starts-with", "$key", "user/eric/"]'),
             ({"Content-Type": "text/html"}, '["starts-with", "$Content-Type", "image/"]'),
             ({"x-amz-meta-uuid": "8"}, '["eq", "$x-amz-meta-uuid", "7"]')]
    for change, condition in cases:
        refused(post(url, {**fields, **change}), 403, "AccessDenied",
                f"Invalid according to Policy: Policy Condition failed: {condition}")
    # The policy of one bucket does not open another.
    other = f"post-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=other)
    refused(post(url.rsplit("/", 1)[0] + "/" + other, fields), 403, "AccessDenied",
            f'Invalid according to Policy: Policy Condition failed: ["eq", "$bucket", "{bucket}"]')
    nothing_stored(s3, bucket)
    nothing_stored(s3, other)


def test_file_size_limits(s3, v4, bucket):
    url, fields = presigned(v4, bucket, "sized.bin", Conditions=[["content-length-range", 5, 10]])
    reply = post(url, fields, b"a" * 12)
    refused(reply, 400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
    assert reply.element("ProposedSize") == "12" and reply.element("MaxSizeAllowed") == "10"
    reply = post(url, fields, b"a")
    refused(reply, 400, "EntityTooSmall",
            "Your proposed upload is smaller than the minimum allowed size")
    assert reply.element("ProposedSize") == "1" and reply.element("MinSizeAllowed") == "5"
    nothing_stored(s3, bucket)
    # A big file over the limit is refused as it streams, and leaves nothing either.
    url, fields = presigned(v4, bucket, "sized.bin",
                            Conditions=[["content-length-range", 0, 1 << 20]])
    reply = post(url, fields, os.urandom(6 << 20))
    refused(reply, 400, "EntityTooLarge")
    assert reply.element("ProposedSize") == str(6 << 20)
    nothing_stored(s3, bucket)
    for size in (5, 10):
        url, fields = presigned(v4, bucket, "sized.bin",
                                Conditions=[["content-length-range", 5, 10]])
        assert post(url, fields, b"a" * size).status == 204


def test_fields_before_the_file_are_bounded(s3, v4, bucket):
    url, fields = presigned(v4, bucket, "pre.txt", Fields={"x-ignore-pad": "p" * 30000})
    reply = post(url, fields)
    refused(reply, 400, "MaxPostPreDataLengthExceeded")
    assert reply.element("MaxPostPreDataLengthBytes") == "20480"
    nothing_stored(s3, bucket)


def test_an_unknown_access_key(s3, bucket, server):
    client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id="AKIDNOBODY",
                          aws_secret_access_key=SECRET, region_name="us-east-1",
                          config=Config(signature_version="s3v4"))
    url, fields = presigned(client, bucket, "k.txt")
    reply = post(url, fields)
    refused(reply, 403, "InvalidAccessKeyId")
    assert reply.element("AWSAccessKeyId") == "AKIDNOBODY"
    nothing_stored(s3, bucket)


def test_incomplete_forms(s3, v4, v2, bucket):
    url, fields = presigned(v4, bucket, "k.txt")
    refused(post(url, fields, file=None), 400, "InvalidArgument",
            "POST requires exactly one file upload per request.")
    no_signature = {k: v for k, v in fields.items() if k != "x-amz-signature"}
    reply = post(url, no_signature)
    refused(reply, 400, "InvalidArgument", "Bucket POST must contain a field named "
            "'X-Amz-Signature'.  If it is specified, please check the order of the fields.")
    assert reply.element("ArgumentName") == "X-Amz-Signature"
    url, fields = presigned(v2, bucket, "k.txt")
    refused(post(url, {k: v for k, v in fields.items() if k != "AWSAccessKeyId"}), 400,
            "InvalidArgument")
    refused(post(url, {k: v for k, v in fields.items() if k != "key"}), 400, "InvalidArgument")
    nothing_stored(s3, bucket)


def test_malformed_bodies(server, s3, bucket):
    url = f"{server.endpoint}/{bucket}"
    for body, content_type in [(b"not a form", "multipart/form-data; boundary=xyz"),
                               (b"--xyz\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk",
                                "multipart/form-data; boundary=xyz"),
                               (b"--xyz--", "multipart/form-data")]:
        resp = HTTP.request("POST", url, body=body, headers={"Content-Type": content_type})
        refused(Reply(resp), 400, "MalformedPOSTRequest")
    nothing_stored(s3, bucket)


def test_the_acl_field_sets_a_canned_acl(s3, v4, bucket):
    open_bucket = f"post-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=open_bucket, ObjectOwnership="ObjectWriter")
    s3.delete_public_access_block(Bucket=open_bucket)
    for acl, anonymous_status in [("public-read", 200), ("private", 403)]:
        form_url, fields = presigned(v4, open_bucket, f"{acl}.txt", Fields={"acl": acl},
                                     Conditions=[{"acl": acl}])
        assert post(form_url, fields, b"shared").status == 204
        anonymous = HTTP.request("GET", f"{s3.meta.endpoint_url}/{open_bucket}/{acl}.txt")
        assert anonymous.status == anonymous_status
    grants = s3.get_object_acl(Bucket=open_bucket, Key="public-read.txt")["Grants"]
    assert {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"} in [
        g["Grantee"] for g in grants]
    form_url, fields = presigned(v4, open_bucket, "bad.txt", Fields={"acl": "everyone-rw"},
                                 Conditions=[{"acl": "everyone-rw"}])
    refused(post(form_url, fields), 400, "InvalidArgument")
    # A bucket owner enforced (new buckets are, as in S3) takes no ACL that grants more.
    form_url, fields = presigned(v4, bucket, "acl.txt", Fields={"acl": "public-read"},
                                 Conditions=[{"acl": "public-read"}])
    refused(post(form_url, fields), 400, "AccessControlListNotSupported")
    nothing_stored(s3, bucket)
    form_url, fields = presigned(v4, bucket, "acl.txt", Fields={"acl": "private"},
                                 Conditions=[{"acl": "private"}])
    assert post(form_url, fields).status == 204


def test_a_truncated_upload_stores_nothing(server, s3, v4, bucket):
    url, fields = presigned(v4, bucket, "cut.bin")
    body, content_type = urllib3.encode_multipart_formdata(
        list(fields.items()) + [("file", ("f", os.urandom(300_000)))])
    cut = body[:-1000]
    resp = HTTP.request("POST", url, body=cut, headers={"Content-Type": content_type})
    refused(Reply(resp), 400, "MalformedPOSTRequest")
    nothing_stored(s3, bucket)


# --- anonymous forms -----------------------------------------------------------------

def public_write(bucket: str, prefix: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/{prefix}*"}]})


def test_anonymous_uploads_need_a_bucket_policy(server, s3, bucket):
    url = f"{server.endpoint}/{bucket}"
    form = {"key": "drop/hello.txt", "Content-Type": "text/plain"}
    refused(post(url, form), 403, "AccessDenied", "Access Denied")
    nothing_stored(s3, bucket)
    s3.put_bucket_policy(Bucket=bucket, Policy=public_write(bucket, "drop/"))
    reply = post(url, form, b"anonymous")
    assert reply.status == 204
    assert content(s3, bucket, "drop/hello.txt") == b"anonymous"
    refused(post(url, {"key": "elsewhere.txt"}), 403, "AccessDenied")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="elsewhere.txt")
    # A policy document without a signature binds the anonymous form all the same.
    document = {"expiration": (datetime.now(UTC) + timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"), "conditions": [{"bucket": bucket}, ["starts-with", "$key", "drop/a"]]}
    unsigned = {"key": "drop/b.txt",
                "policy": base64.b64encode(json.dumps(document).encode()).decode()}
    refused(post(url, unsigned), 403, "AccessDenied")
    assert post(url, dict(unsigned, key="drop/a.txt")).status == 204


def test_a_policy_condition_on_the_acl_sees_the_form_field(server, s3, bucket):
    """s3:x-amz-acl comes from the form's acl field (PutObject's header)."""
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={
        "Rules": [{"ObjectOwnership": "ObjectWriter"}]})
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": "*", "Action": "s3:PutObject",
            "Resource": f"arn:aws:s3:::{bucket}/*",
            "Condition": {"StringEquals": {"s3:x-amz-acl": "public-read"}}}]}))
    url = f"{server.endpoint}/{bucket}"
    refused(post(url, {"key": "shared.txt"}), 403, "AccessDenied")
    nothing_stored(s3, bucket)
    assert post(url, {"key": "shared.txt", "acl": "public-read"}, b"open").status == 204
    assert content(s3, bucket, "shared.txt") == b"open"


def test_utf8_keys_and_metadata(s3, v4, bucket):
    key = "test_unicode\u2014_file.pdf"
    url, fields = presigned(v4, bucket, key,
                            Fields={"x-amz-meta-nonascii": "\u00c4M\u00c4Z\u00d5\u00d1 S3",
                                    "x-amz-meta-plain": "ascii", "success_action_status": "201"},
                            Conditions=[["starts-with", "$x-amz-meta-nonascii", ""],
                                        ["starts-with", "$x-amz-meta-plain", ""],
                                        {"success_action_status": "201"}])
    reply = post(url, fields, b"pdf")
    assert reply.status == 201
    assert reply.element("Key") == key
    assert reply.headers["Location"] == f"{url}/test_unicode%E2%80%94_file.pdf"
    # S3 keeps non-ASCII metadata RFC 2047 encoded, so it can travel as a header.
    assert s3.head_object(Bucket=bucket, Key=key)["Metadata"] == {
        "nonascii": "=?UTF-8?Q?=C3=84M=C3=84Z=C3=95=C3=91_S3?=", "plain": "ascii"}


# --- users of accounts -----------------------------------------------------------------

def test_a_users_form_is_judged_by_their_policy_and_audited(server, tmp_path):
    def cli_json(*args: str) -> dict:
        return json.loads(server.cli(*args, "--json").stdout)

    def signer(key: dict):
        return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                            aws_access_key_id=key["access_key"],
                            aws_secret_access_key=key["secret_key"],
                            config=Config(signature_version="s3v4"))

    account = f"forms{uuid.uuid4().hex[:6]}"
    cli_json("account", "create", account)
    cli_json("user", "create", account, "alice")
    owner, alice = cli_json("key", "create", account), cli_json("key", "create", account, "alice")
    bucket = f"acct-{uuid.uuid4().hex[:8]}"
    signer(owner).create_bucket(Bucket=bucket)
    policy = tmp_path / "alice.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/inbox/*"}]}))
    server.cli("user", "policy", "put", account, "alice", str(policy))
    time.sleep(1.1)  # every worker reads the records again within a second

    url, fields = presigned(signer(alice), bucket, "inbox/${filename}")
    assert post(url, fields, b"from alice", file_name="a.txt").status == 204
    assert signer(owner).get_object(Bucket=bucket, Key="inbox/a.txt")["Body"].read() == \
        b"from alice"
    url, fields = presigned(signer(alice), bucket, "outbox/${filename}")
    refused(post(url, fields, b"no", file_name="b.txt"), 403, "AccessDenied", "Access Denied")
    assert signer(owner).list_objects_v2(Bucket=bucket)["KeyCount"] == 1

    log = os.path.join(server.data_dir, "logs", "audit.jsonl")
    deadline = time.monotonic() + 10
    while True:
        with open(log) as f:
            entries = [json.loads(line) for line in f if bucket in line]
        posts = [e for e in entries if e["operation"] == "PostObject"]
        if len(posts) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(e["user"], e["access_key"], e["status"]) for e in posts] == [
        ("alice", alice["access_key"], 204), ("alice", alice["access_key"], 403)]
    assert posts[0]["bytes_in"] == len(b"from alice")

    server.cli("key", "disable", alice["access_key"])
    time.sleep(1.1)
    url, fields = presigned(signer(alice), bucket, "inbox/${filename}")
    refused(post(url, fields, b"again", file_name="c.txt"), 403, "InvalidAccessKeyId")
    assert signer(owner).list_objects_v2(Bucket=bucket)["KeyCount"] == 1


def test_repeated_metadata_fields_are_judged_as_stored(s3, v4, bucket):
    url, fields = presigned(v4, bucket, "meta.txt", Fields={"x-amz-meta-tag": "good"},
                            Conditions=[{"x-amz-meta-tag": "good"}])
    items = [(k, v) for k, v in fields.items() if k != "x-amz-meta-tag"]
    reply = post(url, items + [("x-amz-meta-tag", "bad"), ("x-amz-meta-tag", "good")])
    refused(reply, 403, "AccessDenied", "Invalid according to Policy: Policy Condition failed: "
            '["eq", "$x-amz-meta-tag", "good"]')
    nothing_stored(s3, bucket)
    url, fields = presigned(v4, bucket, "meta.txt", Fields={"x-amz-meta-tag": "a"},
                            Conditions=[["starts-with", "$x-amz-meta-tag", "a"]])
    items = list(fields.items()) + [("x-amz-meta-tag", "b")]
    assert post(url, items).status == 204
    assert s3.head_object(Bucket=bucket, Key="meta.txt")["Metadata"] == {"tag": "a,b"}


def test_anonymous_uploads_to_a_bucket_whose_acl_lets_everyone_write(server, s3):
    name = f"post-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, ObjectOwnership="ObjectWriter")
    s3.delete_public_access_block(Bucket=name)
    url = f"{server.endpoint}/{name}"
    refused(post(url, {"key": "guest.txt"}), 403, "AccessDenied")
    s3.put_bucket_acl(Bucket=name, ACL="public-read-write")
    assert post(url, {"key": "guest.txt", "Content-Type": "text/plain"}, b"hi").status == 204
    assert content(s3, name, "guest.txt") == b"hi"
