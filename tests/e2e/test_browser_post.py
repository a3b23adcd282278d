"""POST Object from a real browser: headless Chromium on a page of another origin
(tests.e2e.browser's page server) submits an HTML form built from boto3's
``generate_presigned_post``, its file input filled through selenium as a user would.
The browser writes the multipart body itself, so these pass only if Basalt reads what
browsers send, and follows success_action_redirect / success_action_status as S3 does."""

# ruff: noqa: F811
from __future__ import annotations

import hashlib
import html
import os
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

# The fixtures are imported for pytest; the tests' parameters then shadow them.
from tests.e2e.browser import chromium, console, page_server, run_async, s3  # noqa: F401

# An upload through fetch() and FormData: a CORS request, readable only with the
# bucket's CORS rules answering the page's origin.
FETCH_JS = """
const [url, fields, name, content] = args;
const form = new FormData();
for (const [k, v] of fields) form.append(k, v);
form.append("file", new Blob([content], {type: "text/plain"}), name);
try {
  const r = await fetch(url, {method: "POST", body: form});
  return {ok: true, status: r.status, body: await r.text(), etag: r.headers.get("ETag")};
} catch (e) { return {ok: false, error: String(e)}; }
"""


@pytest.fixture
def bkt(s3):
    name = f"form-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def form_page(url: str, fields: dict[str, str]) -> str:
    """The upload form S3's documentation shows: hidden fields, then the file, then submit."""
    inputs = "\n".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                       for k, v in fields.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>upload</title></head>
<body><form id="upload" action="{html.escape(url)}" method="post" enctype="multipart/form-data">
{inputs}
<input type="file" name="file" id="file">
<input type="submit" id="send" value="Upload">
</form></body></html>"""


def wait_for(chromium, predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"browser stayed at {chromium.current_url}: "
                                 f"{chromium.page_source[:2000]} {console(chromium)}")
        time.sleep(0.1)


def choose_and_submit(chromium, path: str) -> None:
    from selenium.webdriver.common.by import By
    chromium.find_element(By.ID, "file").send_keys(path)
    chromium.find_element(By.ID, "send").click()


def test_a_browser_form_uploads_and_follows_the_redirect(chromium, page_server, s3, bkt,
                                                        tmp_path):
    done = page_server.add("/done.html", "<!doctype html><title>done</title><p>thanks</p>")
    url, fields = _presigned(s3, bkt, "uploads/${filename}",
                             {"success_action_redirect": done, "Content-Type": "image/png",
                              "x-amz-meta-from": "browser"},
                             [["starts-with", "$success_action_redirect", page_server.origin],
                              ["starts-with", "$Content-Type", "image/"],
                              {"x-amz-meta-from": "browser"},
                              ["content-length-range", 1, 10 << 20]])
    data = os.urandom(3 << 20)
    path = tmp_path / "picture.png"
    path.write_bytes(data)
    chromium.get(page_server.add("/form.html", form_page(url, fields)))
    choose_and_submit(chromium, str(path))
    wait_for(chromium, lambda: chromium.current_url.startswith(done))

    etag = '"' + hashlib.md5(data).hexdigest() + '"'
    query = parse_qs(urlsplit(chromium.current_url).query)
    assert query == {"bucket": [bkt], "key": ["uploads/picture.png"], "etag": [etag]}
    landed = [r for r in page_server.received if r.path.startswith("/done.html?")]
    assert len(landed) == 1 and parse_qs(urlsplit(landed[0].path).query) == query
    obj = s3.get_object(Bucket=bkt, Key="uploads/picture.png")
    assert obj["Body"].read() == data and obj["ETag"] == etag
    assert obj["ContentType"] == "image/png" and obj["Metadata"] == {"from": "browser"}


def test_a_browser_form_shows_the_post_response(chromium, page_server, s3, bkt, tmp_path):
    url, fields = _presigned(s3, bkt, "notes/${filename}", {"success_action_status": "201"},
                             [{"success_action_status": "201"}])
    path = tmp_path / "notes.txt"
    path.write_bytes(b"written in a browser\n")
    chromium.get(page_server.add("/form.html", form_page(url, fields)))
    choose_and_submit(chromium, str(path))
    wait_for(chromium, lambda: "PostResponse" in chromium.page_source)
    source = chromium.page_source
    etag = hashlib.md5(b"written in a browser\n").hexdigest()
    assert "notes/notes.txt" in source and etag in source and bkt in source
    assert s3.get_object(Bucket=bkt, Key="notes/notes.txt")["Body"].read() == \
        b"written in a browser\n"


def test_a_browser_form_refused_stores_nothing(chromium, page_server, s3, bkt, tmp_path):
    done = page_server.add("/done.html", "<p>done</p>")
    url, fields = _presigned(s3, bkt, "small/${filename}", {"success_action_redirect": done},
                             [{"success_action_redirect": done},
                              ["content-length-range", 0, 1000]])
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(200_000))
    chromium.get(page_server.add("/form.html", form_page(url, fields)))
    choose_and_submit(chromium, str(path))
    wait_for(chromium, lambda: "EntityTooLarge" in chromium.page_source)
    assert "<Code>EntityTooLarge</Code>" in html.unescape(chromium.page_source)
    assert not any(r.path.startswith("/done.html") for r in page_server.received)
    assert s3.list_objects_v2(Bucket=bkt)["KeyCount"] == 0


def test_a_script_uploads_with_form_data_under_cors(chromium, page_server, s3, bkt):
    chromium.get(page_server.add("/app.html", "<!doctype html><title>app</title>"))
    s3.put_bucket_cors(Bucket=bkt, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": [page_server.origin], "AllowedMethods": ["POST"],
        "ExposeHeaders": ["ETag"]}]})
    url, fields = _presigned(s3, bkt, "js/${filename}", {"success_action_status": "201"},
                             [{"success_action_status": "201"}])
    outcome = run_async(chromium, FETCH_JS, url, list(fields.items()), "hello.txt", "from js")
    assert outcome["ok"], (outcome, console(chromium))
    etag = '"' + hashlib.md5(b"from js").hexdigest() + '"'
    assert outcome["status"] == 201 and outcome["etag"] == etag
    assert "<Key>js/hello.txt</Key>" in outcome["body"]
    assert s3.get_object(Bucket=bkt, Key="js/hello.txt")["Body"].read() == b"from js"


def _presigned(s3, bucket: str, key: str, fields: dict, conditions: list) -> tuple[str, dict]:
    form = s3.generate_presigned_post(bucket, key, Fields=fields, Conditions=conditions,
                                      ExpiresIn=600)
    assert "x-amz-signature" in form["fields"]
    return form["url"], form["fields"]
