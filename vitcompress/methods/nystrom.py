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
from dataclasses import dataclass

import torch
import torch.nn as nn

from vitcompress.artifacts import Artifact
from vitcompress.attention import nystrom_attention
from vitcompress.errors import ConfigError
from vitcompress.methods.base import Method, StepContext, Untrained, build_model, register
from vitcompress.models import ReplacedAttention, vit_blocks
from vitcompress.settings import Settings, setting
from vitcompress.train import summary


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


@dataclass(frozen=True, kw_only=True)
class NystromSettings(Settings):
    landmarks: int | float = setting(help="the number m of Nyström landmarks, or a fraction of the tokens such "
                                          "as 0.75")
    pinv_iterations: int = setting(6, low=1, help="iterations of the Moore-Penrose pseudo-inverse")
    finetune_epochs: int = setting(0, low=0, help="fine-tuning epochs with Nyström attention (its own row)")

    def check(self, where):
        m = self.landmarks
        if isinstance(m, float) and not 0 < m < 1:
            raise ConfigError(f"params.yaml: {where}.landmarks = {m}: give a count (an integer such as 24) or a "
                              f"fraction of the tokens between 0 and 1 (such as 0.75).")
        if isinstance(m, int) and m < 1:
            raise ConfigError(f"params.yaml: {where}.landmarks = {m} must be at least 1.")


@register
class Nystrom(Method):
    name = "nystrom"
    family = "low-rank"
    Settings = NystromSettings

    @classmethod
    def check_model(cls, model, step):
        vit_blocks(model, "Nyström attention")
        n, landmarks = tokens_of(model), cls.settings(step).landmarks
        m = resolve_landmarks(landmarks, n)
        if m >= n:
            raise ValueError(f"landmarks = {landmarks!r} gives m = {m} landmarks for the model's {n} tokens: "
                             f"m must be fewer than the tokens (m = n is exact attention, m > n is undefined); "
                             f"choose landmarks below {n}, or a fraction such as 0.5.")

    @classmethod
    def _spec(cls, s: NystromSettings, model: nn.Module) -> dict:
        return {"method": "nystrom", "landmarks": resolve_landmarks(s.landmarks, tokens_of(model)),
                "pinv_iterations": s.pinv_iterations}

    def run(self, ctx: StepContext) -> Artifact:
        step, model = ctx.step, build_model(ctx.parent)
        s = self.settings(step)
        spec = self._spec(s, model)
        model = use_nystrom(model, spec["landmarks"], spec["pinv_iterations"])
        history = self.finetune(model, ctx, s.finetune_epochs, ctx.parent.arch["kwargs"]["img_size"])
        steps = ctx.parent.meta.get("steps", []) + [{"id": step["id"], "method": self.name,
                                                     "training": summary(history)}]
        return ctx.parent.child(model.cpu(), spec, steps=steps)

    @classmethod
    def restructure(cls, model, spec):
        return use_nystrom(model, spec["landmarks"], spec["pinv_iterations"])

    @classmethod
    def untrained(cls, model, step):
        spec = cls._spec(cls.settings(step), model)
        return Untrained(cls.restructure(model, spec), spec)
