"""Run an NBDServer on its own event loop in a background thread.

Real clients (qemu-io, nbdinfo, ...) are blocking subprocesses, so the server
must keep running while a test waits for them. Also the manual entry point:

    .venv/bin/python tests/blockd/server_thread.py --port 10809 --size 1G

serves a sparse in-memory export named ``mem`` (also the default export)
until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_export import MemoryExport  # noqa: E402

from blockd.export import StaticRegistry  # noqa: E402
from blockd.nbd_server import NBDServer  # noqa: E402


def _new_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:
            pass
    return asyncio.new_event_loop()


class ServerThread:
    """An NBD server on 127.0.0.1 (free port), optionally also on a Unix socket."""

    def __init__(
        self,
        registry: StaticRegistry,
        *,
        unix_path: str | None = None,
        port: int = 0,
        use_uvloop: bool = False,
        **server_options: object,
    ) -> None:
        self.registry = registry
        self.loop = _new_loop(use_uvloop)
        self.thread = threading.Thread(target=self.loop.run_forever, name="nbd-server", daemon=True)
        self.thread.start()
        self.server = NBDServer(registry, **server_options)
        self.call(self.server.start("127.0.0.1", port))
        self.port = self.server.port
        self.unix_path = unix_path
        if unix_path:
            self.call(self.server.start_unix(unix_path))

    def call(self, coro, timeout: float = 30.0):
        """Run ``coro`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn, *args):
        """Call ``fn(*args)`` on the server's loop thread."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def target() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # handed back to the caller
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(target)
        return fut.result(30)

    def uri(self, name: str) -> str:
        return f"nbd://127.0.0.1:{self.port}/{name}"

    def unix_uri(self, name: str) -> str:
        return f"nbd+unix:///{name}?socket={self.unix_path}"

    def stop(self) -> None:
        try:
            self.call(self.server.close(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if text[-1:].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve an in-memory NBD export (testing only).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10809)
    parser.add_argument("--unix", help="also listen on this Unix socket")
    parser.add_argument("--size", type=_size, default=_size("1G"))
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    from basalt import logs

    logs.setup("info")

    async def serve() -> None:
        registry = StaticRegistry([MemoryExport("mem", args.size)], default="mem")
        async with NBDServer(registry) as server:
            await server.start(args.host, args.port)
            if args.unix:
                await server.start_unix(args.unix)
            await asyncio.Event().wait()

    loop = _new_loop(args.uvloop)
    try:
        loop.run_until_complete(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
