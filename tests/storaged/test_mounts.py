"""Disks that were mount points: a failed mount is offline, never formatted or written."""

import json
import logging
import os
import shutil

import pytest

from storaged import ObjectStore
from storaged import mounts as mounts_mod
from storaged.format import NOT_FORMATTED, read_format
from storaged.mounts import NOT_MOUNTED, OTHER_FS, MountFacts, offline_reason

from .helpers import chunks, read

BLOB = os.urandom(300_000)


@pytest.fixture
def fake_mounts(monkeypatch):
    """The seam: which roots are mount points, and which filesystem each is on."""
    state = {"mounted": set(), "fsid": {}}
    real_fs_ids = mounts_mod.fs_ids

    def ismount(path):
        return os.path.realpath(path) in state["mounted"]

    def fs_ids(path):
        fsid, dev = real_fs_ids(path)
        return state["fsid"].get(os.path.realpath(path), fsid), dev

    monkeypatch.setattr(mounts_mod, "ismount", ismount)
    monkeypatch.setattr(mounts_mod, "fs_ids", fs_ids)
    return state


def empty(root):
    """What a failed mount leaves: the bare (empty) mount point directory."""
    shutil.rmtree(root)
    os.mkdir(root)


async def fill(dirs, **kw):
    store = ObjectStore.open(dirs, sync=False, **kw)
    await store.start(heal=False)
    await store.make_bucket("b")
    await store.put_object("b", "big", chunks(BLOB))
    await store.put_object("b", "small", chunks(b"hello"))
    await store.close()


async def check_readable(store):
    assert await read(store, "b", "big") == BLOB
    assert await read(store, "b", "small") == b"hello"


async def test_every_format_records_every_disks_mount_facts(roots, fake_mounts):
    dirs = roots(4)
    for d in dirs:
        os.makedirs(d)
    fake_mounts["mounted"].add(os.path.realpath(dirs[1]))
    await fill(dirs, ec=(2, 2))
    for d in dirs:
        with open(os.path.join(d, "format.json")) as f:
            recorded = json.load(f)["mounts"]
        assert {p: v["mount_point"] for p, v in recorded.items()} == {
            p: p == dirs[1] for p in dirs}
        assert all(isinstance(v["fsid"], int) and v["dev"] for v in recorded.values())


async def test_unmounted_disk_stays_offline_and_empty(roots, fake_mounts, open_store, caplog):
    dirs = roots(4)
    for d in dirs:
        os.makedirs(d)
    fake_mounts["mounted"].add(os.path.realpath(dirs[2]))
    await fill(dirs, ec=(2, 2))
    fake_mounts["mounted"].clear()  # the mount failed: its empty mount point is left
    empty(dirs[2])
    caplog.set_level(logging.WARNING)
    store = await open_store(dirs=dirs)
    disk = store.disks[2]
    assert disk.root == dirs[2] and not disk.online and disk.reason == NOT_MOUNTED
    states = {s["path"]: s for s in store.disk_states()}
    assert states[dirs[2]]["state"] == "offline" and states[dirs[2]]["reason"] == NOT_MOUNTED
    assert all(states[d] == {"position": states[d]["position"], "path": d, "state": "online"}
               for d in dirs if d != dirs[2])
    await check_readable(store)
    for _ in range(3):  # the owner's watcher never formats it, and says so once
        store.healer.watch_disks()
    await store.put_object("b", "new", chunks(b"written while it is away"))
    assert os.listdir(dirs[2]) == []
    logged = [r for r in caplog.records if getattr(r, "fields", {}).get("reason") == NOT_MOUNTED]
    assert len(logged) == 1 and logged[0].fields["path"] == dirs[2]
    await store.close()
    # An S3 worker (not the owner) comes to the same verdict from the formats.
    worker = ObjectStore.open(dirs, sync=False, clean=False)
    try:
        assert [s.get("reason") for s in worker.disk_states()][2] == NOT_MOUNTED
        worker.healer.owner = False
        worker.healer.watch_disks()
        assert os.listdir(dirs[2]) == []
    finally:
        worker.pool.shutdown()
        for d in worker.disks:
            d.close()
    store = await open_store(dirs=dirs)
    assert store.disk_states()[2]["reason"] == NOT_MOUNTED
    # Mounted again (a new, blank disk put in its place): formatted and healed.
    fake_mounts["mounted"].add(os.path.realpath(dirs[2]))
    store.healer.watch_disks()
    assert store.disks[2].online and store.disks[2].healing and store.disks[2].reason is None
    assert read_format(dirs[2]).mounts[dirs[2]].mount_point
    report = await store.heal(deep=False)
    assert report.failed == 0
    await check_readable(store)


async def test_disk_unmounted_while_running_goes_offline_untouched(roots, fake_mounts, open_store):
    dirs = roots(4)
    for d in dirs:
        os.makedirs(d)
    fake_mounts["mounted"].add(os.path.realpath(dirs[0]))
    await fill(dirs, ec=(2, 2))
    store = await open_store(dirs=dirs)
    assert all(d.online for d in store.disks)
    fake_mounts["mounted"].clear()
    empty(dirs[0])  # umount -l: the mount point shows the empty directory below
    store.healer.watch_disks()
    assert not store.disks[0].online and store.disks[0].reason == NOT_MOUNTED
    assert os.listdir(dirs[0]) == []
    await check_readable(store)


async def test_plain_directory_on_another_filesystem_is_not_formatted(roots, fake_mounts,
                                                                      open_store):
    dirs = roots(4)
    await fill(dirs, ec=(2, 2))
    empty(dirs[3])  # the filesystem above it vanished; someone made the path again
    fake_mounts["fsid"][os.path.realpath(dirs[3])] = 12345
    store = await open_store(dirs=dirs)
    assert store.disk_states()[3]["reason"] == OTHER_FS
    assert os.listdir(dirs[3]) == []
    await check_readable(store)
    # Same filesystem again: a wiped directory, reformatted as always.
    del fake_mounts["fsid"][os.path.realpath(dirs[3])]
    store.healer.watch_disks()
    assert store.disks[3].online and store.disks[3].healing


async def test_missing_disk_is_recreated_only_when_allowed(roots, open_store):
    dirs = roots(4)
    await fill(dirs, ec=(2, 2))
    shutil.rmtree(dirs[1])
    store = await open_store(dirs=dirs, create=lambda root: root != dirs[1])
    assert store.disk_states()[1]["reason"] == f"missing ({dirs[1]} does not exist)"
    store.healer.watch_disks()
    assert not os.path.exists(dirs[1])
    await check_readable(store)
    await store.close()
    # An S3 worker (no ``create`` of its own) follows what the formats record.
    worker = ObjectStore.open(dirs, sync=False, clean=False)
    try:
        assert worker.disk_states()[1]["reason"] == f"missing ({dirs[1]} does not exist)"
    finally:
        worker.pool.shutdown()
        for d in worker.disks:
            d.close()
    # Inside the data dir (create allowed): recreated and healed, as before.
    store = await open_store(dirs=dirs, create=lambda root: True)
    assert store.disks[1].online and store.disks[1].healing
    assert not read_format(dirs[0]).fixed


async def test_worker_never_formats(roots, open_store):
    dirs = roots(4)
    await fill(dirs, ec=(2, 2))
    shutil.rmtree(dirs[0])
    worker = ObjectStore.open(dirs, sync=False, clean=False)
    try:
        assert worker.disk_states()[0] == {"position": 0, "path": dirs[0], "state": "offline",
                                           "reason": NOT_FORMATTED}
        assert not os.path.exists(dirs[0])
    finally:
        worker.pool.shutdown()
        for d in worker.disks:
            d.close()


def test_verdict(tmp_path, fake_mounts):
    root = str(tmp_path)
    here = MountFacts.of(root)
    mounted = MountFacts(True, here.fsid, here.dev)
    assert offline_reason(root, None, formatted=False, create=False) is None
    assert offline_reason(root, here, formatted=False, create=False) is None
    assert offline_reason(root, mounted, formatted=True, create=True) == NOT_MOUNTED
    fake_mounts["mounted"].add(os.path.realpath(root))
    assert offline_reason(root, mounted, formatted=False, create=True) is None
    fake_mounts["mounted"].clear()
    other = MountFacts(False, here.fsid + 1, here.dev)
    assert offline_reason(root, other, formatted=False, create=True) == OTHER_FS
    assert offline_reason(root, other, formatted=True, create=True) is None  # its own format
    gone = str(tmp_path / "gone")
    assert offline_reason(gone, here, formatted=False, create=True) is None
    assert offline_reason(gone, here, formatted=False, create=False).startswith("missing")
    assert offline_reason(gone, mounted, formatted=False, create=True) == NOT_MOUNTED
