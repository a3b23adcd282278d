"""A process that writes and overwrites objects until it is killed.

Run as ``python crash_writer.py STATE.json DISK...``; STATE maps each key to its
next version number. Before each put it prints ``BEGIN key version`` and after
the put returns ``ACK key version`` (flushed), so the killer knows exactly
which versions were acknowledged and which one was in flight.
"""

import asyncio
import json
import random
import sys

from storaged import ObjectStore

SIZES = [5_000, 200_000, 2_500_000]


def version_bytes(key: str, version: int) -> bytes:
    rng = random.Random(f"{key}:{version}")
    return rng.randbytes(rng.choice(SIZES))


async def body(data: bytes):
    for i in range(0, len(data), 256 * 1024):
        yield data[i:i + 256 * 1024]
        await asyncio.sleep(0)


async def main(state_path: str, dirs: list[str]) -> None:
    state = json.load(open(state_path))
    store = ObjectStore.open(dirs, sync=True)
    await store.start(heal=False)
    if store.bucket_info("crash") is None:
        await store.make_bucket("crash")
    print("READY", flush=True)
    rng = random.Random()
    keys = sorted(state)

    async def writer(lane: int) -> None:
        while True:
            key = keys[rng.randrange(len(keys))]
            version = state[key]
            state[key] += 1
            print(f"BEGIN {key} {version}", flush=True)
            await store.put_object("crash", key, body(version_bytes(key, version)))
            print(f"ACK {key} {version}", flush=True)

    await asyncio.gather(*(writer(i) for i in range(4)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
