"""A timm ViT with ToMe in every block: the same modules and weights (the state dict is unchanged), blocks
that take and return each token's size, proportional attention, and pooling weighted by size.

:func:`apply_tome` turns a plain timm ``VisionTransformer`` into one (``r`` tokens merged per block, as far as
there are tokens to merge); :func:`check_tome` says what it cannot take. Proportional attention (the paper's
Eq. 1): softmax(q·kᵀ/√d + log s), s the sizes of the keys' tokens, so a merged token counts as the patches it
stands for. Average pooling (where the model pools by average) weighs each token by its size; a class token's
pooling is unchanged (the class token is never merged).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block, VisionTransformer

from vitcompress.tome.merge import bipartite_soft_matching, merge_wavg, schedule


class ToMeBlock(Block):
    """A timm ``Block`` whose forward takes and returns (tokens, sizes) and merges ``tome_r`` tokens between its
    attention and its MLP. Its attributes are the block's own; ToMe's settings are plain attributes."""

    tome_r: int = 0
    tome_prop_attn: bool = True
    tome_class_token: bool = False
    tome_distill_token: bool = False

    def _attention(self, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attn = self.attn
        B, N, _ = x.shape
        qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        bias = size.log().transpose(1, 2).unsqueeze(1) if self.tome_prop_attn else None  # (B, 1, 1, N), per key
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attn.scale)
        out = attn.proj(attn.norm(out.transpose(1, 2).reshape(B, N, attn.attn_dim)))
        return attn.proj_drop(out), k.mean(dim=1)  # the keys, averaged over heads: ToMe's similarity metric

    def forward(self, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, metric = self._attention(self.norm1(x), size)
        x = x + self.drop_path1(self.ls1(y))
        if self.tome_r > 0:
            merge = bipartite_soft_matching(metric, self.tome_r, self.tome_class_token, self.tome_distill_token)
            x, size = merge_wavg(merge, x, size)
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, size


class ToMeVisionTransformer(VisionTransformer):
    """timm's ``VisionTransformer`` whose forward carries token sizes through :class:`ToMeBlock` s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        size = torch.ones_like(x[..., :1])
        for blk in self.blocks:
            x, size = blk(x, size)
        x = self.norm(x)
        p = self.num_prefix_tokens
        if self.global_pool == "avg":
            x = (x[:, p:] * size[:, p:]).sum(dim=1) / size[:, p:].sum(dim=1)
        else:  # "token": the class token, never merged
            x = x[:, 0]
        return self.head(self.head_drop(self.fc_norm(x)))


def check_tome(model: nn.Module) -> None:
    """What ToMe needs of a model (ValueError naming what is in the way)."""
    if type(model) not in (VisionTransformer, ToMeVisionTransformer):
        raise ValueError(f"tome takes a plain timm VisionTransformer, not {type(model).__name__} (a distilled "
                         f"DeiT's two heads are not supported)")
    if model.global_pool not in ("avg", "token") or model.attn_pool is not None:
        raise ValueError(f"tome pools by average or class token, not global_pool = {model.global_pool!r}")
    if getattr(model, "no_embed_class", False) or getattr(model, "reg_token", None) is not None:
        raise ValueError("tome does not support register tokens or an unembedded class token")
    for i, b in enumerate(model.blocks):
        if type(b) not in (Block, ToMeBlock) or not hasattr(b.attn, "qkv") or getattr(b.attn, "gate", None) is not None:
            raise ValueError(f"tome takes timm's plain ViT blocks; block {i} is {type(b).__name__}")


def apply_tome(model: nn.Module, r: int | list[int], prop_attn: bool = True) -> nn.Module:
    """``model`` (in place) with ToMe merging ``r`` tokens in every block (or ``r[i]`` in block i)."""
    check_tome(model)
    model.__class__ = ToMeVisionTransformer
    rs = r if isinstance(r, list) else [r] * len(model.blocks)
    for b, ri in zip(model.blocks, rs):
        b.__class__ = ToMeBlock
        b.tome_r, b.tome_prop_attn = int(ri), bool(prop_attn)
        b.tome_class_token = bool(model.cls_token is not None)
    return model


def attention_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """(tokens, heads) of each block's attention in a timm ViT, plain or merging (ToMe's schedule); empty for
    another model. A runtime that compiles attention for fixed shapes may need to know (see
    ``docs/upstream/ov_attention_tokens_equal_heads.py``)."""
    if not isinstance(model, VisionTransformer) or getattr(model, "patch_embed", None) is None:
        return []
    p = model.num_prefix_tokens
    tokens = model.patch_embed.num_patches + p
    rs = [getattr(b, "tome_r", 0) for b in model.blocks]
    counts = [tokens]
    for r in rs:
        counts.append(schedule(counts[-1], 1, r, p)[-1])
    return [(n, getattr(b.attn, "num_heads", 0)) for n, b in zip(counts, model.blocks)]
