"""The physical side of ViT pruning: slim blocks, which dimensions survive a ratio, and the slicing.

VTP (Zhu et al., 2021) writes a block as ``Q, K, V = FC_q/k/v(Prune(X))``,
``Y = X + FC_out(Prune(Attention(Q, K, V)))``, ``Z = Y + FC_2(Prune(FC_1(Prune(Y))))``: a dimension is
pruned where it *enters* a linear layer. The kinds (:data:`KINDS`), per block:

* ``attn_in``: the normalised features entering q/k/v (embedding dimensions; qkv's input columns);
* ``attn_out``: the attention output entering the output projection (each head's value dimensions;
  v's rows of qkv and proj's input columns);
* ``mlp_in``: the normalised features entering fc1 (embedding dimensions; fc1's input columns);
* ``mlp_hidden``: the MLP's hidden features entering fc2 (fc1's rows and fc2's input columns).

Query/key dimensions are never pruned, and the residual stream keeps its width: a pruned embedding
dimension is dropped only on its way into qkv or fc1, by a LayerNorm that normalises over all of them
and hands on the survivors (:class:`SelectNorm`). Heads keep equal value widths, so attention stays one
batched kernel: a block keeps its surviving count divided by its heads, each head its best ones.
:func:`select` ranks every dimension globally and keeps ``1 - ratio``; :func:`apply_pruning` slices;
:func:`restructure_slim` rebuilds the same shapes, unweighted, when an artifact is loaded.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

KINDS = ("attn_in", "attn_out", "mlp_in", "mlp_hidden")


class SlimAttention(nn.Module):
    """Multi-head self-attention on ``in_dim`` input features whose heads have ``dim_qk`` query/key and
    ``dim_v`` value dimensions, projected back to ``out_dim``.

    The softmax scale stays the original model's (1/sqrt(original head dim)), so that removing
    dimensions changes the scores only by what those dimensions contributed.
    """

    def __init__(self, in_dim: int, out_dim: int, num_heads: int, dim_qk: int, dim_v: int, scale: float,
                 qkv_bias: bool = True, proj_bias: bool = True):
        super().__init__()
        self.num_heads, self.dim_qk, self.dim_v, self.scale = num_heads, dim_qk, dim_v, float(scale)
        self.qkv = nn.Linear(in_dim, num_heads * (2 * dim_qk + dim_v), bias=qkv_bias)
        self.proj = nn.Linear(num_heads * dim_v, out_dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        B, N, _ = x.shape
        H = self.num_heads
        q, k, v = self.qkv(x).split([H * self.dim_qk, H * self.dim_qk, H * self.dim_v], dim=-1)
        q = q.reshape(B, N, H, self.dim_qk).transpose(1, 2)
        k = k.reshape(B, N, H, self.dim_qk).transpose(1, 2)
        v = v.reshape(B, N, H, self.dim_v).transpose(1, 2)
        # PyTorch's fused attention kernels want one head width for q, k and v; with a narrower v it falls back to
        # its math path (more than twice as slow on ViT-B/16's 197 tokens). Zero columns change no product: pad
        # the narrower side to the wider, then drop the padded outputs (the scale is explicit).
        width = max(self.dim_qk, self.dim_v)
        if self.dim_qk < width:
            q, k = F.pad(q, (0, width - self.dim_qk)), F.pad(k, (0, width - self.dim_qk))
        x = F.scaled_dot_product_attention(q, k, F.pad(v, (0, width - self.dim_v)) if self.dim_v < width else v,
                                           attn_mask=attn_mask, is_causal=is_causal, scale=self.scale)
        return self.proj(x[..., :self.dim_v].transpose(1, 2).reshape(B, N, H * self.dim_v))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, dim_qk={self.dim_qk}, dim_v={self.dim_v}"


class SelectNorm(nn.Module):
    """LayerNorm over all ``dim`` features that outputs only the kept ones (``index``), with their affine
    weights: what a pruned embedding dimension leaves of a block's ``norm1``/``norm2``."""

    def __init__(self, dim: int, index: torch.Tensor, eps: float = 1e-6):
        super().__init__()
        self.dim, self.eps = int(dim), float(eps)
        self.register_buffer("index", index.clone().long())
        self.weight = nn.Parameter(torch.ones(len(index)))
        self.bias = nn.Parameter(torch.zeros(len(index)))

    @classmethod
    def of(cls, norm: nn.LayerNorm, index: torch.Tensor) -> "SelectNorm":
        sel = cls(norm.normalized_shape[-1], index, norm.eps)
        with torch.no_grad():
            if norm.weight is not None:
                sel.weight.copy_(norm.weight[index])
            if norm.bias is not None:
                sel.bias.copy_(norm.bias[index])
        return sel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, (self.dim,), None, None, self.eps)
        return x.index_select(-1, self.index) * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.dim} -> {len(self.index)}, eps={self.eps}"


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


def check_prunable(model: nn.Module, step: dict | None = None) -> None:
    """What both pruning steps ask of a chain's model before any job: every block a plain timm ViT block
    (the ValueError names what is in the way)."""
    from vitcompress.models import vit_blocks

    for i, block in enumerate(vit_blocks(model, "pruning")):
        check_plain(block.attn)
        if not isinstance(getattr(block.mlp, "norm", nn.Identity()), nn.Identity):
            raise ValueError(f"pruning does not support an MLP with a hidden-layer norm (block {i}'s mlp.norm)")


def shapes_of(model: nn.Module) -> list[dict]:
    return [{"heads": h, "dim_qk": dqk, "dim_v": dv, "hidden": b.mlp.fc1.out_features,
             "attn_in": b.attn.qkv.in_features, "mlp_in": b.mlp.fc1.in_features}
            for b in model.blocks for h, dqk, dv in [attn_shapes(b)]]


def unit_shapes(model: nn.Module) -> list[dict[str, tuple]]:
    """The shape of each kind's gates/scores, per block (``attn_out``: heads × value dimensions)."""
    out = []
    for b in model.blocks:
        h, _, dv = attn_shapes(b)
        out.append({"attn_in": (b.attn.qkv.in_features,), "attn_out": (h, dv), "mlp_in": (b.mlp.fc1.in_features,),
                    "mlp_hidden": (b.mlp.fc1.out_features,)})
    return out


def random_scores(model: nn.Module, seed: int = 0) -> dict[str, list[torch.Tensor]]:
    """Uniform random importance for every prunable dimension (architecture benchmarks, tests)."""
    g = torch.Generator().manual_seed(seed)
    return {k: [torch.rand(s[k], generator=g) for s in unit_shapes(model)] for k in KINDS}


def restructure_slim(model: nn.Module, shapes: list[dict]) -> nn.Module:
    """Rebuild every block's norms, attention and MLP at the stored (smaller) shapes, weights unset."""
    if len(shapes) != len(model.blocks):
        raise ValueError(f"artifact has {len(shapes)} block shapes, the model {len(model.blocks)} blocks")
    for block, s in zip(model.blocks, shapes):
        attn = block.attn
        check_plain(attn)
        dim = attn.qkv.in_features
        attn_in, mlp_in = s.get("attn_in", dim), s.get("mlp_in", dim)
        if attn_in != dim:
            block.norm1 = SelectNorm(dim, torch.zeros(attn_in, dtype=torch.long), block.norm1.eps)
        if mlp_in != dim:
            block.norm2 = SelectNorm(dim, torch.zeros(mlp_in, dtype=torch.long), block.norm2.eps)
        scale = getattr(attn, "scale", None) or attn.head_dim ** -0.5
        block.attn = SlimAttention(attn_in, attn.proj.out_features, s["heads"], s["dim_qk"], s["dim_v"], scale,
                                   qkv_bias=attn.qkv.bias is not None, proj_bias=attn.proj.bias is not None)
        fc1, fc2 = block.mlp.fc1, block.mlp.fc2
        block.mlp.fc1 = nn.Linear(mlp_in, s["hidden"], bias=fc1.bias is not None)
        block.mlp.fc2 = nn.Linear(s["hidden"], fc2.out_features, bias=fc2.bias is not None)
        if not isinstance(getattr(block.mlp, "norm", nn.Identity()), nn.Identity):
            raise ValueError("pruning does not support an MLP with a hidden-layer norm")
    return model


def select(scores: dict[str, list[torch.Tensor]], ratio: float, seed: int = 0) -> dict[str, list[torch.Tensor]]:
    """Indices each block keeps after removing the fraction ``ratio`` of all dimensions, ranked globally
    (``attn_out``: a (heads, kept) tensor, the same count per head). Equal scores are ranked in a seeded
    random order: by position, a tie would always fall on the first kind and block (the qkv inputs of
    block 0 first), which costs more parameters per dimension than the others.

    Raises ValueError (naming ``ratio``) if a block would lose every dimension of a kind.
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"ratio = {ratio}: the pruned fraction must be in [0, 1)")
    flat = torch.cat([s.reshape(-1).float() for k in KINDS for s in scores[k]])
    n_prune = int(math.floor(ratio * flat.numel()))
    keep: dict[str, list[torch.Tensor]] = {k: [] for k in KINDS}
    # Rank, not threshold: ties still remove exactly n_prune dimensions, drawn at random among the tied.
    shuffle = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))
    order = shuffle[torch.argsort(flat[shuffle], stable=True)]
    alive = torch.ones_like(flat, dtype=torch.bool)
    alive[order[:n_prune]] = False
    offset = 0
    for kind in KINDS:
        for i, s in enumerate(scores[kind]):
            n = s.numel()
            mask = alive[offset:offset + n].reshape(s.shape)
            offset += n
            if kind != "attn_out":
                idx = torch.nonzero(mask).flatten()
                if idx.numel() == 0:
                    raise ValueError(f"ratio = {ratio} would remove every {kind} dimension of block {i}; lower it")
                keep[kind].append(idx)
            else:  # equal width per head: the block's survivors shared out, each head its best ones
                heads = s.shape[0]
                per_head = int(round(mask.sum().item() / heads))
                if per_head == 0:
                    raise ValueError(f"ratio = {ratio} would remove every value dimension of block {i}'s "
                                     f"attention heads; lower it")
                keep[kind].append(torch.sort(s.topk(per_head, dim=1).indices, dim=1).values)
    return keep


def _sliced(lin: nn.Linear, rows=None, cols=None) -> nn.Linear:
    w = lin.weight if rows is None else lin.weight[rows]
    w = w if cols is None else w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            new.bias.copy_(lin.bias if rows is None else lin.bias[rows])
    return new


def apply_pruning(model: nn.Module, keep: dict[str, list[torch.Tensor]]) -> nn.Module:
    """Physically remove every dimension ``keep`` does not list (in place): qkv's and fc1's input columns
    (and the norms' outputs feeding them), v's rows and proj's columns, fc1's rows and fc2's columns."""
    for i, block in enumerate(model.blocks):
        attn = block.attn
        check_plain(attn)
        h, d = attn.num_heads, attn.head_dim
        dim = attn.qkv.in_features
        in_idx, v_idx, mlp_in, hidden = keep["attn_in"][i], keep["attn_out"][i], keep["mlp_in"][i], keep["mlp_hidden"][i]
        v_cols = (torch.arange(h).unsqueeze(1) * d + v_idx).reshape(-1)
        rows = torch.cat([torch.arange(2 * h * d), 2 * h * d + v_cols])
        slim = SlimAttention(len(in_idx), attn.proj.out_features, h, d, v_idx.shape[1], attn.scale,
                             qkv_bias=attn.qkv.bias is not None, proj_bias=attn.proj.bias is not None)
        slim.qkv, slim.proj = _sliced(attn.qkv, rows, in_idx), _sliced(attn.proj, None, v_cols)
        block.attn = slim
        if len(in_idx) != dim:
            block.norm1 = SelectNorm.of(block.norm1, in_idx)
        if len(mlp_in) != dim:
            block.norm2 = SelectNorm.of(block.norm2, mlp_in)
        block.mlp.fc1 = _sliced(block.mlp.fc1, hidden, mlp_in)
        block.mlp.fc2 = _sliced(block.mlp.fc2, None, hidden)
    return model
