#!/usr/bin/env python3
"""Erasure coding throughput: Basalt's codec beside pyeclib and memcpy.

For 4+2, 8+4 and 12+4 at 1 MiB blocks: encode and decode (M data shards lost)
GB/s of block data, on one thread and on two threads, with pyeclib's
isa_l_rs_vand driver (the same ISA-L, called through liberasurecode) as the
peer and memcpy of the same bytes as the ceiling.

    .venv/bin/python benchmarks/erasure_bench.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import threading
import time

from pyeclib.ec_iface import ECDriver

from erasure import Codec, allocate

BLOCK = 1 << 20


def rate(fn, seconds: float, threads: int = 1) -> float:
    """Calls per second of ``fn`` (each thread has its own state from ``fn()``)."""
    counts = [0] * threads

    def worker(i: int) -> None:
        step = fn()
        deadline = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < deadline:
            step()
            n += 1
        counts[i] = n

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def basalt_encode(k: int, m: int):
    def make():
        codec = Codec(k, m)
        shard = BLOCK // k
        stripe, parity = allocate(BLOCK), allocate(m * shard)
        stripe[:] = os.urandom(BLOCK)
        return lambda: codec.encode(stripe, parity, shard)
    return make


def basalt_decode(k: int, m: int):
    def make():
        codec = Codec(k, m)
        shard = BLOCK // k
        stripe, parity = allocate(BLOCK), allocate(m * shard)
        stripe[:] = os.urandom(BLOCK)
        codec.encode(stripe, parity, shard)
        shards = [stripe[i * shard:(i + 1) * shard] for i in range(k)]
        shards += [parity[i * shard:(i + 1) * shard] for i in range(m)]
        lost = list(range(m))  # the worst case: data shards gone
        present = [None if i in lost else s for i, s in enumerate(shards)]
        out = {i: allocate(shard) for i in lost}
        return lambda: codec.reconstruct(present, shard, out)
    return make


def pyeclib_encode(k: int, m: int):
    def make():
        # As pyeclib's own bench does: the previous fragments stay alive until the
        # next encode returns. Dropping them first makes glibc unmap and re-fault
        # the buffers on every call, about 10x slower — the effect Basalt's
        # reused buffers avoid.
        driver = ECDriver(k=k, m=m, ec_type="isa_l_rs_vand")
        data = os.urandom(BLOCK)
        last = [None]

        def step():
            last[0] = driver.encode(data)
        return step
    return make


def pyeclib_decode(k: int, m: int):
    def make():
        driver = ECDriver(k=k, m=m, ec_type="isa_l_rs_vand")
        frags = driver.encode(os.urandom(BLOCK))[m:]
        last = [None]

        def step():
            last[0] = driver.decode(frags)
        return step
    return make


def memcpy():
    def make():
        src, dst = allocate(BLOCK), allocate(BLOCK)
        s = ctypes.addressof(ctypes.c_char.from_buffer(src))
        d = ctypes.addressof(ctypes.c_char.from_buffer(dst))
        keep = (src, dst)  # the lambda must keep the mappings alive
        return lambda: ctypes.memmove(d, s, BLOCK) and keep
    return make


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    gbs = lambda calls: calls * BLOCK / 1e9  # noqa: E731
    print(f"{'case':24} {'1 thread':>10} {'2 threads':>10} {'scaling':>8} {'pyeclib':>9} {'ratio':>6}")
    ceiling = gbs(rate(memcpy(), args.seconds))
    print(f"{'memcpy 1 MiB':24} {ceiling:9.1f}G {gbs(rate(memcpy(), args.seconds, 2)):9.1f}G")
    for k, m in ((4, 2), (8, 4), (12, 4)):
        for name, ours, peer in (("encode", basalt_encode, pyeclib_encode),
                                 ("decode", basalt_decode, pyeclib_decode)):
            one = gbs(rate(ours(k, m), args.seconds))
            two = gbs(rate(ours(k, m), args.seconds, 2))
            ref = gbs(rate(peer(k, m), args.seconds))
            print(f"{name} {k}+{m} @1MiB{'':9} {one:9.1f}G {two:9.1f}G {two / one:7.2f}x "
                  f"{ref:8.1f}G {one / ref:5.2f}x")
    print("G = GB/s of block data; ratio = Basalt 1 thread / pyeclib 1 thread")


if __name__ == "__main__":
    main()
