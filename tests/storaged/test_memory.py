"""A 2 GiB object streams in and out with a few MiB of memory per request."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import asyncio, hashlib, resource, sys
    from storaged import ObjectStore

    SIZE, CHUNK = 2 << 30, 1 << 20

    def rss_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    async def body(md5):
        block = bytearray((b"basalt" * (CHUNK // 6 + 1))[:CHUNK])
        for i in range(SIZE // CHUNK):
            block[:8] = i.to_bytes(8, "little")  # every chunk different
            md5.update(block)
            yield bytes(block)

    async def main(dirs):
        store = ObjectStore.open(dirs, sync=False)
        await store.start(heal=False)
        await store.make_bucket("b")
        base = rss_mib()
        sent = hashlib.md5()
        info = await store.put_object("b", "huge", body(sent))
        after_put = rss_mib()
        got = hashlib.md5()
        n = 0
        async for chunk in await store.get_object("b", "huge"):
            got.update(chunk)
            n += len(chunk)
        after_get = rss_mib()
        await store.close()
        assert n == SIZE and got.hexdigest() == sent.hexdigest() == info.etag
        print(f"{base:.0f} {after_put:.0f} {after_get:.0f}")

    asyncio.run(main(sys.argv[1:]))
""")


def test_two_gib_object_streams_with_bounded_memory(roots):
    dirs = roots(4)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-c", SCRIPT, *dirs], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    base, after_put, after_get = map(float, out.stdout.split())
    # Peak RSS growth over the whole round trip: a few stripe batches, not the object.
    assert after_put - base < 64, (base, after_put)
    assert after_get - base < 64, (base, after_get)
