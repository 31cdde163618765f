"""The learned side of ViT pruning: soft gates on every prunable dimension, and importance scores.

:class:`Gates` multiplies qkv and fc1 outputs through forward hooks (nothing in the model changes);
:func:`fold_gates` multiplies the trained gates into the weights; :func:`taylor_scores` is the study's
Eq. 7 importance; :func:`importance_histogram` draws the study's Figure 3 from a ``prune_gates`` artifact.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vitcompress.artifacts import Artifact
from vitcompress.pruning.slim import KINDS, check_plain


class Gates(nn.Module):
    """Soft gates of every block, applied with forward hooks on qkv and fc1 outputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.qk, self.v, self.mlp = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for block in model.blocks:
            check_plain(block.attn)
            h, d = block.attn.num_heads, block.attn.head_dim
            self.qk.append(nn.Parameter(torch.ones(h, d)))
            self.v.append(nn.Parameter(torch.ones(h, d)))
            self.mlp.append(nn.Parameter(torch.ones(block.mlp.fc1.out_features)))
        self._handles = []

    def attach(self, model: nn.Module) -> "Gates":
        for i, block in enumerate(model.blocks):
            self._handles.append(block.attn.qkv.register_forward_hook(self._qkv_hook(i)))
            self._handles.append(block.mlp.fc1.register_forward_hook(self._mlp_hook(i)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _qkv_hook(self, i):
        def hook(module, inputs, out):
            qk, v = self.qk[i].reshape(-1), self.v[i].reshape(-1)
            return out * torch.cat([qk, qk, v]).to(out.dtype)
        return hook

    def _mlp_hook(self, i):
        def hook(module, inputs, out):
            return out * self.mlp[i].to(out.dtype)
        return hook

    def l1(self) -> torch.Tensor:
        params = list(self.parameters())
        return sum(p.abs().sum() for p in params) / sum(p.numel() for p in params)


def taylor_scores(model: nn.Module, batches, loss_fn) -> dict[str, list[torch.Tensor]]:
    """Eq. 7: |sum over a dimension's weights of (dL/dw)·w|, accumulated over ``batches``."""
    params = {}
    for i, b in enumerate(model.blocks):
        params[i] = (b.attn.qkv.weight, b.attn.proj.weight, b.mlp.fc1.weight, b.mlp.fc2.weight)
    grads = {i: [torch.zeros_like(p) for p in ps] for i, ps in params.items()}
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        loss_fn(model, x, y).backward()
        for i, ps in params.items():
            for g, p in zip(grads[i], ps):
                g += p.grad * p.detach()
        model.zero_grad(set_to_none=True)
    out = {k: [] for k in KINDS}
    for i, b in enumerate(model.blocks):
        h, d = b.attn.num_heads, b.attn.head_dim
        g_qkv, g_proj, g_fc1, g_fc2 = grads[i]
        rows = g_qkv.sum(dim=1).reshape(3, h, d)
        out["qk"].append((rows[0] + rows[1]).abs())
        out["v"].append((rows[2] + g_proj.sum(dim=0).reshape(h, d)).abs())
        out["mlp"].append((g_fc1.sum(dim=1) + g_fc2.sum(dim=0)).abs())
    # Raw magnitudes differ by layer and kind; divide each layer's scores by their mean so the global
    # ranking compares relative importance (layer-wise normalisation, as in Molchanov et al.).
    return {k: [s / s.mean().clamp_min(1e-12) for s in v] for k, v in out.items()}


def params_per_unit(model: nn.Module) -> dict[str, list[int]]:
    """How many weights one dimension of each kind carries, per block (for the histogram)."""
    out = {k: [] for k in KINDS}
    for b in model.blocks:
        dim = b.attn.qkv.in_features
        bias = int(b.attn.qkv.bias is not None)
        out["qk"].append(2 * (dim + bias))
        out["v"].append(dim + bias + b.attn.proj.out_features)
        out["mlp"].append(dim + int(b.mlp.fc1.bias is not None) + b.mlp.fc2.out_features)
    return out


def fold_gates(model: nn.Module, gates: Gates) -> nn.Module:
    """Multiply the learned gates into the weights they scale (q/k rows, v rows, fc1 rows)."""
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            qk, v = gates.qk[i].reshape(-1), gates.v[i].reshape(-1)
            scale = torch.cat([qk, qk, v])
            block.attn.qkv.weight.mul_(scale[:, None])
            if block.attn.qkv.bias is not None:
                block.attn.qkv.bias.mul_(scale)
            block.mlp.fc1.weight.mul_(gates.mlp[i][:, None])
            if block.mlp.fc1.bias is not None:
                block.mlp.fc1.bias.mul_(gates.mlp[i])
    return model


def importance_histogram(scores: dict, counts: dict, out, title: str) -> None:
    """The study's Figure 3: how many parameters sit at each importance score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitcompress.artifacts import atomic_path

    fig, ax = plt.subplots(figsize=(6.5, 4))
    labels = {"qk": "attention q/k dims", "v": "attention v dims", "mlp": "MLP hidden units"}
    values = [torch.cat([s.reshape(-1) for s in scores[k]]).numpy() for k in KINDS]
    weights = [torch.cat([torch.full((s.numel(),), float(c)) for s, c in zip(scores[k], counts[k])]).numpy()
               for k in KINDS]
    import numpy as np

    lo, hi = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
    if hi - lo < 1e-6:  # scores that barely moved from their start still get a readable plot
        pad = max(1e-3, abs(lo) * 1e-3)
        lo, hi = lo - pad, hi + pad
    ax.hist(values, bins=np.linspace(lo, hi, 41), weights=weights, stacked=True, label=[labels[k] for k in KINDS])
    ax.set_xlabel("importance score")
    ax.set_ylabel("parameters")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def histogram_from_artifact(artifact: str, out: str, title: str) -> None:
    art = Artifact.load(artifact)
    if "prune_scores" not in art.meta:
        raise ValueError(f"{artifact} has no importance scores (not a prune_gates artifact)")
    scores = {k: [torch.tensor(s) for s in v] for k, v in art.meta["prune_scores"].items()}
    importance_histogram(scores, art.meta["prune_unit_params"], out, title)
