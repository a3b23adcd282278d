"""Server processes freeze their long-lived start-up objects (gc.freeze), so the
collector's full passes no longer walk them: the owner (`basalt serve`,
basalt/cli/serve.py) what its imports made, each S3 worker (basalt/worker.py)
what start-up made, before it reports ready."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

from basalt.cli import build_parser
from basalt.cli.common import resolve_defaults


def test_serve_freezes_while_serving_and_unfreezes_after(monkeypatch):
    import basalt.cli.serve as serve_cli
    import basalt.logs
    import basalt.server
    seen = []

    async def fake(opts):
        seen.append(gc.get_freeze_count())

    monkeypatch.setattr(basalt.server, "serve", fake)
    monkeypatch.setattr(basalt.logs, "setup", lambda level: None)
    assert gc.get_freeze_count() == 0
    serve_cli.cmd_serve(resolve_defaults(build_parser().parse_args(["serve"])))
    assert seen[0] > 10_000
    assert gc.get_freeze_count() == 0


# The child process is the worker: it runs basalt.worker.run with the settings
# `basalt serve` gives, and a boto3 client talks to it once it is ready.
SCRIPT = r"""
import asyncio, gc, json, os, signal, socket, sys
import boto3
from botocore.config import Config
from storaged import ObjectStore
from basalt import worker

root = sys.argv[1]
disks = [os.path.join(root, f"d{i}") for i in range(4)]
asyncio.run(ObjectStore.open(disks, sync=False).close())  # formatted, as the owner does
sock = socket.create_server(("127.0.0.1", 0))
port = sock.getsockname()[1]
rfd, wfd = os.pipe()
cfg = {"disks": disks, "sync": False, "region": "us-east-1", "key_locks": root + "/locks",
       "access_key": "AKIDWORKERGC", "secret_key": "worker-gc-secret-0123456789",
       "fd": sock.detach(), "ready_fd": wfd}
before = gc.get_freeze_count()

def client():
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id=cfg["access_key"], aws_secret_access_key=cfg["secret_key"],
                      config=Config(retries={"max_attempts": 1}))
    s3.create_bucket(Bucket="worker-gc")
    s3.put_object(Bucket="worker-gc", Key="k", Body=b"x" * 4096)
    return len(s3.get_object(Bucket="worker-gc", Key="k")["Body"].read())

async def main():
    serving = asyncio.ensure_future(worker.run(cfg))
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, os.read, rfd, 1) == b"R"
    frozen = gc.get_freeze_count()
    size = await loop.run_in_executor(None, client)
    os.kill(os.getpid(), signal.SIGTERM)
    await serving
    print(json.dumps({"before": before, "frozen": frozen, "size": size}))

asyncio.run(main())
"""


def test_worker_freezes_startup_objects_and_serves(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    seen = json.loads(done.stdout)
    assert seen["before"] == 0
    assert seen["frozen"] > 10_000  # modules, classes, the gateway: frozen by then
    assert seen["size"] == 4096
