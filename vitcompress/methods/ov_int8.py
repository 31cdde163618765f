"""``ov_int8``: NNCF's post-training int8 quantization of an OpenVINO IR (``ov`` step first).

``nncf.quantize(model_type=TRANSFORMER)`` on the IR: SmoothQuant (``smooth_quant``) first moves the
activations' outlier channels into the weights, then min-max statistics on ``subset_size`` training
images (one image a calibration item) place FakeQuantize nodes on the inputs of every MatMul and the
patch convolution, and on the attention's q and k, with int8 weights (symmetric, per output channel),
activations symmetric (``preset: performance``) or asymmetric (``mixed``, NNCF's default for
transformers); bias correction (``fast_bias_correction``) then re-fits the biases. The saved IR holds
integer weight constants, and the CPU plugin runs those layers as int8 kernels (VNNI where the CPU has it);
what is not quantized runs at the step's ``precision`` (``f32`` by default), which the Runtime column names.

The CPU class decides two things (``overflow_fix`` and ``attention``, both ``auto`` by default; see
:func:`vitcompress.measure.ov_int8_recipe`): on an x86 CPU without VNNI, 7-bit weights and a float
attention, since its int8 kernels add u8×s8 products into a saturating int16. The step then checks the
saved IR on this CPU against its own FakeQuantize math in float (:class:`RuntimeQuantizer`); the choice,
its reason and the check are in the artifact's record.

>>> from vitcompress.methods import get_method
>>> s = get_method("ov_int8").settings({"subset_size": 64})
>>> s.subset_size, s.preset, s.smooth_quant, s.overflow_fix, s.attention
(64, 'mixed', True, 'auto', 'auto')
"""
from __future__ import annotations

from dataclasses import dataclass

from vitcompress.methods.base import RuntimeQuantizer, StepContext, VerifySettings, register, untrained_images
from vitcompress.runtimes.openvino import (
    RUNTIME,
    Int8Recipe,
    OvArtifact,
    Precision,
    check_ir,
    quantization_summary,
    quantize,
)
from vitcompress.settings import setting


@dataclass(frozen=True, kw_only=True)
class OvInt8Settings(Precision, Int8Recipe, VerifySettings):
    subset_size: int = setting(300, low=1, help="training images NNCF's statistics are collected on",
                               counts="train")
    preset: str = setting("mixed", choices=("mixed", "performance"),
                          help="NNCF's preset: asymmetric (mixed) or symmetric (performance) activations")
    smooth_quant: bool = setting(True, help="SmoothQuant before quantizing (NNCF's MatMul alpha 0.95)")
    fast_bias_correction: bool = setting(True, help="NNCF's fast bias correction after quantizing; false: its "
                                                     "full (slower, per-layer) bias correction, not none")


def spec(name: str, s: OvInt8Settings, images: int) -> dict:
    recipe = s.resolved()
    return {"method": name, "subset_size": images, "preset": s.preset, "smooth_quant": s.smooth_quant,
            "fast_bias_correction": s.fast_bias_correction, "precision": s.precision,
            "overflow_fix": recipe["overflow_fix"], "attention": recipe["attention"], "recipe_reason": recipe["reason"]}


def fix(s: OvInt8Settings) -> str:
    """The recipe change to suggest when an IR misses its simulation."""
    recipe = s.resolved()
    if recipe["overflow_fix"] != "enable" or recipe["attention"] != "float":
        return ("set overflow_fix: enable and attention: float on this step (what auto chooses on an x86 CPU "
                "without VNNI), or raise max_gap to accept the loss")
    return ("the recipe for CPUs without VNNI is already on: deploy ORT static int8 (ort_int8_static) on this CPU "
            "class, or raise max_gap to accept the loss")


def _child(parent: OvArtifact, step: dict, s: OvInt8Settings, images) -> OvArtifact:
    check_ir(parent, step["id"])
    model = quantize(parent.path, images, s)
    return OvArtifact.child(parent, model, spec(OvInt8.name, s, len(images)), step, ov_int8=True,
                            ov_precision=s.precision, ov_quantization=quantization_summary(model))


@register
class OvInt8(RuntimeQuantizer):
    name = "ov_int8"
    family = "OpenVINO"
    Settings = OvInt8Settings
    runtime = input_runtime = RUNTIME
    calibration_key = "subset_size"

    def quantize(self, ctx: StepContext, s, images) -> OvArtifact:
        return _child(ctx.parent, ctx.step, s, images)

    @classmethod
    def fix(cls, s, check) -> str:
        return fix(s)

    @classmethod
    def untrained_deploy(cls, parent: OvArtifact, step: dict) -> OvArtifact:
        return _child(parent, step, cls.settings(step), untrained_images(parent))
