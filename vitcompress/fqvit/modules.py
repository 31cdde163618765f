"""FQ-ViT's quantized modules, and how a timm ViT becomes one and is calibrated.

Linear and Conv2d layers store uint8 weights per output channel and quantize their input
(:class:`QLinear`, :class:`QConv2d`); a LayerNorm quantizes its input (PTF when enabled,
:class:`QLayerNorm`); attention quantizes q, k, v, scores and probabilities (:class:`QAttention`).
:func:`quantize_model` swaps them in, :func:`calibrate` runs the observers and freezes their scales.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitcompress.fqvit.observers import ActQuant, AttnProbQuant, uniform_qparams
from vitcompress.models import ReplacedAttention


class _QWeight(nn.Module):
    """Weights stored as uint8 levels with a per-output-channel scale and zero point; input quantized."""

    def _init_weight(self, weight: torch.Tensor | None, shape, bits: int, act: ActQuant):
        self.bits, self.input_quant = int(bits), act
        self.register_buffer("weight_q", torch.zeros(shape, dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(shape[0]))
        self.register_buffer("weight_zero_point", torch.zeros(shape[0]))
        if weight is not None:
            flat = weight.detach().reshape(shape[0], -1)
            scale, zp = uniform_qparams(flat.amin(dim=1), flat.amax(dim=1), self.bits)
            view = (-1,) + (1,) * (len(shape) - 1)
            q = torch.clamp(torch.round(weight.detach() / scale.view(view)) + zp.view(view), 0, 2 ** self.bits - 1)
            self.weight_q.copy_(q.to(torch.uint8))
            self.weight_scale.copy_(scale)
            self.weight_zero_point.copy_(zp)

    def dequantized_weight(self) -> torch.Tensor:
        view = (-1,) + (1,) * (self.weight_q.dim() - 1)
        return (self.weight_q.float() - self.weight_zero_point.view(view)) * self.weight_scale.view(view)


class QLinear(_QWeight):
    def __init__(self, lin: nn.Linear, bits: int, act: ActQuant, copy_weights: bool = True):
        super().__init__()
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self._init_weight(lin.weight if copy_weights else None, tuple(lin.weight.shape), bits, act)
        self.bias = lin.bias

    def forward(self, x):
        return F.linear(self.input_quant(x), self.dequantized_weight(), self.bias)


class QConv2d(_QWeight):
    def __init__(self, conv: nn.Conv2d, bits: int, act: ActQuant, copy_weights: bool = True):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self._init_weight(conv.weight if copy_weights else None, tuple(conv.weight.shape), bits, act)
        self.bias = conv.bias

    def forward(self, x):
        return F.conv2d(self.input_quant(x), self.dequantized_weight(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


class QLayerNorm(nn.Module):
    """A LayerNorm whose input is PTF-quantized (or layer-wise when PTF is off)."""

    def __init__(self, norm: nn.LayerNorm, act: ActQuant):
        super().__init__()
        self.norm, self.input_quant = norm, act

    def forward(self, x):
        return self.norm(self.input_quant(x))


class QAttention(ReplacedAttention):
    """timm's ViT attention with quantized q, k, v, scores and probabilities."""

    label = "fq_vit attention"

    def __init__(self, attn: nn.Module, s: dict, make_act):
        super().__init__(attn)
        self.qkv_quant, self.score_quant = make_act(), make_act()
        self.prob_quant = AttnProbQuant(s["attn_bits"], log2=s["lis"])

    def forward(self, x, attn_mask=None, is_causal: bool = False):
        self.check_mask(attn_mask, is_causal)
        B, N, _ = x.shape
        q, k, v = self.split_heads(self.qkv_quant(self.qkv(x)), B, N)
        scores = self.score_quant((q * self.scale) @ k.transpose(-2, -1))
        probs = self.prob_quant(scores.softmax(dim=-1))
        return self.merge_heads(probs @ v, B, N)


def quantize_model(model: nn.Module, s: dict, copy_weights: bool = True) -> nn.Module:
    """Swap in the simulated-quantization modules, in place (activation quantizers uncalibrated)."""
    def make_act(channels: int = 0) -> ActQuant:
        return ActQuant(s["act_bits"], s["observer"], channels, s["ptf_k"], s["percentile"], s["ema"])

    for block in model.blocks:
        block.attn = QAttention(block.attn, s, make_act)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, QLinear(child, s["weight_bits"], make_act(), copy_weights))
            elif type(child) is nn.Conv2d:
                setattr(parent, name, QConv2d(child, s["weight_bits"], make_act(), copy_weights))
            elif isinstance(child, nn.LayerNorm):
                channels = child.normalized_shape[-1] if s["ptf"] else 0
                setattr(parent, name, QLayerNorm(child, make_act(channels)))
    return model


def set_mode(model: nn.Module, mode: str) -> None:
    for m in model.modules():
        if isinstance(m, (ActQuant, AttnProbQuant)):
            m.mode = mode


def calibrate(model: nn.Module, images: torch.Tensor, batch_size: int, before_freeze=None) -> nn.Module:
    """Observe the activations on ``images`` (already adapted to the model), then freeze every quantizer.

    ``before_freeze(model)``, if given, sees the observers' statistics before they become scales."""
    set_mode(model, "calibrate")
    model.eval()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
    if before_freeze is not None:
        before_freeze(model)
    for m in model.modules():
        if isinstance(m, ActQuant):
            m.freeze()
    set_mode(model, "quant")
    return model
