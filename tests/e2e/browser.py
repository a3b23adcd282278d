"""A real browser for end-to-end tests: Debian's headless Chromium driven by selenium,
and pages served from another origin than Basalt.

Use the fixtures by importing them into a test module (the test functions' parameters
shadow the imported names, hence the file-wide F811 waiver)::

    # ruff: noqa: F811
    from tests.e2e.browser import chromium, page_server, run_async  # noqa: F401

    def test_fetch(basalt_http, chromium, page_server):
        chromium.get(page_server.add("/app.html", "<html><body>app</body></html>"))
        status = run_async(chromium, "return (await fetch(args[0])).status", url)

- ``chromium`` (per test): a selenium ``WebDriver`` on a fresh profile; quit (and its
  chromedriver and browser processes gone) when the test ends, whatever happened.
  :func:`launch` is the same as a context manager, for other scopes.
- ``page_server`` (per test): a :class:`PageServer` on a free 127.0.0.1 port: another
  origin than Basalt's, serving the pages a test adds and recording every request it
  receives (e.g. a form upload's ``success_action_redirect`` target).
- :func:`run_async` runs an async JavaScript body in the page and returns its value;
  :func:`console` returns what the page logged (CORS refusals are logged there).

Presign with SigV4 (``basalt_http.client(signature_version="s3v4")``) for uploads from
the page: a SigV2 presigned PUT signs the Content-Type, which the browser sets itself.

Chromium and chromedriver come from Debian's ``chromium`` and ``chromium-driver``
packages (scripts/test installs them). When either is missing the test fails, saying
so: a browser test that silently skips proves nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCRIPT_TIMEOUT = 30.0


class BrowserScriptError(AssertionError):
    """A script run by :func:`run_async` threw (or its promise was rejected)."""


def _require_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"browser tests need {' and '.join(missing)}: install Debian's chromium and "
                    "chromium-driver packages (scripts/test does)", pytrace=False)
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("browser tests need selenium: install the test extras "
                    "(pip install -e '.[test]')", pytrace=False)


@contextlib.contextmanager
def launch() -> Iterator[Any]:
    """A headless Chromium webdriver on a throwaway profile, always quit afterwards."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="basalt-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new",
                "--no-sandbox",               # tests run as root, where the sandbox cannot start
                "--disable-dev-shm-usage",    # containers have a tiny /dev/shm
                "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=os.path.join(profile, "driver.log"))
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_script_timeout(SCRIPT_TIMEOUT)
        driver.set_page_load_timeout(SCRIPT_TIMEOUT)
        yield driver
    finally:
        try:
            if driver is not None:
                driver.quit()
        finally:
            # quit() stops chromedriver; make sure of it if the session never started.
            with contextlib.suppress(Exception):
                service.stop()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A headless Chromium (selenium WebDriver) for one test."""
    with launch() as driver:
        yield driver


def run_async(driver: Any, body: str, *args: Any) -> Any:
    """Run ``body`` as the body of an async JavaScript function in the current page, with
    the Python ``args`` as its array ``args``, and return what it returns (JSON values).
    A thrown error becomes :class:`BrowserScriptError` with the browser's message."""
    script = ("const done = arguments[arguments.length - 1];"
              "const args = Array.prototype.slice.call(arguments, 0, -1);"
              f"(async () => {{ {body} }})().then("
              "  value => done({ok: true, value: value === undefined ? null : value}),"
              "  error => done({ok: false, error: String(error && error.stack || error)}));")
    outcome = driver.execute_async_script(script, *args)
    if not outcome["ok"]:
        raise BrowserScriptError(f"{outcome['error']}\nconsole: {console(driver)}")
    return outcome["value"]


def console(driver: Any) -> list[str]:
    """The page's console messages since the last call (CORS refusals appear here)."""
    try:
        return [entry["message"] for entry in driver.get_log("browser")]
    except Exception:  # a driver without the log endpoint: nothing to add
        return []


@dataclasses.dataclass(frozen=True)
class Received:
    """One request the page server answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class PageServer:
    """Static pages on 127.0.0.1 at a free port: an origin of its own.

    ``add(path, body)`` serves a page and returns its URL; ``origin`` is
    ``http://127.0.0.1:PORT``; ``received`` lists the requests it got, in order.
    Unknown paths answer 404. Any method is accepted (and recorded).
    """

    def __init__(self) -> None:
        # An empty favicon keeps a 404 for it out of the console messages.
        self.pages: dict[str, tuple[str, bytes]] = {"/favicon.ico": ("image/x-icon", b"")}
        self.received: list[Received] = []
        pages, received = self.pages, self.received

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                received.append(Received(self.command, self.path, dict(self.headers), body))
                content_type, content = pages.get(path, ("text/plain", b"not found"))
                self.send_response(200 if path in pages else 404)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_OPTIONS = _answer

            def log_message(self, *_: Any) -> None:  # keep test output quiet
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def add(self, path: str, body: str | bytes,
            content_type: str = "text/html; charset=utf-8") -> str:
        """Serve ``body`` at ``path``; the page's full URL."""
        self.pages[path] = (content_type, body.encode() if isinstance(body, str) else body)
        return self.origin + path

    def url(self, path: str) -> str:
        return self.origin + path

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


@pytest.fixture
def page_server() -> Iterator[PageServer]:
    """A :class:`PageServer` (another origin than Basalt) for one test."""
    server = PageServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def s3(basalt_http):
    """boto3 presigning with SigV4: SigV2 presigning signs Content-Type, which a
    browser's upload then fails (SignatureDoesNotMatch)."""
    return basalt_http.client(signature_version="s3v4")
