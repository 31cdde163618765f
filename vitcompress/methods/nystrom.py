"""``nystrom``: Nyströmformer attention in every block of a trained ViT (study section 3.4).

softmax(QKᵀ/√d)·V is approximated through m landmarks: the segment means of the queries (Q̃) and
keys (K̃),

    F = softmax(Q K̃ᵀ/√d)   (n×m)     A = softmax(Q̃ K̃ᵀ/√d)   (m×m)     B = softmax(Q̃ Kᵀ/√d)   (m×n)
    attention ≈ F · A⁺ · (B · V)

with A⁺ from the iterative Moore–Penrose method used by Nyströmformer (Razavi et al., 2014). Time
and memory grow linearly in the sequence length n instead of quadratically. The block's qkv and
proj weights are reused unchanged (the study evaluates without retraining); an optional short
fine-tune is its own step setting, so it shows up as its own, separately labelled row.

``landmarks`` is a count m, or a fraction of the model's tokens (0.75: m = round(0.75·n)), so one
row means the same on data sets whose images give different token counts; the artifact records the m
it resolved to, and a row label can show it (``model: "ViT-Nystromformer(m={landmarks})"``).

Sequence lengths that m does not divide (ViT-B/16 at 224 has 197 tokens) use uneven segments
(boundaries ⌊i·n/m⌋), computed from a cumulative sum: no padding, nothing to mask. With m = n every
segment is one token and the result is exact attention up to the pseudo-inverse's convergence.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitcompress.artifacts import Artifact
from vitcompress.errors import ConfigError
from vitcompress.methods.base import Method, StepContext, register
from vitcompress.models import ReplacedAttention, vit_blocks
from vitcompress.train import summary


def segment_means(x: torch.Tensor, m: int) -> torch.Tensor:
    """Means of ``m`` contiguous, near-equal segments along dim -2: (..., n, d) -> (..., m, d)."""
    n = x.shape[-2]
    if not 1 <= m <= n:
        raise ValueError(f"landmarks = {m} must be between 1 and the sequence length {n}")
    bounds = torch.div(torch.arange(m + 1, device=x.device) * n, m, rounding_mode="floor")
    csum = F.pad(x.cumsum(dim=-2), (0, 0, 1, 0))  # csum[..., j, :] = sum of the first j rows
    sums = csum[..., bounds[1:], :] - csum[..., bounds[:-1], :]
    return sums / (bounds[1:] - bounds[:-1]).to(x.dtype).unsqueeze(-1)


def iterative_pinv(a: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Moore–Penrose pseudo-inverse of each matrix in ``a`` (..., m, m) by the iterative method."""
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    # Z0 = Aᵀ / (‖A‖₁‖A‖∞) guarantees convergence.
    norm = a.abs().sum(dim=-2).amax(dim=-1) * a.abs().sum(dim=-1).amax(dim=-1)
    z = a.transpose(-1, -2) / norm[..., None, None]
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def nystrom_attention(q, k, v, landmarks: int, iterations: int = 6, scale: float | None = None):
    """Nyström approximation of softmax(q kᵀ · scale) v for q, k, v of shape (..., n, d)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    q = q * scale
    q_l, k_l = segment_means(q, landmarks), segment_means(k, landmarks)
    kernel_1 = torch.softmax(q @ k_l.transpose(-1, -2), dim=-1)
    kernel_2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)
    kernel_3 = torch.softmax(q_l @ k.transpose(-1, -2), dim=-1)
    return kernel_1 @ (iterative_pinv(kernel_2, iterations) @ (kernel_3 @ v))


def exact_attention(q, k, v, scale: float | None = None):
    """softmax(q kᵀ · scale) v written out (the n×n matrix is materialised)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch.softmax((q * scale) @ k.transpose(-1, -2), dim=-1) @ v


class NystromAttention(ReplacedAttention):
    """timm's ViT attention with the Nyström approximation; same submodules, same state-dict keys."""

    label = "Nyström attention"

    def __init__(self, attn: nn.Module, landmarks: int, iterations: int = 6):
        super().__init__(attn)
        self.landmarks, self.iterations = int(landmarks), int(iterations)

    def forward(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        self.check_mask(attn_mask, is_causal)
        B, N, _ = x.shape
        q, k, v = self.split_heads(self.qkv(x), B, N)
        return self.merge_heads(nystrom_attention(q, k, v, min(self.landmarks, N), self.iterations, self.scale), B, N)

    def extra_repr(self) -> str:
        return f"landmarks={self.landmarks}, iterations={self.iterations}"


def tokens_of(model: nn.Module) -> int:
    """Sequence length the blocks see (patches + class/distillation/register tokens)."""
    return int(model.patch_embed.num_patches) + int(getattr(model, "num_prefix_tokens", 0))


def resolve_landmarks(landmarks: int | float, tokens: int) -> int:
    """The landmark count m: an int is m itself; a float in (0, 1) is that fraction of ``tokens``
    (rounded half up, at least 1)."""
    if isinstance(landmarks, float):
        if not 0 < landmarks < 1:
            raise ValueError(f"landmarks = {landmarks}: a fraction of the tokens must be between 0 and 1")
        return max(1, math.floor(landmarks * tokens + 0.5))
    return int(landmarks)


def use_nystrom(model: nn.Module, landmarks: int, iterations: int = 6) -> nn.Module:
    """Replace the attention of every block, in place; returns the model."""
    n = tokens_of(model)
    if landmarks > n:
        raise ValueError(f"landmarks = {landmarks} exceeds the model's {n} tokens; choose landmarks < {n}")
    for block in model.blocks:
        block.attn = NystromAttention(block.attn, landmarks, iterations)
    return model


@register
class Nystrom(Method):
    name = "nystrom"
    keys = {"landmarks": (int, float), "pinv_iterations": int, "finetune_epochs": int}

    @classmethod
    def check_step(cls, step, where, profile):
        super().check_step(step, where, profile)
        if "landmarks" not in step:
            raise ConfigError(f"params.yaml: {where} needs `landmarks` (the number m of Nyström landmarks, or "
                              f"a fraction of the tokens such as 0.75).")
        m = step["landmarks"]
        if isinstance(m, float) and not 0 < m < 1:
            raise ConfigError(f"params.yaml: {where}.landmarks = {m}: give a count (an integer such as 24) or a "
                              f"fraction of the tokens between 0 and 1 (such as 0.75).")
        lowest = {"pinv_iterations": 1, "finetune_epochs": 0, **({"landmarks": 1} if isinstance(m, int) else {})}
        for key, low in lowest.items():
            if key in step and step[key] < low:
                raise ConfigError(f"params.yaml: {where}.{key} = {step[key]} must be at least {low}.")

    @classmethod
    def check_model(cls, model, step):
        vit_blocks(model, "Nyström attention")
        n = tokens_of(model)
        m = resolve_landmarks(step["landmarks"], n)
        if m >= n:
            raise ValueError(f"landmarks = {step['landmarks']!r} gives m = {m} landmarks for the model's {n} tokens: "
                             f"m must be fewer than the tokens (m = n is exact attention, m > n is undefined); "
                             f"choose landmarks below {n}, or a fraction such as 0.5.")

    @staticmethod
    def _spec(step: dict, model: nn.Module) -> dict:
        return {"method": "nystrom", "landmarks": resolve_landmarks(step["landmarks"], tokens_of(model)),
                "pinv_iterations": int(step.get("pinv_iterations", 6))}

    def run(self, ctx: StepContext) -> Artifact:
        self.check_parent(ctx)
        step, model = ctx.step, ctx.parent.build()
        spec = self._spec(step, model)
        model = use_nystrom(model, spec["landmarks"], spec["pinv_iterations"])
        history = self.finetune(model, ctx, int(step.get("finetune_epochs", 0)), ctx.parent.arch["kwargs"]["img_size"])
        steps = ctx.parent.meta.get("steps", []) + [{"id": step["id"], "method": self.name,
                                                     "training": summary(history)}]
        return ctx.parent.child(model.cpu(), spec, steps=steps)

    @classmethod
    def restructure(cls, model, spec):
        return use_nystrom(model, spec["landmarks"], spec["pinv_iterations"])

    @classmethod
    def untrained(cls, model, step):
        spec = cls._spec(step, model)
        return cls.restructure(model, spec), spec
