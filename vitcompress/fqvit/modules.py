"""FQ-ViT's quantized graph, and how a timm ViT becomes one and is calibrated.

The quantizers sit where FQ-ViT's reference (``vit_quant.py``) puts them, on the *outputs* of the
operations, so every tensor that flows between two operations is on an integer grid:

* weights of every Linear and the patch-embedding Conv2d: symmetric signed ``weight_bits`` per output
  channel, min-max (:class:`QLinear`, :class:`QConv2d`, stored as int8 levels and a scale);
* the patch embedding's output, the class/distillation tokens and the position embedding (constants,
  quantized once), the embedding sum (PTF: it feeds the first LayerNorm and the first skip path);
* in every block (:class:`QBlock`): each LayerNorm's output, q/k/v (the qkv output), the attention
  scores, the probabilities (LIS, or a calibrated ``act_bits`` uniform quantizer without it), the
  attention output before and after the output projection, the GELU output and fc2's output; and the
  **block's two residual sums**, PTF-quantized since each feeds a LayerNorm. That quantized sum is both
  the next LayerNorm's input and the next skip connection, so nothing float survives on the residual
  stream;
* the features the head sees, after pooling (the class token, or the average, which with a norm after
  pooling is that norm's PTF input), and the logits.

Not quantized: the input image (as FQ-ViT's ViT models; its 8-bit pixels are only normalised), and
FQ-ViT's joint scale for [class token; patch tokens] (here the tokens are constants on their own grid).

:func:`quantize_model` swaps these in, :func:`calibrate` runs the observers and freezes their scales.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitcompress.fqvit.observers import ActQuant, AttnProbQuant, fake_quant, uniform_qparams
from vitcompress.fqvit.settings import FQViTSettings
from vitcompress.models import ReplacedAttention


def symmetric_qparams(absmax: torch.Tensor, bits: int) -> torch.Tensor:
    """Scale of a symmetric signed grid -2^(b-1)..2^(b-1)-1 covering [-absmax, absmax] (FQ-ViT's int8
    min-max weight observer: absmax / ((qmax - qmin) / 2))."""
    return torch.clamp(absmax / ((2 ** bits - 1) / 2), min=1e-8)


class _QWeight(nn.Module):
    """Weights stored as signed integer levels (int8) with one scale per output channel, zero point 0.
    ``out_quant``, if given, quantizes the layer's output (the next operation's input)."""

    def _init_weight(self, weight: torch.Tensor | None, shape, bits: int, out_quant: nn.Module | None):
        self.bits = int(bits)
        self.out_quant = out_quant if out_quant is not None else nn.Identity()
        self.register_buffer("weight_q", torch.zeros(shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(shape[0]))
        if weight is not None:
            flat = weight.detach().reshape(shape[0], -1)
            scale = symmetric_qparams(flat.abs().amax(dim=1), self.bits)
            view = (-1,) + (1,) * (len(shape) - 1)
            lo, hi = -2 ** (self.bits - 1), 2 ** (self.bits - 1) - 1
            q = torch.clamp(torch.round(weight.detach() / scale.view(view)), lo, hi)
            self.weight_q.copy_(q.to(torch.int8))
            self.weight_scale.copy_(scale)

    def dequantized_weight(self) -> torch.Tensor:
        view = (-1,) + (1,) * (self.weight_q.dim() - 1)
        return self.weight_q.float() * self.weight_scale.view(view)


class QLinear(_QWeight):
    def __init__(self, lin: nn.Linear, bits: int, out_quant: nn.Module | None = None, copy_weights: bool = True):
        super().__init__()
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self._init_weight(lin.weight if copy_weights else None, tuple(lin.weight.shape), bits, out_quant)
        self.bias = lin.bias

    def forward(self, x):
        return self.out_quant(F.linear(x, self.dequantized_weight(), self.bias))


class QConv2d(_QWeight):
    def __init__(self, conv: nn.Conv2d, bits: int, out_quant: nn.Module | None = None, copy_weights: bool = True):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self._init_weight(conv.weight if copy_weights else None, tuple(conv.weight.shape), bits, out_quant)
        self.bias = conv.bias

    def forward(self, x):
        return self.out_quant(F.conv2d(x, self.dequantized_weight(), self.bias, self.stride, self.padding,
                                       self.dilation, self.groups))


class QOut(nn.Module):
    """``module`` followed by a quantizer of its output (LayerNorm and GELU outputs)."""

    def __init__(self, module: nn.Module, out_quant: nn.Module):
        super().__init__()
        self.module, self.out_quant = module, out_quant

    def forward(self, x):
        return self.out_quant(self.module(x))


class QNorm(nn.Module):
    """A LayerNorm whose input is not yet quantized (after average pooling): input and output quantizers."""

    def __init__(self, norm: nn.Module, in_quant: nn.Module, out_quant: nn.Module):
        super().__init__()
        self.in_quant, self.module, self.out_quant = in_quant, norm, out_quant

    def forward(self, x):
        return self.out_quant(self.module(self.in_quant(x)))


class QAttention(ReplacedAttention):
    """timm's ViT attention with quantized scores, probabilities and attention output; q, k, v come
    quantized from ``qkv`` (a :class:`QLinear` with an output quantizer), as does the projection's output."""

    label = "fq_vit attention"

    def __init__(self, attn: nn.Module, s: FQViTSettings, make_act):
        super().__init__(attn)
        self.score_quant, self.ctx_quant = make_act(), make_act()
        # LIS: log2 levels at attn_bits; without it FQ-ViT's baseline, a calibrated uniform act_bits quantizer
        self.prob_quant = AttnProbQuant(s.attn_bits) if s.lis else make_act()

    def forward(self, x, attn_mask=None, is_causal: bool = False):
        self.check_mask(attn_mask, is_causal)
        B, N, _ = x.shape
        q, k, v = self.split_heads(self.qkv(x), B, N)
        scores = self.score_quant((q @ k.transpose(-2, -1)) * self.scale)
        probs = self.prob_quant(scores.softmax(dim=-1))
        ctx = self.ctx_quant((probs @ v).transpose(1, 2).reshape(B, N, self.attn_dim))
        return self.proj_drop(self.proj(self.norm(ctx)))


class QBlock(nn.Module):
    """A timm ViT block whose two residual sums are quantized (``res1``, ``res2``: PTF when enabled, as
    each feeds a LayerNorm); the quantized sum is the next skip connection too."""

    def __init__(self, block: nn.Module, make_ln_input):
        super().__init__()
        for name in ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2"):
            setattr(self, name, getattr(block, name))
        dim = block.mlp.fc2.out_features
        self.res1, self.res2 = make_ln_input(dim), make_ln_input(dim)

    def forward(self, x, attn_mask=None, is_causal: bool = False):
        x = self.res1(x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask,
                                                             is_causal=is_causal))))
        return self.res2(x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))))


TOKENS = ("cls_token", "dist_token", "reg_token", "pos_embed")


def _quantize_constant(p: nn.Parameter, bits: int) -> None:
    """A learned constant (token, position embedding) onto an asymmetric ``bits`` grid, once, in place."""
    with torch.no_grad():
        scale, zp = uniform_qparams(p.min(), p.max(), bits)
        p.copy_(fake_quant(p, scale, zp, bits))


def quantize_model(model: nn.Module, s: FQViTSettings, copy_weights: bool = True) -> nn.Module:
    """Swap in FQ-ViT's fake-quantized graph, in place (activation quantizers uncalibrated).

    ``copy_weights=False`` builds the same structure for a state dict to be loaded into (the learned
    constants are then left as they are: the state dict holds them already quantized)."""
    def make_act(channels: int = 0) -> ActQuant:
        return ActQuant(s.act_bits, s.observer, channels, s.ptf_k, s.percentile, s.ema)

    def make_ln_input(dim: int) -> ActQuant:  # what feeds a LayerNorm: PTF, or layer-wise without it
        return make_act(dim if s.ptf else 0)

    wb = s.weight_bits
    check_quantizable(model)
    for b, block in enumerate(model.blocks):
        attn, mlp = block.attn, block.mlp
        attn.qkv = QLinear(attn.qkv, wb, make_act(), copy_weights)
        attn.proj = QLinear(attn.proj, wb, make_act(), copy_weights)
        block.attn = QAttention(attn, s, make_act)
        mlp.fc1 = QLinear(mlp.fc1, wb, None, copy_weights)  # its output is quantized after the GELU
        mlp.act = QOut(mlp.act, make_act())
        mlp.fc2 = QLinear(mlp.fc2, wb, make_act(), copy_weights)
        block.norm1, block.norm2 = QOut(block.norm1, make_act()), QOut(block.norm2, make_act())
        model.blocks[b] = QBlock(block, make_ln_input)
    model.patch_embed.proj = QConv2d(model.patch_embed.proj, wb, make_act(), copy_weights)
    if copy_weights:
        for name in TOKENS:
            if isinstance(getattr(model, name, None), nn.Parameter):
                _quantize_constant(getattr(model, name), s.act_bits)
    # the embedding sum (tokens + positions) feeds the first LayerNorm and the first skip path
    dim = model.blocks[0].norm1.module.normalized_shape[-1]
    if isinstance(model.norm_pre, nn.Identity):
        model.norm_pre = QOut(model.norm_pre, make_ln_input(dim))
    else:  # pre-norm ViTs: the sum feeds norm_pre, whose output feeds the blocks' LayerNorms and skip paths
        model.norm_pre = QNorm(model.norm_pre, make_ln_input(dim), make_ln_input(dim))
    # the final norm's input is the last block's quantized sum; what the head sees is quantized after the
    # pooling (class/distillation token or average), as the reference quantizes norm(x)[:, 0]
    if not isinstance(getattr(model, "fc_norm", nn.Identity()), nn.Identity):  # a norm after average pooling
        model.fc_norm = QNorm(model.fc_norm, make_ln_input(dim), nn.Identity())
    model.head_drop = QOut(model.head_drop, make_act())
    for name in ("head", "head_dist"):
        if isinstance(getattr(model, name, None), nn.Linear):
            setattr(model, name, QLinear(getattr(model, name), wb, make_act(), copy_weights))
    leftover = [n for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]
    if leftover:
        raise ValueError(f"fq_vit does not know where to quantize {', '.join(leftover[:3])}: it quantizes "
                         f"timm's plain ViT (patch embedding, blocks, norm, head)")
    return model


def check_quantizable(model: nn.Module) -> None:
    """Raise ValueError, naming what is in the way, unless every block is timm's plain ViT block: FQ-ViT's
    placement has no quantizer for LayerScale, q/k norms or an attention/MLP norm, nor for pruned or
    replaced attention (put fq_vit right after a plain float model in the chain)."""
    for i, block in enumerate(model.blocks):
        attn = block.attn
        if not hasattr(attn, "head_dim") or type(attn).__name__ != "Attention":
            raise ValueError(f"fq_vit quantizes timm's plain ViT attention; block {i} has {type(attn).__name__} "
                             f"(pruned or replaced attention): put fq_vit right after the trained model")
        for name, mod in (("ls1", getattr(block, "ls1", None)), ("ls2", getattr(block, "ls2", None)),
                          ("attn.q_norm", attn.q_norm), ("attn.k_norm", attn.k_norm), ("attn.norm", attn.norm),
                          ("mlp.norm", getattr(block.mlp, "norm", None))):
            if mod is not None and not isinstance(mod, nn.Identity):
                raise ValueError(f"fq_vit has no quantizer for block {i}'s {name} ({type(mod).__name__}): it "
                                 f"quantizes timm's plain ViT block (no LayerScale, no q/k or inner norms)")


def ln_input_quantizers(model: nn.Module) -> list[ActQuant]:
    """The quantizers of every tensor that feeds a LayerNorm, in order: the embedding sum, each block's
    two residual sums (the last one feeds the final norm), and the pooled features if a norm follows."""
    pre = model.norm_pre
    qs = ([pre.in_quant] if isinstance(pre, QNorm) else []) + [pre.out_quant]
    qs += [q for b in model.blocks for q in (b.res1, b.res2)]
    if isinstance(getattr(model, "fc_norm", None), QNorm):
        qs.append(model.fc_norm.in_quant)
    return qs


def set_mode(model: nn.Module, mode: str) -> None:
    for m in model.modules():
        if isinstance(m, (ActQuant, AttnProbQuant)):
            m.mode = mode


def calibrate(model: nn.Module, images: torch.Tensor, batch_size: int, before_freeze=None) -> nn.Module:
    """Observe the activations on ``images`` (already adapted to the model), then freeze every quantizer.

    Calibration is FQ-ViT's: every observer sees the float network's activations (all quantizers
    pass-through while observing). ``before_freeze(model)``, if given, sees the statistics first."""
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
