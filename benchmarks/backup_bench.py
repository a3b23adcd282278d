#!/usr/bin/env python3
"""Volume backup and restore beside restic, on the same data in the same run.

One Basalt serves the volume; a second Basalt is the S3 backup target of both
tools. The data is a raw image of random bytes (default 4 GiB): every byte has
to be moved, by both tools. (Before issue 15 the image repeated one 16 MiB
block, which restic's content-defined chunking stored once: its restore then
fetched a few MiB and wrote 1 GiB, which measured deduplication, not restore.)

Rows, in this order:

* full backup MB/s: `basalt volume backup` of a volume holding the image
  (its size is the image's) vs `restic backup` of the image file;
* full restore MB/s: `basalt volume restore` onto a new volume vs `restic
  restore` into a directory on the same filesystem (restic does not fsync
  what it restores; Basalt's restore is durable when it returns), and restic's
  restore again with a `sync` after it (durable like Basalt's);
* the same restore's CPU seconds per GiB (Basalt: server and CLI processes;
  restic: its own process; the target server's CPU shown apart), and the
  disk's own rate: `dd conv=fsync` of the image on the same filesystem.
  Basalt writes every chunk to M+1 disks (3 with the default 2+2 on four
  directories of this one filesystem), so its disk-bound rate is dd / (M+1);
* incremental backup: the volume grown to `--size` (default 10 GiB), 1% of
  its 64 KiB chunks rewritten with random data at random places over the
  whole volume, then `basalt volume backup` (seconds) vs `restic backup` of
  the image changed the same way (restic reads the whole image again).

Every row starts after a `sync`, so that none runs behind the writeback of
the one before (restic's restore leaves its 4 GiB dirty in the page cache).

`--incremental-only` skips the restore rows and restic's full backup (restic
then backs up the unchanged image first, untimed, so that its incremental
row means the same); `--rounds N` repeats the change and the incremental N
times (other chunks each round) and reports the median.

Targets (issue 15): full backup and full restore >= 1.0x restic; the
incremental under 3 s; restore limited by the disk, not by Python.

    flock /work/bench.lock .venv/bin/python benchmarks/backup_bench.py \
        [--data-mib 4096] [--size 10G] [--no-restic] [--incremental-only] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import peers  # noqa: E402

from basalt.admin_client import AdminClient  # noqa: E402
from basalt.credentials import Credentials  # noqa: E402
from blockd.nbd_client import NBDClient  # noqa: E402

KEY, SECRET = "BACKUPBENCHKEY000001", "backup-bench-secret-0123456789abcdefghij"
CHUNK = 64 << 10
MiB = 1 << 20


def run(cmd: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed: {out.stderr[-2000:]}")
    return out


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live descendants (a server's workers)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += times.get(p, 0.0)
        todo += [c for c, parent in parents.items() if parent == p]
    return total


class Timed:
    """Wall seconds and CPU seconds (the command, and the servers named) of a run."""

    def __init__(self, cmd: list[str], env: dict, servers: dict[str, int],
                 then_sync: bool = False) -> None:
        os.sync()  # each row starts on a quiet disk, not behind the last one's writeback
        before = {name: tree_cpu(pid) for name, pid in servers.items()}
        child = peers.children_cpu()
        started = time.perf_counter()
        self.stdout = run(cmd, env).stdout
        if then_sync:
            os.sync()
        self.seconds = time.perf_counter() - started
        self.cpu = {"client": peers.children_cpu() - child}
        self.cpu.update({name: tree_cpu(pid) - before[name] for name, pid in servers.items()})


def machine(path: str) -> str:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")), "?")
    mem = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / (1 << 30)
    fs = subprocess.run(["findmnt", "-n", "-T", path, "-o", "SOURCE,FSTYPE"],
                        capture_output=True, text=True).stdout.split()
    disk = "?"
    if fs:
        name = os.path.basename(fs[0])
        with contextlib.suppress(OSError), open(f"/sys/class/block/{name}/queue/rotational") as f:
            disk = f"{name} ({'rotational' if f.read().strip() == '1' else 'non-rotational'})"
    return (f"machine: {os.cpu_count()} cores ({model}), {mem:.0f} GiB RAM; "
            f"filesystem {' '.join(fs) or '?'} on {disk}, at {path}")


def write_image(path: str, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib // 16):
            f.write(os.urandom(16 * MiB))


async def change(port: int, export: str, image: str, indexes: list[int],
                 seed: int = 7) -> None:
    """The same random 64 KiB at each chunk index of the volume and of the image."""
    rng = random.Random(seed)
    fd = os.open(image, os.O_WRONLY)
    try:
        async with NBDClient("127.0.0.1", port, export) as nbd:
            for start in range(0, len(indexes), 64):
                batch = [(i, rng.randbytes(CHUNK)) for i in indexes[start:start + 64]]
                for i, data in batch:
                    os.pwrite(fd, data, i * CHUNK)
                await asyncio.gather(*(nbd.write(i * CHUNK, data) for i, data in batch))
            await nbd.flush()
    finally:
        os.close(fd)


def restore_rows(cli: list[str], env: dict, servers: dict[str, int], restic: str | None,
                 renv: dict, work: str, data: int, rows: dict[str, list]) -> None:
    """The full restore rows: Basalt's, restic's, restic's with a sync."""
    gib = data / (1 << 30)
    back = Timed(cli + ["volume", "restore", "s3://backups/vol", "--to", "back"], env,
                 servers)
    rows["full restore MB/s"] = [data / back.seconds / 1e6, None]
    rows["restore CPU s/GiB (client+server)"] = [
        (back.cpu["client"] + back.cpu["source"]) / gib, None]
    rows["restore CPU s/GiB (target)"] = [back.cpu["target"] / gib, None]
    if restic:
        out_dir = os.path.join(work, "restored")
        peer = Timed([restic, "restore", "latest", "--target", out_dir], renv, servers)
        rows["full restore MB/s"][1] = data / peer.seconds / 1e6
        shutil.rmtree(out_dir)
        peer = Timed([restic, "restore", "latest", "--target", out_dir], renv, servers,
                     then_sync=True)
        rows["full restore MB/s, restic + sync"] = [rows["full restore MB/s"][0],
                                                    data / peer.seconds / 1e6]
        rows["restore CPU s/GiB (client+server)"][1] = peer.cpu["client"] / gib
        rows["restore CPU s/GiB (target)"][1] = peer.cpu["target"] / gib
        shutil.rmtree(out_dir)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-mib", type=int, default=4096,
                    help="the image, and the volume's first size (MiB, multiple of 16)")
    ap.add_argument("--size", default="10G", help="the volume's size for the incremental")
    ap.add_argument("--changed", type=float, default=1.0,
                    help="percent of the grown volume's chunks changed before the incremental")
    ap.add_argument("--no-restic", action="store_true", help="Basalt's rows only")
    ap.add_argument("--incremental-only", action="store_true",
                    help="only the incremental row (after an untimed full backup)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="incremental rounds (other chunks changed each time); the median")
    args = ap.parse_args()
    basalt = peers.find_executable("basalt", "BASALT_BIN")
    restic = None if args.no_restic else shutil.which("restic")
    rows: dict[str, list] = {}
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="backup-bench-"))
        print(machine(work), flush=True)
        source = stack.enter_context(peers.basalt_server(KEY, SECRET))
        target = stack.enter_context(peers.basalt_server(KEY, SECRET))
        servers = {"source": source.process.pid, "target": target.process.pid}
        nbd_port = int(source.command[source.command.index("--nbd-address") + 1]
                       .rsplit(":", 1)[1])
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
        write_image(image, args.data_mib)
        data = os.path.getsize(image)
        run(cli + ["volume", "create", "bench", "--size", str(data)], env)
        run(["nbdcopy", image, f"nbd://127.0.0.1:{nbd_port}/bench"], env)
        repo = f"s3:{target.endpoint}/backups/restic"
        renv = dict(env, RESTIC_REPOSITORY=repo, RESTIC_CACHE_DIR=os.path.join(work, "rc"))
        if restic:
            run([restic, "init"], renv)

        full = Timed(cli + ["volume", "backup", "bench", "--to", "s3://backups/vol"], env,
                     servers)
        if restic:
            peer = Timed([restic, "backup", "--quiet", image], renv, servers)
        disk_rate = copies = None
        if not args.incremental_only:
            rows["full backup MB/s"] = [data / full.seconds / 1e6, None]
            if restic:
                rows["full backup MB/s"][1] = data / peer.seconds / 1e6
            restore_rows(cli, env, servers, restic, renv, work, data, rows)
            admin = AdminClient(source.endpoint, Credentials(KEY, SECRET))
            copies = int(admin.call("GET", "/_basalt/v1/info")["ec"].split("+")[1]) + 1
            copy = os.path.join(work, "dd.raw")
            dd = Timed(["dd", f"if={image}", f"of={copy}", "bs=16M", "conv=fsync"], env, {})
            os.unlink(copy)
            disk_rate = data / dd.seconds / 1e6

        size = parse_size(args.size)
        run(cli + ["volume", "resize", "bench", "--size", str(size)], env)
        os.truncate(image, size)
        chunks = size // CHUNK
        rounds, peer_rounds = [], []
        for n in range(args.rounds):
            indexes = sorted(random.Random(5 + n).sample(range(chunks),
                                                         int(chunks * args.changed / 100)))
            asyncio.run(change(nbd_port, "bench", image, indexes, seed=7 + n))
            inc = Timed(cli + ["--json", "volume", "backup", "bench", "--to", "s3://backups/vol"],
                        env, servers)
            report = json.loads(inc.stdout.strip().splitlines()[-1])
            assert report["kind"] == "incremental", report
            rounds.append(inc.seconds)
            if restic:
                peer_rounds.append(Timed([restic, "backup", "--quiet", image], renv, servers).seconds)
        inc_name = f"{args.changed:g}%-changed {size >> 30} GiB incremental s"
        rows[inc_name] = [statistics.median(rounds),
                          statistics.median(peer_rounds) if restic else None]

    print(f"data: {data >> 20} MiB of random bytes; incremental: {len(indexes)} chunks "
          f"({len(indexes) * CHUNK >> 20} MiB) changed over {size >> 30} GiB, "
          f"{report['read'] >> 20} MiB read by basalt; target: a second Basalt")
    print(f"{'row':40} {'basalt':>10} {'restic':>10} {'ratio':>7}")
    for name, (ours, peer) in rows.items():
        higher_better = "MB/s" in name
        ratio = "" if peer is None else (f"{ours / peer:6.2f}x" if higher_better
                                         else f"{peer / ours:6.2f}x")
        peer_text = f"{peer:10.2f}" if peer is not None else f"{'-':>10}"
        print(f"{name:40} {ours:10.2f} {peer_text} {ratio:>7}")
    if args.rounds > 1:
        print(f"incremental rounds (s): basalt {' '.join(f'{t:.2f}' for t in rounds)}"
              + (f"; restic {' '.join(f'{t:.2f}' for t in peer_rounds)}" if restic else ""))
    if disk_rate is not None:
        restore = rows["full restore MB/s"][0]
        print(f"disk: dd conv=fsync of the image {disk_rate:.1f} MB/s; Basalt writes {copies} "
              f"copies, so its disk-bound restore is ~{disk_rate / copies:.1f} MB/s: restore at "
              f"{restore / (disk_rate / copies):.2f}x of that")
    print("targets: full backup and full restore >= 1.0x restic; incremental < 3 s; "
          "restore limited by the disk (CPU s/GiB low, rate near dd / copies)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
