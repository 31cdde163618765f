"""Saving and loading model artifacts: atomically, and without ever running code from a file.

An artifact is a plain dictionary of tensors and JSON-like values:

    format      "vitcompress.artifact/1"
    arch        {"timm": name, "kwargs": {...}}  -> timm.create_model(name, **kwargs)
    transforms  [{"method": name, ...spec}, ...] -> each method's ``restructure`` re-applies its change
    state_dict  the weights of the final model (int8 packed weights included)
    meta        where it came from (dataset, chain, normalisation, validation accuracy, ...)
    quantized   optional: diffq's packed quantized state (QAT rows), which then holds the parameters;
                its quantizer class is stored by name, so it too is plain tensors and values

so it loads with ``torch.load(weights_only=True)``: a file that would need to unpickle anything else
is refused. A step may store its artifact compressed (``meta["compress"]``: zlib or xz), behind a header
that names the compressor; loading recognises each form.
"""
from __future__ import annotations

import contextlib
import io
import json
import lzma
import os
import pickle
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn

from vitcompress.errors import ArtifactError  # noqa: F401  (re-exported)

FORMAT = "vitcompress.artifact/1"
OWN_META = ("compress", "diffq_size_estimate_mb")  # describe one file, not what a child step makes of it
# A compressed artifact is a header naming the compressor, then the compressed torch.save bytes.
COMPRESSORS = {
    "zlib": (b"VCZLIB1\n", lambda data: zlib.compress(data, 9), zlib.decompress),
    "xz": (b"VCLZMA1\n", lambda data: lzma.compress(data, check=lzma.CHECK_CRC32), lzma.decompress),
}
COMPRESSIONS = ("none", *COMPRESSORS)  # what ``Artifact.save``'s ``compress`` (and a step's) may say
MAGIC_LEN = 8  # every header above is 8 bytes


def buffers_only(model: nn.Module) -> dict:
    """The model's state dict without its parameters (for artifacts whose quantized state holds those)."""
    params = {name for name, _ in model.named_parameters()}
    return {k: v for k, v in model.state_dict().items() if k not in params}


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    A crash (or SIGKILL) inside the block leaves at most a ``.tmp`` file that no rule takes as output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


@dataclass
class Artifact:
    arch: dict
    state_dict: dict
    transforms: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    quantized: dict | None = None

    def build(self) -> nn.Module:
        """The architecture with every recorded structural change, weights loaded, in eval mode."""
        from vitcompress.methods import get_method
        from vitcompress.models import create

        model = create(self.arch)
        for spec in self.transforms:
            model = get_method(spec["method"]).restructure(model, spec)
        restored: set[str] = set()
        if self.quantized is not None:
            from vitcompress.methods.qat import restore

            try:
                restore(model, self.quantized)
            except (KeyError, ValueError, AssertionError, RuntimeError, IndexError) as exc:
                raise ArtifactError(f"artifact's quantized state does not fit its architecture ({exc}); "
                                    f"re-run its step.") from None
            restored = {name for name, _ in model.named_parameters()}
        missing, unexpected = model.load_state_dict(self.state_dict, strict=False)
        missing = [k for k in missing if k not in restored]
        if missing or unexpected:
            raise ArtifactError(
                f"artifact weights do not fit its architecture (missing {list(missing)[:3]}, "
                f"unexpected {list(unexpected)[:3]}); it was written by another version: re-run its step."
            )
        return model.eval()

    def settings(self) -> dict:
        """The scalar settings its structural changes recorded, as resolved (e.g. a Nyström landmark count)."""
        return {k: v for spec in self.transforms for k, v in spec.items()
                if k != "method" and isinstance(v, (bool, int, float, str))}

    def train_epochs(self) -> int:
        """Epochs of training behind the weights, over every step of the chain (training, distillation,
        gate training, fine-tunes)."""
        return sum((s.get("training") or {}).get("epochs", 0) for s in self.meta.get("steps", []))

    def child(self, model: nn.Module, transform: dict | None = None, **meta) -> "Artifact":
        """The artifact of a step that turned this one's model into ``model``."""
        transforms = list(self.transforms) + ([transform] if transform else [])
        inherited = {k: v for k, v in self.meta.items() if k not in OWN_META}
        return Artifact(self.arch, model.state_dict(), transforms, {**inherited, **meta})

    def save(self, path: str | Path, compress: str | None = None) -> None:
        """Write atomically. ``compress`` (default: the artifact's ``meta["compress"]``, else ``"none"``):
        ``"zlib"`` or ``"xz"`` stores it compressed (quantized levels that few bits describe), ``"none"`` as
        torch.save writes it; :meth:`load` reads every form."""
        if compress is None:
            compress = self.meta.get("compress") or "none"
        if compress not in COMPRESSIONS:
            raise ValueError(f"compress = {compress!r}: use one of {', '.join(COMPRESSIONS)}")
        payload = {
            "format": FORMAT,
            "arch": self.arch,
            "transforms": self.transforms,
            "state_dict": self.state_dict,
            "meta": self.meta,
        }
        if self.quantized is not None:
            payload["quantized"] = self.quantized
        # Through a buffer: saved to a path, torch names the archive's folder after the (temporary,
        # random) file name, so the same weights gave different bytes, and a different size, every run.
        buf = io.BytesIO()
        torch.save(payload, buf)
        data = buf.getvalue()
        with atomic_path(path) as tmp:
            if compress != "none":
                magic, pack, _ = COMPRESSORS[compress]
                data = magic + pack(data)
            tmp.write_bytes(data)

    @staticmethod
    def payload(path: str | Path) -> bytes:
        """The artifact's bytes as torch.save wrote them (decompressed if it was stored compressed)."""
        data = Path(path).read_bytes()
        for magic, _, unpack in COMPRESSORS.values():
            if data[:MAGIC_LEN] == magic:
                return unpack(data[MAGIC_LEN:])
        return data

    @classmethod
    def load(cls, path: str | Path) -> "Artifact":
        path = Path(path)
        if not path.exists():
            raise ArtifactError(f"{path}: no such artifact; run the workflow step that makes it.")
        try:
            with path.open("rb") as fh:
                head = fh.read(MAGIC_LEN)
                unpack = next((unpack for magic, _, unpack in COMPRESSORS.values() if head == magic), None)
                source = io.BytesIO(unpack(fh.read())) if unpack else path
            payload = torch.load(source, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ArtifactError(
                f"{path}: refused to load: the file asks to run code on load (not a plain tensor checkpoint). "
                f"Only load artifacts this project wrote. Detail: {str(exc).splitlines()[0]}"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as exc:
            raise ArtifactError(
                f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                f"delete it and re-run the workflow to rebuild it."
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ArtifactError(f"{path}: not a vitcompress artifact (expected format {FORMAT!r}).")
        return cls(payload["arch"], payload["state_dict"], payload["transforms"], payload["meta"],
                   payload.get("quantized"))
