#!/usr/bin/env python3
"""Volume backup and restore throughput, beside restic on the same data.

One Basalt serves the volume; a second Basalt is the S3 backup target. Rows:

* full backup MB/s of allocated data (`basalt volume backup`) vs `restic backup`
  of the same bytes as a raw image file, into the same target;
* restore MB/s (`basalt volume restore` onto a new volume) vs `restic restore`;
* an incremental backup of the unchanged volume: seconds per 10 GiB provisioned.

Targets (issue): backup and restore >= 200 MB/s of allocated data; an unchanged
incremental under 2 s per 10 GiB provisioned.

    .venv/bin/python benchmarks/backup_bench.py [--data-mib 1024] [--size 10G]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402

KEY, SECRET = "BACKUPBENCHKEY000001", "backup-bench-secret-0123456789abcdefghij"


def run(cmd: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed: {out.stderr[-2000:]}")
    return out


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    out = run(cmd, env)
    return time.perf_counter() - started, out.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-mib", type=int, default=1024, help="allocated data to back up")
    ap.add_argument("--size", default="10G", help="provisioned size of the volume")
    args = ap.parse_args()
    basalt = peers.find_executable("basalt", "BASALT_BIN")
    restic = shutil.which("restic")
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="backup-bench-"))
        source = stack.enter_context(peers.basalt_server(KEY, SECRET))
        target = stack.enter_context(peers.basalt_server(KEY, SECRET))
        nbd_port = source.command[source.command.index("--nbd-address") + 1].rsplit(":", 1)[1]
        env = dict(os.environ, BASALT_ACCESS_KEY=KEY, BASALT_SECRET_KEY=SECRET,
                   BASALT_ENDPOINT=source.endpoint, AWS_ACCESS_KEY_ID=KEY,
                   AWS_SECRET_ACCESS_KEY=SECRET, AWS_ENDPOINT_URL=target.endpoint,
                   AWS_DEFAULT_REGION="us-east-1", RESTIC_PASSWORD="bench")
        cli = [basalt, "--data-dir", os.path.join(source.data_dir, "data")]
        import boto3
        boto3.client("s3", endpoint_url=target.endpoint, aws_access_key_id=KEY,
                     aws_secret_access_key=SECRET, region_name="us-east-1"
                     ).create_bucket(Bucket="backups")
        image = os.path.join(work, "image.raw")
        block = os.urandom(16 << 20)
        with open(image, "wb") as f:
            for i in range(args.data_mib // 16):
                f.write(i.to_bytes(8, "little") + block[8:])
        data = os.path.getsize(image)
        run(cli + ["volume", "create", "bench", "--size", args.size], env)
        run(["nbdcopy", image, f"nbd://127.0.0.1:{nbd_port}/bench"], env)
        rows = {}
        secs, _ = timed(cli + ["volume", "backup", "bench", "--to", "s3://backups/vol"], env)
        rows["full backup MB/s"] = (data / secs / 1e6, None)
        secs_inc, _ = timed(cli + ["volume", "backup", "bench", "--to", "s3://backups/vol"], env)
        provisioned = json.loads(run(cli + ["volume", "info", "bench", "--json"], env).stdout)[
            "size"]
        rows["unchanged incremental s/10GiB"] = (secs_inc * (10 << 30) / provisioned, None)
        secs, _ = timed(cli + ["volume", "restore", "s3://backups/vol", "--to", "back"], env)
        rows["restore MB/s"] = (data / secs / 1e6, None)
        if restic:
            repo = f"s3:{target.endpoint}/backups/restic"
            renv = dict(env, RESTIC_REPOSITORY=repo, RESTIC_CACHE_DIR=os.path.join(work, "rc"))
            run([restic, "init"], renv)
            secs, _ = timed([restic, "backup", "--quiet", image], renv)
            rows["full backup MB/s"] = (rows["full backup MB/s"][0], data / secs / 1e6)
            secs, _ = timed([restic, "backup", "--quiet", image], renv)
            rows["unchanged incremental s/10GiB"] = (rows["unchanged incremental s/10GiB"][0],
                                                     secs * (10 << 30) / provisioned)
            out_dir = os.path.join(work, "restored")
            secs, _ = timed([restic, "restore", "latest", "--target", out_dir], renv)
            rows["restore MB/s"] = (rows["restore MB/s"][0], data / secs / 1e6)
    print(f"data: {data >> 20} MiB allocated in a {args.size} volume; target: a second Basalt")
    print(f"{'row':32} {'basalt':>10} {'restic':>10} {'ratio':>7}")
    for name, (ours, peer) in rows.items():
        ratio = "" if peer is None else (f"{ours / peer:6.2f}x" if "MB/s" in name
                                         else f"{peer / ours:6.2f}x")
        print(f"{name:32} {ours:10.1f} {peer if peer is not None else float('nan'):10.1f} "
              f"{ratio:>7}")
    print("targets: backup and restore >= 200 MB/s; unchanged incremental < 2 s per 10 GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
