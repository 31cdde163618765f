"""``diffq``: quantization-aware training with DiffQ's pseudo-quantization noise (Défossez et al., 2021).

During fine-tuning each weight gets noise the size of a quantization step for a *learned*, per-group
number of bits, and the loss adds ``penalty`` x the quantizer's differentiable model-size estimate
(MB), so training trades accuracy for bits. At the end the weights are truly quantized with the
rounded bit widths. ``group_size`` weights share one bit width (it must divide every quantized
tensor); ``min_bits``/``max_bits``/``init_bits`` bound and start the search; ``bits_lr`` is the learning rate
of the bit widths (diffq's default 1e-3). The artifact is the unpacked quantized state (one byte per
level), uncompressed: the Size column counts every row's raw bytes, and its Compressed column (zlib)
is then diffq's own ``compressed_model_size`` (the same bytes through zlib) plus the file's bookkeeping.
DiffQ's size claim rests on that compression: most weights sit near the middle of their range, a skew a
compressor finds in whole bytes but not in bit planes (diffq's packing pads each group to whole words,
so ``packed: true`` is smaller raw but larger compressed). diffq's ``true_model_size`` (the learned bits,
exactly) is kept in the step record and shown beside the row. ``compress: zlib | xz`` stores the file
compressed (the Size column still counts its payload). The fine-tuning keeps its last epoch (``keep: last``): the loss trades accuracy for size, so
the most accurate epoch is the one that traded least.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from diffq import DiffQuantizer

from vitcompress.errors import ConfigError
from vitcompress.methods.base import register
from vitcompress.methods.qat import QATMethod, QATSettings, quantized_params
from vitcompress.sections import TrainSettings
from vitcompress.settings import setting


@dataclass(frozen=True, kw_only=True)
class DiffQSettings(QATSettings):
    keep: str = setting("last", choices=("best", "last"), help="the most accurate epoch is the one with the most bits")
    packed: bool = setting(False, help="one byte per level: the form zlib compresses best")
    penalty: float = setting(1.0, low=0, help="weight of the model-size term (MB) in the loss")
    group_size: int = setting(8, low=1, help="weights that share one bit width")
    min_bits: int = setting(2, help="bounds of the learned widths: 1 <= min_bits < init_bits < max_bits <= 15")
    max_bits: int = setting(15, help="the widest a group may grow")
    init_bits: float = setting(8.0, help="the width every group starts at")
    bits_lr: float | None = setting(None, low=0, low_open=True, help="learning rate of the bit widths")

    def check(self, where):
        if not 1 <= self.min_bits < self.init_bits < self.max_bits <= 15:
            raise ConfigError(
                f"params.yaml: {where}: min_bits = {self.min_bits}, init_bits = {self.init_bits:g}, max_bits = "
                f"{self.max_bits} must satisfy 1 <= min_bits < init_bits < max_bits <= 15.")


@register
class DiffQ(QATMethod):
    name = "diffq"
    family = "quantized (PyTorch)"
    Settings = DiffQSettings

    @classmethod
    def make_quantizer(cls, model, s: DiffQSettings, step_id: str):
        bad = [(n, p.numel()) for n, p in quantized_params(model, s.min_size, list(s.exclude))
               if p.numel() % s.group_size]
        if bad:
            raise ValueError(f"step {step_id!r}: group_size = {s.group_size} does not divide the "
                             f"{bad[0][1]} weights of {bad[0][0]}; pick a divisor of every quantized tensor's size "
                             f"(e.g. 4 or 8), or exclude that tensor.")
        return DiffQuantizer(model, group_size=s.group_size, min_bits=s.min_bits, max_bits=s.max_bits,
                             init_bits=s.init_bits, **cls.quantizer_kwargs(s))

    @classmethod
    def optimizer_kwargs(cls, s: DiffQSettings):
        return {"lr": s.bits_lr} if s.bits_lr is not None else {}  # diffq's default: 1e-3

    def loss_fn(self, quantizer, s: DiffQSettings, step: dict):
        smoothing = TrainSettings.of(step["train"]).label_smoothing
        penalty = s.penalty

        def loss(m, x, y):
            task = F.cross_entropy(m(x), y, label_smoothing=smoothing)
            return task + penalty * quantizer["q"].model_size() if penalty else task

        return loss
