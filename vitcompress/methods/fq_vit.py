"""``fq_vit``: fully quantized ViT after training (Lin et al., 2022, "FQ-ViT"), as a simulation.

Every tensor between two operations is fake-quantized where FQ-ViT's reference puts its quantizers
(values rounded to the integer grid, arithmetic in float; the placement is listed in
:mod:`vitcompress.fqvit.modules`):

* weights of every Linear and the patch-embedding Conv2d: ``weight_bits`` (8), symmetric, per output
  channel, min-max, stored as int8 levels and one scale per channel (the artifact is that);
* activations at ``act_bits`` (8), one asymmetric scale per tensor from an observer calibrated on
  ``calib_images`` training images: ``minmax``, ``ema``, ``percentile`` or ``omse``;
* every tensor that feeds a LayerNorm (the embedding sum and both residual sums of every block, which
  are also the skip connections) with the **Power-of-Two Factor** (PTF): one layer-wise scale and zero
  point, and per channel a factor 2^αc, αc ∈ {0..K}, minimising that channel's error, so the few channels
  with a huge range (study Figure 1, left) do not crush the others;
* attention probabilities with **Log-Int-Softmax** (LIS): log2 levels at ``attn_bits`` (4), p ≈ 2^-q,
  which keeps resolution near 0 where almost all attention values lie (Figure 1, right).

``ptf: false`` quantizes the LayerNorm inputs layer-wise with the observer; ``lis: false`` quantizes the
probabilities with a calibrated uniform ``act_bits`` quantizer, FQ-ViT's own baseline
(:func:`~vitcompress.fqvit.ablation.ablation` evaluates the four combinations under one calibration).
Not simulated: FQ-ViT's integer exp polynomial inside the softmax and its integer LayerNorm arithmetic
(both compute in float on the quantized inputs). Nothing runs integer kernels, so the row has no speed.

This module is the workflow step; the quantizers are in :mod:`vitcompress.fqvit.observers`, the
quantized graph and calibration in :mod:`vitcompress.fqvit.modules`, the ablation in
:mod:`vitcompress.fqvit.ablation`.
"""
from __future__ import annotations

import logging

from vitcompress.artifacts import Artifact
from vitcompress.data import calibration_images
from vitcompress.errors import ConfigError
from vitcompress.fqvit.modules import calibrate, check_quantizable, quantize_model, set_mode
from vitcompress.fqvit.observers import OBSERVERS
from vitcompress.methods.base import Method, StepContext, register
from vitcompress.models import vit_blocks

log = logging.getLogger("vitcompress")

DEFAULTS = {"weight_bits": 8, "act_bits": 8, "attn_bits": 4, "observer": "minmax", "calib_images": 1000,
            "calib_batch_size": 100, "ptf": True, "lis": True, "ptf_k": 3, "percentile": 99.99, "ema": 0.9}


def settings(step: dict) -> dict:
    return {k: step.get(k, v) for k, v in DEFAULTS.items()}


def _spec(step: dict) -> dict:
    s = settings(step)
    return {"method": "fq_vit", **{k: s[k] for k in ("weight_bits", "act_bits", "attn_bits", "ptf", "lis",
                                                      "ptf_k", "observer", "percentile", "ema")}}


@register
class FQViT(Method):
    name = "fq_vit"
    exportable = False  # simulated quantization (see the module docstring)
    makes, accepts = "simulated", ("float",)
    keys = {"weight_bits": int, "act_bits": int, "attn_bits": int, "observer": str, "calib_images": int,
            "calib_batch_size": int, "ptf": bool, "lis": bool, "ptf_k": int, "percentile": (int, float),
            "ema": (int, float)}

    @classmethod
    def check_model(cls, model, step):
        vit_blocks(model, "FQ-ViT")
        check_quantizable(model)

    @classmethod
    def check_step(cls, step, where, profile):
        super().check_step(step, where, profile)
        s = settings(step)
        for key in ("weight_bits", "act_bits"):
            if not 2 <= s[key] <= 8:
                raise ConfigError(f"params.yaml: {where}.{key} = {s[key]!r}: use 2 to 8 bits (stored as int8).")
        if not 1 <= s["attn_bits"] <= 8:
            raise ConfigError(f"params.yaml: {where}.attn_bits = {s['attn_bits']!r}: use 1 to 8 bits.")
        if s["observer"] not in OBSERVERS:
            raise ConfigError(f"params.yaml: {where}.observer = {s['observer']!r}: use one of {', '.join(OBSERVERS)}.")
        for key in ("calib_images", "calib_batch_size"):
            if s[key] < 1:
                raise ConfigError(f"params.yaml: {where}.{key} = {s[key]!r} must be at least 1 image.")
        if not 0 <= s["ptf_k"] <= 8:
            raise ConfigError(f"params.yaml: {where}.ptf_k = {s['ptf_k']!r}: use 0 to 8 (factors 2^0..2^K).")
        if not 50 < s["percentile"] <= 100:
            raise ConfigError(f"params.yaml: {where}.percentile = {s['percentile']!r}: use a value in (50, 100].")
        if not 0 <= s["ema"] < 1:
            raise ConfigError(f"params.yaml: {where}.ema = {s['ema']!r}: the EMA decay must be in [0, 1).")

    def run(self, ctx: StepContext) -> Artifact:
        step, parent = ctx.step, ctx.parent
        self.check_parent(ctx)
        s = settings(step)
        img_size = parent.arch["kwargs"]["img_size"]
        images = calibration_images(ctx.data_file, img_size, int(s["calib_images"]), ctx.device, ctx.seed)
        model = quantize_model(parent.build(), s).to(ctx.device)
        calibrate(model, images, int(s["calib_batch_size"]))
        log.info("%s: calibrated on %d training images (observer %s, PTF %s, LIS %s)", step["id"], len(images),
                 s["observer"], s["ptf"], s["lis"])
        steps = parent.meta.get("steps", []) + [{"id": step["id"], "method": self.name,
                                                 "calib_images": len(images)}]
        return parent.child(model.cpu(), _spec(step), steps=steps, simulated=True)

    @classmethod
    def restructure(cls, model, spec):
        model = quantize_model(model, spec, copy_weights=False)
        set_mode(model, "quant")
        return model

    @classmethod
    def untrained(cls, model, step):
        spec = _spec(step)
        model = quantize_model(model, settings(step))
        set_mode(model, "quant")  # uncalibrated scales: fine for size, and it is never timed
        return model, spec

    @classmethod
    def untrained_meta(cls, step):
        return {"simulated": True}
