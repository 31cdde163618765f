"""Saving and loading model artifacts: atomically, and without ever running code from a file.

An artifact is a plain dictionary of tensors and JSON-like values:

    format      "vitcompress.artifact/1"
    arch        {"timm": name, "kwargs": {...}}  -> timm.create_model(name, **kwargs)
    transforms  [{"method": name, ...spec}, ...] -> each method's ``restructure`` re-applies its change
                (:func:`vitcompress.methods.build_model` rebuilds the model from these)
    state_dict  the weights of the final model (int8 packed weights included)
    meta        where it came from (dataset, chain, normalisation, validation accuracy, ...)
    quantized   optional: diffq's packed quantized state (QAT rows), which then holds the parameters;
                its quantizer class is stored by name, so it too is plain tensors and values

so it loads with ``torch.load(weights_only=True)``: a file that would need to unpickle anything else
is refused. It also holds the content digest of all of the above (:func:`vitcompress.io.seal`), which
every load checks: a file altered since it was written is refused. A step may store its artifact compressed (``meta["compress"]``: zlib or xz), behind a header
that names the compressor; loading recognises each form.
"""
from __future__ import annotations

import io
import lzma
import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from vitcompress.errors import ArtifactError  # noqa: F401  (re-exported)
from vitcompress.io import atomic_path, check_sealed, seal

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


@dataclass
class Artifact:
    arch: dict
    state_dict: dict
    transforms: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    quantized: dict | None = None

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
        payload = seal(payload)  # the content digest every load checks (vitcompress.io)
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
        payload = check_sealed(payload, path, "artifact")
        return cls(payload["arch"], payload["state_dict"], payload["transforms"], payload["meta"],
                   payload.get("quantized"))
