"""Runtimes: one module each, one :class:`~vitcompress.runtimes.base.Runtime` subclass each.

>>> from vitcompress.runtimes import get_runtime
>>> get_runtime("openvino").files
('model.xml', 'model.bin')
"""
from pathlib import Path

from vitcompress.runtimes import onnxruntime, openvino, pytorch  # noqa: F401  (importing registers)
from vitcompress.runtimes.base import RUNTIMES, Runtime, RuntimeArtifact, register_runtime

__all__ = ["RUNTIMES", "Runtime", "RuntimeArtifact", "artifact_files", "describe", "get_runtime", "load_artifact",
           "register_runtime", "runtime_of", "versions"]


def get_runtime(name: str) -> type[Runtime]:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise KeyError(f"unknown runtime {name!r}; known: {', '.join(sorted(RUNTIMES))}") from None


def runtime_of(path: str | Path) -> type[Runtime]:
    """The runtime whose artifact's first file has ``path``'s suffix (``.pt``, ``.onnx``, ``.xml``)."""
    suffix = Path(path).suffix
    for rt in RUNTIMES.values():
        if Path(rt.files[0]).suffix == suffix:
            return rt
    raise ValueError(f"{path}: no runtime saves artifacts as {suffix or 'files without a suffix'!r}; known: "
                     f"{', '.join(Path(rt.files[0]).suffix for rt in RUNTIMES.values())}")


def load_artifact(path: str | Path):
    """The artifact saved at ``path``, by its runtime (the file's suffix)."""
    return runtime_of(path).load(path)


def artifact_files(path: str | Path) -> list[Path]:
    """Every file of the artifact saved at ``path`` (an OpenVINO IR's .bin beside its .xml)."""
    return runtime_of(path).paths(path)


def describe(meta: dict) -> str:
    """The Runtime column of an artifact with ``meta``."""
    return get_runtime(meta.get("runtime") or "pytorch").describe(meta)


def versions() -> dict[str, str | None]:
    """Every runtime's packages and versions, for the timing fingerprint."""
    out: dict[str, str | None] = {}
    for rt in RUNTIMES.values():
        out.update(rt.versions())
    return out
