"""ViT pruning with learned soft gates and importance scores (study section 3.3; Zhu et al., VTP).

Two steps, so that every pruning ratio reuses one gate training through the chain mechanism:

``prune_gates``
    Learnable soft gates, initialised at 1, multiply every prunable dimension of every block:
    each attention head's query/key dimensions (one gate per head and dimension, shared by q and k),
    its value dimensions (shared by v and the matching input column of proj), and the MLP's hidden
    units. The trained model is fine-tuned with an L1 sparsity term on the gates
    (``sparsity`` × mean |gate|) for ``epochs``. Importance of a dimension is |gate| (``score: gate``)
    or, selectable, the gradient-times-weight score of Eq. 7 (``score: taylor``), measured on
    training batches and divided by its layer's mean so that layers compare. The gates and scores travel in the artifact; the weights are unchanged.

``prune`` (``ratio`` r)
    Ranks all prunable dimensions of the network globally by importance and removes the fraction r
    with the lowest scores. Pruning is physical: qkv, proj, fc1 and fc2 (and their biases) are
    rebuilt smaller, so the artifact is smaller and inference faster. Heads keep equal widths (the
    number a block keeps per head is the block's surviving count divided by its heads; each head
    keeps its own best dimensions). The slim model is fine-tuned (``epochs``); it reloads from the
    shapes stored in its artifact.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitcompress.artifacts import Artifact
from vitcompress.data import InputAdapter, PreparedData
from vitcompress.errors import ConfigError
from vitcompress.methods.base import Method, StepContext, register
from vitcompress.models import vit_blocks
from vitcompress.train import fit, summary

KINDS = ("qk", "v", "mlp")


# ----------------------------------------------------------------------------- slim modules
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


def _attn_shapes(block) -> tuple[int, int, int]:
    attn = block.attn
    if isinstance(attn, SlimAttention):
        return attn.num_heads, attn.dim_qk, attn.dim_v
    return attn.num_heads, attn.head_dim, attn.head_dim


def _check_plain(attn: nn.Module) -> None:
    for name in ("q_norm", "k_norm", "norm"):
        if not isinstance(getattr(attn, name, nn.Identity()), nn.Identity):
            raise ValueError(f"pruning supports plain ViT attention only (found attn.{name})")
    if getattr(attn, "gate", None) is not None:
        raise ValueError("pruning does not support gated attention")


def shapes_of(model: nn.Module) -> list[dict]:
    return [{"heads": h, "dim_qk": dqk, "dim_v": dv, "hidden": b.mlp.fc1.out_features}
            for b in model.blocks for h, dqk, dv in [_attn_shapes(b)]]


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
        _check_plain(attn)
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


# ----------------------------------------------------------------------------- gates
class Gates(nn.Module):
    """Soft gates of every block, applied with forward hooks on qkv and fc1 outputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.qk, self.v, self.mlp = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for block in model.blocks:
            _check_plain(block.attn)
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


# ----------------------------------------------------------------------------- selection
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


# ----------------------------------------------------------------------------- methods
def _ce(smoothing: float):
    def loss(m, x, y):
        return F.cross_entropy(m(x), y, label_smoothing=smoothing)
    return loss


@register
class PruneGates(Method):
    name = "prune_gates"
    keys = {"sparsity": (int, float), "score": str, "epochs": int, "score_batches": int}

    @classmethod
    def check_model(cls, model, step):
        for block in vit_blocks(model, "pruning"):
            _check_plain(block.attn)

    @classmethod
    def check_step(cls, step, where, profile):
        super().check_step(step, where, profile)
        if step.get("score", "gate") not in ("gate", "taylor"):
            raise ConfigError(f"params.yaml: {where}.score = {step['score']!r}: use 'gate' (|gate|) or 'taylor' (Eq. 7).")
        if step.get("sparsity", 0.0) < 0:
            raise ConfigError(f"params.yaml: {where}.sparsity = {step['sparsity']!r} must be >= 0.")
        if step.get("epochs", 1) < 0 or step.get("score_batches", 8) < 1:
            raise ConfigError(f"params.yaml: {where}: epochs must be >= 0 and score_batches >= 1.")

    def run(self, ctx: StepContext) -> Artifact:
        step = ctx.step
        data = PreparedData(ctx.data_file)
        model = ctx.parent.build()
        if any(isinstance(b.attn, SlimAttention) for b in model.blocks):
            raise ValueError("prune_gates runs on an unpruned ViT; put it before `prune` in the chain")
        adapter = InputAdapter(data.meta, ctx.parent.arch["kwargs"]["img_size"], ctx.device)
        gates = Gates(model)
        model.vc_gates = gates  # a submodule while training: fit() restores the best epoch's gates too
        gates.attach(model)
        sparsity = float(step.get("sparsity", 1.0))
        ce = _ce(step["train"].get("label_smoothing", 0.0))

        def loss_fn(m, x, y):
            return ce(m, x, y) + sparsity * gates.l1()

        cfg = {**step["train"], "epochs": int(step.get("epochs", 2))}
        history = fit(model, data, cfg, adapter, ctx.device, ctx.seed, loss_fn=loss_fn,
                      desc=f"{ctx.dataset}/{step['id']}")
        gates.detach()
        del model.vc_gates
        model.cpu()
        gates.cpu()
        kind = step.get("score", "gate")
        scores = {"qk": [g.detach().abs() for g in gates.qk], "v": [g.detach().abs() for g in gates.v],
                  "mlp": [g.detach().abs() for g in gates.mlp]}
        fold_gates(model, gates)  # the gated network, now with plain weights
        if kind == "taylor":
            cpu_adapter = InputAdapter(data.meta, ctx.parent.arch["kwargs"]["img_size"], "cpu")
            loader = data.loader("train", int(cfg["batch_size"]), max_batches=int(step.get("score_batches", 8)))
            scores = taylor_scores(model.train(), [(cpu_adapter(x), y) for x, y in loader], ce)
            model.eval()
        meta_scores = {k: [s.tolist() for s in v] for k, v in scores.items()}
        steps = ctx.parent.meta.get("steps", []) + [{"id": step["id"], "method": self.name, "score": kind,
                                                     "sparsity": sparsity, "training": summary(history)}]
        return ctx.parent.child(model, None, steps=steps, prune_scores=meta_scores,
                                prune_unit_params=params_per_unit(model))

    @classmethod
    def untrained(cls, model, step):
        return model, None  # gates change no shape; the `prune` step after it does


@register
class Prune(Method):
    name = "prune"
    keys = {"ratio": (int, float), "epochs": int}

    @classmethod
    def check_model(cls, model, step):
        for block in vit_blocks(model, "pruning"):
            _check_plain(block.attn)

    @classmethod
    def check_step(cls, step, where, profile):
        super().check_step(step, where, profile)
        if "ratio" not in step:
            raise ConfigError(f"params.yaml: {where} needs `ratio`: the fraction r of dimensions to remove.")
        if not 0 <= step["ratio"] < 1:
            raise ConfigError(f"params.yaml: {where}.ratio = {step['ratio']!r}: r must be in [0, 1).")
        if step.get("epochs", 0) < 0:
            raise ConfigError(f"params.yaml: {where}.epochs = {step['epochs']!r} must be >= 0.")

    def run(self, ctx: StepContext) -> Artifact:
        step = ctx.step
        scores = ctx.parent.meta.get("prune_scores")
        if scores is None:
            raise ValueError(f"step {step['id']!r}: its parent has no importance scores; "
                             f"chain it after a `prune_gates` step (e.g. [vit, gates, {step['id']}])")
        scores = {k: [torch.tensor(s) for s in v] for k, v in scores.items()}
        model = ctx.parent.build()
        keep = select(scores, float(step["ratio"]))  # raises before anything is written
        model = apply_pruning(model, keep)
        history = self.finetune(model, ctx, int(step.get("epochs", 0)), ctx.parent.arch["kwargs"]["img_size"])
        spec = {"method": "prune", "shapes": shapes_of(model)}
        meta = {k: v for k, v in ctx.parent.meta.items() if k not in ("prune_scores", "prune_unit_params")}
        steps = meta.get("steps", []) + [{"id": step["id"], "method": self.name, "ratio": float(step["ratio"]),
                                          "training": summary(history)}]
        art = Artifact(ctx.parent.arch, model.cpu().state_dict(), list(ctx.parent.transforms) + [spec],
                       {**meta, "steps": steps})
        return art

    @classmethod
    def restructure(cls, model, spec):
        return restructure_slim(model, spec["shapes"])

    @classmethod
    def untrained(cls, model, step):
        """Architecture benchmark: prune by random scores at the step's ratio."""
        model = apply_pruning(model, select(random_scores(model), float(step["ratio"])))
        return model, {"method": "prune", "shapes": shapes_of(model)}
