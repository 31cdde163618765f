"""The one interface every runtime implements, and the artifact of a runtime that is not PyTorch.

A *runtime* runs the artifacts of some steps of a chain: ``pytorch`` (a ``.pt`` file, rebuilt from timm
and recorded transforms), ``onnxruntime`` (a ``.onnx`` file), ``openvino`` (an IR: ``.xml`` + ``.bin``).
A method names the runtime of the artifact it makes (``Method.runtime``) and of the one it takes
(``Method.input_runtime``); a method whose two differ converts a PyTorch model (``onnx``, ``ov``).

The hooks, all in :class:`Runtime`:

==================  =======================================================================
``name``, ``label``  the methods' key for it, and what the Runtime column says
``files``            the artifact's files in its chain's folder; the first is the one loaded
``converter``        the method that converts a PyTorch model into it (named in the fixes)
``artifact``         its :class:`RuntimeArtifact` subclass (what its steps make)
``load``             a saved artifact (its record checked)
``convert``          a PyTorch model to the runtime's own model object (what ``save`` writes)
``module``           a saved artifact as an ``nn.Module`` that takes and returns torch tensors
``simulation``       a saved quantized artifact with its quantization's math in float (or None)
``describe``         the Runtime column of one artifact (e.g. ``OpenVINO, int8 + f32``)
``versions``         the packages whose versions the timing fingerprint records
==================  =======================================================================

A third runtime is one module in this package with a :class:`Runtime` subclass and its
:class:`RuntimeArtifact`, registered with :func:`register_runtime` and imported by the package, and the
methods that make its files (a :class:`~vitcompress.methods.base.Conversion` into it, and any quantizer).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch.nn as nn

from vitcompress.artifacts import FORMAT, OWN_META, Artifact, ArtifactError
from vitcompress.io import changed, files_state, undigested

CHECKS = ("export_check", "deploy_check")  # what one step verified of its own artifact: never inherited


class Runtime:
    """Base class: subclass, set the class attributes (``artifact`` or override :meth:`load`), and
    :func:`register_runtime`."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    files: ClassVar[tuple[str, ...]] = ()
    converter: ClassVar[str | None] = None   # the method that converts a PyTorch model into this runtime
    model_noun: ClassVar[str] = "a model"    # "an ONNX model": what the chain checks call its artifacts
    file_kind: ClassVar[str] = ""            # "ONNX": what the load errors call its files
    cpu_only: ClassVar[bool] = True          # no GPU timing
    cpu_backend: ClassVar[str] = "CPU"       # what runs it on the CPU ("its CPU execution provider")
    artifact: ClassVar[type] = None          # its RuntimeArtifact subclass  # type: ignore[assignment]

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        """The artifact saved at ``path`` (its first file), its record checked."""
        return cls.artifact.load(path)

    @classmethod
    def convert(cls, model: nn.Module, example):
        """``model`` (PyTorch, eval mode) as this runtime's own model object, dynamic in the batch
        dimension; ``example``: a batch of at least 2 model-ready images."""
        raise NotImplementedError(f"runtime {cls.name!r} converts no PyTorch model")

    @classmethod
    def module(cls, path: str | Path, meta: dict) -> nn.Module:
        """The saved artifact at ``path`` as an ``nn.Module`` (inference only), for ``evaluate``/``speed``."""
        raise NotImplementedError

    @classmethod
    def simulation(cls, path: str | Path, meta: dict) -> nn.Module | None:
        """The saved quantized artifact at ``path`` evaluated with its quantization's own math in float (the
        fake-quantized graph, no integer kernel), as an ``nn.Module``; None where the runtime has no such
        simulation (then a quantizer's deployed model is checked against its parent). Default: none."""
        return None

    @classmethod
    def describe(cls, meta: dict) -> str:
        """The Runtime column for an artifact with ``meta``."""
        return cls.label

    @classmethod
    def versions(cls) -> dict[str, str | None]:
        """Package versions a timing depends on: {package: version or None when not installed}."""
        return {}

    @classmethod
    def paths(cls, path: str | Path) -> list[Path]:
        """Every file of the artifact saved at ``path`` (its first file): the others beside it, same stem."""
        path = Path(path)
        return [path] + [path.with_suffix(Path(f).suffix) for f in cls.files[1:]]


RUNTIMES: dict[str, type[Runtime]] = {}


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    if not cls.name or not cls.files:
        raise TypeError(f"{cls.__qualname__} needs a name and its files")
    if cls.artifact is not None:
        cls.artifact.runtime = cls
    RUNTIMES[cls.name] = cls
    return cls


@dataclass
class RuntimeArtifact(Artifact):
    """The artifact of a runtime other than PyTorch: its saved file(s), nothing else, plus, in the files'
    own metadata, the same ``arch`` / ``transforms`` / ``meta`` record a PyTorch artifact carries, so
    reports, chains and labels read every runtime alike. ``native``: the runtime's model object a step
    made (until saved); ``path``: the file it was loaded from or saved to. ``state_dict`` stays empty.

    Subclasses set ``runtime`` and implement :meth:`write` and :meth:`read_record`."""

    native: object = None
    path: str | None = None
    runtime: ClassVar[type[Runtime]] = None  # type: ignore[assignment]

    def record(self) -> str:
        return json.dumps({"format": FORMAT, "arch": self.arch, "transforms": self.transforms,
                           "meta": self.meta}, sort_keys=True)

    def build(self) -> nn.Module:
        if self.path is None:
            raise ArtifactError(f"this {self.runtime.label} artifact has not been saved yet: save it, then build "
                                f"it to run it")
        return self.runtime.module(self.path, self.meta).eval()

    def save(self, path: str | Path, compress: str | None = None) -> None:
        """Write the files atomically, with the artifact record in their metadata (``compress`` must be
        None or "none": a device loads the files as they are)."""
        if compress not in (None, "none"):
            raise ValueError(f"compress = {compress!r}: a {self.runtime.label} artifact is stored as the runtime "
                             f"reads it")
        if self.native is None:
            raise ArtifactError(f"a {self.runtime.label} artifact loaded from a file is already saved; copy its "
                                f"files instead")
        self.write(Path(path), self.record())
        self.path = str(path)

    def write(self, path: Path, record: str) -> None:
        """Write ``self.native`` to ``path`` (and its other files), atomically, with ``record`` inside."""
        raise NotImplementedError

    @classmethod
    def read_record(cls, path: Path) -> str | None:
        """The record stored in the saved files (None: files this project did not write); raise any
        exception for a damaged file. (The content digest is checked before, by :meth:`load`.)"""
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> "RuntimeArtifact":
        path = Path(path)
        for p in cls.runtime.paths(path):
            if not p.exists():
                raise ArtifactError(f"{p}: no such artifact file; run the workflow step that makes it.")
        # the content digest first: a file this project wrote that changed says so, parseable or not
        state = files_state(cls.runtime.paths(path))
        if state == "changed":
            raise changed(path, f"{cls.runtime.file_kind} file")
        try:
            record = cls.read_record(path)
        except Exception as exc:  # the runtime's own parse errors: a damaged file
            raise ArtifactError(f"{path}: corrupt or truncated {cls.runtime.file_kind} file ({type(exc).__name__}); "
                                f"delete it and re-run the workflow to rebuild it.") from None
        if record is None:
            raise ArtifactError(f"{path}: an {cls.runtime.file_kind} file without vitcompress's record; only files "
                                f"this project wrote are artifacts.")
        if state == "missing":
            raise undigested(path, f"{cls.runtime.file_kind} file")
        payload = json.loads(record)
        if payload.get("format") != FORMAT:
            raise ArtifactError(f"{path}: not a vitcompress artifact (expected format {FORMAT!r}).")
        return cls(payload["arch"], {}, payload["transforms"], payload["meta"], None, None, str(path))

    @classmethod
    def child(cls, parent: Artifact, native, transform: dict, step: dict, **meta) -> "RuntimeArtifact":
        """The artifact of ``step``, which turned ``parent`` (PyTorch, or this runtime's) into ``native``:
        the parent's record, its transforms plus ``transform``, its chain plus this step, and ``meta``."""
        inherited = {k: v for k, v in parent.meta.items() if k not in OWN_META and k not in CHECKS}
        steps = parent.meta.get("steps", []) + [{"id": step["id"], "method": step["method"]}]
        meta = {**inherited, "steps": steps, "runtime": cls.runtime.name, "cpu_only": cls.runtime.cpu_only, **meta}
        return cls(parent.arch, {}, list(parent.transforms) + [transform], meta, None, native)
