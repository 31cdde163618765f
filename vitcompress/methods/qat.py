"""Quantization-aware training with diffq's quantizers: what the ``lsq`` and ``diffq`` methods share.

A diffq quantizer hooks the model: in training mode it replaces every large weight by its
quantized (LSQ) or noisy (DiffQ) version before each forward; in eval mode it quantizes before the
forward and restores the float weights after. The step fine-tunes the parent model with the
project's training loop (the quantizer adds its own parameter group to the optimizer), then stores
diffq's quantized state (``get_quantized_state``: bit-packed, or with ``packed: false`` one byte
per level, the form diffq's own ``compressed_model_size`` zlib-compresses) as the artifact's
``quantized`` entry, the file compressed as the step's ``compress`` says (none, zlib or xz). The
only change to diffq's format: the quantizer class is stored by name (``"LSQ"``,
``"DiffQuantizer"``) instead of as a pickled class, so the file loads with
``torch.load(weights_only=True)`` like every other artifact and never runs code.

Loading re-creates the quantizer on the fresh architecture, restores the state and *detaches* it:
the model that is evaluated and timed is a plain float model holding the dequantized weights, with
no hooks left that would re-quantize on every forward.
"""
from __future__ import annotations

import logging
from fnmatch import fnmatch

import torch
import torch.nn as nn
from diffq import DiffQuantizer, LSQ
from diffq.base import BaseQuantizer

from vitcompress.artifacts import COMPRESSIONS, Artifact, buffers_only
from vitcompress.errors import ConfigError
from vitcompress.methods.base import Method, StepContext
from vitcompress.train import summary

log = logging.getLogger("vitcompress")

QUANTIZERS: dict[str, type[BaseQuantizer]] = {"LSQ": LSQ, "DiffQuantizer": DiffQuantizer}


def export_state(quantizer: BaseQuantizer, packed: bool = True) -> dict:
    """diffq's quantized state (bit-packed or not), on CPU, with the quantizer class stored by name."""
    state = quantizer.get_quantized_state(packed=packed)
    name = type(quantizer).__name__
    if QUANTIZERS.get(name) is not type(quantizer):
        raise TypeError(f"unsupported quantizer {name}")
    state["meta"] = {**state["meta"], "klass": name}
    return _to_cpu(state)


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def restore(model: nn.Module, state: dict) -> nn.Module:
    """Load a state written by :func:`export_state` into ``model`` (in place) and detach the quantizer."""
    meta = state["meta"]
    klass = QUANTIZERS.get(meta.get("klass"))
    if klass is None:
        raise ValueError(f"unknown quantizer {meta.get('klass')!r} (known: {', '.join(QUANTIZERS)})")
    quantizer = klass(model, **meta["init_kwargs"])
    quantizer.restore_quantized_state(state)
    quantizer.detach()
    return model


def quantized_params(model: nn.Module, min_size: float, exclude: list[str]) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the parameters a diffq quantizer with these settings would quantize (as diffq
    picks them: above ``min_size`` MB, not matching an ``exclude`` pattern, a shared one once)."""
    min_params = min_size * 2 ** 20 // 4
    return [(name, param) for name, param in model.named_parameters()
            if param.numel() > min_params and not any(fnmatch(name, p) or fnmatch(name.rsplit(".", 1)[-1], p)
                                                      for p in exclude)]


def constant_params(model: nn.Module, min_size: float, exclude: list[str]) -> list[tuple[str, nn.Parameter]]:
    """The parameters to be quantized that hold one value throughout (a zero-initialised bias): LSQ's step
    size (from the mean |w|) and DiffQ's min-max range are then 0, and the levels NaN."""
    return [(name, p) for name, p in quantized_params(model, min_size, exclude)
            if p.numel() and bool((p == p.flatten()[0]).all())]


class QATMethod(Method):
    """Fine-tune the parent model under a diffq quantizer; the artifact is the quantized state."""

    keys = {"epochs": int, "min_size": (int, float), "float16": bool, "exclude": list, "compress": str,
            "keep": str, "packed": bool}
    makes, accepts = "qat", ("float",)
    compress_default = "none"  # store the artifact compressed (step key `compress`): none | zlib | xz
    packed_default = True  # store diffq's bit-packed levels, else one byte per level (step key `packed`)
    keep_default = "best"  # which fine-tuning epoch the artifact keeps (step key `keep`): best | last

    @classmethod
    def check_step(cls, step, where, profile):
        super().check_step(step, where, profile)
        if step.get("epochs", 1) < 0:
            raise ConfigError(f"params.yaml: {where}.epochs = {step['epochs']!r} must be >= 0.")
        if step.get("min_size", 0.0) < 0:
            raise ConfigError(f"params.yaml: {where}.min_size = {step['min_size']!r} (MB) must be >= 0.")
        if step.get("compress", cls.compress_default) not in COMPRESSIONS:
            raise ConfigError(f"params.yaml: {where}.compress = {step['compress']!r}: use one of "
                              f"{', '.join(COMPRESSIONS)} (xz: the smallest file; zlib: what diffq's own "
                              f"compressed_model_size measures).")
        if step.get("keep", cls.keep_default) not in ("best", "last"):
            raise ConfigError(f"params.yaml: {where}.keep = {step['keep']!r} must be 'best' (the epoch with the "
                              f"best validation accuracy) or 'last' (the last epoch).")

    @classmethod
    def quantizer_kwargs(cls, step: dict) -> dict:
        return {"min_size": float(step.get("min_size", 0.01)), "float16": bool(step.get("float16", False)),
                "exclude": list(step.get("exclude", []))}

    @classmethod
    def make_quantizer(cls, model: nn.Module, step: dict) -> BaseQuantizer:
        raise NotImplementedError

    @classmethod
    def optimizer_kwargs(cls, step: dict) -> dict:
        """Overrides for the quantizer's own parameter group (diffq's ``setup_optimizer``)."""
        return {}

    def loss_fn(self, quantizer: dict, step: dict):
        """The training loss, or None for fit()'s own; ``quantizer["q"]`` is the quantizer once
        training has set it up."""
        return None

    def run(self, ctx: StepContext) -> Artifact:
        step, parent = ctx.step, ctx.parent
        self.check_parent(ctx)
        model = parent.build().to(ctx.device)
        kwargs = self.quantizer_kwargs(step)
        constant = [name for name, _ in constant_params(model, kwargs["min_size"], kwargs["exclude"])]
        if constant:
            more = f" ({len(constant) - 1} more like it: {', '.join(constant[1:4])}{', ...' * (len(constant) > 4)})"
            raise ValueError(f"step {step['id']!r} ({self.name}): {constant[0]} holds a single value, which diffq "
                             f"cannot quantize (its range is 0); add it to the step's `exclude`"
                             f"{more if len(constant) > 1 else ''}.")
        holder: dict = {}

        def setup_optimizer(opt):  # diffq wants the optimizer made first, then the quantizer
            holder["q"] = self.make_quantizer(model, step)
            holder["q"].setup_optimizer(opt, **self.optimizer_kwargs(step))

        history = self.finetune(model, ctx, int(step.get("epochs", 1)), parent.arch["kwargs"]["img_size"],
                                loss_fn=self.loss_fn(holder, step), setup_optimizer=setup_optimizer,
                                keep=str(step.get("keep", self.keep_default)))
        if "q" not in holder:  # no fine-tuning: quantize the parent as it is
            holder["q"] = self.make_quantizer(model, step)
            holder["q"].no_optimizer()
        quantizer = holder["q"]
        model.cpu().eval()
        estimate = float(quantizer.true_model_size())
        compressed = float(quantizer.compressed_model_size(compress_level=9, num_workers=1))
        state = export_state(quantizer, bool(step.get("packed", self.packed_default)))
        quantizer.detach()
        log.info("%s: diffq's own size estimate %.4f MB, zlib-compressed %.4f MB (artifact compression: %s)", step["id"],
                 estimate, compressed, self.compression(step))
        steps = parent.meta.get("steps", []) + [{"id": step["id"], "method": self.name, "training": summary(history),
                                                 "diffq_size_estimate_mb": estimate,
                                                 "diffq_compressed_mb": compressed}]
        meta = {**parent.meta, "steps": steps, "diffq_size_estimate_mb": estimate, "compress": self.compression(step)}
        return Artifact(parent.arch, buffers_only(model), list(parent.transforms), meta, quantized=state)

    @classmethod
    def compression(cls, step) -> str:
        """The artifact's compressor (``Artifact.save``'s ``compress``): none, zlib or xz."""
        return str(step.get("compress", cls.compress_default))

    @classmethod
    def untrained_meta(cls, step):
        return {"compress": cls.compression(step)}

    @classmethod
    def untrained_quantized(cls, model, step):
        kwargs = cls.quantizer_kwargs(step)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():  # random weights: give zero-initialised tensors a range too, as training would
            for _, p in constant_params(model, kwargs["min_size"], kwargs["exclude"]):
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        quantizer = cls.make_quantizer(model, step)
        quantizer.no_optimizer()
        state = export_state(quantizer, bool(step.get("packed", cls.packed_default)))
        quantizer.detach()
        return state
