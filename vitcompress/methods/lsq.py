"""``lsq``: quantization-aware training with diffq's Learned Step Size Quantizer (Esser et al., 2019).

Every weight tensor above ``min_size`` MB is quantized to ``bits`` bits with one learned step size;
the parent (float) model is fine-tuned for ``epochs`` with the project's training loop, the step
sizes learned alongside the weights. The artifact is diffq's packed quantized state (see
:mod:`vitcompress.methods.qat`); 4 bits give about 1/8 of the float size.
"""
from __future__ import annotations

from dataclasses import dataclass

from diffq import LSQ as _LSQ

from vitcompress.methods.base import register
from vitcompress.methods.qat import QATMethod, QATSettings
from vitcompress.settings import setting


@dataclass(frozen=True, kw_only=True)
class LSQSettings(QATSettings):
    bits: int = setting(4, low=2, high=15, help="1 bit leaves no positive level; diffq packs at most 15")


@register
class LSQ(QATMethod):
    name = "lsq"
    family = "quantized (PyTorch)"
    Settings = LSQSettings

    @classmethod
    def make_quantizer(cls, model, s: LSQSettings, step_id: str):
        return _LSQ(model, bits=s.bits, **cls.quantizer_kwargs(s))
