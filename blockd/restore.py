"""Restores written straight into the pool, by the process that owns the volumes.

``basalt volume restore`` (basalt/backup.py) reads the backup's manifest and
sends the server batches of packs: for each pack a presigned GET URL (the
target's credentials stay with the CLI), its key (for messages) and its chunks
(index, offset in the pack, length, sha256). The server downloads a few packs at
once (one ranged GET each, covering the batch's chunks), checks every chunk's
sha256 in a thread (hashlib releases the GIL), writes runs of neighbouring
chunks through the volume's own write path (slots allocated as for any write,
every block checksummed on M+1 disks), and ends each batch with the manager's
flush (pool fdatasync, then the chunk maps): when a batch's request ends
``done`` its chunks are durable, and the CLI records them for a resume.

Encrypted backups (blockd/backup_cipher.py): the request also carries the
backup keys its chunks name (each given in clear by the CLI, which unwrapped it
with the user's passphrase, or sealed by a server: opened here with this
server's master key). Every chunk's sha256 is checked on the sealed bytes, then
the chunk is opened (AES-GCM: its tag authenticates it) into a plaintext buffer
that the writes take. The restored volume is itself encrypted (the CLI creates
it so) by the pool's write path.

Nothing here reads a chunk back or sends one over a socket to this process: per
restored byte the cost is one download, one sha256, and the pool's own write.
:data:`COUNTS` keeps what a restore cost (requests, bytes fetched, pool writes),
the regression guard's figures.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import http.client
import mmap
import ssl
import threading
import urllib.parse
from collections.abc import Callable

from .backup_cipher import (
    OVERHEAD,
    SERVER_PURPOSE,
    BackupKeyError,
    ChunkSealer,
    open_on_server,
    unb64,
)
from .errors import InvalidArgument, NoSuchVolume, VolumeError
from .manager import VolumeManager, internal_image
from .pool import CHUNK

FETCHES = 3          # packs downloaded at once (and buffers of ~16 MiB) per restore request
RUN = 4 << 20        # neighbouring chunks written with one volume write of up to this
READ_TIMEOUT = 120   # seconds the target may stay silent before a GET fails

# Per process: GETs made, bytes fetched, volume writes and chunks written (tests).
COUNTS: collections.Counter[str] = collections.Counter()


class BackupDamaged(VolumeError):
    """A pack could not be fetched, or a chunk in it fails its sha256."""

    def __init__(self, message: str) -> None:
        super().__init__("BackupDamaged", f"backup damaged: {message}")


class BackupKeyInvalid(VolumeError):
    """A backup key in the request does not open (another master key, damage)."""

    def __init__(self, message: str) -> None:
        super().__init__("BackupKeyInvalid", message)


Entry = tuple[int, int, int, str, str]  # index, offset, length, sha256, backup key ("": none)


def parse_packs(body: dict, size: int, keys: dict[str, ChunkSealer] | None = None
                ) -> list[tuple[str, str, list[Entry]]]:
    """The request's packs as (url, key, [(index, offset, length, sha256, backup
    key)]), checked against the volume's size, the pool's chunk size and the
    backup keys given (``keys``, see :func:`parse_keys`)."""
    keys = keys or {}
    if body.get("chunk_size") != CHUNK:
        raise InvalidArgument("InvalidChunkSize", f"backups of {CHUNK}-byte chunks only")
    packs = body.get("packs")
    if not isinstance(packs, list):
        raise InvalidArgument("InvalidPacks", "packs must be a list")
    out = []
    try:
        for pack in packs:
            url, key = str(pack["url"]), str(pack.get("key") or "")
            if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                raise InvalidArgument("InvalidPacks", "pack URLs must be http or https")
            entries = [(int(e[0]), int(e[1]), int(e[2]), str(e[3]), str(e[4]) if len(e) > 4
                        else "") for e in pack["chunks"]]
            for index, offset, length, sha, tag in entries:
                if tag and tag not in keys:
                    raise InvalidArgument("InvalidPacks", f"chunk {index} needs backup key {tag}")
                plain = length - OVERHEAD if tag else length
                if not (0 <= index and 0 < plain <= CHUNK and offset >= 0
                        and index * CHUNK + plain <= size and len(sha) == 64):
                    raise InvalidArgument("InvalidPacks", f"chunk {index} is outside the volume")
            if entries:
                out.append((url, key, entries))
    except (KeyError, TypeError, ValueError, IndexError):
        raise InvalidArgument("InvalidPacks", "each pack needs url and chunks "
                              "[[index, offset, length, sha256(, key)], ...]") from None
    return out


def parse_keys(body: dict, manager: VolumeManager) -> dict[str, ChunkSealer]:
    """The request's backup keys (``{"keys": {TAG: {"key": B64} | {"sealed": B64}}}``),
    opened; sealed ones with this server's master key."""
    given = body.get("keys") or {}
    if not isinstance(given, dict):
        raise InvalidArgument("InvalidKeys", "keys must be an object")
    out = {}
    try:
        for tag, spec in given.items():
            if "sealed" in spec:
                key = open_on_server(server_key(manager), unb64(spec["sealed"]))
            else:
                key = unb64(spec["key"])
            out[str(tag)] = ChunkSealer(key)
    except BackupKeyError as exc:
        raise BackupKeyInvalid(str(exc)) from None
    except (KeyError, TypeError):
        raise InvalidArgument("InvalidKeys", "each backup key is {\"key\": ...} or "
                              "{\"sealed\": ...}") from None
    return out


def server_key(manager: VolumeManager) -> bytes:
    """The key this server seals backup keys under (derived from its master key)."""
    return manager._key_service().derived_key(SERVER_PURPOSE)


async def restore(manager: VolumeManager, name: str, packs: list, ca: str | None,
                  progress: Callable[[int], None],
                  keys: dict[str, ChunkSealer] | None = None, pinned: bool = False) -> int:
    """Write the packs' chunks into volume ``name`` and make them durable; the
    bytes written. ``progress`` is called with the bytes written so far.
    ``ca``: the PEM the fetches trust (None: the system's CAs); ``pinned``: it
    is the server's own certificate, trusted as it is whatever its name."""
    record = manager.records.get(name)
    if record is None or record.snapshot or internal_image(name) is not None:
        raise NoSuchVolume(name)
    volume = await manager.lookup(name)
    assert volume is not None
    await volume.unlock()  # an encrypted volume's key (NBDError when it cannot open)
    fetcher = _Fetcher(ca, keys or {}, pinned)
    loop = asyncio.get_running_loop()
    written = 0
    fetches = [loop.run_in_executor(fetcher.pool, fetcher.fetch, *p) for p in packs[:FETCHES]]
    try:
        for i in range(len(packs)):
            entries, lo, body = await fetches[i]
            await asyncio.gather(*(volume.pwrite(index * CHUNK, data, fua=False, direct=True)
                                   for index, data in _runs(entries, lo, body)))
            fetcher.release(body)
            if i + FETCHES < len(packs):  # its buffer is free again
                fetches.append(loop.run_in_executor(fetcher.pool, fetcher.fetch,
                                                    *packs[i + FETCHES]))
            written += sum(e[2] for e in entries)
            COUNTS["chunks"] += len(entries)
            progress(written)
    finally:
        fetcher.pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.gather(*fetches, return_exceptions=True)
        fetcher.close()
    await manager.flush()  # the pool synced, then the maps: durable before "done"
    return written


class _Fetcher:
    """Ranged GETs of packs in FETCHES threads, each with its own keep-alive
    connection, received straight into reused buffers (http.client's readinto:
    one copy, the GIL released while it waits), and every chunk's sha256 checked
    in the same thread."""

    def __init__(self, ca: str | None, keys: dict[str, ChunkSealer], pinned: bool = False
                 ) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(FETCHES, "restore-fetch")
        self.ca, self.pinned = ca, pinned
        self.keys = keys
        self.context: ssl.SSLContext | None = None  # made on the first https URL
        self.local = threading.local()
        self.buffers: list[mmap.mmap] = []
        self.lock = threading.Lock()
        self.connections: list[http.client.HTTPConnection] = []

    def close(self) -> None:
        for conn in self.connections:
            conn.close()

    def release(self, body: memoryview) -> None:
        with self.lock:
            self.buffers.append(body.obj)

    def _buffer(self, size: int) -> mmap.mmap:
        """A reused buffer of at least ``size`` bytes, page-aligned (anonymous
        memory) so that the pool can write its chunks with O_DIRECT."""
        with self.lock:
            buf = self.buffers.pop() if self.buffers else None
        if buf is None or len(buf) < size:
            buf = mmap.mmap(-1, max(size, 1))
        return buf

    def _connection(self, url: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None or (conn.host, conn.port) != (url.hostname, url.port or
                                                      (443 if url.scheme == "https" else 80)):
            if url.scheme == "https":
                with self.lock:
                    if self.context is None:
                        self.context = ssl.create_default_context(cadata=self.ca)
                        if self.pinned:  # as basalt/tls_trust.pinned_context
                            self.context.check_hostname = False
                            self.context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
                conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=READ_TIMEOUT,
                                                   context=self.context)
            else:
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=READ_TIMEOUT)
            self.local.conn = conn
            with self.lock:
                self.connections.append(conn)
        return conn

    def fetch(self, url: str, key: str, entries: list[Entry]
              ) -> tuple[list[Entry], int, memoryview]:
        """The pack's bytes the entries need (one ranged GET), checked and opened:
        (the entries as they lie in the view, its first offset, a view of them in
        a buffer to hand back with release())."""
        lo = min(e[1] for e in entries)
        hi = max(e[1] + e[2] for e in entries)
        view = memoryview(self._buffer(hi - lo))[:hi - lo]
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in range(3):  # a keep-alive connection the target closed: once more
            conn = self._connection(parts)
            try:
                conn.request("GET", target, headers={"Range": f"bytes={lo}-{hi - 1}"})
                resp = conn.getresponse()
                if resp.status not in (200, 206):
                    text = resp.read(200).decode(errors="replace")
                    conn.close()
                    raise BackupDamaged(f"pack {key} unreadable (HTTP {resp.status}: {text})")
                if resp.status == 200 and lo:  # a server that ignores Range
                    _read_into(resp, memoryview(bytearray(lo)))
                _read_into(resp, view)
                if resp.status == 200:
                    resp.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise BackupDamaged(f"pack {key} unreadable ({exc})") from None
        COUNTS["requests"] += 1
        COUNTS["fetched"] += hi - lo
        for index, offset, length, sha, _ in entries:
            if hashlib.sha256(view[offset - lo:offset - lo + length]).hexdigest() != sha:
                raise BackupDamaged(f"chunk {index} in {key} fails its checksum")
        if any(e[4] for e in entries):
            return self._open(key, entries, lo, view)
        return entries, lo, view

    def _open(self, key: str, entries: list[Entry], lo: int, view: memoryview
              ) -> tuple[list[Entry], int, memoryview]:
        """Open sealed chunks into a plaintext buffer (the sealed one goes back)."""
        plain = memoryview(self._buffer(sum(e[2] - OVERHEAD for e in entries)))
        opened, at = [], 0
        for index, offset, length, sha, tag in sorted(entries, key=lambda e: e[1]):
            try:
                data = self.keys[tag].open(index, view[offset - lo:offset - lo + length])
            except BackupKeyError as exc:
                raise BackupDamaged(f"{exc} (in {key})") from None
            plain[at:at + len(data)] = data
            opened.append((index, at, len(data), sha, ""))
            at += len(data)
        COUNTS["opened"] += len(entries)
        self.release(view)
        return opened, 0, plain[:at]


def _read_into(resp: http.client.HTTPResponse, view: memoryview) -> None:
    done = 0
    while done < len(view):
        n = resp.readinto(view[done:])
        if not n:
            raise BackupDamaged("a pack is shorter than its chunks")
        done += n


def _runs(entries: list[Entry], lo: int, view: memoryview) -> list[tuple[int, memoryview]]:
    """Writes for a pack's chunks: neighbours that also lie side by side in the
    pack become one write of up to RUN bytes, sliced without copying."""
    runs: list[list[int]] = []  # first index, start in body, length
    for index, offset, length, *_ in sorted(entries):
        start = offset - lo
        last = runs[-1] if runs else None
        if last and last[0] + last[2] // CHUNK == index and last[1] + last[2] == start \
                and last[2] % CHUNK == 0 and last[2] < RUN:
            last[2] += length
        else:
            runs.append([index, start, length])
    COUNTS["writes"] += len(runs)
    return [(first, view[start:start + n]) for first, start, n in runs]
