"""Systematic Reed-Solomon K+M codec on ISA-L's Vandermonde layout.

The encoding matrix is ISA-L's ``gf_gen_rs_matrix`` — the same one pyeclib's
``isa_l_rs_vand`` backend uses, so shards are interchangeable with it. Data
shards are the block itself cut into K equal pieces (zero-padded at the end);
parity shards are computed by ``ec_encode_data``. Any K of the K+M shards
rebuild the others.

Buffers are passed in, never allocated per call: the caller owns stripe and
parity buffers (see :func:`allocate`) and reuses them for every block.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import threading
from collections.abc import Mapping, Sequence

from . import _isal

__all__ = ["Codec", "ErasureError", "allocate", "MAX_SHARDS"]

MAX_SHARDS = 32
Buffer = bytes | bytearray | memoryview | mmap.mmap

_u8p = ctypes.POINTER(ctypes.c_ubyte)
_lib = _isal.lib


@functools.cache
def _pointers(n: int) -> type:
    """The ctypes array type of ``n`` pointers, made once: ctypes keeps array
    types only weakly, so one built per call became cyclic garbage per call (the
    young collections of small PUTs were mostly these types)."""
    return ctypes.c_void_p * n


class ErasureError(ValueError):
    """Invalid codec parameters, or too few shards to rebuild a block."""


def allocate(size: int) -> memoryview:
    """A page-aligned, pre-faulted writable buffer of ``size`` bytes.

    Large ``malloc`` blocks are mmapped and unmapped on every call, so each new
    stripe page-faults on first touch (10 MiB stripes ran 8x slower than 1 MiB
    ones that way). Allocate once with this and reuse.
    """
    if size <= 0:
        return memoryview(bytearray(0))
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    return memoryview(mmap.mmap(-1, size, flags=flags))


class _PyBuffer(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int),
                ("ndim", ctypes.c_int), ("format", ctypes.c_char_p),
                ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_PyBUF_SIMPLE = 0


def _address(buf: Buffer, writable: bool = False) -> int:
    try:  # fast path: any writable buffer
        return ctypes.addressof(ctypes.c_char.from_buffer(buf))
    except (TypeError, ValueError):
        pass
    if writable:
        raise ErasureError("output buffer is read-only")
    # Read-only (bytes, views of bytes): ask the buffer protocol. The caller
    # keeps ``buf`` alive for as long as the address is used.
    view = _PyBuffer()
    _get_buffer(buf, ctypes.byref(view), _PyBUF_SIMPLE)
    try:
        return view.buf or 0
    finally:
        _release_buffer(ctypes.byref(view))


def _mds_guaranteed(k: int, m: int) -> bool:
    # ISA-L's erasure_code.h: a Vandermonde matrix with n = k+m rows keeps every
    # k x k submatrix invertible when one of these holds.
    n = k + m
    return k <= 3 or (k == 4 and n <= 25) or (k == 5 and n <= 10) or (k <= 21 and m == 4) or m <= 3


class Codec:
    """Encode K data shards into M parity shards; rebuild any M lost shards."""

    def __init__(self, k: int, m: int) -> None:
        if not isinstance(k, int) or not isinstance(m, int):
            raise ErasureError("k and m must be integers")
        if k < 1:
            raise ErasureError(f"k must be at least 1, got {k}")
        if m < 0:
            raise ErasureError(f"m must not be negative, got {m}")
        if k + m > MAX_SHARDS:
            raise ErasureError(f"k+m must be at most {MAX_SHARDS}, got {k}+{m}={k + m}")
        if not _mds_guaranteed(k, m):
            raise ErasureError(
                f"{k}+{m} is not guaranteed recoverable with a Vandermonde matrix; "
                "use at most 3 parity shards, or 4 with k <= 21"
            )
        self.k, self.m, self.n = k, m, k + m
        self._matrix = (ctypes.c_ubyte * (self.n * k))()
        _lib.gf_gen_rs_matrix(self._matrix, self.n, k)
        self._encode_tables = self._tables(bytes(self._matrix)[k * k :], m)
        self._decode_cache: dict[tuple[tuple[int, ...], tuple[int, ...]], ctypes.Array] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Codec({self.k}+{self.m})"

    def shard_len(self, block_len: int) -> int:
        """Bytes per shard for a block of ``block_len`` bytes."""
        return -(-block_len // self.k)

    def encode(self, stripe: Buffer, parity: Buffer, shard_len: int) -> None:
        """Compute the M parity shards of one block.

        ``stripe`` holds the K data shards back to back (``k * shard_len`` bytes,
        the tail of the last shard zero-padded); ``parity`` receives the M parity
        shards back to back. The GIL is released while ISA-L runs.
        """
        if self.m == 0 or shard_len == 0:
            return
        self._check_len(stripe, self.k * shard_len, "stripe")
        self._check_len(parity, self.m * shard_len, "parity")
        src = _address(stripe)
        dst = _address(parity, writable=True)
        self._run(self._encode_tables, shard_len,
                  [src + i * shard_len for i in range(self.k)],
                  [dst + i * shard_len for i in range(self.m)])

    def reconstruct(self, shards: Sequence[Buffer | None], shard_len: int,
                    targets: Mapping[int, Buffer]) -> None:
        """Rebuild shards from any K present ones.

        ``shards`` has one entry per shard index (``None`` where missing);
        ``targets`` maps each shard index to rebuild to a writable buffer of at
        least ``shard_len`` bytes.
        """
        if len(shards) != self.n:
            raise ErasureError(f"expected {self.n} shard slots, got {len(shards)}")
        if not targets or shard_len == 0:
            return
        for index in targets:
            if not 0 <= index < self.n:
                raise ErasureError(f"shard index {index} out of range 0..{self.n - 1}")
        present = [i for i, s in enumerate(shards) if s is not None]
        if len(present) < self.k:
            raise ErasureError(
                f"cannot rebuild: {len(present)} of {self.n} shards present, {self.k} needed"
            )
        sources = tuple(present[: self.k])
        wanted = tuple(sorted(targets))
        for i in sources:
            self._check_len(shards[i], shard_len, f"shard {i}")
        for i in wanted:
            self._check_len(targets[i], shard_len, f"target {i}")
        tables = self._decode_tables(sources, wanted)
        self._run(tables, shard_len,
                  [_address(shards[i]) for i in sources],
                  [_address(targets[i], writable=True) for i in wanted])

    def encode_block(self, block: Buffer) -> list[bytes]:
        """Split ``block`` into K+M shards (allocating; for small blocks and tests)."""
        length = len(memoryview(block))
        shard_len = self.shard_len(length)
        stripe = bytearray(self.k * shard_len)
        stripe[:length] = block
        parity = bytearray(self.m * shard_len)
        self.encode(stripe, parity, shard_len)
        data = [bytes(stripe[i * shard_len:(i + 1) * shard_len]) for i in range(self.k)]
        return data + [bytes(parity[i * shard_len:(i + 1) * shard_len]) for i in range(self.m)]

    def decode_block(self, shards: Sequence[Buffer | None], block_len: int) -> bytes:
        """Join a block of ``block_len`` bytes from any K of its shards."""
        shard_len = self.shard_len(block_len)
        missing = {i: bytearray(shard_len) for i in range(self.k) if shards[i] is None}
        self.reconstruct(shards, shard_len, missing)
        out = bytearray()
        for i in range(self.k):
            piece = missing.get(i)
            out += memoryview(piece if piece is not None else shards[i])[:shard_len]
        return bytes(out[:block_len])

    # -- internals -----------------------------------------------------------

    @staticmethod
    def _check_len(buf: Buffer, need: int, what: str) -> None:
        have = memoryview(buf).nbytes
        if have < need:
            raise ErasureError(f"{what} buffer holds {have} bytes, {need} needed")

    def _tables(self, rows: bytes, nrows: int) -> ctypes.Array:
        tables = (ctypes.c_ubyte * (32 * self.k * max(nrows, 1)))()
        matrix = (ctypes.c_ubyte * len(rows)).from_buffer_copy(rows)
        _lib.ec_init_tables(self.k, nrows, matrix, tables)
        return tables

    def _run(self, tables: ctypes.Array, shard_len: int, src: list[int], dst: list[int]) -> None:
        src_ptrs = _pointers(len(src))(*src)
        dst_ptrs = _pointers(len(dst))(*dst)
        _lib.ec_encode_data(shard_len, self.k, len(dst), tables, src_ptrs, dst_ptrs)

    def _decode_tables(self, sources: tuple[int, ...], wanted: tuple[int, ...]) -> ctypes.Array:
        key = (sources, wanted)
        with self._lock:
            tables = self._decode_cache.get(key)
        if tables is not None:
            return tables
        k, matrix = self.k, bytes(self._matrix)
        sub = (ctypes.c_ubyte * (k * k)).from_buffer_copy(
            b"".join(matrix[i * k:(i + 1) * k] for i in sources))
        inverse = (ctypes.c_ubyte * (k * k))()
        if _lib.gf_invert_matrix(sub, inverse, k) != 0:
            raise ErasureError(f"shards {sources} do not determine the block")  # not MDS
        inv = bytes(inverse)
        rows = bytearray()
        for w in wanted:
            if w < k:
                rows += inv[w * k:(w + 1) * k]
                continue
            enc = matrix[w * k:(w + 1) * k]
            for j in range(k):
                acc = 0
                for col in range(k):
                    acc ^= _lib.gf_mul(enc[col], inv[col * k + j])
                rows.append(acc)
        tables = self._tables(bytes(rows), len(wanted))
        with self._lock:
            if len(self._decode_cache) > 4096:
                self._decode_cache.clear()
            self._decode_cache[key] = tables
        return tables
