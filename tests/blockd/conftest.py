"""Fixtures: one NBD server per session on 127.0.0.1 and a Unix socket, in-memory exports."""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_export import MemoryExport  # noqa: E402
from nbd_helpers import MiB  # noqa: E402
from rawnbd import RawClient  # noqa: E402
from server_thread import ServerThread  # noqa: E402

from blockd.export import StaticRegistry  # noqa: E402

_names = itertools.count()


@pytest.fixture(scope="session")
def nbd():
    """The shared server: exports ``disk`` (default, 64 MiB) and ``ro`` (read-only, 8 MiB)."""
    ro = MemoryExport("ro", 8 * MiB, read_only=True, description="read-only test export")
    ro.chunks[0] = bytearray(b"\x5a" * 65536)
    registry = StaticRegistry(
        [MemoryExport("disk", 64 * MiB, description="scratch disk"), ro], default="disk"
    )
    sockdir = tempfile.mkdtemp(prefix="basalt-nbd-")
    # uvloop, as in production; test_nbd_server.py covers the default loop.
    server = ServerThread(registry, unix_path=os.path.join(sockdir, "nbd.sock"), use_uvloop=True)
    yield server
    server.stop()
    shutil.rmtree(sockdir, ignore_errors=True)


@pytest.fixture
def make_export(nbd):
    """Add a fresh in-memory export with a unique name to the shared server."""

    def make(size: int = 16 * MiB, **kwargs) -> MemoryExport:
        export = MemoryExport(f"vol{next(_names)}", size, **kwargs)
        nbd.run(nbd.registry.add, export)
        return export

    return make


@pytest.fixture
def client(nbd):
    """Connected raw clients, greeted, closed after the test."""
    clients: list[RawClient] = []

    def connect(unix: bool = False, greet: bool = True) -> RawClient:
        c = RawClient.unix(nbd.unix_path) if unix else RawClient.tcp(nbd.port)
        clients.append(c)
        if greet:
            c.greet()
        return c

    yield connect
    for c in clients:
        c.close()


@pytest.fixture
def dirs(tmp_path):
    """Four disk directories for an in-process volume manager."""
    return [str(tmp_path / f"d{i}") for i in range(4)]
