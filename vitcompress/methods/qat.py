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

import abc
import logging
from dataclasses import dataclass

import torch
import torch.nn as nn
from diffq.base import BaseQuantizer

from vitcompress.artifacts import COMPRESSIONS, Artifact, buffers_only
from vitcompress.methods.base import Method, StepContext, Untrained, build_model
from vitcompress.quantized_state import constant_params, export_state, quantized_params, restore  # noqa: F401
from vitcompress.settings import Settings, setting
from vitcompress.train import summary

log = logging.getLogger("vitcompress")

@dataclass(frozen=True, kw_only=True)
class QATSettings(Settings):
    """The keys both QAT methods share."""

    epochs: int = setting(1, low=0, help="fine-tuning epochs under the quantizer")
    min_size: float = setting(0.01, low=0, help="MB: smaller tensors stay float (diffq's min_size)")
    float16: bool = setting(False, help="tensors left unquantized are stored as float16")
    exclude: tuple[str, ...] = setting((), help="parameter names (fnmatch patterns) never quantized")
    compress: str = setting("none", choices=COMPRESSIONS, help="the artifact file's compressor")
    keep: str = setting("best", choices=("best", "last"), help="which fine-tuning epoch the artifact keeps")
    packed: bool = setting(True, help="diffq's bit-packed levels, else one byte per level")


class QATMethod(Method):
    """Fine-tune the parent model under a diffq quantizer; the artifact is the quantized state."""

    Settings = QATSettings
    makes, accepts = "qat", ("float",)

    @classmethod
    def quantizer_kwargs(cls, s: QATSettings) -> dict:
        return {"min_size": s.min_size, "float16": s.float16, "exclude": list(s.exclude)}

    @classmethod
    @abc.abstractmethod
    def make_quantizer(cls, model: nn.Module, s: QATSettings, step_id: str) -> BaseQuantizer:
        """The diffq quantizer of ``model`` under these settings (LSQ or DiffQuantizer)."""

    @classmethod
    def optimizer_kwargs(cls, s: QATSettings) -> dict:
        """Overrides for the quantizer's own parameter group (diffq's ``setup_optimizer``)."""
        return {}

    def loss_fn(self, quantizer: dict, s: QATSettings, step: dict):
        """The training loss, or None for fit()'s own; ``quantizer["q"]`` is the quantizer once
        training has set it up."""
        return None

    def run(self, ctx: StepContext) -> Artifact:
        step, parent = ctx.step, ctx.parent
        s = self.settings(step)
        model = build_model(parent).to(ctx.device)
        constant = [name for name, _ in constant_params(model, s.min_size, list(s.exclude))]
        if constant:
            more = f" ({len(constant) - 1} more like it: {', '.join(constant[1:4])}{', ...' * (len(constant) > 4)})"
            raise ValueError(f"step {step['id']!r} ({self.name}): {constant[0]} holds a single value, which diffq "
                             f"cannot quantize (its range is 0); add it to the step's `exclude`"
                             f"{more if len(constant) > 1 else ''}.")
        holder: dict = {}

        def setup_optimizer(opt):  # diffq wants the optimizer made first, then the quantizer
            holder["q"] = self.make_quantizer(model, s, step["id"])
            holder["q"].setup_optimizer(opt, **self.optimizer_kwargs(s))

        history = self.finetune(model, ctx, s.epochs, parent.arch["kwargs"]["img_size"],
                                loss_fn=self.loss_fn(holder, s, step), setup_optimizer=setup_optimizer, keep=s.keep)
        if "q" not in holder:  # no fine-tuning: quantize the parent as it is
            holder["q"] = self.make_quantizer(model, s, step["id"])
            holder["q"].no_optimizer()
        quantizer = holder["q"]
        model.cpu().eval()
        estimate = float(quantizer.true_model_size())
        compressed = float(quantizer.compressed_model_size(compress_level=9, num_workers=1))
        state = export_state(quantizer, s.packed)
        quantizer.detach()
        log.info("%s: diffq's own size estimate %.4f MB, zlib-compressed %.4f MB (artifact compression: %s)", step["id"],
                 estimate, compressed, s.compress)
        steps = parent.meta.get("steps", []) + [{"id": step["id"], "method": self.name, "training": summary(history),
                                                 "diffq_size_estimate_mb": estimate,
                                                 "diffq_compressed_mb": compressed}]
        meta = {**parent.meta, "steps": steps, "diffq_size_estimate_mb": estimate, "compress": s.compress}
        return Artifact(parent.arch, buffers_only(model), list(parent.transforms), meta, quantized=state)

    @classmethod
    def untrained(cls, model, step):
        s = cls.settings(step)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():  # random weights: give zero-initialised tensors a range too, as training would
            for _, p in constant_params(model, s.min_size, list(s.exclude)):
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        quantizer = cls.make_quantizer(model, s, step.get("id", cls.name))
        quantizer.no_optimizer()
        state = export_state(quantizer, s.packed)
        quantizer.detach()
        return Untrained(model, None, {"compress": s.compress}, state)
