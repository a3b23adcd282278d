"""Disk identity: new deployments, wiped, replaced, foreign and copied disks."""

import json
import os
import shutil

import pytest

from storaged import FormatError, ObjectStore
from storaged.format import assemble, read_format


def test_new_deployment_formats_every_disk(roots):
    dirs = roots(4)
    slots = assemble(dirs, 2, 2, 1 << 20)
    fmts = [read_format(d) for d in dirs]
    assert len({f.deployment_id for f in fmts}) == 1
    assert [f.position for f in fmts] == [0, 1, 2, 3]
    assert not any(s.fresh for s in slots)
    # Re-assembling in another order finds each disk's own position.
    again = assemble(list(reversed(dirs)), None, None, 1 << 20)
    assert [s.root for s in again] == dirs


def test_wiped_disk_is_reformatted_into_its_position(roots):
    dirs = roots(4)
    assemble(dirs, 2, 2, 1 << 20)
    before = read_format(dirs[2])
    shutil.rmtree(dirs[2])
    slots = assemble(dirs, None, None, 1 << 20)
    assert slots[2].fresh and slots[2].root == dirs[2]
    assert read_format(dirs[2]) == before
    assert os.path.exists(os.path.join(dirs[2], ".healing"))


def test_replaced_disk_at_another_path(roots, tmp_path):
    dirs = roots(4)
    assemble(dirs, 2, 2, 1 << 20)
    shutil.rmtree(dirs[1])
    new = str(tmp_path / "new-disk")
    slots = assemble([dirs[0], new, dirs[2], dirs[3]], None, None, 1 << 20)
    assert slots[1].root == new and slots[1].fresh


def test_foreign_disk_is_refused(roots, tmp_path):
    dirs = roots(4)
    assemble(dirs, 2, 2, 1 << 20)
    other = [str(tmp_path / f"other{i}") for i in range(4)]
    assemble(other, 2, 2, 1 << 20)
    with pytest.raises(FormatError, match="another deployment"):
        assemble(dirs[:3] + other[:1], None, None, 1 << 20)


def test_copied_disk_is_refused(roots, tmp_path):
    dirs = roots(4)
    assemble(dirs, 2, 2, 1 << 20)
    shutil.rmtree(dirs[3])
    shutil.copytree(dirs[0], dirs[3])
    with pytest.raises(FormatError, match="same disk"):
        assemble(dirs, None, None, 1 << 20)


def test_mismatched_erasure_coding_and_disk_count(roots):
    dirs = roots(4)
    assemble(dirs, 2, 2, 1 << 20)
    with pytest.raises(FormatError, match="formatted for 2\\+2"):
        assemble(dirs, 3, 1, 1 << 20)
    with pytest.raises(FormatError, match="has 4 disks, 3 given"):
        assemble(dirs[:3], None, None, 1 << 20)
    with pytest.raises(FormatError, match="needs 4 disks"):
        assemble(roots(3, "fresh"), 2, 2, 1 << 20)


def test_non_basalt_directory_is_not_erased(roots):
    dirs = roots(4)
    os.makedirs(dirs[0])
    with open(os.path.join(dirs[0], "precious.txt"), "w") as f:
        f.write("user data")
    with pytest.raises(FormatError, match="refusing"):
        assemble(dirs, 2, 2, 1 << 20)
    assert os.path.exists(os.path.join(dirs[0], "precious.txt"))


def test_damaged_format_is_reported(roots):
    dirs = roots(4)
    assemble(dirs, 2, 2, 1 << 20)
    with open(os.path.join(dirs[1], "format.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(FormatError, match="damaged"):
        assemble(dirs, None, None, 1 << 20)


def test_default_erasure_coding_from_disk_count(roots):
    for n, expect in [(1, (1, 0)), (2, (1, 1)), (4, (2, 2)), (6, (4, 2)), (8, (4, 4))]:
        dirs = roots(n, f"n{n}-")
        store = ObjectStore.open(dirs, sync=False)
        try:
            assert (store.k, store.m) == expect
            fmt = json.load(open(os.path.join(dirs[0], "format.json")))
            assert (fmt["set"]["k"], fmt["set"]["m"]) == expect
        finally:
            store.pool.shutdown()
            for d in store.disks:
                d.close()
