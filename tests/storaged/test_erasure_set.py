"""ErasureSet: commit on every disk with one quorum rule, and votes that do not
count a healing disk's silence as absence."""

import threading

import pytest

from storaged import DiskFull, WriteQuorumError
from storaged.erasure_set import Committed, ErasureSet


class FakeDisk:
    def __init__(self, position, answer=None, fail=None, healing=False, online=True):
        self.position, self.answer, self.fail = position, answer, fail
        self.healing, self.online = healing, online
        self.committed = []

    async def commit(self, ops):
        if self.fail is not None:
            raise self.fail
        self.committed.append(ops)
        return [op for op in ops]

    local = False

    async def read(self, query, *args):
        assert args == ("t", b"k")
        if self.fail is not None:
            raise self.fail
        return self.answer


async def test_commit_all_keeps_each_disks_outcome_and_skips_offline_disks():
    disks = [FakeDisk(0), FakeDisk(1, fail=OSError("gone")), FakeDisk(2, online=False),
             FakeDisk(3)]
    done = await ErasureSet(disks, 2, 2).commit_all(lambda p: [f"op{p}"])
    assert done.results == {0: ["op0"], 3: ["op3"]}
    assert list(done.errors) == [1] and disks[2].committed == []
    with pytest.raises(WriteQuorumError):
        done.require(3, "test")
    done.require(2, "test")


async def test_require_reports_full_disks():
    done = Committed({0: [True]}, {1: DiskFull("full"), 2: OSError("x")})
    with pytest.raises(DiskFull):
        done.require(3, "test")


def test_applied_counts_true_results_and_applied_flags():
    class Replaced:
        def __init__(self, applied):
            self.applied = applied
    done = Committed({0: [True], 1: [False], 2: [Replaced(True)], 3: [Replaced(False)]}, {})
    assert sorted(done.applied()) == [0, 2]


async def test_vote_leaves_out_healing_disks_without_the_item():
    disks = [FakeDisk(0, b"r"), FakeDisk(1, None, healing=True), FakeDisk(2, b"r", healing=True),
             FakeDisk(3, None), FakeDisk(4, fail=OSError("io"))]
    assert await ErasureSet(disks, 3, 2).vote("get", "t", b"k") == {0: b"r", 2: b"r", 3: None}


class LocalFake(FakeDisk):
    local = True

    def read_now(self, query, *args):
        self.thread = threading.get_ident()
        if self.fail is not None:
            raise self.fail
        return (query, args, self.position)


async def test_ask_scans_local_disks_in_one_thread_off_the_loop_and_remote_ones_too():
    disks = [LocalFake(0), FakeDisk(1, b"remote"), LocalFake(2, fail=OSError("io")),
             LocalFake(3, online=False), LocalFake(4)]
    answers = await ErasureSet(disks, 3, 2).ask("scan", "t", b"k")
    assert [(d.position, a) for d, a in answers] == [
        (0, ("scan", ("t", b"k"), 0)), (1, b"remote"), (4, ("scan", ("t", b"k"), 4))]
    assert disks[0].thread == disks[4].thread != threading.get_ident()
    assert not hasattr(disks[3], "thread")
    only = await ErasureSet(disks, 3, 2).ask("scan", "t", b"k", positions=[4])
    assert [d.position for d, _ in only] == [4]


async def test_ask_answers_a_local_point_lookup_without_a_thread_hop():
    disks = [LocalFake(0), FakeDisk(1, b"remote"), LocalFake(2)]
    answers = await ErasureSet(disks, 2, 1).ask("get", "t", b"k")
    assert [a for _, a in answers] == [("get", ("t", b"k"), 0), b"remote", ("get", ("t", b"k"), 2)]
    assert disks[0].thread == disks[2].thread == threading.get_ident()
