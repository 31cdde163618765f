"""FQ-ViT's quantizers: what observes a tensor in calibration and how it is then rounded.

:class:`ActQuant` (uniform, one layer-wise scale from a ``minmax``/``ema``/``percentile``/``omse`` observer;
with ``channels`` the Power-of-Two Factor quantizer of LayerNorm inputs) and :class:`AttnProbQuant`
(Log-Int-Softmax: log2 levels for attention probabilities). Both are fake quantizers: values land on the
integer grid, arithmetic stays float. The modules that carry them are in :mod:`vitcompress.fqvit.modules`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

OBSERVERS = ("minmax", "ema", "percentile", "omse")
SAMPLE_ROWS = 2048  # rows of each observed tensor kept for percentile/OMSE/PTF, per observer


def fake_quant(x: torch.Tensor, scale, zero_point, bits: int) -> torch.Tensor:
    """Asymmetric uniform quantize-dequantize onto levels 0..2^bits-1."""
    q = torch.clamp(torch.round(x / scale) + zero_point, 0, 2 ** bits - 1)
    return (q - zero_point) * scale


def uniform_qparams(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point covering [lo, hi] (widened to include 0) with 2^bits levels."""
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = torch.clamp((hi - lo) / (2 ** bits - 1), min=1e-8)
    zero_point = torch.clamp(torch.round(-lo / scale), 0, 2 ** bits - 1)
    return scale, zero_point


def log2_quant(p: torch.Tensor, bits: int) -> torch.Tensor:
    """LIS: p in [0, 1] -> 2^-q with q = round(-log2 p) in 0..2^bits-2; the last level stands for 0."""
    top = 2 ** bits - 1
    q = torch.clamp(torch.round(-torch.log2(p.clamp(min=1e-30))), 0, top)
    return torch.where(q >= top, torch.zeros_like(p), torch.exp2(-q))


class ActQuant(nn.Module):
    """Observes a tensor during calibration, then fake-quantizes it with one layer-wise scale.

    ``channels`` > 0 makes it a PTF quantizer over the last dimension (LayerNorm inputs).
    """

    def __init__(self, bits: int = 8, observer: str = "minmax", channels: int = 0, ptf_k: int = 3,
                 percentile: float = 99.99, ema: float = 0.9):
        super().__init__()
        self.bits, self.observer, self.ptf_k = int(bits), observer, int(ptf_k)
        self.percentile, self.ema_decay = float(percentile), float(ema)
        self.mode = "float"  # float | calibrate | quant
        n = max(1, int(channels))
        self.register_buffer("scale", torch.ones(n if channels else 1))
        self.register_buffer("zero_point", torch.zeros(1))
        self.channels = int(channels)
        self._reset_stats()

    def _reset_stats(self):
        self.stats: dict = {"min": None, "max": None, "ema_min": None, "ema_max": None, "rows": [], "seen": 0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "calibrate":
            self.observe(x.detach())
            return x
        if self.mode == "quant":
            return fake_quant(x, self.scale, self.zero_point, self.bits)
        return x

    # -- calibration -----------------------------------------------------------------------------
    def observe(self, x: torch.Tensor) -> None:
        rows = x.reshape(-1, x.shape[-1]).float()
        cmin, cmax = rows.amin(dim=0), rows.amax(dim=0)  # per last-dim channel
        s = self.stats
        s["min"] = cmin if s["min"] is None else torch.minimum(s["min"], cmin)
        s["max"] = cmax if s["max"] is None else torch.maximum(s["max"], cmax)
        d = self.ema_decay
        s["ema_min"] = cmin if s["ema_min"] is None else d * s["ema_min"] + (1 - d) * cmin
        s["ema_max"] = cmax if s["ema_max"] is None else d * s["ema_max"] + (1 - d) * cmax
        if self.observer in ("percentile", "omse") or self.channels:
            g = torch.Generator().manual_seed(s["seen"])
            take = torch.randperm(rows.shape[0], generator=g)[:SAMPLE_ROWS].to(rows.device)
            s["rows"].append(rows[take].cpu())
            kept = torch.cat(s["rows"])
            if kept.shape[0] > SAMPLE_ROWS:
                keep = torch.randperm(kept.shape[0], generator=g)[:SAMPLE_ROWS]
                kept = kept[keep]
            s["rows"] = [kept]
        s["seen"] += 1

    def channel_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (last dim) min and max seen in calibration (the study's Figure 1, left)."""
        return self.stats["min"].cpu(), self.stats["max"].cpu()

    def sample(self) -> torch.Tensor:
        return torch.cat(self.stats["rows"]) if self.stats["rows"] else torch.empty(0)

    def layer_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        s, kind = self.stats, self.observer
        if kind == "minmax":
            return s["min"].min().cpu(), s["max"].max().cpu()
        if kind == "ema":
            return s["ema_min"].min().cpu(), s["ema_max"].max().cpu()
        flat = self.sample().flatten()
        if kind == "percentile":
            q = torch.tensor([1 - self.percentile / 100, self.percentile / 100])
            lo, hi = torch.quantile(flat[:2 ** 24], q)
            return lo, hi
        # omse: the clipping of the min-max range with the least quantization error on the data
        lo, hi = s["min"].min().cpu(), s["max"].max().cpu()
        best, best_err = (lo, hi), math.inf
        for ratio in torch.linspace(0.3, 1.0, 36):
            sc, zp = uniform_qparams(lo * ratio, hi * ratio, self.bits)
            err = (fake_quant(flat, sc, zp, self.bits) - flat).pow(2).mean().item()
            if err < best_err:
                best, best_err = (lo * ratio, hi * ratio), err
        return best

    def freeze(self) -> None:
        """Turn the statistics into scale(s) and zero point, then quantize from now on."""
        if self.stats["min"] is None:
            raise RuntimeError("quantizer saw no calibration data")
        # PTF's layer range is min-max whatever the observer (FQ-ViT's LayerNorm-input observer is its own)
        lo, hi = (self.stats["min"].min().cpu(), self.stats["max"].max().cpu()) if self.channels else self.layer_range()
        top_scale, zp = uniform_qparams(lo, hi, self.bits)
        if self.channels:  # PTF: per-channel 2^alpha on the layer scale s = top / 2^K
            rows = self.sample()
            base = top_scale / 2 ** self.ptf_k
            errs = torch.stack([
                (fake_quant(rows, base * 2 ** a, zp, self.bits) - rows).pow(2).sum(dim=0)
                for a in range(self.ptf_k + 1)
            ])  # (K+1, C)
            alpha = errs.argmin(dim=0)
            self.scale.copy_(base * torch.exp2(alpha.float()))
        else:
            self.scale.copy_(top_scale.reshape(1))
        self.zero_point.copy_(zp.reshape(1))
        self.mode = "quant"
        self._reset_stats()


class AttnProbQuant(nn.Module):
    """Log-Int-Softmax's quantizer of attention probabilities: log2 levels at ``bits`` bits. No calibration
    needed. (FQ-ViT's baseline without LIS is a calibrated uniform :class:`ActQuant` at ``act_bits``.)"""

    def __init__(self, bits: int = 4):
        super().__init__()
        self.bits, self.mode = int(bits), "float"

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return log2_quant(p, self.bits) if self.mode == "quant" else p
