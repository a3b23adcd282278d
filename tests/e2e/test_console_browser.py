"""The web console in a real headless Chromium (selenium) against a real `basalt serve`:
sign-in, buckets and drag-and-drop uploads (100 small files and a multipart one, with
progress), a reload mid-upload that resumes, download and share links, the session's
cookie flags, CSRF and sign-out, a user whose policy limits what it sees, volumes, the
system page, usage and cost. One server and one browser for the module; screenshots go
to ``$BASALT_TEST_ARTIFACTS`` (default: the module's temporary directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.e2e.browser import console, launch, run_async
from tests.e2e.conftest import ACCESS, SECRET, start_server, stop_server

BIG = 50 << 20  # two parts' worth and more: a multipart upload (parts of 8 MiB)
PRICES = ('currency = "USD"\nstorage_gb_month = 0.02\nrequests_put_per_1000 = 5\n'
          'requests_get_per_1000 = 0.4\nbytes_out_per_gb = 0.09\n')


@pytest.fixture(scope="module")
def server():
    tmp = tempfile.mkdtemp(prefix="basalt-console-")
    srv = start_server(tmp, extra=("--usage-flush-seconds", "1"))
    yield srv
    stop_server(srv)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    with launch() as driver:
        driver.set_window_size(1400, 1000)
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    where = os.environ.get("BASALT_TEST_ARTIFACTS") or str(tmp_path_factory.mktemp("shots"))
    os.makedirs(where, exist_ok=True)

    def shot(browser, name: str) -> None:
        browser.save_screenshot(os.path.join(where, f"console-{name}.png"))
    shot.where = where
    return shot


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """100 small files and one of 50 MiB, with their sha256."""
    d = tmp_path_factory.mktemp("upload")
    small = []
    for n in range(100):
        p = d / f"small-{n:03}.txt"
        p.write_bytes(os.urandom(100 + n * 37))
        small.append(str(p))
    big = d / "big.bin"
    big.write_bytes(os.urandom(BIG))
    return {"small": small, "big": str(big)}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait(browser, script: str, *args, timeout: float = 60.0):
    """Until the JavaScript expression ``script`` (args as ``args``) is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = browser.execute_script(f"return ({script});", *args)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited in vain for {script}: {browser.current_url}\n"
                                 f"{browser.find_element('tag name', 'body').text[:3000]}\n"
                                 f"{console(browser)}")
        time.sleep(0.1)


def go(browser, server, hash_: str = "") -> None:
    browser.get(f"{server.endpoint}/_basalt/console/{hash_}")


def sign_in(browser, server, access: str = ACCESS, secret: str = SECRET) -> None:
    go(browser, server)
    wait(browser, "!document.getElementById('sign-in').hidden"
                  " || document.body.classList.contains('signed-in')")
    if browser.execute_script("return document.body.classList.contains('signed-in')"):
        browser.find_element("id", "sign-out").click()
        wait(browser, "!document.getElementById('sign-in').hidden")
    browser.find_element("id", "access-key").clear()
    browser.find_element("id", "access-key").send_keys(access)
    browser.find_element("id", "secret-key").send_keys(secret)
    browser.find_element("id", "sign-in-button").click()
    wait(browser, "document.body.classList.contains('signed-in')")


def drop(browser, paths: list[str]) -> None:
    """Drop files on the page's drop zone as a user dragging them from the desktop
    does: selenium puts them in a file input, a DataTransfer carries them to a drop."""
    picker = browser.execute_script("""
        const input = document.createElement('input');
        input.type = 'file'; input.multiple = true; input.id = 'test-drag-source';
        input.style.display = 'none'; document.body.append(input); return input;""")
    picker.send_keys("\n".join(paths))
    browser.execute_script("""
        const input = document.getElementById('test-drag-source');
        const dt = new DataTransfer();
        for (const f of input.files) dt.items.add(f);
        const zone = document.getElementById('drop-zone');
        zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        input.remove();""")


def console_call(server, method: str, path: str, cookie: str | None, csrf: str | None = None,
                 body: dict | None = None) -> tuple[int, dict]:
    """The console API as a script (or an attacker) sends it, with the cookie given."""
    headers = {"Content-Type": "application/json"}
    if cookie:
        headers["Cookie"] = f"basalt-console={cookie}"
    if csrf:
        headers["X-Basalt-CSRF"] = csrf
    request = urllib.request.Request(f"{server.endpoint}/_basalt/console/api/{path}", method=method,
                                     headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def session_cookie(browser) -> dict:
    found = [c for c in browser.get_cookies() if c["name"] == "basalt-console"]
    assert len(found) == 1, browser.get_cookies()
    return found[0]


def test_sign_in_page_and_wrong_keys(server, browser, shots):
    go(browser, server)
    wait(browser, "!document.getElementById('sign-in').hidden")
    shots(browser, "sign-in")
    browser.find_element("id", "access-key").send_keys(ACCESS)
    browser.find_element("id", "secret-key").send_keys("not-the-secret")
    browser.find_element("id", "sign-in-button").click()
    assert "wrong access key or secret key" in wait(
        browser, "document.getElementById('sign-in-error').textContent")
    assert not [c for c in browser.get_cookies() if c["name"] == "basalt-console"]
    sign_in(browser, server)
    cookie = session_cookie(browser)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/_basalt/console/" and not cookie["secure"]  # plain HTTP here
    assert "basalt-console" not in browser.execute_script("return document.cookie")


def test_buckets_uploads_download_share_delete(server, browser, shots, files):
    s3 = server.client()
    sign_in(browser, server)
    name = f"con-{uuid.uuid4().hex[:10]}"
    go(browser, server, "#/buckets")
    wait(browser, "document.getElementById('new-bucket')")
    browser.find_element("id", "new-bucket").send_keys(name)
    browser.find_element("id", "create-bucket").click()
    wait(browser, "document.querySelector(`tr[data-bucket='${arguments[0]}']`)", name)
    s3.head_bucket(Bucket=name)

    go(browser, server, f"#/b/{name}/docs/")
    wait(browser, "document.getElementById('drop-zone')")
    drop(browser, [*files["small"], files["big"]])
    # The bars move: the total is seen part-way before it is full.
    partial = wait(browser, """(() => { const t = document.getElementById('upload-total');
        return t && t.value > 0 && t.value < t.max && [t.value, t.max]; })()""", timeout=120)
    assert 0 < partial[0] < partial[1]
    shots(browser, "uploading")
    wait(browser, "document.querySelectorAll('#upload-list li[data-state=done]').length === 101",
         timeout=180)
    assert not browser.execute_script("return document.querySelectorAll('#upload-list li.error').length")
    assert browser.execute_script("return document.getElementById('upload-total').value") == \
        os.path.getsize(files["big"]) + sum(os.path.getsize(p) for p in files["small"])
    shots(browser, "uploaded")

    # Browse: the folder holds them; the big one came as a multipart upload.
    listed = s3.list_objects_v2(Bucket=name, Prefix="docs/")
    assert listed["KeyCount"] == 101
    head = s3.head_object(Bucket=name, Key="docs/big.bin")
    assert head["ContentLength"] == BIG and head["ETag"].strip('"').endswith("-7")
    go(browser, server, f"#/b/{name}/")
    wait(browser, "document.querySelector(\"tr.folder[data-prefix='docs/']\")")
    browser.find_element("css selector", "tr.folder a").click()
    wait(browser, "document.querySelectorAll('#objects tr.object').length === 101")

    # Download (the link's presigned URL, fetched by the page) and compare.
    with open(files["big"], "rb") as f:
        want = sha(f.read())
    got = run_async(browser, """
        const urls = await (await fetch('/_basalt/console/api/presign', {method: 'POST',
          headers: {'Content-Type': 'application/json',
                    'X-Basalt-CSRF': (await (await fetch('/_basalt/console/api/session')).json()).csrf},
          body: JSON.stringify({requests: [{method: 'GET', bucket: args[0], key: 'docs/big.bin'}]})})).json();
        const body = await (await fetch(urls.urls[0])).arrayBuffer();
        return Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', body)))
          .map(b => b.toString(16).padStart(2, '0')).join('');""", name)
    assert got == want

    # A share link, from the object's details, works with no session at all.
    row = browser.find_element("css selector", "tr.object[data-key='docs/small-007.txt']")
    row.find_element("css selector", "button.share").click()
    wait(browser, "document.getElementById('make-share')")
    assert "content-length" in browser.find_element("id", "object-headers").text.lower()
    browser.find_element("css selector", "#share-expiry option[value='3600']").click()
    browser.find_element("id", "make-share").click()
    link = wait(browser, "document.getElementById('share-link').value")
    assert "X-Amz-Expires=3600" in link
    with urllib.request.urlopen(link, timeout=30) as r, open(files["small"][7], "rb") as f:
        assert r.read() == f.read()
    shots(browser, "details")

    # Delete an object.
    browser.execute_script("window.confirm = () => true")
    row = browser.find_element("css selector", "tr.object[data-key='docs/small-000.txt']")
    row.find_element("css selector", "button.delete-object").click()
    wait(browser, "!document.querySelector(\"tr.object[data-key='docs/small-000.txt']\")")
    assert s3.list_objects_v2(Bucket=name, Prefix="docs/small-000")["KeyCount"] == 0


def test_a_reload_mid_upload_resumes(server, browser, files):
    s3 = server.client()
    sign_in(browser, server)
    name = f"res-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    go(browser, server, f"#/b/{name}/")
    wait(browser, "document.getElementById('drop-zone')")
    browser.set_network_conditions(offline=False, latency=0, download_throughput=-1,
                                   upload_throughput=6 << 20)  # ~9 s for the 50 MiB
    try:
        drop(browser, [files["big"]])
        wait(browser, """Object.values(JSON.parse(localStorage.getItem('basalt-console-uploads') || '{}'))
                         .some(p => p.done >= 1)""", timeout=60)
        browser.refresh()
    finally:
        browser.delete_network_conditions()
    # After the reload the page offers to resume; the same file dropped again finishes.
    wait(browser, "document.querySelector('#upload-resumes li.resume')")
    uploads = s3.list_multipart_uploads(Bucket=name).get("Uploads", [])
    assert len(uploads) == 1
    held = s3.list_parts(Bucket=name, Key="big.bin", UploadId=uploads[0]["UploadId"])["Parts"]
    assert 1 <= len(held) < 7
    wait(browser, "document.getElementById('drop-zone')")
    drop(browser, [files["big"]])
    wait(browser, "document.querySelector(\"#upload-list li[data-key='big.bin'][data-state=done]\")",
         timeout=120)
    resumed = browser.execute_script(
        "return document.querySelector(\"#upload-list li[data-key='big.bin']\").dataset.resumed")
    assert int(resumed) >= 1
    with open(files["big"], "rb") as f:
        assert sha(s3.get_object(Bucket=name, Key="big.bin")["Body"].read()) == sha(f.read())
    assert not s3.list_multipart_uploads(Bucket=name).get("Uploads")
    assert browser.execute_script("return localStorage.getItem('basalt-console-uploads')") == "{}"


def test_csrf_is_required_and_sign_out_ends_the_session(server, browser):
    sign_in(browser, server)
    cookie = session_cookie(browser)["value"]
    status = run_async(browser, """
        const r = await fetch('/_basalt/console/api/presign', {method: 'POST',
          headers: {'Content-Type': 'application/json'},
          body: JSON.stringify({requests: [{method: 'PUT', bucket: 'csrf-test'}]})});
        return r.status;""")
    assert status == 403
    code, view = console_call(server, "GET", "session", cookie)
    assert code == 200
    csrf = view["csrf"]
    ask = {"requests": [{"method": "GET"}]}
    assert console_call(server, "POST", "presign", cookie, None, ask)[0] == 403
    assert console_call(server, "POST", "presign", cookie, "wrong", ask)[0] == 403
    assert console_call(server, "POST", "presign", cookie, csrf, ask)[0] == 200
    assert console_call(server, "POST", "presign", None, csrf, ask)[0] == 401
    browser.find_element("id", "sign-out").click()
    wait(browser, "!document.getElementById('sign-in').hidden")
    code, body = console_call(server, "POST", "presign", cookie, csrf, ask)
    assert code == 401 and body["code"] == "NotSignedIn"
    assert console_call(server, "GET", "session", cookie)[0] == 401


def test_a_restricted_user_sees_only_what_it_may(server, browser, tmp_path):
    def cli_json(*args):
        return json.loads(server.cli(*args, "--json").stdout)
    suffix = uuid.uuid4().hex[:6]
    account = f"acme{suffix}"
    cli_json("account", "create", account)
    owner = cli_json("key", "create", account)
    cli_json("user", "create", account, "alice")
    alice = cli_json("key", "create", account, "alice")
    open_bucket, closed_bucket = f"open-{suffix}", f"closed-{suffix}"
    acme = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=owner["access_key"],
                        aws_secret_access_key=owner["secret_key"])
    for b in (open_bucket, closed_bucket):
        acme.create_bucket(Bucket=b)
        acme.put_object(Bucket=b, Key="hello.txt", Body=b"hi")
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListAllMyBuckets"], "Resource": ["*"]},
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{open_bucket}", f"arn:aws:s3:::{open_bucket}/*"]}]}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    server.cli("user", "policy", "put", account, "alice", str(path))
    time.sleep(1.1)  # every worker reads the records again within a second

    sign_in(browser, server, alice["access_key"], alice["secret_key"])
    go(browser, server, "#/buckets")
    wait(browser, "document.querySelector('#buckets tbody tr')")
    rows = {r.get_attribute("data-bucket"): r.text for r in
            browser.find_elements("css selector", "#buckets tbody tr")}
    assert set(rows) == {open_bucket, closed_bucket}  # the account's, not root's
    assert "—" not in rows[open_bucket].split()[1] and "—" in rows[closed_bucket]
    assert not browser.find_element("css selector", "a[href='#/volumes']").is_displayed()

    go(browser, server, f"#/b/{closed_bucket}/")
    assert "AccessDenied" in wait(browser, "document.getElementById('list-error')?.textContent")
    go(browser, server, f"#/b/{open_bucket}/")
    wait(browser, "document.querySelector(\"tr.object[data-key='hello.txt']\")")
    upload = tmp_path / "nope.txt"
    upload.write_bytes(b"not allowed")
    drop(browser, [str(upload)])
    status = wait(browser, """document.querySelector(
        "#upload-list li[data-key='nope.txt'][data-state=failed]")?.querySelector('.status').textContent""")
    assert "AccessDenied" in status
    with pytest.raises(ClientError):
        acme.head_object(Bucket=open_bucket, Key="nope.txt")
    # The admin API is the root's: the console does not even sign for it.
    refused = run_async(browser, """
        const s = await (await fetch('/_basalt/console/api/session')).json();
        const r = await fetch('/_basalt/console/api/presign', {method: 'POST',
          headers: {'Content-Type': 'application/json', 'X-Basalt-CSRF': s.csrf},
          body: JSON.stringify({requests: [{method: 'GET', path: '/_basalt/v1/volumes'}]})});
        return r.status;""")
    assert refused == 403


def test_volumes_and_the_system_page(server, browser, shots):
    sign_in(browser, server)
    go(browser, server, "#/volumes")
    wait(browser, "document.getElementById('create-volume')")
    vol = f"v{uuid.uuid4().hex[:8]}"
    browser.find_element("id", "volume-name").send_keys(vol)
    browser.find_element("id", "volume-size").send_keys("64M")
    browser.find_element("id", "create-volume").click()
    wait(browser, "document.querySelector(`tr[data-volume='${arguments[0]}']`)", vol)
    browser.execute_script("window.prompt = () => 'first'")
    browser.find_element("css selector", f"tr[data-volume='{vol}'] button.snapshot").click()
    wait(browser, "document.querySelector(`tr[data-volume='${arguments[0]}@first']`)", vol)
    shots(browser, "volumes")
    listed = json.loads(server.cli("volume", "list", "--json").stdout)
    assert any(v["name"] == vol and v["size"] == 64 << 20 for v in listed)

    go(browser, server, "#/system")
    wait(browser, "document.querySelectorAll('#disks tbody tr').length === 4")
    states = [r.get_attribute("data-state") for r in
              browser.find_elements("css selector", "#disks tbody tr")]
    assert states == ["online"] * 4
    assert "block" in browser.find_element("id", "layers").text
    wait(browser, "document.querySelector('#rate-chart .uplot')", timeout=20)  # a second sample
    shots(browser, "system")


def test_usage_and_cost_pages(server, browser, shots, tmp_path):
    s3 = server.client()
    name = f"use-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    for n in range(20):
        s3.put_object(Bucket=name, Key=f"k{n}", Body=b"x" * 1000)
    sign_in(browser, server)
    time.sleep(2.5)  # usage is flushed every second (--usage-flush-seconds 1)
    go(browser, server, "#/usage")
    wait(browser, "document.querySelector('#usage-table tr.usage-row')")
    shots(browser, "usage")
    go(browser, server, "#/cost")
    wait(browser, "document.getElementById('prices')")
    wait(browser, "document.getElementById('bill-total-amount')")  # the page's first pricing
    browser.execute_script("document.getElementById('prices').value = arguments[0];"
                           "document.getElementById('bill').replaceChildren()", PRICES)
    browser.find_element("id", "bill-run").click()
    total = float(wait(browser, "document.getElementById('bill-total-amount')?.dataset.total"))
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    cli = json.loads(server.cli("bill", "--prices", str(prices), "--format", "json").stdout)
    # The same rows priced by the same code: equal unless a request landed in between.
    assert total >= 0.1 and abs(cli["total"] - total) <= 0.01, (total, cli)
    shots(browser, "cost")


# -- over TLS, with a short idle timeout: no browser needed for the cookie's flags ----

@pytest.fixture(scope="module")
def tls_server(tls_files):
    tmp = tempfile.mkdtemp(prefix="basalt-console-tls-")
    srv = start_server(tmp, tls=tls_files, extra=("--console-idle-seconds", "3"))
    yield srv
    stop_server(srv)
    shutil.rmtree(tmp, ignore_errors=True)


def test_over_tls_the_cookie_is_secure_and_idle_sessions_end(tls_server):
    import ssl
    context = ssl.create_default_context(cafile=tls_server.ca_path)

    def call(method, path, cookie=None, csrf=None, body=None):
        headers = {"Content-Type": "application/json"}
        if cookie:
            headers["Cookie"] = f"basalt-console={cookie}"
        if csrf:
            headers["X-Basalt-CSRF"] = csrf
        request = urllib.request.Request(f"{tls_server.endpoint}/_basalt/console/api/{path}",
                                         method=method, headers=headers,
                                         data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as r:
                return r.status, r.headers, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, err.headers, json.loads(err.read() or b"{}")

    status, headers, view = call("POST", "session",
                                 body={"access_key": ACCESS, "secret_key": SECRET})
    assert status == 200
    set_cookie = headers["Set-Cookie"]
    flags = {part.strip().lower() for part in set_cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/_basalt/console/"} <= flags
    cookie = set_cookie.split(";")[0].split("=", 1)[1].strip('"')
    csrf = view["csrf"]
    assert call("GET", "session", cookie)[0] == 200
    time.sleep(3.5)  # idle longer than --console-idle-seconds
    status, _, body = call("POST", "presign", cookie, csrf, {"requests": [{"method": "GET"}]})
    assert status == 401 and body["code"] == "NotSignedIn"


def test_volume_backup_and_restore_from_the_console_with_progress(server, browser, shots):
    from tests.e2e.nbd_e2e_helpers import RawNBD, new_volume
    bucket, vol = f"vb-{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    server.client().create_bucket(Bucket=bucket)
    new_volume(server, vol, 64 << 20)
    data = os.urandom(32 << 20)
    with RawNBD(server.nbd_port, vol) as nbd:
        nbd.pwrite(0, data)
        nbd.flush()
    sign_in(browser, server)
    go(browser, server, "#/volumes")
    wait(browser, "document.querySelector(`tr[data-volume='${arguments[0]}'] button.backup`)", vol)
    # what the page shows every 50 ms: (job, state, percent, a bar drawn)
    browser.execute_script("""
        window.jobSamples = [];
        window.prompt = (message, offered) => { window.offered = offered; return arguments[0]; };
        setInterval(() => { const r = document.querySelector('#jobs tr.job');
          if (r) window.jobSamples.push([r.dataset.job, r.dataset.state, r.dataset.percent,
                                         !!r.querySelector('progress.job-bar')]); }, 50);""",
                           f"s3://{bucket}/{vol}")
    browser.find_element("css selector", f"tr[data-volume='{vol}'] button.backup").click()
    wait(browser, "document.querySelector('#jobs tr.job[data-state=done]')")
    assert browser.execute_script("return window.offered").startswith("s3://")
    samples = browser.execute_script("return window.jobSamples")
    job = samples[0][0]
    mine = [s for s in samples if s[0] == job]
    running = [int(s[2] or 0) for s in mine if s[1] == "running"]
    assert running and all(s[3] for s in mine), mine  # a bar while it ran
    assert running == sorted(running) and running[-1] < 100, mine  # it only went forward
    assert mine[-1][1:3] == ["done", "100"], mine
    assert f"s3://{bucket}/{vol}" in browser.find_element("id", "jobs").text

    copy = f"r{uuid.uuid4().hex[:8]}"
    browser.find_element("id", "restore-from").send_keys(f"s3://{bucket}/{vol}")
    browser.find_element("id", "restore-to").send_keys(copy)
    browser.find_element("id", "restore-start").click()
    wait(browser, "document.querySelector(`tr[data-volume='${arguments[0]}']`)", copy)
    wait(browser, "document.querySelector(`#jobs tr.job[data-state=done]`)"
                  " && document.querySelector('#jobs tr.job').dataset.state === 'done'")
    assert browser.find_element("css selector", "#jobs tr.job").text.startswith("restore")
    browser.execute_script("document.getElementById('restore-form').scrollIntoView()")
    shots(browser, "volume-jobs")
    with RawNBD(server.nbd_port, copy) as nbd:
        assert nbd.pread(0, 32 << 20) == data
