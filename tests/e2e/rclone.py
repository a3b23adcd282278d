"""Running Debian's rclone against a test server (scripts/test installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

import pytest

from .conftest import ACCESS, SECRET


def rclone_runner(server, tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """A function running ``rclone ARGS`` with remote ``b:`` configured for
    ``server`` and no other setting (rclone's defaults); it fails the test when
    rclone exits non-zero, and returns the finished process."""
    rclone = shutil.which("rclone")
    if rclone is None:
        pytest.fail("rclone is not installed (scripts/test installs Debian's)")
    conf = tmp_path / "rclone.conf"
    conf.write_text(
        f"[b]\ntype = s3\nprovider = Other\naccess_key_id = {ACCESS}\n"
        f"secret_access_key = {SECRET}\nendpoint = {server.endpoint}\nregion = us-east-1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["RCLONE_CONFIG"] = str(conf)
    if server.ca_path:
        # Go reads the CA from SSL_CERT_FILE (rclone 1.60 refuses --ca-cert for S3)
        env["SSL_CERT_FILE"] = server.ca_path

    def run(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([rclone, "--retries", "1", *args], env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, (args, out.stderr)
        return out

    return run
