"""MetaDB.commit_now from many threads: each caller's operations atomic, every
outcome its own, and concurrent callers batched into fewer transactions."""

from __future__ import annotations

import threading
import time

import pytest

from storaged.errors import StorageError
from storaged.metadb import MetaDB, PutBucket


class Failing:
    """An operation that fails inside the transaction."""

    def apply(self, tx):
        raise StorageError("refused")


def test_concurrent_commits_are_grouped_and_each_gets_its_outcome(tmp_path):
    db = MetaDB(str(tmp_path / "meta"))
    batches = []
    apply_batch = db._apply_batch

    def slow_batch(batch):
        batches.append(len(batch))
        time.sleep(0.01)  # an fsync's time: others queue meanwhile
        return apply_batch(batch)
    db._apply_batch = slow_batch
    outcomes: dict[int, object] = {}

    def commit(i: int) -> None:
        ops = [PutBucket(f"b{i}", b"x")] + ([Failing()] if i % 5 == 0 else [])
        try:
            outcomes[i] = db.commit_now(ops)
        except StorageError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    try:
        assert sum(batches) == 40 and len(batches) < 40
        for i in range(40):
            if i % 5 == 0:   # its whole commit undone, the others' kept
                assert isinstance(outcomes[i], StorageError)
                assert db.get(b"buckets", f"b{i}".encode()) is None
            else:
                assert outcomes[i] == [True] and db.get(b"buckets", f"b{i}".encode()) == b"x"
        assert db.commit_now([PutBucket("b1", b"y")]) == [False]  # alone: at once
    finally:
        db.close()


def test_a_failed_transaction_fails_every_caller_in_it(tmp_path):
    db = MetaDB(str(tmp_path / "meta"))

    def broken(batch):
        return [(False, StorageError("disk gone"))] * len(batch)
    db._apply_batch = broken
    try:
        with pytest.raises(StorageError, match="disk gone"):
            db.commit_now([PutBucket("b", b"x")])
        db._apply_batch = MetaDB._apply_batch.__get__(db)
        assert db.commit_now([PutBucket("b", b"x")]) == [True]  # the lead was given back
    finally:
        db.close()
