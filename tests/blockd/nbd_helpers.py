"""Helpers shared by the blockd tests: sizes, real-client runner, polling."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

MiB = 1024 * 1024


def require(tool: str) -> str:
    """Path of a client binary; skip without it (fail in CI, where it must be installed)."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} not installed (Debian packages qemu-utils, libnbd-bin)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a client; on failure the assertion shows its output."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{args}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc


def wait_until(predicate, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true (state changed on the server's thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)
