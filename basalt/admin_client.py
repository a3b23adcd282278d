"""The CLI's client for the admin API (``/_basalt/v1/`` on the S3 port).

Requests are SigV4-signed with the root credentials, exactly like S3 requests;
responses are JSON, or JSON lines for long-running operations (heal) that
report progress as they go.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from gateway import sigv4

from . import tls_trust
from .credentials import Credentials


class AdminError(Exception):
    """The server refused an admin request (or could not be reached).

    ``code`` is the API's error code (``EndpointUnreachable`` when there was no
    answer), ``message`` its text; ``str()`` gives ``CODE: message``.
    ``AdminError(message)`` alone has the code ``AdminError``.
    """

    def __init__(self, code: str, message: str | None = None, status: int = 0) -> None:
        if message is None:
            code, message = "AdminError", code
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


class AdminClient:
    def __init__(self, endpoint: str, creds: Credentials, region: str = "us-east-1") -> None:
        self.endpoint = endpoint.rstrip("/")
        self.creds, self.region = creds, region
        self.context = tls_trust.client_context()

    def _signed(self, method: str, path: str, query: dict[str, str] | None,
                body: bytes) -> urllib.request.Request:
        url = urllib.parse.urlsplit(self.endpoint)
        raw_query = urllib.parse.urlencode(sorted((query or {}).items()),
                                           quote_via=urllib.parse.quote)
        now = datetime.datetime.now(datetime.UTC)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload = hashlib.sha256(body).hexdigest()
        headers = {"host": url.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload}
        names = sorted(headers)
        canonical = "\n".join([method, sigv4.canonical_uri(path), sigv4.canonical_query(raw_query),
                               "".join(f"{n}:{headers[n]}\n" for n in names), ";".join(names),
                               payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        sts = "\n".join([sigv4.ALGORITHM, amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
        key = sigv4.signing_key(self.creds.secret_key, day, self.region)
        headers["Authorization"] = (
            f"{sigv4.ALGORITHM} Credential={self.creds.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={sigv4.sign(key, sts)}")
        del headers["host"]
        target = self.endpoint + path + (f"?{raw_query}" if raw_query else "")
        return urllib.request.Request(target, data=body if method != "GET" else None,
                                      method=method, headers=headers)

    def _open(self, method: str, path: str, query: dict[str, str] | None = None,
              body: Any = None, timeout: float | None = 60):
        data = json.dumps(body).encode() if body is not None else b""
        req = self._signed(method, path, query, data)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            return urllib.request.urlopen(req, timeout=timeout, context=self.context)
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read())
                code, message = str(detail["code"]), str(detail.get("message") or "")
            except (ValueError, KeyError, TypeError):
                code, message = f"HTTP{exc.code}", f"HTTP {exc.code} {exc.reason}"
            raise AdminError(code, message, exc.code) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminError("EndpointUnreachable",
                             f"cannot reach Basalt at {self.endpoint}: {reason}") from None

    def call(self, method: str, path: str, query: dict[str, str] | None = None,
             body: Any = None, timeout: float | None = 60) -> Any:
        with self._open(method, path, query, body, timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def raw(self, path: str, query: dict[str, str] | None = None,
            timeout: float | None = 60) -> tuple[Iterator[bytes], dict[str, str]]:
        """A GET whose body is not JSON: its chunks as they arrive (read them
        all before the next call), and the response headers."""
        resp = self._open("GET", path, query, timeout=timeout)

        def chunks() -> Iterator[bytes]:
            with resp:
                while chunk := resp.read1(65536):
                    yield chunk

        return chunks(), dict(resp.headers)

    def stream(self, method: str, path: str, query: dict[str, str] | None = None,
               body: Any = None) -> Iterator[dict]:
        """JSON lines of a long-running operation, as they arrive."""
        with self._open(method, path, query, body, timeout=None) as resp:
            for line in resp:
                if line.strip():
                    yield json.loads(line)
