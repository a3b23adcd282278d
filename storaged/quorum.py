"""Which version of an object is current, given what each disk says.

Every disk of the set holds the same packed record for a committed version, so
versions are compared as raw bytes. The version held by the most disks wins
(newest first on a tie) if at least K disks hold it: a committed write reached
at least ``write_quorum`` disks, so K answers always include it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping

from .errors import ReadQuorumError
from .meta import ObjectInfo, record_version


@dataclasses.dataclass
class Resolved:
    info: ObjectInfo
    record: bytes
    holders: list[int]          # disk positions holding the winning record


def resolve(bucket: str, key: str, records: Mapping[int, bytes | None], k: int, w: int,
            offline: int = 0) -> Resolved | None:
    """The current version, or None when the object does not exist.

    ``records`` maps each online disk position to its record (None: absent).
    A committed version is on at least ``w`` disks; when the ``offline`` disks
    could make up that many, the answer is unknowable and ReadQuorumError is
    raised instead of claiming absence.
    """
    counts = Counter(r for r in records.values() if r is not None)
    if counts:
        record, votes = max(counts.items(), key=lambda kv: (kv[1], record_version(kv[0])))
        if votes >= k:
            holders = [pos for pos, r in records.items() if r == record]
            return Resolved(ObjectInfo.unpack(bucket, key, record), record, holders)
        best = votes
    else:
        best = 0
    if offline and best + offline >= w:
        raise ReadQuorumError(f"{bucket}/{key}: only {best} of {k} needed disks agree "
                              f"and {offline} are offline")
    return None
