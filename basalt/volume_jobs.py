"""Volume backups and restores as jobs of the admin API (the console's Volumes page).

``POST /_basalt/v1/volumes/NAME/backup {"to": "s3://B/P", "passphrase"?}`` and
``POST /_basalt/v1/volume-restores {"from": "s3://B/P[@ID]", "to": NEW, "passphrase"?}``
answer ``202 {"id": JOB, ...}``; ``GET /_basalt/v1/jobs[/ID]`` says how each is doing,
``DELETE /_basalt/v1/jobs/ID`` cancels one. Served by the disk-owning process.

A job is a child process running the CLI command itself (``python -m basalt.cli
--json volume backup NAME --to URL``) against this server's own S3 endpoint, with
the root credentials in its environment (never on its command line) and a
passphrase on a pipe (``--passphrase-file /dev/fd/N``): incremental chains,
encryption, the checks and a backup's resume after an interruption are the CLI's,
not a second implementation. The child writes its progress as JSON lines on
another pipe (basalt/progress.py, ``$BASALT_PROGRESS_FD``) and its result, or its
error, as the ``--json`` document on stdout. The target is always this Basalt
(the console backs up into one of its buckets): the CLI's ``--endpoint-url`` is
not offered.

Jobs live in this process's memory: a restart forgets them (and stops their
children). A backup stopped midway is finished by the next backup to the same
place, as with the CLI. A restore the API cannot resume: a failed or cancelled
restore deletes the volume it was making. The last KEEP finished jobs are kept.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
import uuid
from typing import Any

from aiohttp import web

from blockd.errors import VolumeError
from blockd.manager import NAME, internal_image

from . import tls_trust
from .config import ConfigError
from .progress import PROGRESS_FD

log = logging.getLogger("basalt.jobs")

JOBS = "/_basalt/v1/jobs"
BACKUP = "/_basalt/v1/volumes/{name}/backup"
RESTORES = "/_basalt/v1/volume-restores"
KEEP = 50               # finished jobs kept for GET
MAX_RUNNING = 4         # children at once (each a Python process with boto3)
RATE_WINDOW = 5.0       # seconds of progress the rate is measured over
CANCEL_GRACE = 5.0      # seconds between SIGTERM and SIGKILL
MAX_PASSPHRASE = 1024   # bytes (it travels through a pipe, written before the child starts)


class JobError(Exception):
    """A request refused before any job started: an HTTP status, a code, a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclasses.dataclass
class Job:
    id: str
    kind: str       # backup | restore
    volume: str     # the volume backed up, or the new one restored onto
    target: str     # where the backup goes, or the backup restored
    state: str = "running"  # running | done | failed | cancelled
    done_bytes: int = 0
    total_bytes: int | None = None
    text: str = ""  # the CLI's last progress line
    started: float = dataclasses.field(default_factory=time.time)
    ended: float | None = None
    error: str | None = None
    error_code: str | None = None
    result: dict | None = None
    proc: Any = None
    task: asyncio.Task | None = None
    cancelling: bool = False
    samples: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=64))  # (monotonic, done_bytes)

    def rate(self) -> float | None:
        """Bytes per second over the last RATE_WINDOW seconds of progress."""
        if self.state != "running" or len(self.samples) < 2:
            return None
        now, done = self.samples[-1]
        first = next((s for s in self.samples if now - s[0] <= RATE_WINDOW), self.samples[0])
        elapsed = now - first[0]
        return (done - first[1]) / elapsed if elapsed >= 0.5 else None

    def as_dict(self) -> dict:
        rate = self.rate()
        eta = None
        if rate and self.total_bytes is not None:
            eta = round(max(0, self.total_bytes - self.done_bytes) / rate, 1)
        return {"id": self.id, "kind": self.kind, "volume": self.volume, "target": self.target,
                "state": self.state, "done_bytes": self.done_bytes,
                "total_bytes": self.total_bytes, "rate": round(rate, 1) if rate else None,
                "eta_seconds": eta, "text": self.text, "started": self.started,
                "ended": self.ended, "error": self.error, "error_code": self.error_code,
                "result": self.result}


def _s3_url(value: Any, what: str) -> tuple[str, str]:
    """The bucket of an ``s3://BUCKET/PREFIX`` location, and the location."""
    from .backup import Target
    if not isinstance(value, str) or not value:
        raise JobError(400, "InvalidArgument", f"{what} must be an s3://BUCKET/PREFIX location")
    try:
        target = Target.parse(value)
    except ConfigError as exc:
        raise JobError(400, "InvalidArgument", str(exc)) from None
    return target.bucket, value


def _passphrase(body: dict) -> bytes | None:
    phrase = body.get("passphrase")
    if phrase is None:
        return None
    if not isinstance(phrase, str) or not phrase or len(phrase.encode()) > MAX_PASSPHRASE:
        raise JobError(400, "InvalidArgument",
                       f"passphrase must be a string of 1 to {MAX_PASSPHRASE} bytes")
    return phrase.encode()


class VolumeJobs:
    """The jobs of one server: started, watched and cancelled here."""

    def __init__(self, manager: Any, store: Any, creds: Any, endpoints: dict[str, str],
                 tls_cert: str | None = None) -> None:
        self.manager, self.store, self.creds = manager, store, creds
        self.endpoints = endpoints  # ServerInfo.endpoints: "s3" once the workers listen
        self.tls_cert = tls_cert
        self.jobs: dict[str, Job] = {}  # in start order
        self.tasks: set[asyncio.Task] = set()

    def attach(self, app: web.Application) -> None:
        """Mount the routes on the owner's app; its shutdown stops the children."""
        app.add_routes(self.routes())
        app.on_shutdown.append(lambda _app: self.close())

    # --- starting -----------------------------------------------------------------

    def _running(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.state == "running"]

    async def _check_bucket(self, bucket: str) -> None:
        try:
            found = await self.store.bucket_info(bucket)
        except Exception as exc:  # no read quorum, a bad name: the store says why
            raise JobError(503, "ServiceUnavailable", f"bucket {bucket}: {exc}") from None
        if found is None:
            raise JobError(404, "NoSuchBucket", f"bucket {bucket} does not exist")

    def _check_room(self) -> None:
        if len(self._running()) >= MAX_RUNNING:
            raise JobError(429, "TooManyJobs",
                           f"{MAX_RUNNING} jobs are running; wait for one to end")

    async def start_backup(self, volume: str, body: dict) -> Job:
        bucket, url = _s3_url(body.get("to"), "to")
        if "@" in url.partition("://")[2]:
            raise JobError(400, "InvalidArgument", "a backup's target takes no @BACKUP")
        phrase = _passphrase(body)
        record = self.manager.records.get(volume)
        if record is None or record.snapshot or internal_image(volume) is not None:
            raise JobError(404, "NoSuchVolume", f"volume {volume} does not exist")
        if any(j.volume == volume for j in self._running()):
            raise JobError(409, "JobRunning", f"a job is already running on volume {volume}")
        return await self._start("backup", volume, bucket, url,
                                 ["volume", "backup", volume, "--to", url], phrase)

    async def start_restore(self, body: dict) -> Job:
        bucket, url = _s3_url(body.get("from"), "from")
        volume = body.get("to")
        if not isinstance(volume, str) or not NAME.match(volume) \
                or internal_image(volume) is not None:
            raise JobError(400, "InvalidVolumeName",
                           "to must be a new volume's name (letters, digits, . _ -)")
        phrase = _passphrase(body)
        if volume in self.manager.records or any(j.volume == volume for j in self._running()):
            raise JobError(409, "VolumeExists", f"volume {volume} already exists")
        return await self._start("restore", volume, bucket, url,
                                 ["volume", "restore", url, "--to", volume], phrase)

    async def _start(self, kind: str, volume: str, bucket: str, url: str,
                     command: list[str], phrase: bytes | None) -> Job:
        self._check_room()
        await self._check_bucket(bucket)
        job = Job(uuid.uuid4().hex[:12], kind, volume, url)
        await self._spawn(job, command, phrase)
        return job

    def _endpoint(self) -> str:
        url = self.endpoints.get("s3")
        if not url:
            raise JobError(503, "ServiceUnavailable", "the S3 endpoint is not open yet")
        parts = urllib.parse.urlsplit(url)
        loopback = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(parts.hostname or "")
        return f"{parts.scheme}://{loopback}:{parts.port}" if loopback else url

    def _env(self, progress_fd: int, state_dir: str | None) -> dict[str, str]:
        # The target is this Basalt: no AWS endpoint or keys of the server's own
        # environment may redirect the child elsewhere (a CA bundle may stay).
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AWS_") or k == "AWS_CA_BUNDLE"}
        env.update(BASALT_ACCESS_KEY=self.creds.access_key,
                   BASALT_SECRET_KEY=self.creds.secret_key, **{PROGRESS_FD: str(progress_fd)})
        env.pop("BASALT_ENDPOINT", None)
        if self.tls_cert:  # the child trusts this server's own certificate, as it is
            env[tls_trust.PINNED] = self.tls_cert
        if state_dir:  # a restore's resume record: the job's own, gone with the job
            env["XDG_STATE_HOME"] = state_dir
        return env

    async def _spawn(self, job: Job, command: list[str], phrase: bytes | None) -> None:
        endpoint = self._endpoint()
        read_fd, write_fd = os.pipe()
        fds = [write_fd]
        if phrase is not None:  # small: fits the pipe before the child reads it
            phrase_r, phrase_w = os.pipe()
            os.write(phrase_w, phrase)
            os.close(phrase_w)
            fds.append(phrase_r)
            command += ["--passphrase-file", f"/dev/fd/{phrase_r}"]
        state_dir = tempfile.mkdtemp(prefix="basalt-job-") if job.kind == "restore" else None
        try:
            job.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "basalt.cli", "--json", "--endpoint", endpoint, *command,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=fds, env=self._env(write_fd, state_dir))
        except OSError:
            os.close(read_fd)
            if state_dir:
                shutil.rmtree(state_dir, ignore_errors=True)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        self.jobs[job.id] = job
        log.info("job started", extra={"fields": {"job": job.id, "kind": job.kind,
                                                  "volume": job.volume, "target": job.target}})
        job.task = asyncio.ensure_future(self._watch(job, read_fd, state_dir))
        self.tasks.add(job.task)
        job.task.add_done_callback(self.tasks.discard)

    # --- watching -----------------------------------------------------------------

    async def _watch(self, job: Job, read_fd: int, state_dir: str | None) -> None:
        try:
            (stdout, stderr), _ = await asyncio.gather(job.proc.communicate(),
                                                       self._progress(job, read_fd))
            await self._finish(job, job.proc.returncode, stdout, stderr)
        finally:
            if state_dir:
                shutil.rmtree(state_dir, ignore_errors=True)
            self._forget_old()

    async def _progress(self, job: Job, read_fd: int) -> None:
        """Read the child's progress lines until it closes the pipe (exits)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), open(read_fd, "rb", buffering=0))
        try:
            async for raw in reader:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                apply_progress(job, line, time.monotonic())
        finally:
            transport.close()

    async def _finish(self, job: Job, code: int | None, stdout: bytes, stderr: bytes) -> None:
        doc: Any = None
        with contextlib.suppress(ValueError, IndexError):  # the --json document: its last line
            doc = json.loads(stdout.decode(errors="replace").strip().splitlines()[-1])
        if job.cancelling:
            job.state = "cancelled"
        elif code == 0 and isinstance(doc, dict):
            job.state, job.result = "done", doc
            if job.total_bytes is not None:
                job.done_bytes = job.total_bytes
        else:
            job.state = "failed"
            if isinstance(doc, dict) and "error" in doc:
                job.error, job.error_code = doc.get("message") or doc["error"], doc["error"]
            else:  # no JSON: a crash; its last line of stderr says most
                lines = stderr.decode(errors="replace").strip().splitlines()
                job.error = lines[-1] if lines else f"the job's process exited with {code}"
        job.ended = time.time()
        if job.kind == "restore" and job.state != "done":
            await self._drop_partial(job)
        log.info("job ended", extra={"fields": {"job": job.id, "state": job.state,
                                                "error": job.error}})

    async def _drop_partial(self, job: Job) -> None:
        """Delete the volume a failed or cancelled restore was making (the API
        cannot resume it). The name was free when the job started and no other
        job could take it, so a volume there made since is the job's."""
        if (job.error or "").startswith("cannot create volume"):
            return  # the CLI's words when the name was taken after all: not the job's
        for _ in range(5):  # a create the child sent just before it died may be landing
            record = self.manager.records.get(job.volume)
            if record is not None or job.state != "cancelled":
                break
            await asyncio.sleep(0.1)
        if record is None or record.created_ns < int(job.started * 1e9) - 10**9:
            return
        for _ in range(20):  # a batch the child sent may still be ending on the server
            try:
                await self.manager.delete(job.volume)
                return
            except VolumeError as exc:
                if exc.code == "NoSuchVolume":
                    return
                await asyncio.sleep(0.5)
        log.warning("restore job's partial volume left", extra={"fields": {
            "job": job.id, "volume": job.volume}})

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.state != "running"]
        for job in finished[:max(0, len(finished) - KEEP)]:
            del self.jobs[job.id]

    # --- cancelling ---------------------------------------------------------------

    async def cancel(self, job: Job) -> None:
        """Stop a running job's child: SIGTERM, SIGKILL after CANCEL_GRACE seconds."""
        if job.state != "running" or job.proc is None:
            return
        job.cancelling = True
        with contextlib.suppress(ProcessLookupError):
            job.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(job.proc.wait()), CANCEL_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                job.proc.kill()

    async def close(self) -> None:
        """Stop every running job (the server is stopping)."""
        await asyncio.gather(*(self.cancel(j) for j in self._running()))
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=CANCEL_GRACE + 5)

    # --- the routes ---------------------------------------------------------------

    def routes(self) -> web.RouteTableDef:
        r = web.RouteTableDef()

        def handler(fn):
            async def wrapped(request: web.Request) -> web.Response:
                try:
                    return await fn(request)
                except JobError as exc:
                    return web.json_response({"code": exc.code, "message": exc.message},
                                             status=exc.status)
            return wrapped

        async def body_of(request: web.Request) -> dict:
            try:
                body = json.loads(await request.read() or b"{}")
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise JobError(400, "MalformedJSON", "the request body must be a JSON object")
            return body

        def job_of(request: web.Request) -> Job:
            job = self.jobs.get(request.match_info["id"])
            if job is None:
                raise JobError(404, "NoSuchJob", f"no job {request.match_info['id']}")
            return job

        @r.post(BACKUP)
        @handler
        async def backup(request: web.Request) -> web.Response:
            job = await self.start_backup(request.match_info["name"], await body_of(request))
            return web.json_response(job.as_dict(), status=202)

        @r.post(RESTORES)
        @handler
        async def restore(request: web.Request) -> web.Response:
            job = await self.start_restore(await body_of(request))
            return web.json_response(job.as_dict(), status=202)

        @r.get(JOBS)
        @handler
        async def list_jobs(request: web.Request) -> web.Response:
            return web.json_response([j.as_dict() for j in self.jobs.values()])

        @r.get(JOBS + "/{id}")
        @handler
        async def get_job(request: web.Request) -> web.Response:
            return web.json_response(job_of(request).as_dict())

        @r.delete(JOBS + "/{id}")
        @handler
        async def cancel_job(request: web.Request) -> web.Response:
            job = job_of(request)
            if job.state != "running":
                raise JobError(409, "JobNotRunning", f"job {job.id} is {job.state}")
            await self.cancel(job)
            if job.task is not None:  # answer once the job says "cancelled"
                await asyncio.wait([job.task], timeout=CANCEL_GRACE + 10)
            return web.json_response(job.as_dict())

        return r


def apply_progress(job: Job, line: Any, now: float) -> None:
    """One progress line of the child (basalt/progress.py's protocol) into `job`."""
    if not isinstance(line, dict):
        return
    if isinstance(line.get("text"), str):
        job.text = line["text"]
    done, total = line.get("done"), line.get("total")
    if isinstance(done, int) and not isinstance(done, bool):
        job.done_bytes = done
        job.total_bytes = total if isinstance(total, int) and not isinstance(total, bool) \
            else None
        job.samples.append((now, done))
