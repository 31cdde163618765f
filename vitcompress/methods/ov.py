"""``ov``: convert the chain's PyTorch model to an OpenVINO IR and prove it is the same model.

``openvino.convert_model`` traces the model (dynamic batch) and the IR is saved with f32 weights
(:mod:`vitcompress.runtimes.openvino`). As the ``onnx`` step does, the step predicts the whole test split
with PyTorch and with OpenVINO's CPU plugin (at the step's ``precision``) and refuses the conversion when
they agree on fewer than ``min_agreement`` of the images (:class:`~vitcompress.methods.base.Conversion`).
The chains it can end are those ``onnx`` can: torch.ao's int8 layers and simulated quantization do not
convert. ``precision`` (``f32`` by default; ``bf16`` on a CPU with AVX-512 BF16 or AMX) is the inference
precision the IR runs at, in this step's accuracy and timing and in the Runtime column.

>>> from vitcompress.methods import get_method
>>> get_method("ov").settings({"precision": "bf16"}).precision
'bf16'
"""
from __future__ import annotations

from dataclasses import dataclass

from vitcompress.methods.base import Conversion, ConversionSettings, register
from vitcompress.runtimes.openvino import RUNTIME, Precision


@dataclass(frozen=True, kw_only=True)
class OvSettings(Precision, ConversionSettings):
    pass


@register
class OvConvert(Conversion):
    name = "ov"
    family = "OpenVINO"
    Settings = OvSettings
    runtime = RUNTIME

    @classmethod
    def converted_meta(cls, s: OvSettings, model) -> dict:
        from vitcompress.tome.vit import attention_shapes

        # The CPU plugin miscomputes an attention whose token count equals its head count when compiled for a
        # static shape (docs/upstream/ov_attention_tokens_equal_heads.py): such an IR keeps its batch dynamic.
        static = not any(tokens == heads for tokens, heads in attention_shapes(model))
        return {"ov_precision": s.precision, "ov_int8": False, "ov_static_shapes": static}
