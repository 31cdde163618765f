"""``lsq``: quantization-aware training with diffq's Learned Step Size Quantizer (Esser et al., 2019).

Every weight tensor above ``min_size`` MB is quantized to ``bits`` bits with one learned step size;
the parent (float) model is fine-tuned for ``epochs`` with the project's training loop, the step
sizes learned alongside the weights. The artifact is diffq's packed quantized state (see
:mod:`vitcompress.methods.qat`); 4 bits give about 1/8 of the float size.
"""
from __future__ import annotations

from diffq import LSQ as _LSQ

from vitcompress.errors import ConfigError
from vitcompress.methods.base import register
from vitcompress.methods.qat import QATMethod


@register
class LSQ(QATMethod):
    name = "lsq"
    keys = {**QATMethod.keys, "bits": int}

    @classmethod
    def check_step(cls, step, where, profile):
        super().check_step(step, where, profile)
        bits = step.get("bits", 4)
        if not 2 <= bits <= 15:
            raise ConfigError(f"params.yaml: {where}.bits = {bits!r}: LSQ needs 2 to 15 bits "
                              f"(1 bit leaves no positive level; diffq packs at most 15).")

    @classmethod
    def make_quantizer(cls, model, step):
        return _LSQ(model, bits=int(step.get("bits", 4)), **cls.quantizer_kwargs(step))
