"""LMDB environments shared per path and process.

LMDB forbids opening one environment twice in a process (closing the second
handle drops the first one's locks), so every store of a path shares one
handle, counted, and the last `release` closes it.
"""

from __future__ import annotations

import os
import threading

import lmdb

_envs: dict[tuple[int, str], list] = {}
_lock = threading.Lock()


def acquire(path: str, max_dbs: int, map_size: int) -> lmdb.Environment:
    """The environment at `path` (a directory, created 0700 if missing)."""
    key = (os.getpid(), os.path.realpath(path))
    with _lock:
        entry = _envs.get(key)
        if entry is None:
            os.makedirs(path, mode=0o700, exist_ok=True)
            env = lmdb.open(path, max_dbs=max_dbs, map_size=map_size, subdir=True)
            entry = _envs[key] = [env, 0]
        entry[1] += 1
        return entry[0]


def release(path: str) -> None:
    """Drop one use of the environment at `path`; the last one closes it."""
    key = (os.getpid(), os.path.realpath(path))
    with _lock:
        entry = _envs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].close()
            del _envs[key]
