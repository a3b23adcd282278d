#!/usr/bin/env python3
"""S3 throughput: Basalt beside SeaweedFS, same machine, same run, same client.

Both servers start on 127.0.0.1 (free ports, fresh temp data dirs, killed and
removed at the end). One asyncio/aiohttp client (benchmarks/s3load.py, SigV4
signed by hand) drives both with the same rows:

    64 MiB PUT MB/s, 64 MiB GET MB/s   concurrency 4, --big-count objects
    64 MiB GET x64 MB/s                 64 GETs of them at once (a memory row)
    4 KiB PUT ops/s, 4 KiB GET ops/s   concurrency 16, --seconds each
    aws s3 cp up/down MB/s             a --cp-mib file, aws-cli's defaults (the
                                       client CPU printed is aws-cli's own)
    cp down GETs MB/s                  the same object, read as aws-cli reads it
                                       (8 MiB ranges, 10 at a time), no aws-cli

Each row has a warm-up, every PUT's ETag must equal the body's MD5 and every
GET body is compared byte for byte, so a broken server cannot win. Rows run
server after server (the first server alternates per row) with ``sync`` in
between, so one server's unflushed writes do not slow the other's row.
MB = 10^6 bytes. GETs read objects just written, so both read warm caches.

Every row also records the peak memory of each server while it runs: RSS and
PSS summed over the server's process group (Basalt: the main process and its
workers), sampled every 50 ms. Issue 15 bounds Basalt's RSS during the
``aws s3 cp`` upload (200 MiB) and the 64 concurrent GETs (400 MiB); the
report prints those verdicts under the table.

    .venv/bin/python benchmarks/s3_bench.py                  # both servers
    .venv/bin/python benchmarks/s3_bench.py --only seaweedfs # one side only
    .venv/bin/python benchmarks/s3_bench.py --basalt-args "--no-fsync" --json
    .venv/bin/python benchmarks/s3_bench.py --versioning     # Basalt only, see below

``--policy`` runs the 4 KiB rows on one Basalt server only, in a bucket with a
bucket policy of 20 statements (allows with conditions for the requester,
denies on other prefixes and for other callers: every request evaluates them)
beside one without a policy, and prints policy/no policy (target: under 10%
cost, i.e. >= 0.9x).

``--versioning`` runs the 64 MiB and 4 KiB rows on one Basalt server only,
in a versioned bucket (s3bench-versioned, versioning Enabled) beside an
unversioned one (s3bench), and prints versioned/unversioned per row (target:
within 10%, i.e. >= 0.9x). The two buckets alternate first per row like the
servers do. With ``--repeat`` > 1 the 64 MiB PUT row overwrites its keys: in
the unversioned bucket that replaces the old data, in the versioned one it
adds a version. Each bucket's probe checks that the versioned bucket answers a
PUT with a version id and the unversioned one does not.

``--sse`` runs the 64 MiB rows on one Basalt server only, in a bucket whose
default encryption is SSE-S3 (every object encrypted, as a client sending
``x-amz-server-side-encryption: AES256`` gets) beside an unencrypted one, and
prints encrypted/plain (issue 16's target: >= 0.8x). SSE-S3's ETag is the
plaintext's MD5, so the PUT check holds as for any object.

``--metering`` runs the 4 KiB rows on two Basalt servers: one metering usage
(the default) and one with metering off (``--usage-flush-seconds 0``), and
prints metered/unmetered (issue 17's target: metering costs under 3%, >= 0.97x).

A new row is one async function ``row(target) -> Measurement`` added to ROWS
(a multipart row, e.g. ``aws s3 cp`` of 1 GiB up and down, can run the CLI
against ``target.server.endpoint`` with ``target.server.access_key``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import mmap
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from s3load import S3Client, S3Error, Timing, VerifyError, run_count, run_for  # noqa: E402

MIB = 1 << 20
BIG_SIZE = 64 * MIB
SMALL_SIZE = 4096
BUCKET = "s3bench"
VERSIONED_BUCKET = "s3bench-versioned"
POLICY_BUCKET = "s3bench-policy"
SSE_BUCKET = "s3bench-sse"
ACCESS_KEY = "s3benchaccesskey"
SECRET_KEY = "s3bench-secret-key-0123456789abcdef"
SERVERS = ("basalt", "seaweedfs")


# -- payloads -------------------------------------------------------------

class Payloads:
    """Distinct, deterministic object bodies cut from two pre-built random buffers.

    Object i's body is a window of the buffer shifted by i steps, so bodies
    differ without any per-request allocation, and the expected bytes of a
    GET are simply the same window. MD5s are computed once and cached.
    """

    BIG_VARIANTS = 64
    SMALL_VARIANTS = 1 << 16

    def __init__(self, seed: int = 1):
        rng = random.Random(seed)
        self._big = memoryview(rng.randbytes(BIG_SIZE + self.BIG_VARIANTS * SMALL_SIZE))
        self._small = memoryview(rng.randbytes(SMALL_SIZE + self.SMALL_VARIANTS))
        self._big_md5: dict[int, str] = {}
        self._small_md5: dict[int, str] = {}

    def big(self, i: int) -> memoryview:
        start = (i % self.BIG_VARIANTS) * SMALL_SIZE
        return self._big[start:start + BIG_SIZE]

    def big_md5(self, i: int) -> str:
        variant = i % self.BIG_VARIANTS
        if variant not in self._big_md5:
            self._big_md5[variant] = hashlib.md5(self.big(i)).hexdigest()
        return self._big_md5[variant]

    def small(self, i: int) -> memoryview:
        start = i % self.SMALL_VARIANTS
        return self._small[start:start + SMALL_SIZE]

    def small_md5(self, i: int) -> str:
        variant = i % self.SMALL_VARIANTS
        if variant not in self._small_md5:
            self._small_md5[variant] = hashlib.md5(self.small(i)).hexdigest()
        return self._small_md5[variant]


# -- results ----------------------------------------------------------------

@dataclass
class Measurement:
    """One row on one server. ``value`` is None when the row failed."""

    value: float | None
    ops: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    client_cpu: float = 0.0   # client CPU seconds / wall seconds (1.0 = one core)
    server_cpu: float = 0.0   # server CPU seconds / wall seconds
    peak_rss_mib: float = 0.0  # server's process group, most at once during the row
    peak_pss_mib: float = 0.0
    error: str | None = None

    @classmethod
    def from_timing(cls, timing: Timing, value: float, client_cpu_s: float,
                    server_cpu_s: float) -> Measurement:
        return cls(value=value, ops=timing.ops, seconds=timing.seconds,
                   p50_ms=timing.percentile(0.50) * 1000,
                   p99_ms=timing.percentile(0.99) * 1000,
                   client_cpu=client_cpu_s / timing.seconds,
                   server_cpu=server_cpu_s / timing.seconds)


@dataclass
class Target:
    """One server under test plus what earlier rows left on it."""

    server: peers.Server
    options: argparse.Namespace
    payloads: Payloads
    big_keys: int = 0     # big/0000 .. big/N-1 hold payloads.big(i)
    small_keys: int = 0   # small/00000000 .. small/N-1 hold payloads.small(i)
    bucket: str = BUCKET
    versioned: bool = False  # prepare() enables versioning on the bucket
    policy: bytes | None = None  # prepare() attaches it as the bucket policy
    encrypted: bool = False  # prepare() sets SSE-S3 as the bucket's default encryption
    label: str | None = None  # the results column; the server's name by default

    @property
    def name(self) -> str:
        return self.label or self.server.name

    def client(self, concurrency: int) -> S3Client:
        return S3Client(self.server.endpoint, self.server.access_key,
                        self.server.secret_key, concurrency=concurrency)


class MemoryPeak:
    """The most RSS and PSS a server's processes held at once, sampled in a thread."""

    def __init__(self, server: peers.Server, interval: float = 0.05) -> None:
        self.server, self.interval = server, interval
        self.rss = self.pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            rss, pss = peers.group_memory(self.server)
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def record(self, m: Measurement) -> Measurement:
        m.peak_rss_mib, m.peak_pss_mib = self.rss / MIB, self.pss / MIB
        return m


async def measured(target: Target, phase: Awaitable[Timing],
                   value: Callable[[Timing], float]) -> Measurement:
    """Await a timed phase, charging the client's and server's CPU and memory to it
    (the client's: this process and any child that ended meanwhile, e.g. aws-cli;
    the servers run on)."""
    client_cpu, server_cpu = _client_cpu(), peers.group_cpu_seconds(target.server)
    with MemoryPeak(target.server) as memory:
        timing = await phase
    client_cpu = _client_cpu() - client_cpu
    server_cpu = peers.group_cpu_seconds(target.server) - server_cpu
    return memory.record(Measurement.from_timing(timing, value(timing), client_cpu, server_cpu))


def _client_cpu() -> float:
    return time.process_time() + peers.children_cpu()


def big_key(i: int) -> str:
    return f"big/{i:04d}"


def small_key(i: int) -> str:
    return f"small/{i:08d}"


# -- rows ---------------------------------------------------------------------

async def put_big(target: Target) -> Measurement:
    """64 MiB PUT MB/s: --big-count distinct objects from --big-concurrency workers."""
    opts, data = target.options, target.payloads
    count, conc = opts.big_count, opts.big_concurrency
    for i in range(count):
        data.big_md5(i)  # hash outside the timed phase
    async with target.client(conc) as client:
        async def put(i: int, prefix: str = "big") -> None:
            key = big_key(i) if prefix == "big" else f"{prefix}/{i:04d}"
            await client.put_object(target.bucket, key, data.big(i), data.big_md5(i))

        await run_count(conc, conc, lambda i: put(i, "warm-big"))
        result = await measured(target, run_count(count, conc, put),
                                lambda t: t.ops * BIG_SIZE / t.seconds / 1e6)
    target.big_keys = count
    return result


async def get_big(target: Target) -> Measurement:
    """64 MiB GET MB/s: read the --big-count objects back, every byte compared."""
    opts, data = target.options, target.payloads
    count, conc = opts.big_count, opts.big_concurrency
    async with target.client(conc) as client:
        if target.big_keys < count:  # the PUT row failed or did not run
            await run_count(count, conc, lambda i: client.put_object(
                target.bucket, big_key(i), data.big(i), data.big_md5(i)))
            target.big_keys = count

        async def get(i: int) -> None:
            await client.get_object(target.bucket, big_key(i % count), data.big(i % count))

        await run_count(conc, conc, get)
        return await measured(target, run_count(count, conc, get),
                              lambda t: t.ops * BIG_SIZE / t.seconds / 1e6)


async def get_big_many(target: Target) -> Measurement:
    """64 MiB GET x64 MB/s: 64 GETs of the --big-count objects all at once (how much
    memory a server needs for them is the point; every byte is still compared)."""
    opts, data = target.options, target.payloads
    count, conc = opts.big_count, 64
    async with target.client(conc) as client:
        if target.big_keys < count:
            await run_count(count, opts.big_concurrency, lambda i: client.put_object(
                target.bucket, big_key(i), data.big(i), data.big_md5(i)))
            target.big_keys = count

        async def get(i: int) -> None:
            await client.get_object(target.bucket, big_key(i % count), data.big(i % count))

        return await measured(target, run_count(conc, conc, get),
                              lambda t: t.ops * BIG_SIZE / t.seconds / 1e6)


async def put_small(target: Target) -> Measurement:
    """4 KiB PUT ops/s: new keys for --seconds from --small-concurrency workers."""
    opts, data = target.options, target.payloads
    async with target.client(opts.small_concurrency) as client:
        async def put(i: int) -> None:
            await client.put_object(target.bucket, small_key(i), data.small(i), data.small_md5(i))

        warm = await run_for(opts.warmup, opts.small_concurrency, put)
        base = warm.ops
        result = await measured(
            target, run_for(opts.seconds, opts.small_concurrency, lambda i: put(base + i)),
            lambda t: t.ops / t.seconds)
    target.small_keys = base + result.ops
    return result


async def get_small(target: Target) -> Measurement:
    """4 KiB GET ops/s: random reads over the first --small-get-keys objects."""
    opts, data = target.options, target.payloads
    keys = opts.small_get_keys
    async with target.client(opts.small_concurrency) as client:
        if target.small_keys < keys:  # top up so both servers read the same set
            start = target.small_keys
            await run_count(keys - start, opts.small_concurrency, lambda i: client.put_object(
                target.bucket, small_key(start + i), data.small(start + i), data.small_md5(start + i)))
            target.small_keys = keys
        rng = random.Random(7)

        async def get(_: int) -> None:
            i = rng.randrange(keys)
            await client.get_object(target.bucket, small_key(i), data.small(i))

        await run_for(opts.warmup, opts.small_concurrency, get)
        return await measured(target, run_for(opts.seconds, opts.small_concurrency, get),
                              lambda t: t.ops / t.seconds)


CP_PART = 8 << 20  # aws-cli's default multipart_chunksize: its parts' and ranged GETs' size
CP_CONCURRENCY = 10  # and its default max_concurrent_requests


def aws_cp(target: Target, src: str, dst: str) -> None:
    server = target.server
    env = dict(os.environ, AWS_ACCESS_KEY_ID=server.access_key,
               AWS_SECRET_ACCESS_KEY=server.secret_key, AWS_DEFAULT_REGION="us-east-1")
    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    subprocess.run([aws, "--endpoint-url", server.endpoint, "s3", "cp", "--only-show-errors",
                    src, dst], env=env, check=True, capture_output=True, timeout=1800)


def cp_file(target: Target) -> str:
    """A --cp-mib random file (made once per run, shared by both servers)."""
    path = getattr(target.options, "cp_path", None)
    if path is None:
        path = os.path.join(target.options.dir or tempfile.gettempdir(),
                            f"s3bench-cp-{os.getpid()}.bin")
        block = os.urandom(16 << 20)
        with open(path, "wb") as f:
            for i in range(target.options.cp_mib // 16):
                f.write(i.to_bytes(8, "little") + block[8:])
            f.flush()
            os.fsync(f.fileno())  # not written back during the first server's timed upload
        target.options.cp_path = path
    return path


async def _timed_cp(target: Target, src: str, dst: str, requests: int) -> Measurement:
    """One timed ``aws s3 cp`` of the --cp-mib file, counted as the ``requests``
    S3 requests it makes besides its parts; its client CPU is aws-cli's (see
    :func:`measured`), so the report can flag the row as client-bound."""
    size = os.path.getsize(cp_file(target))

    async def phase() -> Timing:
        started = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(None, aws_cp, target, src, dst)
        return Timing(ops=-(-size // CP_PART) + requests, seconds=time.perf_counter() - started)
    return await measured(target, phase(), lambda timing: size / timing.seconds / 1e6)


async def cp_up(target: Target) -> Measurement:
    """`aws s3 cp` of a --cp-mib file up (aws-cli's default multipart settings)."""
    return await _timed_cp(target, cp_file(target), f"s3://{target.bucket}/cp.bin",
                           requests=2)  # create and complete the upload


async def cp_down(target: Target) -> Measurement:
    """`aws s3 cp` of it back down, compared byte for byte.

    An untimed download comes first and its file is removed: aws-cli's writes
    are most of this row's cost, and on this VM a write into never-used (host-
    reclaimed) pages costs far more than one into pages just freed. Without it
    whichever server ran first after the upload rows paid that (first in the row:
    243-328 MB/s, second: 516-576, for either server)."""
    src = cp_file(target)
    back = src + ".back"
    source = f"s3://{target.bucket}/cp.bin"
    try:
        await asyncio.get_running_loop().run_in_executor(None, aws_cp, target, source, back)
        os.unlink(back)
        result = await _timed_cp(target, source, back, requests=1)  # its HEAD
        with open(src, "rb") as a, open(back, "rb") as b:
            while chunk := a.read(16 << 20):
                if chunk != b.read(len(chunk)):
                    raise VerifyError(f"{target.server.name}: aws s3 cp returned other bytes")
        return result
    finally:
        if os.path.exists(back):
            os.unlink(back)


async def cp_down_gets(target: Target) -> Measurement:
    """cp down's requests without aws-cli: the --cp-mib object read as aws-cli
    reads it (ranged GETs of 8 MiB, 10 at a time) by this script's client, every
    byte compared, nothing written to a file. aws-cli itself is at ~1 core on
    the cp down row for either server; this row shows what the servers deliver."""
    path = cp_file(target)
    size = os.path.getsize(path)
    async with target.client(CP_CONCURRENCY) as client:
        status, _, _ = await client.request("HEAD", target.bucket, "cp.bin", expect=(200, 404))
        if status == 404:  # the cp up row did not run
            await asyncio.get_running_loop().run_in_executor(
                None, aws_cp, target, path, f"s3://{target.bucket}/cp.bin")
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
            data = memoryview(mapped)

            async def get(i: int) -> None:
                first = i * CP_PART
                last = min(size, first + CP_PART) - 1
                await client.get_object(target.bucket, "cp.bin", data[first:last + 1],
                                        first, last)

            try:
                return await measured(target, run_count(-(-size // CP_PART), CP_CONCURRENCY, get),
                                      lambda t: size / t.seconds / 1e6)
            finally:
                data.release()


@dataclass
class Row:
    """A benchmark row: what it measures, the Basalt/SeaweedFS target ratio, and
    the most RSS Basalt may hold while it runs (None: no memory target)."""

    name: str
    unit: str
    run: Callable[[Target], Awaitable[Measurement]]
    target_ratio: float | None  # None: no throughput target (a memory row, or a diagnosis)
    max_rss_mib: float | None = None


ROWS = [
    Row("64 MiB PUT", "MB/s", put_big, 3.0),
    Row("64 MiB GET", "MB/s", get_big, 1.5),
    Row("64 MiB GET x64", "MB/s", get_big_many, None, max_rss_mib=400),
    Row("4 KiB PUT", "ops/s", put_small, 1.5),
    Row("4 KiB GET", "ops/s", get_small, 2.0),
    Row("aws s3 cp up", "MB/s", cp_up, 1.5, max_rss_mib=200),
    Row("aws s3 cp down", "MB/s", cp_down, 1.5),
    Row("cp down GETs", "MB/s", cp_down_gets, None),
]

# --versioning: the same rows, versioned bucket / unversioned bucket on one Basalt.
VERSIONING_ROWS = [Row(row.name, row.unit, row.run, 0.9) for row in ROWS
                   if row.name in ("64 MiB PUT", "64 MiB GET", "4 KiB PUT", "4 KiB GET")]
VERSIONING_COLUMNS = ("versioned", "unversioned")
# --policy: the 4 KiB rows, bucket with a 20-statement policy / bucket without one.
POLICY_ROWS = [Row(row.name, row.unit, row.run, 0.9) for row in ROWS
               if row.name in ("4 KiB PUT", "4 KiB GET")]
POLICY_COLUMNS = ("policy", "no policy")
# --sse: the 64 MiB rows, bucket encrypting by default (SSE-S3) / unencrypted bucket.
SSE_ROWS = [Row(row.name, row.unit, row.run, 0.8) for row in ROWS
            if row.name in ("64 MiB PUT", "64 MiB GET")]
SSE_COLUMNS = ("SSE-S3", "plain")
# --metering: the 4 KiB rows, Basalt metering usage / Basalt with metering off.
METERING_ROWS = [Row(row.name, row.unit, row.run, 0.97) for row in ROWS
                 if row.name in ("4 KiB PUT", "4 KiB GET")]
METERING_COLUMNS = ("metered", "unmetered")


def set_default_sse(target: Target) -> None:
    """SSE-S3 as the bucket's default encryption (with boto3: s3load signs no
    Content-MD5, which PutBucketEncryption requires)."""
    import boto3
    server = target.server
    boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                 aws_secret_access_key=server.secret_key, region_name="us-east-1"
                 ).put_bucket_encryption(Bucket=target.bucket, ServerSideEncryptionConfiguration={
                     "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})


def policy_document(bucket: str) -> bytes:
    """20 statements a real bucket might carry; each request checks every Deny that
    names its action and the Allows until one applies (the last one does)."""
    objects, root = f"arn:aws:s3:::{bucket}/*", "arn:aws:iam::000000000000:root"
    statements: list[dict] = []
    for i in range(8):  # denials of other prefixes, to everyone
        statements.append({"Sid": f"DenyPrivate{i}", "Effect": "Deny", "Principal": "*",
                           "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                           "Resource": f"arn:aws:s3:::{bucket}/private-{i}/*"})
    for i in range(4):  # denials by condition that do not hold for this client
        statements.append({"Sid": f"DenyOutside{i}", "Effect": "Deny", "Principal": "*",
                           "Action": "s3:*", "Resource": [objects, f"arn:aws:s3:::{bucket}"],
                           "Condition": {"NotIpAddress": {"aws:SourceIp": [
                               "127.0.0.0/8", "10.0.0.0/8", f"192.168.{i}.0/24"]}}})
    for i in range(7):  # grants to others and with unmet conditions
        statements.append({"Sid": f"ReadShared{i}", "Effect": "Allow", "Principal": "*",
                           "Action": ["s3:GetObject", "s3:PutObject"],
                           "Resource": f"arn:aws:s3:::{bucket}/shared-{i}/*",
                           "Condition": {"StringLike": {"aws:UserAgent": f"partner-{i}/*"},
                                         "Bool": {"aws:SecureTransport": "true"}}})
    statements.append({"Sid": "OwnerReadWrite", "Effect": "Allow", "Principal": {"AWS": root},
                       "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
                       "Resource": [objects, f"arn:aws:s3:::{bucket}"],
                       "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}})
    assert len(statements) == 20
    return json.dumps({"Version": "2012-10-17", "Statement": statements}).encode()


VERSIONING_XML = (b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                  b"<Status>Enabled</Status></VersioningConfiguration>")

ROW_ERRORS = (S3Error, VerifyError, aiohttp.ClientError, asyncio.TimeoutError, OSError,
              subprocess.CalledProcessError, subprocess.TimeoutExpired)


# -- running ----------------------------------------------------------------

async def prepare(target: Target, timeout: float) -> None:
    """Create the bucket and prove the server stores, serves and authenticates:
    retry a PUT/GET/DELETE probe until it works (a fresh SeaweedFS may not have
    a writable volume yet), then check a wrong secret gets 403."""
    deadline = time.monotonic() + timeout
    probe = b"s3bench probe"
    bucket = target.bucket
    async with target.client(2) as client:
        while True:
            try:
                await client.create_bucket(bucket)
                await client.put_object(bucket, "probe", probe, hashlib.md5(probe).hexdigest())
                await client.get_object(bucket, "probe", probe)
                await client.delete_object(bucket, "probe")
                break
            except ROW_ERRORS as err:
                if time.monotonic() > deadline:
                    raise peers.ServerError(f"{target.server.name}: not writable: {err}") from err
                await asyncio.sleep(0.5)
        if target.versioned:
            await client.request("PUT", bucket, query={"versioning": ""}, data=VERSIONING_XML,
                                 headers={"Content-Type": "application/xml"})
        if target.policy is not None:
            await client.request("PUT", bucket, query={"policy": ""}, data=target.policy,
                                 headers={"Content-Type": "application/json"}, expect=(204,))
        if target.encrypted:
            await asyncio.to_thread(set_default_sse, target)  # needs Content-MD5 signed
            _, headers, _ = await client.request("PUT", bucket, "probe-sse", data=probe,
                                                 headers={"Content-Length": str(len(probe))})
            if headers.get("x-amz-server-side-encryption") != "AES256":
                raise peers.ServerError(f"{bucket}: a PUT was not encrypted")
        if target.versioned or target.options.versioning:
            await check_versioning(client, target)
    server = target.server
    async with S3Client(server.endpoint, server.access_key, "wrong-secret",
                        concurrency=1) as bad:
        try:
            await bad.get_object(bucket, "probe")
        except S3Error as err:
            if err.status == 403:
                return
            raise peers.ServerError(f"{server.name}: wrong secret got HTTP {err.status}, not 403") from err
    raise peers.ServerError(f"{server.name}: accepted a request signed with a wrong secret")


async def check_versioning(client: S3Client, target: Target) -> None:
    """Two PUTs of one key: a versioned bucket answers each with its own version id
    and keeps both; an unversioned one answers none (or "null")."""
    ids = []
    for body in (b"version one", b"version two"):
        _, headers, _ = await client.request("PUT", target.bucket, "probe-versions", data=body,
                                             headers={"Content-Length": str(len(body))})
        ids.append(headers.get("x-amz-version-id", "null"))
    _, _, listing = await client.request("GET", target.bucket,
                                         query={"versions": "", "prefix": "probe-versions"})
    kept = listing.count(b"<Version>")
    if target.versioned and (len(set(ids)) != 2 or "null" in ids or kept != 2):
        raise peers.ServerError(f"{target.bucket}: not versioning (version ids {ids}, {kept} kept)")
    if not target.versioned and (ids != ["null", "null"] or kept != 1):
        raise peers.ServerError(f"{target.bucket}: versioning (version ids {ids}, {kept} kept)")


def flush_page_cache() -> None:
    """Write dirty pages back now, so a row does not pay for the previous one."""
    os.sync()


async def run_rows(targets: list[Target], rounds: int,
                   rows: list[Row] = ROWS) -> dict[str, dict[str, list]]:
    """Every row on every target, ``rounds`` times; the first server of a row
    alternates. Returns {row name: {target name: [Measurement, ...]}}."""
    results: dict[str, dict[str, list]] = {row.name: {} for row in rows}
    for round_no in range(rounds):
        for i, row in enumerate(rows):
            # Alternates per row and per round: with an even number of rows a
            # single counter would put the same server first in every round.
            order = targets if (round_no + i) % 2 == 0 else targets[::-1]
            for target in order:
                flush_page_cache()
                name = target.name
                log(f"[{round_no + 1}/{rounds}] {row.name} on {name} ...")
                try:
                    measurement = await row.run(target)
                except ROW_ERRORS as err:
                    measurement = Measurement(value=None, error=f"{type(err).__name__}: {err}")
                log(f"    {format_value(measurement)} {row.unit}"
                    + (f"  (client CPU {measurement.client_cpu:.0%})" if measurement.value else ""))
                results[row.name].setdefault(name, []).append(measurement)
    flush_page_cache()
    return results


async def bench(servers: list[peers.Server], options: argparse.Namespace) -> dict:
    """Prepare every server, then run the rows."""
    payloads = Payloads()
    if options.policy:  # one Basalt, two buckets
        [server] = servers
        targets = [Target(server, options, payloads, bucket=POLICY_BUCKET,
                          policy=policy_document(POLICY_BUCKET), label="policy"),
                   Target(server, options, payloads, label="no policy")]
        rows = POLICY_ROWS
    elif options.sse:  # one Basalt, two buckets
        [server] = servers
        targets = [Target(server, options, payloads, bucket=SSE_BUCKET, encrypted=True,
                          label="SSE-S3"),
                   Target(server, options, payloads, label="plain")]
        rows = SSE_ROWS
    elif options.metering:  # two Basalts: metering on and off
        targets = [Target(servers[0], options, payloads, label="metered"),
                   Target(servers[1], options, payloads, label="unmetered")]
        rows = METERING_ROWS
    elif options.versioning:  # one Basalt, two buckets
        [server] = servers
        targets = [Target(server, options, payloads, bucket=VERSIONED_BUCKET, versioned=True,
                          label="versioned"),
                   Target(server, options, payloads, label="unversioned")]
        rows = VERSIONING_ROWS
    else:
        targets = [Target(server, options, payloads) for server in servers]
        rows = ROWS
    rows = chosen(rows, options)
    for target in targets:
        await prepare(target, options.timeout)
    return await run_rows(targets, options.repeat, rows)


def start_servers(options: argparse.Namespace, stack: contextlib.ExitStack) -> list[peers.Server]:
    """Start the selected servers; each is stopped and cleaned when ``stack`` closes."""
    servers = []
    common = dict(timeout=options.timeout, base_dir=options.dir, keep=options.keep)
    if options.metering:
        for label, extra in (("metered", ""), ("unmetered", " --usage-flush-seconds 0")):
            log(f"starting basalt ({label}) ...")
            servers.append(stack.enter_context(peers.basalt_server(
                ACCESS_KEY, SECRET_KEY, extra_args=options.basalt_args + extra, **common)))
        return servers
    for name in SERVERS:
        if options.only and options.only != name:
            continue
        if (options.versioning or options.policy or options.sse) and name != "basalt":
            continue
        log(f"starting {name} ...")
        if name == "basalt":
            server = stack.enter_context(peers.basalt_server(
                ACCESS_KEY, SECRET_KEY, extra_args=options.basalt_args, **common))
        else:
            server = stack.enter_context(peers.seaweedfs_server(ACCESS_KEY, SECRET_KEY, **common))
        log(f"  {server.version} at {server.endpoint}")
        servers.append(server)
    return servers


def run_async(coroutine):
    """Run on uvloop when it is installed (a faster client), else asyncio."""
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)


# -- reporting ----------------------------------------------------------------

def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median_measurement(measurements: list[Measurement]) -> Measurement:
    """The measurement with the median value, the lower middle one for an even
    count (a failure if any round failed)."""
    failed = [m for m in measurements if m.value is None]
    if failed:
        return failed[0]
    ordered = sorted(measurements, key=lambda m: m.value)
    return ordered[(len(ordered) - 1) // 2]


def format_value(m: Measurement | None) -> str:
    if m is None:
        return "-"
    return "FAILED" if m.value is None else f"{m.value:,.0f}"


def summarize(results: dict, servers: list[peers.Server], options) -> dict:
    """Machine-readable results: per row the median per column (server, or bucket
    with --versioning) and the ratio of the first column to the second."""
    rows = []
    table_rows, columns = ((VERSIONING_ROWS, VERSIONING_COLUMNS) if options.versioning
                           else (POLICY_ROWS, POLICY_COLUMNS) if options.policy
                           else (SSE_ROWS, SSE_COLUMNS) if options.sse
                           else (METERING_ROWS, METERING_COLUMNS) if options.metering
                           else (ROWS, SERVERS))
    for row in table_rows:
        if row.name not in results:  # left out by --rows
            continue
        per_server = {name: median_measurement(ms) for name, ms in results[row.name].items()}
        first, second = per_server.get(columns[0]), per_server.get(columns[1])
        ratio = None
        if first and second and first.value and second.value:
            ratio = first.value / second.value
        rows.append({
            "row": row.name, "unit": row.unit, "target_ratio": row.target_ratio,
            "ratio": ratio, "max_rss_mib": row.max_rss_mib,
            "servers": {name: asdict(m) for name, m in per_server.items()},
            "rounds": {name: [m.value for m in ms] for name, ms in results[row.name].items()},
        })
    return {
        "mode": ("versioning" if options.versioning else "policy" if options.policy
                 else "sse" if options.sse else "metering" if options.metering
                 else "peers"),
        "columns": list(columns),
        "rows": rows,
        "servers": {s.name: {"version": s.version, "durability": s.durability,
                             "command": s.command} for s in servers},
        "settings": {"seconds": options.seconds, "warmup": options.warmup,
                     "big_count": options.big_count, "big_concurrency": options.big_concurrency,
                     "small_concurrency": options.small_concurrency,
                     "small_get_keys": options.small_get_keys, "repeat": options.repeat},
        "machine": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
    }


def print_table(summary: dict) -> None:
    """The human report: row | basalt | seaweedfs | ratio | target (with --versioning:
    row | versioned | unversioned | ratio | target)."""
    columns = summary["columns"]
    ratio_name = f"{columns[0]}/{columns[1]}"
    widths = (max(10, len(columns[0]) + 1), max(11, len(columns[1]) + 1),
              max(18, len(ratio_name) + 2))
    name_width = max(10, *(len(c) for c in columns))
    header = (f"{'row':<18}{columns[0]:>{widths[0]}}{columns[1]:>{widths[1]}}"
              f"{ratio_name:>{widths[2]}}  target")
    print(header)
    print("-" * len(header))
    for row in summary["rows"]:
        values = [row["servers"].get(name) for name in columns]
        cells = [format_value(Measurement(**v) if v else None) for v in values]
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "n/a"
        target = row["target_ratio"]
        verdict = (f">= {target:g}x" if target is not None
                   else "(memory row)" if row.get("max_rss_mib") else "(no target)")
        if row["ratio"] is not None and target is not None:
            verdict += " met" if row["ratio"] >= target else " MISSED"
        print(f"{row['row'] + ' ' + row['unit']:<18}{cells[0]:>{widths[0]}}{cells[1]:>{widths[1]}}"
              f"{ratio:>{widths[2]}}  {verdict}")
    print()
    print("p50 / p99 latency ms, CPU per wall second (client | server):")
    for row in summary["rows"]:
        for name in (n for n in columns if n in row["servers"]):
            m = row["servers"][name]
            if m["value"] is None:
                print(f"  {row['row']:<11} {name:<{name_width}} FAILED: {m['error']}")
                continue
            bound = "  <- client-bound?" if m["client_cpu"] > 0.9 else ""
            print(f"  {row['row']:<11} {name:<{name_width}} {m['p50_ms']:7.1f} / {m['p99_ms']:7.1f}"
                  f"   cpu {m['client_cpu']:.2f} | {m['server_cpu']:.2f}{bound}")
    print()
    print("peak server memory per row, MiB, all its processes (RSS | PSS):")
    for row in summary["rows"]:
        cells = []
        for name in (n for n in columns if n in row["servers"]):
            m = row["servers"][name]
            cells.append(f"{name} {m['peak_rss_mib']:4.0f} | {m['peak_pss_mib']:4.0f}")
        bound = row.get("max_rss_mib")
        verdict = ""
        basalt = row["servers"].get("basalt")
        if bound and basalt and basalt["value"] is not None:
            verdict = (f"   target basalt RSS < {bound:g}: "
                       + ("met" if basalt["peak_rss_mib"] < bound else "MISSED"))
        print(f"  {row['row']:<15} " + "   ".join(cells) + verdict)
    print()
    for name, info in summary["servers"].items():
        print(f"{name}: {info['version']}; durability: {info['durability']}")
    machine = summary["machine"]
    if summary["mode"] == "versioning":
        print(f"buckets: {VERSIONED_BUCKET} (versioning Enabled) and {BUCKET} (never versioned), "
              "same server")
    if summary["mode"] == "policy":
        print(f"buckets: {POLICY_BUCKET} (a bucket policy of 20 statements) and {BUCKET} "
              "(no policy), same server, root credentials")
    if summary["mode"] == "sse":
        print(f"buckets: {SSE_BUCKET} (default encryption SSE-S3: 64 KiB AES-256-GCM packages) "
              f"and {BUCKET} (unencrypted), same server")
    print(f"machine: {machine['cpus']} CPUs, load average at end "
          f"{', '.join(f'{x:.2f}' for x in machine['loadavg_at_end'])}; "
          f"every PUT ETag checked against MD5, every GET compared byte for byte")


def chosen(rows: list[Row], options: argparse.Namespace) -> list[Row]:
    """The rows --rows selects (every row without it)."""
    if not options.rows:
        return rows
    return [row for row in rows if any(word in row.name for word in options.rows)]


def add_row_options(parser: argparse.ArgumentParser) -> None:
    """The options of the 64 MiB, 4 KiB and cp rows (shared with cluster_bench.py)."""
    parser.add_argument("--rows", type=lambda v: [w.strip() for w in v.split(",") if w.strip()],
                        help='only the rows whose name contains one of these words, '
                             'e.g. "4 KiB" or "64 MiB,cp"')
    parser.add_argument("--cp-mib", type=int, default=1024,
                        help="size of the file aws s3 cp moves up and down (default 1024)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of each timed 4 KiB row (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of warm-up before each 4 KiB row (default 2)")
    parser.add_argument("--big-count", type=int, default=16,
                        help="64 MiB objects per big row (default 16)")
    parser.add_argument("--big-concurrency", type=int, default=4)
    parser.add_argument("--small-concurrency", type=int, default=16)
    parser.add_argument("--small-get-keys", type=int, default=2000,
                        help="4 KiB objects the GET row reads at random (default 2000)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=SERVERS, help="run one server only (no ratios)")
    add_row_options(parser)
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of all rows; the median is reported (default 1)")
    parser.add_argument("--basalt-args", default="",
                        help='extra arguments for "basalt serve", e.g. "--no-fsync"')
    parser.add_argument("--dir", help="parent of the servers' temp data dirs (default $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for a server to become ready (default 60)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--versioning", action="store_true",
                        help="Basalt only: the 64 MiB and 4 KiB rows in a versioned bucket beside "
                             "an unversioned one, ratio versioned/unversioned (target >= 0.9x)")
    parser.add_argument("--policy", action="store_true",
                        help="Basalt only: the 4 KiB rows in a bucket with a 20-statement bucket "
                             "policy beside one without, ratio policy/no policy (target >= 0.9x)")
    parser.add_argument("--sse", action="store_true",
                        help="Basalt only: the 64 MiB rows in a bucket encrypting with SSE-S3 "
                             "beside an unencrypted one, ratio SSE-S3/plain (target >= 0.8x)")
    parser.add_argument("--metering", action="store_true",
                        help="Basalt only: the 4 KiB rows on a Basalt metering usage beside one "
                             "with metering off (--usage-flush-seconds 0), ratio (target >= 0.97x)")
    options = parser.parse_args(argv)
    special = options.versioning + options.policy + options.sse + options.metering
    if special and options.only == "seaweedfs":
        parser.error("--versioning, --policy, --sse and --metering measure Basalt only")
    if special > 1:
        parser.error("choose one of --versioning, --policy, --sse and --metering")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    # Ctrl-C and SIGTERM both raise KeyboardInterrupt, which unwinds the
    # ExitStack: servers stopped, data dirs removed (SIGINT is re-armed in case
    # a parent shell started us with it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(lambda: getattr(options, "cp_path", None)
                           and os.path.exists(options.cp_path) and os.unlink(options.cp_path))
            servers = start_servers(options, stack)
            results = run_async(bench(servers, options))
            log("stopping servers ...")
    except peers.ServerError as err:
        log(f"error: {err}")
        return 2
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    summary = summarize(results, servers, options)
    if options.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary)
    failed = any(m["value"] is None for row in summary["rows"] for m in row["servers"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
