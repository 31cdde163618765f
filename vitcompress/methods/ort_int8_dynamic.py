"""``ort_int8_dynamic``: ONNX Runtime's dynamic int8 quantization of an exported model (``onnx`` step first).

``onnxruntime.quantization.quantize_dynamic``: MatMul/Gemm weights stored as int8 (one scale per tensor,
or per output channel with ``per_channel``), activations quantized at run time from each batch's own
range. No calibration data. It is the runtime counterpart of the ``dynamic_ptq`` row (torch.ao, whose
eager API torch 2.14 deprecates). ``reduce_range`` as in :mod:`vitcompress.methods.ort_int8_static`.

The deployed model (ORT's integer MatMul/Conv kernels) is checked against the same file with each
MatMulInteger / ConvInteger written as its float operator on the same integers
(:func:`vitcompress.runtimes.onnxruntime.float_simulation`, :class:`RuntimeQuantizer`).
"""
from __future__ import annotations

from dataclasses import dataclass

from vitcompress.methods.base import RuntimeQuantizer, StepContext, VerifySettings, register
from vitcompress.runtimes.onnxruntime import (
    RUNTIME,
    OnnxArtifact,
    ReduceRange,
    check_onnx,
    quantize_dynamic,
    reduce_range_fix,
)
from vitcompress.settings import setting


@dataclass(frozen=True, kw_only=True)
class OrtDynamicSettings(ReduceRange, VerifySettings):
    per_channel: bool = setting(False, help="one weight scale per output channel, else per tensor")


def _child(parent: OnnxArtifact, step: dict, s: OrtDynamicSettings) -> OnnxArtifact:
    check_onnx(parent, step["id"])
    reduce, why = s.resolved()
    proto = quantize_dynamic(parent.path, s.per_channel, reduce)
    spec = {"method": OrtDynamic.name, "per_channel": s.per_channel, "reduce_range": reduce,
            "reduce_range_reason": why}
    return OnnxArtifact.child(parent, proto, spec, step, ort_quantized="dynamic int8")


@register
class OrtDynamic(RuntimeQuantizer):
    name = "ort_int8_dynamic"
    family = "ONNX Runtime"
    Settings = OrtDynamicSettings
    runtime = input_runtime = RUNTIME

    def quantize(self, ctx: StepContext, s, images) -> OnnxArtifact:
        return _child(ctx.parent, ctx.step, s)

    @classmethod
    def fix(cls, s, check) -> str:
        return reduce_range_fix(s)

    @classmethod
    def untrained_deploy(cls, parent: OnnxArtifact, step: dict) -> OnnxArtifact:
        return _child(parent, step, cls.settings(step))
