"""Start the NBD servers that benchmarks/nbd_bench.py compares.

Each is a context manager that yields an ``NbdServer`` serving one export of
``EXPORT_SIZE`` bytes named ``EXPORT`` on 127.0.0.1 (a free port), with its
data in a fresh directory under ``base_dir``. On exit (normal, exception or
Ctrl-C) the server's process group gets SIGTERM, then SIGKILL if it lingers,
and the directory is removed (unless ``keep``).

    qemu_nbd_server   qemu-nbd on a sparse raw file
    qemu_nbd_variant  another qemu-nbd on that same file with other --aio/--cache
                      (for the multi-connection rows: qemu-nbd's best configuration)
    nbdkit_server     nbdkit's file plugin on a sparse file
    basalt_server     ``basalt serve`` (benchmarks/peers.py) plus
                      ``basalt volume create EXPORT --size 4G``

A server is ready when ``nbdinfo --size`` on its URI reports EXPORT_SIZE, so
readiness means "answers the NBD handshake for this export", not "port open".
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from peers import ServerError  # noqa: E402,F401  (re-exported for callers)

EXPORT = "bench"
EXPORT_SIZE = 4 << 30
EXPORT_SIZE_ARG = "4G"
ACCESS_KEY = "nbdbenchaccesskey"
SECRET_KEY = "nbdbench-secret-key-0123456789abcdef"


@dataclass
class NbdServer:
    """A running NBD export and what the report says about it.

    ``process`` is the leader of the server's process group (what
    ``peers.group_cpu_seconds`` sums over)."""

    name: str
    uri: str
    version: str
    command: list[str]
    settings: str            # the non-obvious defaults, in words
    process: subprocess.Popen
    log_path: str
    data_dir: str
    extra: dict = field(default_factory=dict)


def require_tool(name: str, package: str) -> str:
    """Path of ``name`` on PATH, or a ServerError saying which package has it."""
    path = shutil.which(name)
    if not path:
        raise ServerError(f"{name} not found: apt-get install -y {package}")
    return path


def first_line(command: list[str]) -> str:
    """First line of a command's output (for version strings)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unknown ({err})"
    return (result.stdout or result.stderr).strip().splitlines()[0] if (
        result.stdout or result.stderr).strip() else "unknown"


def export_size(uri: str) -> int | None:
    """Size of the export at ``uri`` via ``nbdinfo --size``; None if no answer."""
    try:
        result = subprocess.run(["nbdinfo", "--size", uri], capture_output=True,
                                text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return None
    if result.returncode != 0:
        return None
    try:
        return int(result.stdout.strip())
    except ValueError:
        return None


def wait_for_export(uri: str, process: subprocess.Popen, timeout: float, what: str,
                    log_path: str) -> None:
    """Wait until the export answers with EXPORT_SIZE bytes."""
    require_tool("nbdinfo", "libnbd-bin")
    peers.wait_until(lambda: export_size(uri) == EXPORT_SIZE, process, timeout,
                     f"{what} (waiting for {uri} to report {EXPORT_SIZE} bytes)", log_path)


@contextlib.contextmanager
def running(name: str, command: list[str], data_dir: str):
    """Run ``command`` in its own session (so its whole group can be signalled),
    output to ``data_dir/NAME.log``; always stopped on exit. Yields (process, log)."""
    log_path = os.path.join(data_dir, f"{name}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=data_dir,
                                   start_new_session=True)
    try:
        yield process, log_path
    finally:
        peers.stop_process(process)


def sparse_file(data_dir: str) -> str:
    """A sparse EXPORT_SIZE file in ``data_dir`` (no block allocated yet)."""
    path = os.path.join(data_dir, "disk.raw")
    with open(path, "wb") as handle:
        handle.truncate(EXPORT_SIZE)
    return path


# What each peer does with its defaults (qemu-nbd 7.2, nbdkit 1.32):
QEMU_NBD_SETTINGS = (
    "raw sparse file; --cache=writeback and --aio=threads (both qemu-nbd's defaults:"
    " writes land in the page cache, fdatasync on NBD FLUSH), --shared=8 clients,"
    " --persistent; defaults kept: --discard=ignore, --detect-zeroes=off")
NBDKIT_SETTINGS = (
    "file plugin on a sparse file, all defaults: cache=default (page cache, fdatasync"
    " on NBD FLUSH), fadvise=normal, 16 threads (parallel thread model)")


@contextlib.contextmanager
def qemu_nbd_server(*, timeout: float = 60.0, base_dir: str | None = None,
                    keep: bool = False, **_):
    """qemu-nbd serving a sparse raw file, flags a user would pick."""
    binary = require_tool("qemu-nbd", "qemu-utils")
    port = peers.free_port()
    with peers.temp_dir("qemu-nbd", base_dir, keep, "nbdbench") as data_dir:
        command = [binary, "-f", "raw", "-x", EXPORT, "-b", "127.0.0.1", "-p", str(port),
                   "--persistent", "--shared=8", "--cache=writeback", "--aio=threads",
                   sparse_file(data_dir)]
        uri = f"nbd://127.0.0.1:{port}/{EXPORT}"
        with running("qemu-nbd", command, data_dir) as (process, log_path):
            wait_for_export(uri, process, timeout, "qemu-nbd", log_path)
            yield NbdServer("qemu-nbd", uri, first_line([binary, "--version"]), command,
                            QEMU_NBD_SETTINGS, process, log_path, data_dir)


# Configurations the multi-connection rows try, beside the default above:
# name suffix -> (--aio, --cache). native AIO needs O_DIRECT (--cache=none).
QEMU_VARIANTS = {
    "io_uring": ("io_uring", "writeback"),
    "native,none": ("native", "none"),
    "io_uring,none": ("io_uring", "none"),
}


@contextlib.contextmanager
def qemu_nbd_variant(base: NbdServer, variant: str, *, timeout: float = 60.0):
    """qemu-nbd on ``base``'s (already filled) raw file with the --aio/--cache of
    ``QEMU_VARIANTS[variant]``, named "qemu-nbd VARIANT". Image locking is off so
    it can open the file ``base`` holds; the base server stays idle meanwhile."""
    binary = require_tool("qemu-nbd", "qemu-utils")
    aio, cache = QEMU_VARIANTS[variant]
    port = peers.free_port()
    image = os.path.join(base.data_dir, "disk.raw")
    command = [binary, "--image-opts", "-x", EXPORT, "-b", "127.0.0.1", "-p", str(port),
               "--persistent", "--shared=8", f"--cache={cache}", f"--aio={aio}",
               f"driver=raw,file.driver=file,file.filename={image},file.locking=off"]
    uri = f"nbd://127.0.0.1:{port}/{EXPORT}"
    name = f"qemu-nbd {variant}"
    with running(name.replace(" ", "-"), command, base.data_dir) as (process, log_path):
        wait_for_export(uri, process, timeout, name, log_path)
        yield NbdServer(name, uri, base.version, command,
                        f"--aio={aio} --cache={cache}, otherwise as qemu-nbd", process,
                        log_path, base.data_dir)


@contextlib.contextmanager
def nbdkit_server(*, timeout: float = 60.0, base_dir: str | None = None,
                  keep: bool = False, **_):
    """nbdkit's file plugin on a sparse file with nbdkit's defaults (the file
    plugin serves the same file whatever export name the client asks for)."""
    binary = require_tool("nbdkit", "nbdkit")
    port = peers.free_port()
    with peers.temp_dir("nbdkit", base_dir, keep, "nbdbench") as data_dir:
        command = [binary, "-f", "-i", "127.0.0.1", "-p", str(port), "--exit-with-parent",
                   "file", sparse_file(data_dir)]
        uri = f"nbd://127.0.0.1:{port}/{EXPORT}"
        with running("nbdkit", command, data_dir) as (process, log_path):
            wait_for_export(uri, process, timeout, "nbdkit", log_path)
            yield NbdServer("nbdkit", uri, first_line([binary, "--version"]), command,
                            NBDKIT_SETTINGS, process, log_path, data_dir)


def _nbd_address(command: list[str]) -> str:
    """The last ``--nbd-address`` value on a basalt command line (argparse
    keeps the last one, so a --basalt-args override wins)."""
    positions = [i for i, arg in enumerate(command) if arg == "--nbd-address"]
    if not positions:
        raise ServerError("basalt command has no --nbd-address")
    return command[positions[-1] + 1]


def create_volume(endpoint: str, timeout: float) -> str:
    """``basalt volume create EXPORT --size 4G`` against ``endpoint``; its output.
    A failure becomes a ServerError quoting the CLI's own message."""
    binary = peers.find_executable("basalt", "BASALT_BIN")
    command = [binary, "--endpoint", endpoint, "volume", "create", EXPORT,
               "--size", EXPORT_SIZE_ARG]
    env = dict(os.environ, BASALT_ACCESS_KEY=ACCESS_KEY, BASALT_SECRET_KEY=SECRET_KEY)
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ServerError(f"`{shlex.join(command)}` did not finish in {timeout:.0f} s") from None
    if result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip() or "(no output)")
        raise ServerError(f"`basalt volume create {EXPORT} --size {EXPORT_SIZE_ARG}` exited"
                          f" {result.returncode}: {message.splitlines()[-1]}")
    return result.stdout.strip()


@contextlib.contextmanager
def basalt_server(*, timeout: float = 60.0, base_dir: str | None = None,
                  keep: bool = False, extra_args: str = ""):
    """``basalt serve`` (defaults plus ``extra_args``) with one 4G volume."""
    with peers.basalt_server(ACCESS_KEY, SECRET_KEY, extra_args=extra_args,
                             timeout=timeout, base_dir=base_dir, keep=keep) as server:
        created = create_volume(server.endpoint, timeout)
        uri = f"nbd://{_nbd_address(server.command)}/{EXPORT}"
        wait_for_export(uri, server.process, timeout, "basalt", server.log_path)
        fsync = "off (--no-fsync)" if "--no-fsync" in extra_args else "on (default)"
        settings = (f"`basalt serve` defaults (4 disk dirs in the data dir, fsync {fsync})"
                    + (f", extra args: {extra_args}" if extra_args else "")
                    + f"; thin volume {EXPORT} {EXPORT_SIZE_ARG}")
        yield NbdServer("basalt", uri, f"basalt {server.version}", server.command, settings,
                        server.process, server.log_path, server.data_dir,
                        extra={"endpoint": server.endpoint, "volume_create": created})


STARTERS = {
    "basalt": basalt_server,
    "qemu-nbd": qemu_nbd_server,
    "nbdkit": nbdkit_server,
}
