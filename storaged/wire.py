"""Plain-data encoding of metadata operations, queries and their results.

A disk on another machine receives the engine's metadata operations (the op
dataclasses of metadb.py and blockd/volmeta.py) and read queries as bytes and
answers with bytes. msgpack carries the values; two extension types carry what
msgpack lacks: tuples (kept apart from lists, since tuples are dict keys and
version pairs) and *registered* dataclasses. Only registered classes can be
decoded, so a peer can never make this process build an arbitrary object.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import msgpack

_TUPLE = 1
_RECORD = 2

_classes: dict[str, type] = {}
C = TypeVar("C", bound=type)


def register(cls: C) -> C:
    """Make a dataclass encodable (use as a class decorator)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    name = cls.__name__
    if _classes.setdefault(name, cls) is not cls:
        raise ValueError(f"two wire classes named {name}")
    return cls


def _default(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return msgpack.ExtType(_TUPLE, pack(list(obj)))
    cls = type(obj)
    if _classes.get(cls.__name__) is cls:
        fields = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
        return msgpack.ExtType(_RECORD, pack([cls.__name__, fields]))
    if isinstance(obj, (memoryview, bytearray)):
        return bytes(obj)
    raise TypeError(f"cannot encode {cls.__name__}")


def _ext(code: int, data: bytes) -> Any:
    if code == _TUPLE:
        return tuple(unpack(data))
    if code == _RECORD:
        name, fields = unpack(data)
        cls = _classes.get(name)
        if cls is None:
            raise ValueError(f"unknown wire class {name!r}")
        return cls(*fields)
    raise ValueError(f"unknown extension type {code}")


def pack(obj: Any) -> bytes:
    """Encode ``obj`` (plain values, tuples, registered dataclasses)."""
    return msgpack.packb(obj, default=_default, strict_types=True, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """Decode what :func:`pack` made."""
    return msgpack.unpackb(data, ext_hook=_ext, strict_map_key=False, raw=False)
