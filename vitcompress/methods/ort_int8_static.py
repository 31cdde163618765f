"""``ort_int8_static``: ONNX Runtime's static int8 quantization of an exported model (``onnx`` step first).

``onnxruntime.quantization.quantize_static`` in QDQ format: int8 weights with one scale per output channel
(``per_channel``), uint8 activations with one scale per tensor, their ranges calibrated (min-max) on
``calib_images`` training images, as FQ-ViT calibrates. At session start ONNX Runtime fuses each
QuantizeLinear/DequantizeLinear pair around a MatMul into an integer MatMul kernel (VNNI where the CPU
has it), so this row runs int8 arithmetic for real, unlike the simulated FQ-ViT row. LayerNorm and GELU
stay float (ORT has no integer kernels for them), and so does softmax by choice: ORT's QLinearSoftmax is
slower than the float one (see :func:`vitcompress.runtimes.onnxruntime.quantize_static`). FQ-ViT's PTF LayerNorm and
4-bit log2 softmax thus have nothing to map onto, and the FQ-ViT row keeps no speed.

``reduce_range`` (``auto``): 7-bit weights on an x86 CPU without VNNI, where ORT's u8×s8 kernels would
saturate, full 8 bits elsewhere (:func:`vitcompress.measure.reduce_range_for`); the choice and its reason
are recorded in the step's record, and the machine's in the timing fingerprint. The deployed model (fused
integer kernels) is checked against the same QDQ file run with no fusion, i.e. each QuantizeLinear /
DequantizeLinear pair in float (:class:`RuntimeQuantizer`).
"""
from __future__ import annotations

from dataclasses import dataclass

from vitcompress.methods.base import RuntimeQuantizer, StepContext, VerifySettings, register, untrained_images
from vitcompress.runtimes.onnxruntime import (
    RUNTIME,
    OnnxArtifact,
    ReduceRange,
    check_onnx,
    quantize_static,
    reduce_range_fix,
)
from vitcompress.settings import setting


@dataclass(frozen=True, kw_only=True)
class OrtStaticSettings(ReduceRange, VerifySettings):
    calib_images: int = setting(256, low=1, help="training images the activation ranges are calibrated on",
                                counts="train")
    calib_batch_size: int = setting(8, low=1, help="calibration images ORT runs at once (memory grows with it)")
    per_channel: bool = setting(True, help="one weight scale per output channel, else per tensor")


def _child(parent: OnnxArtifact, step: dict, s: OrtStaticSettings, images) -> OnnxArtifact:
    check_onnx(parent, step["id"])
    reduce, why = s.resolved()
    proto = quantize_static(parent.path, images, s.calib_batch_size, s.per_channel, reduce)
    spec = {"method": OrtStatic.name, "calib_images": len(images), "per_channel": s.per_channel,
            "reduce_range": reduce, "reduce_range_reason": why}
    return OnnxArtifact.child(parent, proto, spec, step, ort_quantized="static int8 (QDQ)")


@register
class OrtStatic(RuntimeQuantizer):
    name = "ort_int8_static"
    family = "ONNX Runtime"
    Settings = OrtStaticSettings
    runtime = input_runtime = RUNTIME
    calibration_key = "calib_images"

    def quantize(self, ctx: StepContext, s, images) -> OnnxArtifact:
        return _child(ctx.parent, ctx.step, s, images)

    @classmethod
    def fix(cls, s, check) -> str:
        return reduce_range_fix(s)

    @classmethod
    def untrained_deploy(cls, parent: OnnxArtifact, step: dict) -> OnnxArtifact:
        return _child(parent, step, cls.settings(step), untrained_images(parent))
