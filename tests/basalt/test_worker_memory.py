"""What keeps an S3 worker small under large transfers (issue 15), counted:
the C heap's free pages go back to the system (basalt.heap, run by every worker),
and a TLS connection's buffers stay small (basalt.worker's read/write limits,
gateway.get's 64 KiB pieces): each connection's OpenSSL memory BIOs keep the
largest size they ever held until the connection closes."""

from __future__ import annotations

import json
import subprocess
import sys

# Frees 32 MiB of 256 KiB blocks from the middle of the heap (a small block
# after each pins the top), as a stream's buffers leave it: resident until
# trimmed. A freed 1 MiB mmapped block first raises glibc's mmap threshold, as
# in a worker, so the 256 KiB blocks come from the heap, not from mmap. The
# trimming loop runs meanwhile; a steady process is not trimmed.
TRIM = r"""
import asyncio, ctypes, json
from basalt import heap

def heap_kib():
    with open("/proc/self/smaps") as f:
        lines = iter(f)
        for line in lines:
            if line.rstrip().endswith("[heap]"):
                for field in lines:
                    if field.startswith("Rss:"):
                        return int(field.split()[1])
    return 0

malloc, free = ctypes.CDLL(None).malloc, ctypes.CDLL(None).free
malloc.restype, malloc.argtypes, free.argtypes = ctypes.c_void_p, (ctypes.c_size_t,), (ctypes.c_void_p,)
free(malloc(1 << 20))

async def main():
    loop = asyncio.ensure_future(heap.keep_trimmed(every=0.01))
    await asyncio.sleep(0.1)
    steady = heap.trims
    blocks, pins = [], []
    for _ in range(128):
        b = malloc(256 << 10)
        ctypes.memset(b, 1, 256 << 10)
        blocks.append(b)
        pins.append(malloc(64))
    for b in blocks:
        free(b)
    freed = heap_kib()
    for _ in range(500):
        await asyncio.sleep(0.01)
        if heap.trims > steady:
            break
    trimmed = heap_kib()
    await asyncio.sleep(0.1)
    loop.cancel()
    return {"steady": steady, "freed": freed, "trimmed": trimmed, "trims": heap.trims}

print(json.dumps(asyncio.run(main())))
"""


def test_grown_heap_is_trimmed_and_a_steady_one_left_alone():
    done = subprocess.run([sys.executable, "-c", TRIM], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    kib = json.loads(done.stdout)
    assert kib["steady"] == 0
    assert kib["freed"] > 24 * 1024  # free() alone gave back little of the 32 MiB
    assert kib["freed"] - kib["trimmed"] > 24 * 1024  # the trim gave back the rest
    assert kib["trims"] == 1


# A worker over TLS (basalt.worker.run, uvloop as `basalt serve` runs it); a
# boto3 client PUTs and GETs 4 MiB through one kept-alive connection.
WORKER = r"""
import asyncio, json, os, socket, sys
import boto3, trustme, uvloop
from aiohttp import web
from botocore.config import Config
from storaged import ObjectStore
from basalt import heap, worker

root = sys.argv[1]
ca = trustme.CA()
cert = ca.issue_cert("127.0.0.1")
ca.cert_pem.write_to_path(root + "/ca.pem")
cert.private_key_pem.write_to_path(root + "/key.pem")
cert.cert_chain_pems[0].write_to_path(root + "/cert.pem")
disks = [os.path.join(root, f"d{i}") for i in range(4)]
asyncio.run(ObjectStore.open(disks, sync=False).close())
sock = socket.create_server(("127.0.0.1", 0))
port = sock.getsockname()[1]
rfd, wfd = os.pipe()
cfg = {"disks": disks, "sync": False, "region": "us-east-1", "key_locks": root + "/locks",
       "access_key": "AKIDWORKERMEM", "secret_key": "worker-mem-secret-0123456789",
       "fd": sock.detach(), "ready_fd": wfd,
       "tls_cert": root + "/cert.pem", "tls_key": root + "/key.pem"}
writes, limits = [], set()
write = web.StreamResponse.write

async def recorded(self, data):
    writes.append(len(data))
    transport = self._req.transport
    limits.add((transport.get_write_buffer_limits()[1], transport.get_read_buffer_limits()[1]))
    return await write(self, data)

web.StreamResponse.write = recorded
body = os.urandom(4 << 20)

def client():
    s3 = boto3.client("s3", endpoint_url=f"https://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id=cfg["access_key"], aws_secret_access_key=cfg["secret_key"],
                      verify=root + "/ca.pem", config=Config(retries={"max_attempts": 1}))
    s3.create_bucket(Bucket="worker-mem")
    s3.put_object(Bucket="worker-mem", Key="k", Body=body)
    return s3.get_object(Bucket="worker-mem", Key="k")["Body"].read() == body

async def main():
    serving = asyncio.ensure_future(worker.run(cfg))
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, os.read, rfd, 1) == b"R"
    same = await loop.run_in_executor(None, client)
    for _ in range(100):  # the trimming loop's first turn (every 0.5 s)
        if heap.trims:
            break
        await asyncio.sleep(0.05)
    serving.cancel()
    print(json.dumps({"same": same, "trims": heap.trims, "largest_write": max(writes),
                      "written": sum(writes), "limits": sorted(limits)}))

uvloop.run(main())
"""


def test_tls_worker_writes_small_pieces_and_queues_little(tmp_path):
    done = subprocess.run([sys.executable, "-c", WORKER, str(tmp_path)], capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    seen = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert seen["same"]
    assert seen["written"] >= 4 << 20
    assert seen["largest_write"] <= 64 * 1024  # gateway.get.SEND_PIECE (was 256 KiB)
    assert seen["limits"] == [[64 * 1024, 64 * 1024]]  # uvloop's: 512 KiB out, 256 KiB in
    assert seen["trims"] >= 1
