"""VM records in LMDB under the compute state directory.

One environment (``STATE_DIR/vms``), one named database ``vms``: name -> VM
record JSON. LMDB serialises writers across threads and processes, so "create
unless it exists" is one transaction, and a committed record survives
restarts of ``basalt serve`` and of the host.
"""

from __future__ import annotations

from network import lmdb_envs

from .errors import VMExistsError, VMNotFoundError
from .spec import VMRecord

_MAP_SIZE = 64 << 20


class RecordStore:
    """The VM records of one compute state directory."""

    def __init__(self, path: str):
        self.path = path
        self._env = lmdb_envs.acquire(path, 2, _MAP_SIZE)
        self._db = self._env.open_db(b"vms")
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            lmdb_envs.release(self.path)

    def add(self, record: VMRecord) -> None:
        """Insert a new record; VMExistsError if the name is taken."""
        with self._env.begin(write=True, db=self._db) as txn:
            if not txn.put(record.name.encode(), record.dumps(), overwrite=False):
                raise VMExistsError(f"VM {record.name!r} already exists")

    def put(self, record: VMRecord) -> None:
        """Replace an existing record; VMNotFoundError if it is gone."""
        with self._env.begin(write=True, db=self._db) as txn:
            if txn.get(record.name.encode()) is None:
                raise VMNotFoundError(f"no VM named {record.name!r}")
            txn.put(record.name.encode(), record.dumps())

    def get(self, name: str) -> VMRecord | None:
        with self._env.begin(db=self._db) as txn:
            raw = txn.get(name.encode())
        return VMRecord.loads(raw) if raw is not None else None

    def remove(self, name: str) -> bool:
        with self._env.begin(write=True, db=self._db) as txn:
            return txn.delete(name.encode())

    def all(self) -> list[VMRecord]:
        """Every record, sorted by name."""
        with self._env.begin(db=self._db) as txn:
            return [VMRecord.loads(raw) for _, raw in txn.cursor()]
