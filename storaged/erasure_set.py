"""An erasure set: N = K + M disks, and the two ways the engine talks to all of them.

* :meth:`ErasureSet.commit_all` applies metadata operations on every online disk
  (or on given positions) at once and keeps each disk's result or error;
  :meth:`Committed.require` is the one rule for when such a write stands.
* :meth:`ErasureSet.ask` puts one metadata query to every online disk at once,
  off the event loop; :meth:`ErasureSet.vote` is the same read for a quorum
  decision: a disk still being healed that lacks the item is left out, since
  its silence is no evidence that the item does not exist.

Every place that commits to or reads from all disks goes through these, so a
disk that lives on another machine changes only the :class:`Disk` behind them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .disk import POINT_READS, Disk, meta_readers
from .errors import DiskFull, WriteQuorumError
from .layout import write_quorum
from .metadb import Op

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

    async def ask(self, query: str, *args: Any,
                  positions: Iterable[int] | None = None) -> list[tuple[Disk, Any]]:
        """(disk, answer) to metadata query ``query(*args)`` (see :data:`READS`)
        from every online disk (or ``positions``) that answers, in position order.

        The disks are asked concurrently: remote disks each on their own, local
        disks in one thread hop together (their reads are memory-mapped and short,
        so one hop costs less than one per disk) — or, for a point lookup, right
        here, since that costs less than any hop (see :data:`POINT_READS`).
        """
        where = positions if positions is not None else self.online_positions()
        disks = [self.disks[p] for p in where]
        local = [d for d in disks if d.local]
        remote = [d for d in disks if not d.local]
        jobs = [d.read(query, *args) for d in remote]
        inline = local and query in POINT_READS
        if local and not inline:
            jobs.append(asyncio.get_running_loop().run_in_executor(
                meta_readers(), _read_each, local, query, args))
        answers: dict[int, Any] = _read_each(local, query, args) if inline else {}
        outcomes = await asyncio.gather(*jobs, return_exceptions=True) if jobs else []
        for disk, outcome in zip(remote, outcomes):
            if not isinstance(outcome, BaseException):
                answers[disk.position] = outcome
        if local and not inline and not isinstance(outcomes[-1], BaseException):
            answers.update(outcomes[-1])
        return [(d, answers[d.position]) for d in disks if d.position in answers]

    async def vote(self, query: str, *args: Any) -> dict[int, Any]:
        """Each answering disk's answer to ``query(*args)``, None where it has
        nothing (an empty answer counts as nothing), leaving out disks being
        healed that have nothing: their silence is no evidence of absence."""
        return {disk.position: value or None for disk, value in await self.ask(query, *args)
                if value or not disk.healing}


def _read_each(disks: Sequence[Disk], query: str, args: tuple) -> dict[int, Any]:
    """One thread's turn at every local disk: position → answer (failures left out)."""
    out = {}
    for disk in disks:
        try:
            out[disk.position] = disk.read_now(query, *args)
        except Exception:
            continue
    return out
