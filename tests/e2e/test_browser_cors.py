"""CORS in a real browser: a page served from another origin (tests.e2e.browser's page
server) uses fetch() against Basalt through presigned URLs. Headless Chromium enforces
CORS itself, so these pass only if Basalt's preflight answers and response headers are
what a browser needs — and fail the other way if Basalt lets through what the bucket's
rules do not allow."""

# ruff: noqa: F811
from __future__ import annotations

import uuid

import pytest

# The fixtures are imported for pytest; the tests' parameters then shadow them.
from tests.e2e.browser import chromium, console, page_server, run_async, s3  # noqa: F401

GET_JS = """
const [url] = args;
try {
  const r = await fetch(url);
  return {ok: true, status: r.status, body: await r.text(), etag: r.headers.get("ETag")};
} catch (e) { return {ok: false, error: String(e)}; }
"""

# A Content-Type outside the CORS-safelisted ones: the browser must ask first (preflight).
PUT_JS = """
const [url, body] = args;
try {
  const r = await fetch(url, {method: "PUT", body: new TextEncoder().encode(body),
                              headers: {"Content-Type": "application/x-basalt-test"}});
  return {ok: true, status: r.status, etag: r.headers.get("ETag")};
} catch (e) { return {ok: false, error: String(e)}; }
"""


@pytest.fixture
def bkt(s3):
    name = f"web-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="data.txt", Body=b"from basalt")
    return name


@pytest.fixture
def page(chromium, page_server):
    """The browser on a page of the other origin; its origin."""
    chromium.get(page_server.add("/app.html", "<!doctype html><title>app</title><p>app</p>"))
    return page_server.origin


def urls(s3, bucket: str, key: str) -> tuple[str, str]:
    """Presigned GET and PUT URLs of ``key``, SigV4 (which signs the host only, so the
    browser may send its own Content-Type)."""
    get = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    put = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key})
    assert "X-Amz-Signature=" in get and "X-Amz-Signature=" in put
    return get, put


def blocked(chromium, outcome: dict) -> None:
    assert outcome["ok"] is False, outcome
    assert "Failed to fetch" in outcome["error"]
    messages = console(chromium)
    assert any("blocked by CORS policy" in m for m in messages), messages


def stored(s3, bucket: str, key: str) -> bool:
    return s3.list_objects_v2(Bucket=bucket, Prefix=key)["KeyCount"] == 1


def test_allowed_origin_gets_and_puts_and_reads_the_etag(chromium, page, s3, bkt):
    s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": [page], "AllowedMethods": ["GET", "PUT"],
        "AllowedHeaders": ["Content-Type"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 60}]})
    get_url, _ = urls(s3, bkt, "data.txt")
    got = run_async(chromium, GET_JS, get_url)
    etag = s3.head_object(Bucket=bkt, Key="data.txt")["ETag"]
    assert got == {"ok": True, "status": 200, "body": "from basalt", "etag": etag}

    _, put_url = urls(s3, bkt, "upload.txt")
    put = run_async(chromium, PUT_JS, put_url, "from the browser")
    head = s3.head_object(Bucket=bkt, Key="upload.txt")
    assert put == {"ok": True, "status": 200, "etag": head["ETag"]}
    assert head["ContentType"] == "application/x-basalt-test"
    assert s3.get_object(Bucket=bkt, Key="upload.txt")["Body"].read() == b"from the browser"


def test_without_expose_header_the_etag_stays_hidden(chromium, page, s3, bkt):
    s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]})
    got = run_async(chromium, GET_JS, urls(s3, bkt, "data.txt")[0])
    assert got == {"ok": True, "status": 200, "body": "from basalt", "etag": None}


def test_without_cors_rules_the_browser_is_blocked(chromium, page, s3, bkt):
    get_url, put_url = urls(s3, bkt, "data.txt")[0], urls(s3, bkt, "nope.txt")[1]
    blocked(chromium, run_async(chromium, GET_JS, get_url))
    blocked(chromium, run_async(chromium, PUT_JS, put_url, "refused"))
    assert not stored(s3, bkt, "nope.txt")


def test_rules_that_do_not_allow_the_request_block_it(chromium, page, s3, bkt):
    get_url = urls(s3, bkt, "data.txt")[0]
    put_url = urls(s3, bkt, "nope.txt")[1]
    # Another origin only: both refused.
    s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": ["https://elsewhere.example"], "AllowedMethods": ["GET", "PUT"],
        "AllowedHeaders": ["*"]}]})
    blocked(chromium, run_async(chromium, GET_JS, get_url))
    blocked(chromium, run_async(chromium, PUT_JS, put_url, "refused"))
    # This origin, GET only: reads work, the upload is refused at its preflight.
    s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": [page], "AllowedMethods": ["GET"], "AllowedHeaders": ["*"]}]})
    assert run_async(chromium, GET_JS, get_url)["ok"] is True
    blocked(chromium, run_async(chromium, PUT_JS, put_url, "refused"))
    # PUT allowed but not the Content-Type header the page sends: still refused.
    s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": [page], "AllowedMethods": ["GET", "PUT"],
        "AllowedHeaders": ["x-amz-*"]}]})
    blocked(chromium, run_async(chromium, PUT_JS, put_url, "refused"))
    assert not stored(s3, bkt, "nope.txt")
