"""The one interface every step of a chain implements.

A *method* turns its input (nothing, for a root method such as ``train``; the artifact of the chain's
previous step otherwise) into a new :class:`~vitcompress.artifacts.Artifact`. Methods that change a
model's structure (quantized layers, pruned shapes, other attention) also know how to re-apply that
change to a freshly built architecture, so an artifact reloads from tensors alone, never from
pickled code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch.nn as nn

from vitcompress.errors import ConfigError


@dataclass
class StepContext:
    """Everything a method may use while it runs one step on one dataset."""

    step: dict                      # the step's resolved settings (Profile.step_cfg)
    dataset: str
    data_file: Path                 # the prepared data set (vitcompress.data.prepare output)
    device: str                     # "cpu" or "cuda"
    seed: int = 0
    threads: int = 1
    parent: Any = None              # the previous step's Artifact, or None for a root step
    extra: dict = field(default_factory=dict)  # other artifacts the step declared (e.g. a teacher)


KIND_NAMES = {"float": "a float model", "qat": "a quantization-aware-trained model (dequantized weights)",
              "int8": "an int8 model", "simulated": "a simulated-quantization model"}
KIND_ADJECTIVES = {"qat": "quantization-aware-trained", "int8": "int8", "simulated": "simulated-quantized"}


class Method:
    """Base class: subclass, set ``name``, implement :meth:`run`, and register with :func:`register`."""

    name: ClassVar[str] = ""
    is_root: ClassVar[bool] = False     # builds a model from scratch (must be first in a chain)
    keys: ClassVar[dict[str, type | tuple]] = {}  # method-specific step keys and their types
    # Which runtime runs the artifact this method makes, and which runtime's artifact it takes as input:
    # "pytorch" (a .pt artifact, rebuilt from timm + transforms) or "onnxruntime" (a .onnx file).
    runtime: ClassVar[str] = "pytorch"
    input_runtime: ClassVar[str] = "pytorch"
    # Whether the model this method makes is still plain PyTorch that the ONNX exporter can trace
    # (torch.ao's int8 layers and simulated quantization are not).
    exportable: ClassVar[bool] = True
    # What kind of model this method makes, and which kinds it can take as input (checked along every
    # chain before any job): "float"; "qat" (a float model holding quantized-then-dequantized weights,
    # stored packed); "int8" (integer kernels: torch.ao or ONNX Runtime); "simulated" (fake-quantized).
    makes: ClassVar[str] = "float"
    accepts: ClassVar[tuple[str, ...]] = ("float", "qat")

    @classmethod
    def check_step(cls, step: dict, where: str, profile: dict) -> None:
        """Raise ConfigError for a step setting this method cannot work with."""
        common = {"method", "model", "train", "train_overrides"}
        for key, value in step.items():
            if key in common:
                continue
            if key not in cls.keys:
                allowed = ", ".join(sorted(common | set(cls.keys)))
                raise ConfigError(f"params.yaml: unknown key '{where}.{key}' for method {cls.name!r}; allowed: {allowed}.")
            if not isinstance(value, cls.keys[key]) or isinstance(value, bool) and cls.keys[key] is not bool:
                raise ConfigError(f"params.yaml: {where}.{key} = {value!r} has the wrong type for method {cls.name!r}.")

    def check_parent(self, ctx: "StepContext") -> None:
        """Raise ValueError unless the parent artifact is a kind of model this method ``accepts``: the kind its
        last step's method ``makes`` (what the config check asks along a chain, asked again of the artifact a
        job was given, for steps run outside the workflow). An artifact with no recorded steps is float."""
        steps = ctx.parent.meta.get("steps") or [{}]
        made_by = METHODS.get(steps[-1].get("method"))
        kind = made_by.makes if made_by is not None else "float"
        if kind not in self.accepts:
            wants = " or ".join(KIND_NAMES[k] for k in self.accepts)
            raise ValueError(f"step {ctx.step['id']!r} ({self.name}) needs {wants}, but its parent is already "
                             f"{KIND_ADJECTIVES[kind]} (step {steps[-1]['id']!r}, method {made_by.name!r}); chain "
                             f"{ctx.step['id']!r} right after a float step.")

    @classmethod
    def check_model(cls, model: nn.Module, step: dict) -> None:
        """Raise ValueError, saying what to change, if this step cannot work on ``model``: the root model
        of its chain, built on the meta device (shapes only) before any job runs. Default: no condition."""

    @classmethod
    def check_inputs(cls, model: nn.Module, step: dict, inputs: dict[str, nn.Module]) -> None:
        """Like :meth:`check_model`, for a root step against the root models of the chains it declares in
        :meth:`step_inputs` (``inputs``: name -> model, shapes only). Default: no condition."""

    @classmethod
    def step_inputs(cls, step: dict, profile) -> dict[str, str]:
        """Other chains this step needs besides its parent: {name: chain id}. Default: none."""
        return {}

    def run(self, ctx: StepContext):
        raise NotImplementedError

    @staticmethod
    def finetune(model: nn.Module, ctx: StepContext, epochs: int, img_size, **fit_kwargs) -> dict | None:
        """Fine-tune ``model`` in place for ``epochs`` with the step's training settings (0: no-op).

        ``fit_kwargs`` go to :func:`vitcompress.train.fit` (``loss_fn``, ``setup_optimizer``, ...)."""
        if not epochs:
            return None
        from vitcompress.data import InputAdapter, PreparedData
        from vitcompress.train import fit

        data = PreparedData(ctx.data_file)
        adapter = InputAdapter(data.meta, img_size, ctx.device)
        return fit(model, data, {**ctx.step["train"], "epochs": int(epochs)}, adapter, ctx.device, ctx.seed,
                   desc=f"{ctx.dataset}/{ctx.step['id']}", **fit_kwargs)

    @classmethod
    def untrained(cls, model: nn.Module, step: dict) -> tuple[nn.Module, dict | None]:
        """The method's structural change on a model with random weights and no data (architecture
        benchmarks): return the changed model and the spec :meth:`restructure` re-applies, or None."""
        return model, None

    @classmethod
    def untrained_quantized(cls, model: nn.Module, step: dict) -> dict | None:
        """For methods whose artifact is a quantized state (diffq): that state for ``model``, else None."""
        return None

    @classmethod
    def untrained_meta(cls, step: dict) -> dict:
        """Artifact meta the untrained version carries (e.g. ``cpu_only``)."""
        return {}

    @classmethod
    def restructure(cls, model: nn.Module, spec: dict) -> nn.Module:
        """Re-apply this method's structural change (recorded as ``spec``) to a fresh model."""
        return model


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no name")
    METHODS[cls.name] = cls
    return cls
