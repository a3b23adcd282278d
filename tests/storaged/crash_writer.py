"""A process that writes and overwrites objects until it is killed.

Run as ``python crash_writer.py STATE.json DISK...``; STATE maps each key to its
next version number. Before each put it prints ``BEGIN key version`` and after
the put returns ``ACK key version version-id`` (flushed), so the killer knows
exactly which versions were acknowledged and which one was in flight. With
``CRASH_VERSIONED=1`` the bucket has versioning enabled and every put (and every
tenth write, a delete marker) is kept as a version.
"""

import asyncio
import json
import os
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
    versioned = os.environ.get("CRASH_VERSIONED") == "1"
    if await store.bucket_info("crash") is None:
        await store.make_bucket("crash")
        if versioned:
            await store.set_bucket_config("crash", "versioning", b"Enabled")
    print("READY", flush=True)
    rng = random.Random()
    keys = sorted(state)

    async def writer(lane: int) -> None:
        while True:
            key = keys[rng.randrange(len(keys))]
            version = state[key]
            state[key] += 1
            print(f"BEGIN {key} {version}", flush=True)
            if versioned and version % 10 == 9:
                vid = (await store.delete_object("crash", key)).version_id
            else:
                vid = (await store.put_object("crash", key, body(version_bytes(key, version)))).version
            print(f"ACK {key} {version} {vid}", flush=True)

    await asyncio.gather(*(writer(i) for i in range(4)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
