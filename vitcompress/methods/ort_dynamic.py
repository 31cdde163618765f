"""``ort_int8_dynamic``: ONNX Runtime's dynamic int8 quantization of an exported model (``onnx`` step first).

``onnxruntime.quantization.quantize_dynamic``: MatMul/Gemm weights stored as int8 (one scale per tensor,
or per output channel with ``per_channel``), activations quantized at run time from each batch's own
range. No calibration data. It is the runtime counterpart of the ``dynamic_ptq`` row (torch.ao, whose
eager API torch 2.14 deprecates). ``reduce_range`` as in :mod:`vitcompress.methods.ort_static`.
"""
from __future__ import annotations

from vitcompress.methods.base import Method, StepContext, register
from vitcompress.methods.ort_static import check_onnx
from vitcompress.runtime import (RUNTIME, OnnxArtifact, check_reduce_range, onnx_child, quantize_dynamic,
                                 resolve_reduce_range)

DEFAULTS = {"per_channel": False, "reduce_range": "auto"}


def _child(parent: OnnxArtifact, step: dict) -> OnnxArtifact:
    check_onnx(parent, step["id"])
    reduce, why = resolve_reduce_range(step["reduce_range"])
    proto = quantize_dynamic(parent.path, bool(step["per_channel"]), reduce)
    spec = {"method": OrtDynamic.name, "per_channel": bool(step["per_channel"]), "reduce_range": reduce,
            "reduce_range_reason": why}
    return onnx_child(parent, proto, spec, step, ort_quantized="dynamic int8")


@register
class OrtDynamic(Method):
    name = "ort_int8_dynamic"
    runtime = input_runtime = RUNTIME
    makes = "int8"
    keys = {"per_channel": bool, "reduce_range": (bool, str)}

    @classmethod
    def check_step(cls, step, where, profile):
        super().check_step(step, where, profile)
        check_reduce_range(step, where)

    def run(self, ctx: StepContext) -> OnnxArtifact:
        self.check_parent(ctx)
        return _child(ctx.parent, {**DEFAULTS, **ctx.step})

    @classmethod
    def untrained_deploy(cls, parent: OnnxArtifact, step: dict) -> OnnxArtifact:
        return _child(parent, {**DEFAULTS, **step})
