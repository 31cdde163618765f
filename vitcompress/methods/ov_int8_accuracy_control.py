"""``ov_int8_accuracy_control``: NNCF's int8 quantization of an OpenVINO IR, bounded in accuracy.

``nncf.quantize_with_accuracy_control``: the ``ov_int8`` quantization (same keys, SmoothQuant off), then,
while top-1 on the **validation** split (never the test split, which the table reports) is more than
``max_drop`` points below the float IR's, NNCF ranks the quantized operations on every validation batch
by how much they cost and reverts the worst to float, up to ``max_num_iterations`` rounds; both IRs are
judged with f32 inference (so the step's precision must be f32). A bound not met in those rounds stops
the job (NNCF itself would return its last model). The artifact records what NNCF reverted
(``accuracy_control.reverted_operations``) and which weight layers are left in float
(``float_layers``), and the row's notes name them. With a bound the quantized IR already meets,
nothing is reverted. The recipe of the CPU class (``overflow_fix``, ``attention``) and the check of the deployed
IR against its own float math are ``ov_int8``'s.

SmoothQuant stays off: NNCF restores a reverted layer's original weights but not SmoothQuant's scaling
of its input, so a reverted layer would compute another function.

>>> from vitcompress.methods import get_method
>>> get_method("ov_int8_accuracy_control").settings({"max_drop": 0.5}).max_drop
0.5
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from vitcompress.errors import ConfigError
from vitcompress.methods.base import RuntimeQuantizer, StepContext, register, untrained_images
from vitcompress.methods.ov_int8 import OvInt8Settings, fix, spec
from vitcompress.runtimes.openvino import (
    RUNTIME,
    OvArtifact,
    check_ir,
    quantization_summary,
    quantize_with_accuracy_control,
)
from vitcompress.settings import setting

VAL_BATCH = 64


@dataclass(frozen=True, kw_only=True)
class OvAccuracyControlSettings(OvInt8Settings):
    max_drop: float = setting(1.0, low=0, help="top-1 points on the validation split the int8 IR may lose")
    max_num_iterations: int = setting(20, low=1, help="NNCF's rounds of reverting operations to float")
    # NNCF restores a reverted layer's original weights but leaves SmoothQuant's activation scaling in
    # front of it, and judges the bound with f32 inference: neither combination would keep the bound
    smooth_quant: bool = setting(False, help="must stay false: reverting a smoothed layer would not restore it")

    def check(self, where):
        if self.smooth_quant:
            raise ConfigError(f"params.yaml: {where}.smooth_quant = true: accuracy control reverts a layer's weights "
                              f"but not SmoothQuant's scaling of its input; set smooth_quant: false (or use ov_int8).")
        if self.precision != "f32":
            raise ConfigError(f"params.yaml: {where}.precision = {self.precision!r}: NNCF judges max_drop with f32 "
                              f"inference, so a {self.precision} IR would not be bounded; use precision: f32.")


def _child(parent: OvArtifact, step: dict, s: OvAccuracyControlSettings, images: torch.Tensor,
           val_batches) -> OvArtifact:
    check_ir(parent, step["id"])
    model, scores, reverted = quantize_with_accuracy_control(parent.path, images, val_batches, s)
    summary = quantization_summary(model)
    record = {**spec(OvAccuracyControl.name, s, len(images)), "max_drop": s.max_drop,
              "max_num_iterations": s.max_num_iterations}
    return OvArtifact.child(parent, model, record, step, ov_int8=True, ov_precision=s.precision,
                            ov_quantization=summary, accuracy_control={
                                "split": "val", "max_drop": s.max_drop, "float_top1": scores["float"],
                                "int8_top1": scores["int8"], "float_layers": summary["float_layers"],
                                "reverted_operations": reverted["operations"],
                                "quantized_operations": reverted["quantized_operations"]})


@register
class OvAccuracyControl(RuntimeQuantizer):
    name = "ov_int8_accuracy_control"
    family = "OpenVINO"
    Settings = OvAccuracyControlSettings
    runtime = input_runtime = RUNTIME
    calibration_key = "subset_size"

    def quantize(self, ctx: StepContext, s, images) -> OvArtifact:
        from vitcompress.data import InputAdapter, PreparedData

        data = PreparedData(ctx.data_file)
        adapter = InputAdapter(data.meta, ctx.parent.arch["kwargs"]["img_size"], "cpu")
        val = [(adapter(x), y) for x, y in data.loader("val", VAL_BATCH)]
        if not val:
            raise ValueError(f"step {ctx.step['id']!r} bounds accuracy on the validation split, which is empty on "
                             f"{ctx.dataset}; give the data set a validation split (its val_size, or a larger samples list).")
        return _child(ctx.parent, ctx.step, s, images, val)

    @classmethod
    def fix(cls, s, check) -> str:
        return fix(s)

    @classmethod
    def untrained_deploy(cls, parent: OvArtifact, step: dict) -> OvArtifact:
        """Random weights have no accuracy to keep: the bound is lifted (nothing reverted), so the benchmark
        times the fully quantized architecture, which is what a trained model's run starts from."""
        images = untrained_images(parent)
        labels = torch.zeros(len(images), dtype=torch.long)
        s = dataclasses.replace(cls.settings(step), max_drop=100.0)  # (frozen: a copy, not checked again)
        return _child(parent, step, s, images, [(images, labels)])
