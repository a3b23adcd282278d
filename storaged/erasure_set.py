"""An erasure set: N = K + M disks, and the two ways the engine talks to all of them.

* :meth:`ErasureSet.commit_all` applies metadata operations on every online disk
  (or on given positions) at once and keeps each disk's result or error;
  :meth:`Committed.require` is the one rule for when such a write stands.
* :meth:`ErasureSet.vote` reads one item from every online disk; a disk still
  being healed that lacks the item is left out, since its silence is no
  evidence that the item does not exist.

Every place that commits to or reads from all disks goes through these, so a
disk that lives on another machine changes only the :class:`Disk` behind them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from .disk import Disk
from .errors import DiskFull, WriteQuorumError
from .layout import write_quorum
from .metadb import Op

T = TypeVar("T")
Ops = Sequence[Op] | Callable[[int], Sequence[Op]]


@dataclasses.dataclass
class Committed:
    """What one commit on several disks did."""

    results: dict[int, list[Any]]        # position → the operations' results
    errors: dict[int, BaseException]     # position → why that disk did not commit

    def firsts(self) -> dict[int, Any]:
        """Each committed disk's result of the first operation."""
        return {pos: r[0] for pos, r in self.results.items()}

    def applied(self) -> dict[int, Any]:
        """The committed disks whose first operation took effect (a true result,
        or one whose ``applied`` is true)."""
        return {pos: first for pos, first in self.firsts().items()
                if getattr(first, "applied", first)}

    def require(self, quorum: int, what: str, count: int | None = None) -> None:
        """Raise unless ``count`` (default: every committed disk) reaches ``quorum``:
        DiskFull when a disk ran out of space, else WriteQuorumError."""
        done = len(self.results) if count is None else count
        if done >= quorum:
            return
        if any(isinstance(e, DiskFull) for e in self.errors.values()):
            raise DiskFull(f"{what}: disks full")
        raise WriteQuorumError(f"{what}: {done} disks committed, {quorum} needed")


class ErasureSet:
    """The disks of one set, their erasure coding and their quorums."""

    def __init__(self, disks: Sequence[Disk], k: int, m: int) -> None:
        self.disks = list(disks)
        self.k, self.m, self.n = k, m, k + m
        self.write_quorum = min(write_quorum(k, m), self.n)

    def online_positions(self) -> list[int]:
        return [d.position for d in self.disks if d.online]

    def offline_positions(self) -> frozenset[int]:
        return frozenset(d.position for d in self.disks if not d.online)

    async def commit_all(self, ops: Ops, positions: Iterable[int] | None = None) -> Committed:
        """Commit ``ops`` (or ``ops(position)``) on ``positions`` (default: every
        online disk) concurrently; nothing is raised, see :meth:`Committed.require`."""
        where = list(positions) if positions is not None else self.online_positions()
        outcomes = await asyncio.gather(
            *(self.disks[p].commit(ops(p) if callable(ops) else ops) for p in where),
            return_exceptions=True)
        done = Committed({}, {})
        for pos, outcome in zip(where, outcomes):
            if isinstance(outcome, BaseException):
                done.errors[pos] = outcome
            else:
                done.results[pos] = outcome
        return done

    def answers(self, read: Callable[[Disk], T]) -> Iterator[tuple[Disk, T]]:
        """(disk, ``read(disk)``) for each online disk that answers, in position
        order, lazily: a caller that has heard enough stops asking."""
        for pos in self.online_positions():
            disk = self.disks[pos]
            try:
                value = read(disk)
            except Exception:
                continue
            yield disk, value

    def vote(self, read: Callable[[Disk], T | None]) -> dict[int, T | None]:
        """``read(disk)`` of every online disk that answers (None: absent there),
        leaving out disks being healed that do not have it."""
        return {disk.position: value for disk, value in self.answers(read)
                if value is not None or not disk.healing}
