"""The audit log: one JSON line per request in ``DATA_DIR/logs/audit.jsonl``.

Each line is an object with ``time`` (when the request ended, UTC, ISO 8601 with
milliseconds; it started ``duration`` seconds before), ``request_id``, ``account``
(id) and ``account_name``, ``user`` (the user's name, ``root`` for an account's
root), ``access_key`` (the key id that signed it), ``source_ip``, ``method``,
``operation`` (the S3 operation, ``Admin`` for ``/_basalt/`` requests, which also
carry their ``path``), ``bucket``, ``key``, ``version`` (the versionId asked for or
created, where known), ``status``, ``error`` (the S3 error code), ``bytes_in``,
``bytes_out``, ``duration`` and ``user_agent``. An anonymous request has null
``account``, ``user`` and ``access_key``; so has one whose signature failed (the
key id it claims is not logged: it may be a secret pasted in the wrong place).
Headers, query strings and bodies are never written, so secret keys, signatures
(SigV4/SigV2 headers and presigned URLs), Authorization headers and session
cookies never reach the log. Keys longer than S3 allows are cut, with
``key_truncated`` giving the original length, and a line stays below 4 KiB.
``/_basalt/health`` and ``/_basalt/metrics`` (load balancer probes and scrapes,
open to anyone) are not logged.

Every S3 worker process appends to the same file: it is opened with O_APPEND
and lines go out in one ``os.write`` per batch (whole lines, below 64 KiB; a
local filesystem appends each write whole under the inode lock), so processes
never interleave within a line. Lines are buffered in memory and
written from a task of the event loop (the write itself in a thread) at most
100 ms after the request, or sooner when 256 are waiting, and on shutdown:
**a process killed with SIGKILL loses its last ~100 ms of audit lines.**

Rotation by size: when the file reaches ``max_bytes`` (64 MiB), the process that
notices takes ``audit.lock`` (fcntl), renames ``audit.jsonl.N-1`` ... ``.1`` one
up and ``audit.jsonl`` to ``audit.jsonl.1`` (keeping ``keep`` old files) and
opens a new one; the others notice that the path names another inode at their
next write and reopen it. Lines a process wrote into the renamed file just
before it noticed are in ``audit.jsonl.1``, not lost.

``GET /_basalt/v1/audit?bucket=&user=&account=&access_key=&operation=&key=
&since=&until=&limit=`` (admin only) answers the newest ``limit`` matching lines
of this node's current and rotated files, oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from .admin import AdminError, admin_route
from .identity import ROOT_ACCOUNT, ROOT_ACCOUNT_NAME

log = logging.getLogger("basalt.audit")

FILE = "audit.jsonl"
LOCK_FILE = "audit.lock"
MAX_BYTES = 64 << 20
KEEP = 8
FLUSH_INTERVAL = 0.1
FLUSH_LINES = 256
MAX_WRITE = 64 << 10
MAX_KEY_BYTES = 1024            # S3's own limit: only refused requests carry longer keys
MAX_FIELD = 256                 # user agent, version ids, admin paths
MAX_LINE = 4096              # bytes: a line stays below a page
DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
UNLOGGED_PATHS = ("/_basalt/health", "/_basalt/metrics")

_ENTRY = "audit_entry"          # request keys: the pending line, the version a response named
_VERSION = "audit_version"


def _clip(value: Any, limit: int = MAX_FIELD) -> Any:
    return value[:limit] if isinstance(value, str) and len(value) > limit else value


_second = (-1, "")  # the last second formatted (strftime costs more than the rest)


def format_time(seconds: float) -> str:
    """``2025-01-02T03:04:05.678Z``: fixed width, so strings compare as times do."""
    global _second
    whole = int(seconds)
    millis = min(999, int((seconds - whole) * 1000))
    cached = _second  # one tuple: threads may format at once
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{millis:03d}Z"


def parse_time(text: str) -> str:
    """An ISO 8601 date or time (no zone: UTC) in the log's own format; ValueError if bad."""
    parsed = datetime.datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return format_time(parsed.timestamp())


def _claimed_key(request: web.Request) -> str | None:
    """The access key id of a request the admin API accepted (it authenticated it)."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("AWS4-HMAC-SHA256") and "Credential=" in auth:
        return _clip(auth.split("Credential=", 1)[1].split("/", 1)[0].strip(), 128)
    credential = request.query.get("X-Amz-Credential")
    return None if credential is None else _clip(credential.split("/", 1)[0], 128)


class AuditLog:
    """Appends request records to ``DATA_DIR/logs/audit.jsonl`` (shared by processes)."""

    def __init__(self, directory: str, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.directory, self.max_bytes, self.keep = directory, max_bytes, max(1, keep)
        self.path = os.path.join(directory, FILE)
        self._fd: int | None = None
        self._pending: list[dict] = []
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._warned = 0.0

    # --- recording (event loop) -----------------------------------------------------

    def record(self, request: Any, op: str, route: Any, status: int, error: str,
               bytes_in: int, bytes_out: int, elapsed: float) -> None:
        """Queue one request's line (written within FLUSH_INTERVAL)."""
        path = request.path
        if path in UNLOGGED_PATHS:
            return
        principal = request.get("principal")
        account = account_name = user = access_key = None
        if principal is not None:
            account, account_name = principal.account, principal.account_name
            user, access_key = principal.user or "root", principal.access_key or None
        elif op == "Admin" and path.startswith("/_basalt/v1/") and status < 400:
            # The admin API answered, so it verified the signature: the server's root
            # credentials (admin.handle keeps no principal).
            access_key = _claimed_key(request)
            if access_key:
                account, account_name, user = ROOT_ACCOUNT, ROOT_ACCOUNT_NAME, "root"
        version = request.get(_VERSION) or request.query.get("versionId")
        entry = {
            "time": time.time(), "request_id": request.get("request_id"),
            "account": account, "account_name": account_name, "user": user,
            "access_key": access_key, "source_ip": request.remote, "method": request.method,
            "operation": op, "bucket": (route.bucket or None) if route is not None else None,
            "key": request.get("object_key") or (
                (route.key or None) if route is not None else None),
            "version": _clip(version), "status": status, "error": error or None,
            "bytes_in": bytes_in, "bytes_out": bytes_out, "duration": round(elapsed, 6),
            "user_agent": _clip(request.headers.get("User-Agent")),
        }
        if op == "Admin":
            entry["path"] = _clip(path, 512)
        request[_ENTRY] = entry  # a response prepared after this names the version
        self._pending.append(entry)
        self._schedule()

    def _schedule(self) -> None:
        if self._closed:
            self._write(self._take())
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write(self._take())
            return
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._drain())
        elif len(self._pending) >= FLUSH_LINES and self._wake is not None:
            self._wake.set()

    def _take(self) -> list[dict]:
        batch, self._pending = self._pending, []
        return batch

    async def _drain(self) -> None:
        while self._pending:
            if not self._closed and len(self._pending) < FLUSH_LINES:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL)
            self._wake.clear()
            await self._write_queued()

    async def _write_queued(self) -> None:
        # One batch at a time, taken in turn: lines keep their order and one thread
        # at a time holds the file (and rotates it).
        async with self._lock:
            await asyncio.to_thread(self._write, self._take())

    async def flush(self) -> None:
        """Write what is queued now (not waiting for lines queued meanwhile)."""
        if self._pending:
            # Taken now, so a steady stream of new lines cannot grow this batch while
            # it waits for the lock; the lock is first-come, so order is kept.
            await asyncio.shield(self._write_batch(self._take()))

    async def _write_batch(self, batch: list[dict]) -> None:
        async with self._lock:
            await asyncio.to_thread(self._write, batch)

    async def aclose(self) -> None:
        """Write what is queued and close the file (the server is stopping)."""
        self._closed = True
        if self._task is not None and not self._task.done():
            self._wake.set()
            with contextlib.suppress(Exception):
                await self._task
        async with self._lock:
            self._write(self._take())
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- writing (one thread at a time) ---------------------------------------------

    def _write(self, batch: list[dict]) -> None:
        if not batch:
            return
        try:
            chunk: list[bytes] = []
            size = 0
            for entry in batch:
                line = encode(entry)
                if size + len(line) > MAX_WRITE and chunk:
                    self._append(b"".join(chunk))
                    chunk, size = [], 0
                chunk.append(line)
                size += len(line)
            self._append(b"".join(chunk))
        except OSError as exc:
            now = time.monotonic()
            if now - self._warned > 60:  # a full disk must not flood the server log
                self._warned = now
                log.warning("audit log write failed", extra={"fields": {
                    "path": self.path, "error": str(exc), "lines_lost": len(batch)}})

    def _open(self) -> int:
        if self._fd is None:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o600)
        else:
            try:
                same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # another process rotated the file
                os.close(self._fd)
                self._fd = None
                return self._open()
        return self._fd

    def _append(self, data: bytes) -> None:
        fd = self._open()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if os.fstat(fd).st_size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        lock = os.open(os.path.join(self.directory, LOCK_FILE),
                       os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            # Another process may have rotated while we waited for the lock.
            if current is not None and current.st_ino == os.fstat(self._fd).st_ino \
                    and current.st_size >= self.max_bytes:
                for i in range(self.keep - 1, 0, -1):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
                os.replace(self.path, f"{self.path}.1")
            os.close(self._fd)
            self._fd = None
            self._open()
        finally:
            os.close(lock)

    # --- reading --------------------------------------------------------------------

    def files(self) -> list[str]:
        """The log's files, oldest first."""
        rotated = [f"{self.path}.{i}" for i in range(self.keep, 0, -1)]
        return [p for p in [*rotated, self.path] if os.path.exists(p)]

    def search(self, limit: int = DEFAULT_LIMIT, **filters: str | None) -> list[dict]:
        """The newest ``limit`` lines that match ``filters`` (see :class:`Filter`), oldest first."""
        match = Filter(**filters)
        found: list[dict] = []
        seen: set[str] = set()
        for entry in self._entries_backwards(match):
            if match(entry) and entry.get("request_id") not in seen:
                seen.add(entry.get("request_id"))
                found.append(entry)
                if len(found) >= limit:
                    break
        found.reverse()
        found.sort(key=lambda e: str(e.get("time", "")))  # stable: processes' batches interleave
        return found


    def _entries_backwards(self, match: Filter) -> Iterator[dict]:
        """Lines that may match, newest first, until they are older than ``match`` wants."""
        for path in reversed(self.files()):
            try:
                if match.since and format_time(os.stat(path).st_mtime) < match.since:
                    return  # every line of this file (and older ones) ended before `since`
                for raw in _lines_backwards(path):
                    if not match.could(raw):
                        continue
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        continue  # a line being written at this very moment
                    if not isinstance(entry, dict):
                        continue
                    if match.before_window(entry):
                        return
                    yield entry
            except FileNotFoundError:
                continue  # rotated away while we listed


def encode(entry: dict) -> bytes:
    """One line of JSON, below MAX_LINE (a key longer than S3 allows is cut, and so
    is any field when escapes would make the line longer)."""
    entry = dict(entry, time=format_time(entry["time"]))
    key = entry.get("key")
    key_bytes = len(key.encode("utf-8", "surrogatepass")) if key is not None else 0
    if key_bytes > MAX_KEY_BYTES:
        entry["key"] = key.encode("utf-8", "surrogatepass")[:MAX_KEY_BYTES].decode(
            "utf-8", "ignore")
        entry["key_truncated"] = key_bytes
    line = _dump(entry)
    if len(line) > MAX_LINE:  # control characters escape to six bytes each
        for name, size in _SHRINK:
            value = entry.get(name)
            if isinstance(value, str) and len(value) > size:
                entry[name] = value[:size]
        if key is not None and entry["key"] != key:
            entry["key_truncated"] = key_bytes
        line = _dump(entry)
    return line


_SHRINK = (("key", 128), ("user_agent", 64), ("path", 128), ("version", 64))


def _dump(entry: dict) -> bytes:
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "backslashreplace") + b"\n"


def _lines_backwards(path: str, block: int = 1 << 16) -> Iterator[bytes]:
    """The file's lines, last first."""
    with open(path, "rb") as f:
        pos = f.seek(0, os.SEEK_END)
        rest = b""
        while pos > 0:
            n = min(block, pos)
            pos -= n
            f.seek(pos)
            lines = (f.read(n) + rest).split(b"\n")
            rest = lines[0]
            for line in reversed(lines[1:]):
                if line:
                    yield line
        if rest:
            yield rest


# Lines can land out of order by up to a flush between processes; reading backwards
# stops this long before `since`.
SINCE_SLACK = 60.0


class Filter:
    """Which lines a search wants: exact bucket, user, access key and operation
    (any case), account by id or name, key prefix, ``since`` <= time < ``until``."""

    def __init__(self, bucket: str | None = None, user: str | None = None,
                 account: str | None = None, access_key: str | None = None,
                 operation: str | None = None, key: str | None = None,
                 since: str | None = None, until: str | None = None) -> None:
        self.bucket, self.user, self.account = bucket or None, user or None, account or None
        self.access_key, self.key = access_key or None, key or None
        self.operation = operation.lower() if operation else None
        self.since = parse_time(since) if since else None
        self.until = parse_time(until) if until else None
        self.stop_before = None
        if self.since:
            start = datetime.datetime.fromisoformat(self.since.replace("Z", "+00:00"))
            self.stop_before = format_time(start.timestamp() - SINCE_SLACK)
        # Cheap tests on the raw line before parsing it (lines are written compactly).
        self.needles = [f'"{name}":{json.dumps(value, ensure_ascii=False)}'.encode()
                        for name, value in (("bucket", self.bucket), ("user", self.user),
                                            ("access_key", self.access_key)) if value]

    def could(self, raw: bytes) -> bool:
        return all(n in raw for n in self.needles)

    def before_window(self, entry: dict) -> bool:
        return self.stop_before is not None and str(entry.get("time", "")) < self.stop_before

    def __call__(self, entry: dict) -> bool:
        t = str(entry.get("time", ""))
        return ((self.since is None or t >= self.since)
                and (self.until is None or t < self.until)
                and (self.bucket is None or entry.get("bucket") == self.bucket)
                and (self.user is None or entry.get("user") == self.user)
                and (self.access_key is None or entry.get("access_key") == self.access_key)
                and (self.account is None or self.account in (entry.get("account"),
                                                              entry.get("account_name")))
                and (self.operation is None
                     or str(entry.get("operation", "")).lower() == self.operation)
                and (self.key is None or str(entry.get("key") or "").startswith(self.key)))


def open_log(data_dir: str | None) -> AuditLog | None:
    """The audit log of a server's data dir (None: no data dir, nothing logged)."""
    if not data_dir:
        return None
    return AuditLog(os.path.join(data_dir, "logs"))


# --- wiring into the application ----------------------------------------------------------

APP_KEY = web.AppKey("audit_log", AuditLog)


def attach(app: web.Application, audit_log: AuditLog | None) -> None:
    """Serve ``audit_log`` to the admin API, note the versions responses name, and
    write what is queued when the application stops."""
    if audit_log is None:
        return
    app[APP_KEY] = audit_log

    async def note_version(request: web.Request, response: web.StreamResponse) -> None:
        version = response.headers.get("x-amz-version-id")
        if version:
            request[_VERSION] = version
            entry = request.get(_ENTRY)
            if entry is not None:  # recorded before the response went out
                entry["version"] = _clip(version)

    async def close(_: web.Application) -> None:
        await audit_log.aclose()

    app.on_response_prepare.append(note_version)
    app.on_cleanup.append(close)


FILTERS = ("bucket", "user", "account", "access_key", "operation", "key", "since", "until")


@admin_route("GET", "/_basalt/v1/audit")
async def search_api(request: web.Request, store: Any) -> web.Response:
    """The newest ``limit`` matching lines of this node's audit log, oldest first."""
    audit_log = request.app.get(APP_KEY)
    if audit_log is None:
        raise AdminError(503, "ServiceUnavailable", "this server keeps no audit log")
    q = request.query
    try:
        limit = int(q.get("limit", DEFAULT_LIMIT))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise AdminError(400, "InvalidArgument",
                         f"limit must be a whole number from 1 to {MAX_LIMIT}")
    filters = {name: q.get(name) for name in FILTERS}
    for name in ("since", "until"):
        if filters[name]:
            try:
                parse_time(filters[name])
            except ValueError:
                raise AdminError(400, "InvalidArgument",
                                 f"{name} is not an ISO 8601 date or time: "
                                 f"{filters[name]!r}") from None
    await audit_log.flush()  # this process's own recent lines too
    return web.json_response(await asyncio.to_thread(audit_log.search, limit, **filters))
