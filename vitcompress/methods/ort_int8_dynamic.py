"""``ort_int8_dynamic``: ONNX Runtime's dynamic int8 quantization of an exported model (``onnx`` step first).

``onnxruntime.quantization.quantize_dynamic``: MatMul/Gemm weights stored as int8 (one scale per tensor,
or per output channel with ``per_channel``), activations quantized at run time from each batch's own
range. No calibration data. It is the runtime counterpart of the ``dynamic_ptq`` row (torch.ao, whose
eager API torch 2.14 deprecates). ``reduce_range`` as in :mod:`vitcompress.methods.ort_int8_static`.
"""
from __future__ import annotations

from dataclasses import dataclass

from vitcompress.methods.base import Method, StepContext, register
from vitcompress.runtimes.onnxruntime import RUNTIME, OnnxArtifact, ReduceRange, check_onnx, quantize_dynamic
from vitcompress.settings import setting


@dataclass(frozen=True, kw_only=True)
class OrtDynamicSettings(ReduceRange):
    per_channel: bool = setting(False, help="one weight scale per output channel, else per tensor")


def _child(parent: OnnxArtifact, step: dict, s: OrtDynamicSettings) -> OnnxArtifact:
    check_onnx(parent, step["id"])
    reduce, why = s.resolved()
    proto = quantize_dynamic(parent.path, s.per_channel, reduce)
    spec = {"method": OrtDynamic.name, "per_channel": s.per_channel, "reduce_range": reduce,
            "reduce_range_reason": why}
    return OnnxArtifact.child(parent, proto, spec, step, ort_quantized="dynamic int8")


@register
class OrtDynamic(Method):
    name = "ort_int8_dynamic"
    Settings = OrtDynamicSettings
    runtime = input_runtime = RUNTIME
    makes = "int8"

    def run(self, ctx: StepContext) -> OnnxArtifact:
        return _child(ctx.parent, ctx.step, self.settings(ctx.step))

    @classmethod
    def untrained_deploy(cls, parent: OnnxArtifact, step: dict) -> OnnxArtifact:
        return _child(parent, step, cls.settings(step))
