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
from vitcompress.fqvit.modules import calibrate, check_quantizable, quantize_model, set_mode
from vitcompress.fqvit.settings import FQViTSettings
from vitcompress.methods.base import Method, StepContext, Untrained, build_model, register
from vitcompress.models import vit_blocks

log = logging.getLogger("vitcompress")


@register
class FQViT(Method):
    name = "fq_vit"
    family = "quantized (PyTorch)"
    Settings = FQViTSettings
    exportable = False  # simulated quantization (see the module docstring)
    makes, accepts = "simulated", ("float",)

    @classmethod
    def check_model(cls, model, step):
        vit_blocks(model, "FQ-ViT")
        check_quantizable(model)

    def run(self, ctx: StepContext) -> Artifact:
        step, parent = ctx.step, ctx.parent
        s = self.settings(step)
        img_size = parent.arch["kwargs"]["img_size"]
        images = calibration_images(ctx.data_file, img_size, s.calib_images, ctx.device, ctx.seed)
        model = quantize_model(build_model(parent), s).to(ctx.device)
        calibrate(model, images, s.calib_batch_size)
        log.info("%s: calibrated on %d training images (observer %s, PTF %s, LIS %s)", step["id"], len(images),
                 s.observer, s.ptf, s.lis)
        steps = parent.meta.get("steps", []) + [{"id": step["id"], "method": self.name,
                                                 "calib_images": len(images)}]
        return parent.child(model.cpu(), s.spec(), steps=steps, simulated=True)

    @classmethod
    def restructure(cls, model, spec):
        model = quantize_model(model, FQViTSettings.from_step(spec), copy_weights=False)
        set_mode(model, "quant")
        return model

    @classmethod
    def untrained(cls, model, step):
        s = cls.settings(step)
        model = quantize_model(model, s)
        set_mode(model, "quant")  # uncalibrated scales: fine for size, and it is never timed
        return Untrained(model, s.spec(), {"simulated": True})
