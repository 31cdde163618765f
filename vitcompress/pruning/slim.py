"""The physical side of ViT pruning: slim blocks, which dimensions survive a ratio, and the slicing.

:class:`SlimAttention` is attention whose heads keep fewer query/key and value dimensions; :func:`select`
ranks every prunable dimension globally and keeps ``1 - ratio`` of them; :func:`apply_pruning` slices
qkv, proj, fc1 and fc2 to the survivors; :func:`restructure_slim` rebuilds the same shapes, unweighted,
when an artifact is loaded. The kinds of prunable dimension (:data:`KINDS`): a head's query/key
dimensions (shared by q and k), its value dimensions, and the MLP's hidden units.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

KINDS = ("qk", "v", "mlp")


class SlimAttention(nn.Module):
    """Multi-head self-attention whose heads have ``dim_qk`` query/key and ``dim_v`` value dimensions.

    The softmax scale stays the original model's (1/sqrt(original head dim)), so that removing
    dimensions changes the scores only by what those dimensions contributed.
    """

    def __init__(self, dim: int, num_heads: int, dim_qk: int, dim_v: int, scale: float, qkv_bias: bool = True,
                 proj_bias: bool = True):
        super().__init__()
        self.num_heads, self.dim_qk, self.dim_v, self.scale = num_heads, dim_qk, dim_v, float(scale)
        self.qkv = nn.Linear(dim, num_heads * (2 * dim_qk + dim_v), bias=qkv_bias)
        self.proj = nn.Linear(num_heads * dim_v, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        B, N, _ = x.shape
        H = self.num_heads
        q, k, v = self.qkv(x).split([H * self.dim_qk, H * self.dim_qk, H * self.dim_v], dim=-1)
        q = q.reshape(B, N, H, self.dim_qk).transpose(1, 2)
        k = k.reshape(B, N, H, self.dim_qk).transpose(1, 2)
        v = v.reshape(B, N, H, self.dim_v).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=self.scale)
        return self.proj(x.transpose(1, 2).reshape(B, N, H * self.dim_v))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, dim_qk={self.dim_qk}, dim_v={self.dim_v}"


def attn_shapes(block) -> tuple[int, int, int]:
    attn = block.attn
    if isinstance(attn, SlimAttention):
        return attn.num_heads, attn.dim_qk, attn.dim_v
    return attn.num_heads, attn.head_dim, attn.head_dim


def check_plain(attn: nn.Module) -> None:
    for name in ("q_norm", "k_norm", "norm"):
        if not isinstance(getattr(attn, name, nn.Identity()), nn.Identity):
            raise ValueError(f"pruning supports plain ViT attention only (found attn.{name})")
    if getattr(attn, "gate", None) is not None:
        raise ValueError("pruning does not support gated attention")


def shapes_of(model: nn.Module) -> list[dict]:
    return [{"heads": h, "dim_qk": dqk, "dim_v": dv, "hidden": b.mlp.fc1.out_features}
            for b in model.blocks for h, dqk, dv in [attn_shapes(b)]]


def random_scores(model: nn.Module, seed: int = 0) -> dict[str, list[torch.Tensor]]:
    """Uniform random importance for every prunable dimension (architecture benchmarks, tests)."""
    g = torch.Generator().manual_seed(seed)
    out = {k: [] for k in KINDS}
    for b in model.blocks:
        h, d = b.attn.num_heads, b.attn.head_dim
        out["qk"].append(torch.rand(h, d, generator=g))
        out["v"].append(torch.rand(h, d, generator=g))
        out["mlp"].append(torch.rand(b.mlp.fc1.out_features, generator=g))
    return out


def restructure_slim(model: nn.Module, shapes: list[dict]) -> nn.Module:
    """Rebuild every block's attention and MLP at the stored (smaller) shapes, weights unset."""
    if len(shapes) != len(model.blocks):
        raise ValueError(f"artifact has {len(shapes)} block shapes, the model {len(model.blocks)} blocks")
    for block, s in zip(model.blocks, shapes):
        attn = block.attn
        check_plain(attn)
        dim = attn.qkv.in_features
        scale = getattr(attn, "scale", None) or attn.head_dim ** -0.5
        block.attn = SlimAttention(dim, s["heads"], s["dim_qk"], s["dim_v"], scale,
                                   qkv_bias=attn.qkv.bias is not None, proj_bias=attn.proj.bias is not None)
        fc1, fc2 = block.mlp.fc1, block.mlp.fc2
        block.mlp.fc1 = nn.Linear(fc1.in_features, s["hidden"], bias=fc1.bias is not None)
        block.mlp.fc2 = nn.Linear(s["hidden"], fc2.out_features, bias=fc2.bias is not None)
        if not isinstance(getattr(block.mlp, "norm", nn.Identity()), nn.Identity):
            raise ValueError("pruning does not support an MLP with a hidden-layer norm")
    return model


def select(scores: dict[str, list[torch.Tensor]], ratio: float) -> dict[str, list[torch.Tensor]]:
    """Indices each block keeps after removing the fraction ``ratio`` of all dimensions, ranked globally.

    Raises ValueError (naming ``ratio``) if a block would lose every dimension of a kind.
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"ratio = {ratio}: the pruned fraction must be in [0, 1)")
    flat = torch.cat([s.reshape(-1).float() for k in KINDS for s in scores[k]])
    n_prune = int(math.floor(ratio * flat.numel()))
    keep: dict[str, list[torch.Tensor]] = {k: [] for k in KINDS}
    # Rank, not threshold: ties still remove exactly n_prune dimensions.
    order = torch.argsort(flat, stable=True)
    alive = torch.ones_like(flat, dtype=torch.bool)
    alive[order[:n_prune]] = False
    offset = 0
    for kind in KINDS:
        for i, s in enumerate(scores[kind]):
            n = s.numel()
            mask = alive[offset:offset + n].reshape(s.shape)
            offset += n
            if kind == "mlp":
                idx = torch.nonzero(mask).flatten()
                if idx.numel() == 0:
                    raise ValueError(f"ratio = {ratio} would remove every MLP hidden unit of block {i}; lower it")
                keep[kind].append(idx)
            else:  # equal width per head: the block's survivors shared out, each head its best ones
                heads = s.shape[0]
                per_head = int(round(mask.sum().item() / heads))
                if per_head == 0:
                    raise ValueError(f"ratio = {ratio} would remove every {kind} dimension of block {i}'s "
                                     f"attention heads; lower it")
                keep[kind].append(torch.sort(s.topk(per_head, dim=1).indices, dim=1).values)
    return keep


def apply_pruning(model: nn.Module, keep: dict[str, list[torch.Tensor]]) -> nn.Module:
    """Physically slice every block's qkv/proj/fc1/fc2 to the kept dimensions (in place)."""
    for i, block in enumerate(model.blocks):
        attn = block.attn
        h, d = attn.num_heads, attn.head_dim
        qk_idx, v_idx, mlp_idx = keep["qk"][i], keep["v"][i], keep["mlp"][i]
        base = torch.arange(h).unsqueeze(1) * d
        qk_rows = (base + qk_idx).reshape(-1)
        v_rows = (base + v_idx).reshape(-1)
        rows = torch.cat([qk_rows, h * d + qk_rows, 2 * h * d + v_rows])
        slim = SlimAttention(attn.qkv.in_features, h, qk_idx.shape[1], v_idx.shape[1], attn.scale,
                             qkv_bias=attn.qkv.bias is not None, proj_bias=attn.proj.bias is not None)
        with torch.no_grad():
            slim.qkv.weight.copy_(attn.qkv.weight[rows])
            if attn.qkv.bias is not None:
                slim.qkv.bias.copy_(attn.qkv.bias[rows])
            slim.proj.weight.copy_(attn.proj.weight[:, v_rows])
            if attn.proj.bias is not None:
                slim.proj.bias.copy_(attn.proj.bias)
        block.attn = slim
        fc1, fc2 = block.mlp.fc1, block.mlp.fc2
        new1 = nn.Linear(fc1.in_features, mlp_idx.numel(), bias=fc1.bias is not None)
        new2 = nn.Linear(mlp_idx.numel(), fc2.out_features, bias=fc2.bias is not None)
        with torch.no_grad():
            new1.weight.copy_(fc1.weight[mlp_idx])
            if fc1.bias is not None:
                new1.bias.copy_(fc1.bias[mlp_idx])
            new2.weight.copy_(fc2.weight[:, mlp_idx])
            if fc2.bias is not None:
                new2.bias.copy_(fc2.bias)
        block.mlp.fc1, block.mlp.fc2 = new1, new2
    return model
