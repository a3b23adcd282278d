"""SIGKILL in the middle of a stream of writes and overwrites.

After each kill and restart every object must be exactly one version the writer
produced: its last acknowledged version or one whose put was still in flight,
never a mix, never an older one. Leftovers of the interrupted writes are gone.
"""

import json
import os
import random
import signal
import subprocess
import sys

import pytest

from storaged import DeleteMarker, ObjectStore

from .crash_writer import version_bytes
from .helpers import read

WRITER = os.path.join(os.path.dirname(__file__), "crash_writer.py")
KEYS = [f"key{i}" for i in range(6)]


def run_until_killed(dirs, state, state_path, acks_before_kill, versioned=False, ids=None):
    """Run the writer; SIGKILL it after some ACKs. Returns (acked, in_flight).

    ``state`` (next version per key) is advanced past every version begun;
    ``ids`` (when given) collects (key, version number, version id) of each ACK.
    """
    json.dump(state, open(state_path, "w"))
    env = dict(os.environ, PYTHONPATH=os.getcwd(), CRASH_VERSIONED="1" if versioned else "0")
    proc = subprocess.Popen([sys.executable, WRITER, state_path, *dirs], stdout=subprocess.PIPE,
                            text=True, env=env)
    acked: dict[str, int] = {}
    begun: dict[str, set[int]] = {k: set() for k in KEYS}
    seen = 0
    try:
        assert proc.stdout.readline().strip() == "READY"
        for line in proc.stdout:
            word, key, version, *vid = line.split()
            if vid and ids is not None:
                ids.append((key, int(version), vid[0]))
            state[key] = max(state[key], int(version) + 1)
            if word == "BEGIN":
                begun[key].add(int(version))
            else:
                acked[key] = int(version)  # acks come in commit order: the latest wins
                begun[key].discard(int(version))
                seen += 1
                if seen >= acks_before_kill:
                    break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    return acked, begun


async def test_sigkill_during_writes_keeps_each_object_whole(roots, tmp_path):
    dirs = roots(4)
    state = {k: 0 for k in KEYS}
    last_acked: dict[str, int] = {}
    rng = random.Random(7)
    state_path = str(tmp_path / "state.json")
    interrupted = 0
    for round_ in range(4):
        acked, in_flight = run_until_killed(dirs, state, state_path, rng.randint(5, 25))
        last_acked.update(acked)
        store = ObjectStore.open(dirs, sync=True)
        interrupted += sum(len(d.pending()) for d in store.disks)
        await store.start(heal=False)  # settles the interrupted writes
        try:
            for key in KEYS:
                allowed = set(in_flight[key])
                if key in last_acked:
                    allowed.add(last_acked[key])
                try:
                    data = await read(store, "crash", key)
                except Exception:
                    assert key not in last_acked, f"{key}: acknowledged version lost"
                    continue
                matches = [v for v in allowed if version_bytes(key, v) == data]
                assert matches, f"round {round_}: {key} is not one whole allowed version"
                last_acked[key] = matches[0]  # what a reader now sees is acknowledged
            for disk in store.disks:
                assert disk.pending() == [], "interrupted writes left pending files"
                assert os.listdir(os.path.join(disk.root, "tmp")) == []
            report = await store.heal(deep=True)
            assert report.failed == 0
            # Every shard file on disk now belongs to a current version.
            live = {(await store.head_object("crash", k)).version_id for k in KEYS
                    if await _exists(store, k)}
            for disk in store.disks:
                for _, _, files in os.walk(os.path.join(disk.root, "data")):
                    assert {f.split(".")[0] for f in files} <= live
        finally:
            await store.close()
    assert interrupted, "no kill landed in the middle of a write"


async def _exists(store, key):
    try:
        await store.head_object("crash", key)
        return True
    except Exception:
        return False


async def test_sigkill_during_versioned_writes_keeps_every_acknowledged_version(roots, tmp_path):
    """Every acknowledged version and delete marker survives SIGKILL, readable by its
    id; interrupted ones leave no records half-installed and no stray shard files."""
    dirs = roots(4)
    state = {k: 0 for k in KEYS}
    ids: list[tuple[str, int, str]] = []
    rng = random.Random(11)
    state_path = str(tmp_path / "state.json")
    for round_ in range(3):
        run_until_killed(dirs, state, state_path, rng.randint(10, 30), versioned=True, ids=ids)
        store = ObjectStore.open(dirs, sync=True)
        await store.start(heal=False)
        try:
            for key, number, vid in ids:
                if number % 10 == 9:
                    with pytest.raises(DeleteMarker):
                        await store.head_object("crash", key, vid)
                    continue
                info = await store.head_object("crash", key, vid)
                reader = await store.get_object("crash", key, info=info)
                assert await reader.read() == version_bytes(key, number), (round_, key, number)
            listed = set()
            page = await store.list_versions("crash", max_keys=100_000)
            for entry in page.entries:
                listed.add(entry.info.version)
            assert {vid for _, _, vid in ids} <= listed
            for disk in store.disks:
                assert disk.pending() == []
            assert (await store.heal(deep=True)).failed == 0
            live = {e.info.version_id for e in page.entries}
            for disk in store.disks:
                for _, _, files in os.walk(os.path.join(disk.root, "data")):
                    assert {f.split(".")[0] for f in files} <= live
        finally:
            await store.close()
