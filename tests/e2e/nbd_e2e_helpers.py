"""Helpers for the NBD volume end-to-end tests: real-client runners and a tiny
raw NBD client (to hold a connection open, or write without ever flushing).

The raw client follows the NBD spec (doc/proto.md) with its own constants, not
blockd's, so it checks the server against the protocol rather than against itself.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import struct
import subprocess

import pytest

KiB, MiB = 1024, 1024 * 1024
CHUNK = 64 * KiB
BLOCK = 4 * KiB


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (qemu-utils, libnbd-bin, fio)")


def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a client; on failure the assertion shows what it printed."""
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, f"{' '.join(args)}\nstdout: {out.stdout}\nstderr: {out.stderr}"
    return out


def uri(server, volume: str = "") -> str:
    return f"nbd://127.0.0.1:{server.nbd_port}/{volume}"


def qemu_io(server, volume: str, *commands: str, timeout: float = 120) -> str:
    """Run qemu-io commands on a volume; any failed command or pattern mismatch fails."""
    args = ["qemu-io", "-f", "raw"]
    for c in commands:
        args += ["-c", c]
    out = run(*args, uri(server, volume), timeout=timeout)
    text = out.stdout + out.stderr
    assert "verification failed" not in text and "error" not in text.lower(), text
    return text


def qemu_io_args(server, volume: str, commands: list[str]) -> list[str]:
    args = ["qemu-io", "-f", "raw"]
    for c in commands:
        args += ["-c", c]
    return args + [uri(server, volume)]


def nbd_map(server, volume: str) -> list[tuple[int, int, str]]:
    """nbdinfo --map as (offset, length, description) runs."""
    out = run("nbdinfo", "--map", uri(server, volume)).stdout
    runs = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4:
            runs.append((int(parts[0]), int(parts[1]), parts[3].strip()))
    return runs


def state_at(runs: list[tuple[int, int, str]], offset: int) -> str:
    for start, length, desc in runs:
        if start <= offset < start + length:
            return desc
    raise AssertionError(f"offset {offset} not in map {runs}")


def volume_info(server, name: str) -> dict:
    return json.loads(server.cli("volume", "info", name, "--json").stdout)


def create_volume(server, name: str, size: str) -> dict:
    return json.loads(server.cli("volume", "create", name, "--size", size, "--json").stdout)


def api(server, method: str, path: str, body=None):
    """The admin API the CLI uses, called in-process: for tests whose subject is not
    the CLI (each `basalt` run costs a second of imports on a busy machine)."""
    from basalt.admin_client import AdminClient
    from basalt.credentials import Credentials

    from .conftest import ACCESS, SECRET
    return AdminClient(server.endpoint, Credentials(ACCESS, SECRET)).call(
        method, "/_basalt/v1/volumes" + path, body=body)


def new_volume(server, name: str, size: int) -> dict:
    return api(server, "POST", "", {"name": name, "size": size})


def allocated(server, name: str) -> int:
    return api(server, "GET", f"/{name}")["allocated"]


def one_error_line(out: subprocess.CompletedProcess) -> str:
    """The CLI refused: non-zero exit, nothing on stdout, one line on stderr (and at
    most one indented line under it saying what to do next)."""
    assert out.returncode != 0, out
    lines = out.stderr.rstrip().splitlines()
    assert len(lines) in (1, 2) and lines[0].startswith("basalt: "), out.stderr
    assert len(lines) == 1 or lines[1].startswith("  "), out.stderr
    assert "Traceback" not in out.stderr and not out.stdout.strip(), out
    return lines[0]


def blocks(tag: bytes, count: int, first: int = 0, seed: str = "") -> bytes:
    """``count`` distinct 4 KiB blocks: a tag, the block index, then seeded noise."""
    out = bytearray()
    for i in range(first, first + count):
        head = tag + struct.pack(">Q", i)
        out += head + random.Random(f"{seed}/{tag!r}/{i}").randbytes(BLOCK - len(head))
    return bytes(out)


def write_file(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def read_volume(server, volume: str, dest) -> bytes:
    """The whole volume through qemu-img convert (a fresh connection)."""
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri(server, volume), str(dest))
    with open(dest, "rb") as f:
        return f.read()


# --- a raw NBD client ---------------------------------------------------------

NBDMAGIC, IHAVEOPT, REPLY_MAGIC = 0x4E42444D41474943, 0x49484156454F5054, 0x3E889045565A9
OPT_GO, REP_ACK, REP_INFO, INFO_EXPORT = 7, 1, 3, 0
REQUEST_MAGIC, SIMPLE_REPLY_MAGIC = 0x25609513, 0x67446698
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4


class RawNBD:
    """Fixed-newstyle handshake with OPT_GO, simple replies, one request at a time."""

    def __init__(self, port: int, name: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.handle = 0
        magic, opt, _flags = struct.unpack(">QQH", self._recv(18))
        assert (magic, opt) == (NBDMAGIC, IHAVEOPT)
        self.sock.sendall(struct.pack(">I", 1 | 2))  # FIXED_NEWSTYLE | NO_ZEROES
        raw = name.encode()
        data = struct.pack(">I", len(raw)) + raw + struct.pack(">H", 0)
        self.sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
        self.size = None
        while True:
            magic, _, rtype, length = struct.unpack(">QIII", self._recv(20))
            assert magic == REPLY_MAGIC
            payload = self._recv(length)
            if rtype == REP_INFO and struct.unpack(">H", payload[:2])[0] == INFO_EXPORT:
                self.size = struct.unpack(">QH", payload[2:12])[0]
            if rtype == REP_ACK:
                break
            if rtype & (1 << 31):
                raise ConnectionRefusedError(f"OPT_GO refused: {rtype:#x} {payload!r}")

    def _recv(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            got = self.sock.recv(n - len(out))
            if not got:
                raise ConnectionError("server closed the connection")
            out += got
        return bytes(out)

    def _request(self, cmd: int, offset: int = 0, length: int = 0, data: bytes = b"",
                 read: bool = False) -> bytes:
        self.handle += 1
        self.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, cmd, self.handle, offset,
                                      length) + data)
        magic, error, handle = struct.unpack(">IIQ", self._recv(16))
        assert magic == SIMPLE_REPLY_MAGIC and handle == self.handle
        if error:
            raise OSError(error, f"NBD command {cmd} failed")
        return self._recv(length) if read else b""

    def pread(self, offset: int, length: int) -> bytes:
        return self._request(CMD_READ, offset, length, read=True)

    def pwrite(self, offset: int, data: bytes) -> None:
        self._request(CMD_WRITE, offset, len(data), data)

    def trim(self, offset: int, length: int) -> None:
        self._request(CMD_TRIM, offset, length)

    def flush(self) -> None:
        self._request(CMD_FLUSH)

    def close(self) -> None:
        try:
            self.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0))
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> RawNBD:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
