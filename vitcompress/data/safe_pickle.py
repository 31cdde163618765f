"""Unpickling without running code: a pickle (CIFAR's batches) may name only numpy's array rebuilders."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from vitcompress.errors import DataError, UnsafeFileError


def _numpy_globals() -> dict:
    """The only callables a CIFAR pickle may name: numpy's array, dtype and scalar rebuilders (under
    numpy 1's and numpy 2's module names), and the bytes decoder of protocol-2 pickles."""
    import codecs

    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric
    rebuild = {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar}
    out = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out.update({(mod, name): fn for name, fn in rebuild.items()})
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        out[(mod, "_frombuffer")] = numeric._frombuffer
    return out


class _SafeUnpickler(pickle.Unpickler):
    """Reads a pickle that holds only numpy arrays and plain values; any other global it names (a
    callable that could run code: os.system, eval, ...) is refused before it is ever looked up."""

    allowed: dict = {}

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafeFileError(f"names {module}.{name}") from None


def read_pickle_safely(path: Path):
    """Unpickle ``path`` without running code from it (CIFAR's batches are pickles)."""
    _SafeUnpickler.allowed = _SafeUnpickler.allowed or _numpy_globals()
    with open(path, "rb") as fh:
        try:
            return _SafeUnpickler(fh, encoding="latin1").load()
        except UnsafeFileError as exc:
            raise UnsafeFileError(
                f"{path}: refused as unsafe: the file {exc}, which would run code when unpickled; an official "
                f"CIFAR batch holds only numpy arrays and lists. Replace it with the official file.") from None
        except Exception as exc:  # truncated, not a pickle, ...
            raise DataError(f"{path}: corrupt ({type(exc).__name__}: {str(exc)[:200]}); replace it with the "
                            f"official file.") from None
