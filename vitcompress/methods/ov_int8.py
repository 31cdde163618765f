"""``ov_int8``: NNCF's post-training int8 quantization of an OpenVINO IR (``ov`` step first).

``nncf.quantize(model_type=TRANSFORMER)`` on the IR: SmoothQuant (``smooth_quant``) first moves the
activations' outlier channels into the weights, then min-max statistics on ``subset_size`` training
images (one image a calibration item) place FakeQuantize nodes on the inputs of every MatMul and the
patch convolution, with int8 weights (symmetric, per output channel), activations symmetric
(``preset: performance``) or asymmetric (``mixed``, NNCF's default for transformers); fast bias
correction (``fast_bias_correction``) then re-fits the biases. The saved IR holds integer weight
constants, and the CPU plugin runs those layers as int8 kernels (VNNI where the CPU has it); what is not
quantized runs at the step's ``precision`` (``f32`` by default), which the Runtime column names.

>>> from vitcompress.methods import get_method
>>> s = get_method("ov_int8").settings({"subset_size": 64})
>>> s.subset_size, s.preset, s.smooth_quant
(64, 'mixed', True)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vitcompress.methods.base import Method, StepContext, register
from vitcompress.runtimes.openvino import RUNTIME, OvArtifact, Precision, check_ir, quantization_summary, quantize
from vitcompress.settings import setting

UNTRAINED_CALIB = 16  # random images calibrate an untrained (architecture benchmark) model


@dataclass(frozen=True, kw_only=True)
class OvInt8Settings(Precision):
    subset_size: int = setting(300, low=1, help="training images NNCF's statistics are collected on",
                               counts="train")
    preset: str = setting("mixed", choices=("mixed", "performance"),
                          help="NNCF's preset: asymmetric (mixed) or symmetric (performance) activations")
    smooth_quant: bool = setting(True, help="SmoothQuant before quantizing (NNCF's MatMul alpha 0.95)")
    fast_bias_correction: bool = setting(True, help="NNCF's fast bias correction after quantizing; false: its "
                                                     "full (slower, per-layer) bias correction, not none")


def spec(name: str, s: OvInt8Settings, images: int) -> dict:
    return {"method": name, "subset_size": images, "preset": s.preset, "smooth_quant": s.smooth_quant,
            "fast_bias_correction": s.fast_bias_correction, "precision": s.precision}


def untrained_images(parent) -> torch.Tensor:
    kwargs = parent.arch["kwargs"]
    return torch.randn(UNTRAINED_CALIB, int(kwargs["in_chans"]), *map(int, kwargs["img_size"]),
                       generator=torch.Generator().manual_seed(0))


def _child(parent: OvArtifact, step: dict, s: OvInt8Settings, images: torch.Tensor) -> OvArtifact:
    check_ir(parent, step["id"])
    model = quantize(parent.path, images, s)
    return OvArtifact.child(parent, model, spec(OvInt8.name, s, len(images)), step, ov_int8=True,
                            ov_precision=s.precision, ov_quantization=quantization_summary(model))


@register
class OvInt8(Method):
    name = "ov_int8"
    Settings = OvInt8Settings
    runtime = input_runtime = RUNTIME
    makes = "int8"

    def run(self, ctx: StepContext) -> OvArtifact:
        from vitcompress.data import calibration_images

        s = self.settings(ctx.step)
        images = calibration_images(ctx.data_file, ctx.parent.arch["kwargs"]["img_size"], s.subset_size, "cpu",
                                    ctx.seed, key="subset_size")
        return _child(ctx.parent, ctx.step, s, images)

    @classmethod
    def untrained_deploy(cls, parent: OvArtifact, step: dict) -> OvArtifact:
        return _child(parent, step, cls.settings(step), untrained_images(parent))
