"""The web console's server side without a browser: presigned URLs the gateway's own
SigV4 check accepts, sealed session cookies, CSRF, sign-out, the idle timeout (on a
moved clock) and the VM console's WebSocket bridge (against a stand-in owner process)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from gateway import console, sigv4
from gateway.console import presign, session
from gateway.identity import Principal
from storaged import NoSuchBucket

# The gateway keeps its request state under string keys, as these stand-ins do.
pytestmark = pytest.mark.filterwarnings("ignore:It is recommended to use web.RequestKey")

ACCESS, SECRET = "AKIACONSOLETEST00001", "console/secret/key/0123456789abcdefghij"


def test_presigned_urls_pass_the_gateways_check():
    url = presign.presign("PUT", presign.object_path("b", "dir/a b+c.txt"),
                          {"partNumber": "2", "uploadId": "u/1"}, "127.0.0.1:9000", ACCESS, SECRET,
                          900, {"x-amz-meta-from": "console"})
    path, _, query = url.partition("?")
    assert path == "/b/dir/a%20b%2Bc.txt"
    headers = {"Host": "127.0.0.1:9000", "x-amz-meta-from": "console"}
    auth = sigv4.verify_request("PUT", path, query, headers, {ACCESS: SECRET}.get)
    assert auth.access_key == ACCESS
    with pytest.raises(Exception, match="signature"):
        sigv4.verify_request("PUT", path, query, {**headers, "x-amz-meta-from": "x"},
                             {ACCESS: SECRET}.get)
    with pytest.raises(Exception, match="signature"):  # another host: another signature
        sigv4.verify_request("PUT", path, query, {**headers, "Host": "evil:9000"},
                             {ACCESS: SECRET}.get)


class Keys:
    def __init__(self, master: bytes) -> None:
        self.master = master

    def derived_key(self, purpose: str) -> bytes:
        from storaged import master_key
        return master_key.derive(self.master, purpose)


def test_cookies_are_sealed_and_bound_to_the_key():
    master = os.urandom(32)
    request = {"keys": Keys(master)}
    s = session.new_session(ACCESS)
    sealed = session.seal(request, s)
    assert ACCESS not in sealed and s.csrf not in sealed
    assert session.unseal({"keys": Keys(master)}, sealed) == s  # any process opens it
    assert session.unseal({"keys": Keys(os.urandom(32))}, sealed) is None
    tampered = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]
    assert session.unseal(request, tampered) is None
    assert session.unseal(request, "not base64!") is None


class Store:
    """Bucket settings in memory, as storaged keeps them."""

    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, bytes]] = {}

    async def make_bucket(self, name: str) -> None:
        self.buckets.setdefault(name, {})

    async def set_bucket_config(self, name: str, kind: str, value: bytes | None) -> None:
        if name not in self.buckets:
            raise NoSuchBucket(name)
        if value is None:
            self.buckets[name].pop(kind, None)
        else:
            self.buckets[name][kind] = value

    async def bucket_configs(self, name: str) -> dict[str, bytes]:
        if name not in self.buckets:
            raise NoSuchBucket(name)
        return dict(self.buckets[name])


class Directory:
    root_secret = SECRET

    async def fresh(self, *_: Any) -> None:
        pass

    async def resolve(self, access_key: str):
        if access_key == ACCESS:
            return SECRET, Principal("000000000000", "root", None, ACCESS, admin=True)
        return None


class Owner:
    def __init__(self, socket_path: str | None) -> None:
        self.socket_path = socket_path


def console_app(store: Store, owner: Owner | None = None) -> web.Application:
    async def dispatch(request: web.Request) -> web.StreamResponse:
        request["directory"], request["keys"] = Directory(), Keys(b"k" * 32)
        return await console.handle(request, store, owner)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


async def sign_in(client) -> tuple[str, str]:
    r = await client.post("/_basalt/console/api/session",
                          json={"access_key": ACCESS, "secret_key": SECRET})
    assert r.status == 200
    return r.cookies["basalt-console"].value, (await r.json())["csrf"]


async def test_csrf_sign_out_and_idle_timeout(aiohttp_client, monkeypatch):
    store = Store()
    client = await aiohttp_client(console_app(store))
    page = await client.get("/_basalt/console/")
    assert page.status == 200 and "Sign in" in await page.text()
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    escape = URL("/_basalt/console/%2e%2e/%2e%2e/etc/passwd", encoded=True)
    assert (await client.get(escape)).status == 404
    bad = await client.post("/_basalt/console/api/session",
                            json={"access_key": ACCESS, "secret_key": "wrong"})
    assert bad.status == 403
    form = await client.post("/_basalt/console/api/session",  # a cross-site form's body
                             data=f"access_key={ACCESS}&secret_key={SECRET}",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status == 415

    cookie, csrf = await sign_in(client)
    assert [k for k in store.buckets[session.SYSTEM_BUCKET]] != []
    ask = {"requests": [{"method": "GET", "bucket": "b"}]}
    assert (await client.post("/_basalt/console/api/presign", json=ask)).status == 403
    r = await client.post("/_basalt/console/api/presign", json=ask,
                          headers={session.CSRF_HEADER: csrf})
    assert r.status == 200 and (await r.json())["urls"][0].startswith("/b?")

    # Use renews the cookie: two stretches of 3/4 of the timeout apart stay signed in.
    now = session.clock()
    idle = session.idle_seconds()
    monkeypatch.setattr(session, "clock", lambda: now + idle * 0.75)
    r = await client.post("/_basalt/console/api/presign", json=ask,
                          headers={session.CSRF_HEADER: csrf})
    assert r.status == 200 and "basalt-console" in r.cookies
    monkeypatch.setattr(session, "clock", lambda: now + idle * 1.5)
    r = await client.post("/_basalt/console/api/presign", json=ask,
                          headers={session.CSRF_HEADER: csrf})
    assert r.status == 200
    # The first cookie, replayed now, is past its idle time.
    client.session.cookie_jar.clear()
    r = await client.post("/_basalt/console/api/presign", json=ask,
                          headers={session.CSRF_HEADER: csrf, "Cookie": f"basalt-console={cookie}"})
    assert r.status == 401
    monkeypatch.setattr(session, "clock", lambda: now)
    cookie, csrf = await sign_in(client)
    monkeypatch.setattr(session, "clock", lambda: now + session.idle_seconds() + 1)
    r = await client.post("/_basalt/console/api/presign", json=ask,
                          headers={session.CSRF_HEADER: csrf})
    assert r.status == 401
    monkeypatch.setattr(session, "clock", lambda: now)

    # Sign-out removes the record: the old cookie, replayed, is refused.
    def records() -> set[str]:
        return {k for k in store.buckets[session.SYSTEM_BUCKET] if k.startswith("session/")}
    before = records()
    r = await client.delete("/_basalt/console/api/session", headers={session.CSRF_HEADER: csrf})
    assert r.status == 200
    assert len(records()) == len(before) - 1
    client.session.cookie_jar.clear()
    r = await client.post("/_basalt/console/api/presign", json=ask,
                          headers={session.CSRF_HEADER: csrf, "Cookie": f"basalt-console={cookie}"})
    assert r.status == 401


async def test_the_vm_console_is_bridged_to_a_websocket(aiohttp_client, tmp_path):
    sock = str(tmp_path / "owner.sock")
    typed: list[bytes] = []
    answered = asyncio.Event()

    async def follow(request: web.Request) -> web.StreamResponse:
        assert request.query["follow"] == "1"
        response = web.StreamResponse()
        await response.prepare(request)
        for chunk in (b"Linux version 6.1\r\n", b"login: \xc3", b"\xa9\r\n"):  # é split in two
            await response.write(chunk)
            await asyncio.sleep(0.01)
        await answered.wait()  # the stream lasts while the VM runs
        await response.write(b"BASALT-ECHO " + b"".join(typed) + b"\r\n")
        await response.write_eof()
        return response

    async def type_in(request: web.Request) -> web.Response:
        data = await request.read()
        if data == b"bad":
            return web.json_response({"code": "ConsoleNotReading",
                                      "message": "the guest did not read"}, status=504)
        typed.append(data)
        if b"\r" in data:
            answered.set()
        return web.Response(status=204)

    owner_app = web.Application()
    owner_app.router.add_get("/_basalt/v1/vms/{name}/console", follow)
    owner_app.router.add_post("/_basalt/v1/vms/{name}/console", type_in)
    runner = web.AppRunner(owner_app)
    await runner.setup()
    await web.UnixSite(runner, sock).start()
    try:
        client = await aiohttp_client(console_app(Store(), Owner(sock)))
        _, csrf = await sign_in(client)
        refused = await client.get("/_basalt/console/api/vms/vm1/console?csrf=wrong")
        assert refused.status == 403
        ws = await client.ws_connect(f"/_basalt/console/api/vms/vm1/console?csrf={csrf}")
        text = ""
        while "login: é" not in text:
            text += (await ws.receive(timeout=5)).data
        await ws.send_str("bad")
        while "input not delivered: the guest did not read" not in text:
            text += (await ws.receive(timeout=5)).data
        for key in ("r", "o", "o", "t", "é", "\r"):  # keystrokes, in order, as UTF-8
            await ws.send_str(key)
        async for message in ws:
            text += message.data
        assert "BASALT-ECHO rooté\r" in text and "stream ended" in text
    finally:
        await runner.cleanup()


def test_every_static_file_ships_in_the_wheel():
    """pyproject's package-data globs cover every file the console serves."""
    import fnmatch
    import pathlib
    import tomllib
    root = pathlib.Path(console.__file__).parent
    with open(root.parent.parent / "pyproject.toml", "rb") as f:
        globs = tomllib.load(f)["tool"]["setuptools"]["package-data"]["gateway.console"]
    files = [p.relative_to(root).as_posix() for p in (root / "static").rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), files
