#!/usr/bin/env python3
"""Storage engine throughput, no HTTP: Basalt's ObjectStore beside raw files.

Rows: 64 MiB PUT and GET MB/s (concurrency 1 and 4), 4 KiB PUT and GET ops/s at
concurrency 16, with fsync on, 4 disk directories on one filesystem (2+2). The
peer is the same filesystem used directly: each object written to one file
with fsync (PUT) and read back whole (GET), from 16 threads for small files.
Basalt writes 2x the bytes (parity) and hashes MD5; the ratio shows the cost.

    .venv/bin/python benchmarks/engine_bench.py [--dir /path/on/the/disk] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import shutil
import sys
import tempfile
import time

from storaged import ObjectStore

MIB = 1 << 20


async def body(data: memoryview, chunk: int = MIB):
    for i in range(0, len(data), chunk):
        yield data[i:i + chunk]


async def timed(coros) -> float:
    start = time.perf_counter()
    await asyncio.gather(*coros)
    return time.perf_counter() - start


async def basalt_rows(root: str, seconds: float) -> dict[str, float]:
    store = ObjectStore.open([os.path.join(root, f"disk{i}") for i in range(4)], sync=True)
    await store.start(heal=False)
    await store.make_bucket("bench")
    big = memoryview(os.urandom(64 * MIB))
    small = os.urandom(4096)
    rows = {}
    try:
        for conc, count in ((1, 6), (4, 12)):
            async def put(i):
                await store.put_object("bench", f"big{i}", body(big), size=len(big))
            elapsed = await timed(put(i) for i in range(count))
            rows[f"64 MiB PUT c={conc} MB/s"] = count * 64 * MIB / elapsed / 1e6

            async def get(i):
                reader = await store.get_object("bench", f"big{i}")
                async for _ in reader:
                    pass
            elapsed = await timed(get(i) for i in range(count))
            rows[f"64 MiB GET c={conc} MB/s"] = count * 64 * MIB / elapsed / 1e6
            for i in range(count):
                await store.delete_object("bench", f"big{i}")

        keys = [200]  # GETs cycle over the keys every PUT lane wrote

        async def small_loop(op, deadline, lane, counter):
            i = 0
            while time.perf_counter() < deadline:
                await op(f"s{lane}-{i % keys[0]}")
                i += 1
            counter.append(i)

        async def put_small(key):
            await store.put_object("bench", key, body(memoryview(small)), size=len(small))

        async def get_small(key):
            reader = await store.get_object("bench", key)
            async for _ in reader:
                pass

        for name, op in (("4 KiB PUT c=16 ops/s", put_small), ("4 KiB GET c=16 ops/s", get_small)):
            counts: list[int] = []
            start = time.perf_counter()
            await asyncio.gather(*(small_loop(op, start + seconds, lane, counts)
                                   for lane in range(16)))
            rows[name] = sum(counts) / (time.perf_counter() - start)
            keys[0] = max(1, min(keys[0], min(counts)))
    finally:
        await store.close()
    return rows


def raw_rows(root: str, seconds: float) -> dict[str, float]:
    """The filesystem alone: one file per object, fsync on write."""
    os.makedirs(root, exist_ok=True)
    big = os.urandom(64 * MIB)
    small = os.urandom(4096)
    rows = {}
    keys = [200]

    def write(path, data):
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def read(path):
        with open(path, "rb") as f:
            while f.read(MIB):
                pass

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for conc, count in ((1, 6), (4, 12)):
            paths = [os.path.join(root, f"big{i}") for i in range(count)]
            start = time.perf_counter()
            list(concurrent.futures.ThreadPoolExecutor(conc).map(lambda p: write(p, big), paths))
            rows[f"64 MiB PUT c={conc} MB/s"] = count * 64 * MIB / (time.perf_counter() - start) / 1e6
            start = time.perf_counter()
            list(concurrent.futures.ThreadPoolExecutor(conc).map(read, paths))
            rows[f"64 MiB GET c={conc} MB/s"] = count * 64 * MIB / (time.perf_counter() - start) / 1e6
            for p in paths:
                os.unlink(p)

        for name, fn in (("4 KiB PUT c=16 ops/s", lambda p: write(p, small)),
                         ("4 KiB GET c=16 ops/s", read)):
            def lane(i, fn=fn):
                n, deadline = 0, time.perf_counter() + seconds
                while time.perf_counter() < deadline:
                    fn(os.path.join(root, f"s{i}-{n % keys[0]}"))
                    n += 1
                return n
            start = time.perf_counter()
            counts = list(pool.map(lane, range(16)))
            rows[name] = sum(counts) / (time.perf_counter() - start)
            keys[0] = max(1, min(keys[0], min(counts)))
    return rows


def main() -> None:
    sys.setswitchinterval(0.0005)  # as basalt serve does (see basalt/cli.py)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=None, help="where to put the disks (default: a temp dir)")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="basalt-bench-", dir=args.dir)
    try:
        try:
            import uvloop
            ours = uvloop.run(basalt_rows(os.path.join(root, "basalt"), args.seconds))
        except ImportError:
            ours = asyncio.run(basalt_rows(os.path.join(root, "basalt"), args.seconds))
        peer = raw_rows(os.path.join(root, "raw"), args.seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{'row':24} {'basalt 2+2':>12} {'raw files':>12} {'ratio':>7}")
    for row, value in ours.items():
        print(f"{row:24} {value:12.0f} {peer[row]:12.0f} {value / peer[row]:6.2f}x")


if __name__ == "__main__":
    main()
