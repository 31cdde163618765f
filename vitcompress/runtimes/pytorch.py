"""The ``pytorch`` runtime: a ``.pt`` artifact (tensors and a record, :mod:`vitcompress.artifacts`),
rebuilt into a timm model by :func:`vitcompress.methods.build_model`; it runs on the CPU or a GPU."""
from __future__ import annotations

from vitcompress.artifacts import Artifact
from vitcompress.io import package_version
from vitcompress.runtimes.base import Runtime, register_runtime


@register_runtime
class PyTorch(Runtime):
    name = "pytorch"
    label = "PyTorch"
    files = ("model.pt",)
    model_noun = "a PyTorch model"
    cpu_only = False

    @classmethod
    def load(cls, path):
        return Artifact.load(path)

    @classmethod
    def versions(cls):
        return {"timm": package_version("timm")}
