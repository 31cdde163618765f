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

import torch.nn.functional as F
from diffq import DiffQuantizer

from vitcompress.errors import ConfigError
from vitcompress.methods.base import register
from vitcompress.methods.qat import QATMethod, quantized_params

DEFAULTS = {"penalty": 1.0, "group_size": 8, "min_bits": 2, "max_bits": 15, "init_bits": 8.0}


@register
class DiffQ(QATMethod):
    name = "diffq"
    packed_default = False  # one byte per level: the form zlib compresses best (see the module docstring)
    keep_default = "last"  # the most accurate epoch is the one with the most bits
    keys = {**QATMethod.keys, "penalty": (int, float), "group_size": int, "min_bits": int,
            "max_bits": int, "init_bits": (int, float), "bits_lr": (int, float)}

    @classmethod
    def settings(cls, step: dict) -> dict:
        return {k: step.get(k, v) for k, v in DEFAULTS.items()}

    @classmethod
    def check_step(cls, step, where, profile):
        super().check_step(step, where, profile)
        s = cls.settings(step)
        if s["penalty"] < 0:
            raise ConfigError(f"params.yaml: {where}.penalty = {s['penalty']!r} must be >= 0.")
        if s["group_size"] < 1:
            raise ConfigError(f"params.yaml: {where}.group_size = {s['group_size']!r} must be >= 1.")
        if not 1 <= s["min_bits"] < s["init_bits"] < s["max_bits"] <= 15:
            raise ConfigError(
                f"params.yaml: {where}: min_bits = {s['min_bits']}, init_bits = {s['init_bits']}, max_bits = "
                f"{s['max_bits']} must satisfy 1 <= min_bits < init_bits < max_bits <= 15.")

    @classmethod
    def make_quantizer(cls, model, step):
        s, kwargs = cls.settings(step), cls.quantizer_kwargs(step)
        bad = [(n, p.numel()) for n, p in quantized_params(model, kwargs["min_size"], kwargs["exclude"])
               if p.numel() % int(s["group_size"])]
        if bad:
            raise ValueError(f"step {step.get('id', cls.name)!r}: group_size = {s['group_size']} does not divide the "
                             f"{bad[0][1]} weights of {bad[0][0]}; pick a divisor of every quantized tensor's size "
                             f"(e.g. 4 or 8), or exclude that tensor.")
        return DiffQuantizer(model, group_size=int(s["group_size"]), min_bits=int(s["min_bits"]),
                             max_bits=int(s["max_bits"]), init_bits=float(s["init_bits"]), **kwargs)

    @classmethod
    def optimizer_kwargs(cls, step):
        return {"lr": float(step["bits_lr"])} if "bits_lr" in step else {}  # diffq's default: 1e-3

    def loss_fn(self, quantizer, step):
        smoothing = float(step["train"].get("label_smoothing", 0.0))
        penalty = float(self.settings(step)["penalty"])

        def loss(m, x, y):
            task = F.cross_entropy(m(x), y, label_smoothing=smoothing)
            return task + penalty * quantizer["q"].model_size() if penalty else task

        return loss
