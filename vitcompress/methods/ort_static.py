"""``ort_int8_static``: ONNX Runtime's static int8 quantization of an exported model (``onnx`` step first).

``onnxruntime.quantization.quantize_static`` in QDQ format: int8 weights with one scale per output channel
(``per_channel``), uint8 activations with one scale per tensor, their ranges calibrated (min-max) on
``calib_images`` training images, as FQ-ViT calibrates. At session start ONNX Runtime fuses each
QuantizeLinear/DequantizeLinear pair around a MatMul into an integer MatMul kernel (VNNI where the CPU
has it), so this row runs int8 arithmetic for real, unlike the simulated FQ-ViT row. LayerNorm and GELU
stay float (ORT has no integer kernels for them), and so does softmax by choice: ORT's QLinearSoftmax is
slower than the float one (see :func:`vitcompress.runtime.quantize_static`). FQ-ViT's PTF LayerNorm and
4-bit log2 softmax thus have nothing to map onto, and the FQ-ViT row keeps no speed.

``reduce_range`` (``auto``): 7-bit weights on an x86 CPU without VNNI, where ORT's u8×s8 kernels would
saturate, full 8 bits elsewhere (:func:`vitcompress.measure.reduce_range_for`); the choice and its reason
are recorded in the step's record, and the machine's in the timing fingerprint.
"""
from __future__ import annotations

import torch

from vitcompress.errors import ConfigError
from vitcompress.methods.base import Method, StepContext, register
from vitcompress.runtime import (RUNTIME, OnnxArtifact, check_reduce_range, onnx_child, quantize_static,
                                 resolve_reduce_range)

DEFAULTS = {"calib_images": 256, "calib_batch_size": 8, "per_channel": True,  # 8 ViT-B images: ~1.4 GB
            "reduce_range": "auto"}
UNTRAINED_CALIB = 16  # random images calibrate an untrained (architecture benchmark) model


def check_onnx(parent, step_id: str) -> None:
    if not isinstance(parent, OnnxArtifact) or parent.path is None:
        raise ValueError(f"step {step_id!r} quantizes an ONNX file: put an `onnx` step before it.")


def _child(parent: OnnxArtifact, step: dict, images: torch.Tensor) -> OnnxArtifact:
    check_onnx(parent, step["id"])
    reduce, why = resolve_reduce_range(step["reduce_range"])
    proto = quantize_static(parent.path, images, int(step["calib_batch_size"]), bool(step["per_channel"]), reduce)
    spec = {"method": OrtStatic.name, "calib_images": len(images), "per_channel": bool(step["per_channel"]),
            "reduce_range": reduce, "reduce_range_reason": why}
    return onnx_child(parent, proto, spec, step, ort_quantized="static int8 (QDQ)")


@register
class OrtStatic(Method):
    name = "ort_int8_static"
    runtime = input_runtime = RUNTIME
    makes = "int8"
    keys = {"calib_images": int, "calib_batch_size": int, "per_channel": bool, "reduce_range": (bool, str)}

    @classmethod
    def check_step(cls, step, where, profile):
        super().check_step(step, where, profile)
        check_reduce_range(step, where)
        for key in ("calib_images", "calib_batch_size"):
            if step.get(key, DEFAULTS[key]) < 1:
                raise ConfigError(f"params.yaml: {where}.{key} = {step[key]!r}: use a positive number of images.")

    def run(self, ctx: StepContext) -> OnnxArtifact:
        from vitcompress.data import calibration_images

        self.check_parent(ctx)
        step = {**DEFAULTS, **ctx.step}
        images = calibration_images(ctx.data_file, ctx.parent.arch["kwargs"]["img_size"],
                                    int(step["calib_images"]), "cpu", ctx.seed)
        return _child(ctx.parent, step, images)

    @classmethod
    def untrained_deploy(cls, parent: OnnxArtifact, step: dict) -> OnnxArtifact:
        kwargs = parent.arch["kwargs"]
        images = torch.randn(UNTRAINED_CALIB, int(kwargs["in_chans"]), *map(int, kwargs["img_size"]),
                             generator=torch.Generator().manual_seed(0))
        return _child(parent, {**DEFAULTS, **step}, images)
