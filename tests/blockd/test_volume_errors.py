"""Volume metadata ops travel as plain data; volume errors become the admin
API's statuses in one place."""

import pytest

from blockd import errors
from blockd.api import http_status
from blockd.images import ImageInUse
from blockd.volmeta import ApplyChanges, MetaChanges, ReplaceVolumeTables
from storaged import wire


def test_volume_metadata_ops_round_trip():
    changes = MetaChanges()
    changes.records["v"] = b"record"
    changes.records["gone"] = None
    changes.maps[("map1", 7)] = 42
    changes.maps[("map1", 8)] = None
    changes.refcounts[42] = 2
    changes.free[9] = True
    changes.next_slot = 43
    for op in (ApplyChanges(changes), ReplaceVolumeTables(changes)):
        back = wire.unpack(wire.pack([op]))[0]
        assert type(back) is type(op) and back.changes == changes
        assert ("map1", 7) in back.changes.maps


@pytest.mark.parametrize("error, status", [
    (errors.NoSuchVolume("v"), 404),
    (errors.NoSuchImage("i"), 404),
    (errors.VolumeExists("v"), 409),
    (errors.InvalidVolumeName(), 400),
    (errors.InvalidArgument("InvalidArgument", "bad size"), 400),
    (ImageInUse("i", ["a", "b"]), 409),
    (errors.VolumeError("SomethingNew", "unmapped code"), 500),
])
def test_each_code_has_its_status(error, status):
    assert http_status(error) == status
