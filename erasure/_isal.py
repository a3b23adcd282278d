"""ctypes binding to Intel ISA-L's erasure-code functions.

pyeclib's manylinux wheel bundles ISA-L (``pyeclib.libs/libisal-pyeclib.so.*``);
a system ``libisal.so.2`` is used when that wheel is absent. Functions are loaded
through ``ctypes.CDLL``, which releases the GIL for the duration of each call, so
several threads encode in parallel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os

__all__ = ["lib", "library_path"]


def _candidates() -> list[str]:
    paths: list[str] = []
    spec = importlib.util.find_spec("pyeclib")
    if spec is not None and spec.submodule_search_locations:
        site = os.path.dirname(list(spec.submodule_search_locations)[0])
        paths += sorted(glob.glob(os.path.join(site, "pyeclib.libs", "libisal*.so*")))
    system = ctypes.util.find_library("isal")
    if system:
        paths.append(system)
    return paths


def _load() -> tuple[ctypes.CDLL, str]:
    errors = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path), path
        except OSError as exc:  # pragma: no cover - depends on the host
            errors.append(f"{path}: {exc}")
    raise ImportError(
        "ISA-L not found: install pyeclib (its wheel bundles libisal) or Debian's "
        "libisal2" + (f" ({'; '.join(errors)})" if errors else "")
    )


lib, library_path = _load()

_u8p = ctypes.POINTER(ctypes.c_ubyte)
_vpp = ctypes.POINTER(ctypes.c_void_p)

lib.gf_gen_rs_matrix.argtypes = [_u8p, ctypes.c_int, ctypes.c_int]
lib.gf_gen_rs_matrix.restype = None
lib.gf_invert_matrix.argtypes = [_u8p, _u8p, ctypes.c_int]
lib.gf_invert_matrix.restype = ctypes.c_int
lib.gf_mul.argtypes = [ctypes.c_ubyte, ctypes.c_ubyte]
lib.gf_mul.restype = ctypes.c_ubyte
lib.ec_init_tables.argtypes = [ctypes.c_int, ctypes.c_int, _u8p, _u8p]
lib.ec_init_tables.restype = None
# ec_encode_data is the hot call: no argtypes, so ctypes skips per-call conversion
# (callers pass ints and ctypes arrays, which need none).
lib.ec_encode_data.restype = None
