"""Metadata operations, queries and results survive encoding as plain data."""

import dataclasses

import pytest

from storaged import wire
from storaged.metadb import (
    AddPending,
    DeleteBucket,
    DeleteVersion,
    EndUpload,
    PutBucket,
    PutBucketConfig,
    PutObject,
    PutPart,
    PutUpload,
    Replaced,
    RestoreObject,
    UpdateVersion,
)

OPS = [
    PutBucket("b", b"\x81\xa2ct\x01"),
    DeleteBucket("b", True, b"raw"),
    AddPending("vid", "b", "k", [1, 2], "up"),
    PutObject("b", "k", b"rec", None, replace_equal=True),
    PutObject("b", "k/\x00é", b"rec", b"inline", force=True),
    UpdateVersion("b", "k", b"rec"),
    RestoreObject("b", "k", 12, "vid", b"prev", None),
    DeleteVersion("b", "k", 1 << 62, "vid"),
    PutBucketConfig("b", "lock", 7, None),
    PutUpload("b", "k", "u1", b"r"),
    PutPart("b", "k", "u1", 3, "pid", b"r"),
    EndUpload("b", "k", "u1", (5, "vid")),
    EndUpload("b", "k", "u1", None),
]


@pytest.mark.parametrize("op", OPS, ids=lambda op: type(op).__name__)
def test_ops_round_trip(op):
    back = wire.unpack(wire.pack([op]))[0]
    assert type(back) is type(op)
    assert dataclasses.astuple(back) == dataclasses.astuple(op)
    assert back == op


def test_results_keep_tuples_and_records():
    results = [Replaced(True, b"old", None), [("pid", 1), ("pid2", 2)], {(1, 2): "x"}, None,
               "deleted", memoryview(b"mv")]
    back = wire.unpack(wire.pack(results))
    assert back == [Replaced(True, b"old", None), [("pid", 1), ("pid2", 2)], {(1, 2): "x"},
                    None, "deleted", b"mv"]
    assert isinstance(back[1][0], tuple)


def test_unregistered_classes_are_refused_both_ways():
    @dataclasses.dataclass
    class Evil:
        x: int

    with pytest.raises(TypeError):
        wire.pack(Evil(1))
    forged = wire.pack([PutBucket("b", b"")]).replace(b"PutBucket", b"PutBuckeX")
    with pytest.raises(ValueError, match="unknown wire class"):
        wire.unpack(forged)


def test_register_requires_a_dataclass():
    with pytest.raises(TypeError):
        wire.register(int)
