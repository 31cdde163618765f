"""The learned side of ViT pruning: VTP's soft gates, importance scores, and folding.

:class:`Gates` holds one soft gate per prunable dimension (:data:`~vitcompress.pruning.slim.KINDS`),
where VTP puts them: on the input of qkv, of the output projection, of fc1 and of fc2, applied by
forward pre-hooks that scale a linear layer's input (nothing in the model changes). Because every gate
scales a linear layer's input, :func:`fold_gates` multiplies it into that layer's input columns and
the network computes exactly what the gated one did. :func:`taylor_scores` is the first-order Taylor
importance of each dimension (Molchanov et al.; the study's Eq. 7), |g · dL/dg| accumulated per batch;
:func:`importance_histogram` draws the study's Figure 3 from a ``prune_gates`` artifact.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vitcompress.artifacts import Artifact
from vitcompress.pruning.slim import KINDS, check_plain, unit_shapes


def _gated_layers(block) -> dict[str, nn.Linear]:
    """The linear layer whose input each kind of gate scales."""
    return {"attn_in": block.attn.qkv, "attn_out": block.attn.proj, "mlp_in": block.mlp.fc1,
            "mlp_hidden": block.mlp.fc2}


class Gates(nn.Module):
    """VTP's soft gates of every block (initialised at 1), applied to the inputs of qkv, proj, fc1, fc2."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.gates = nn.ModuleDict({k: nn.ParameterList() for k in KINDS})
        for block, shapes in zip(model.blocks, unit_shapes(model)):
            check_plain(block.attn)
            for kind in KINDS:
                self.gates[kind].append(nn.Parameter(torch.ones(shapes[kind])))
        self._handles = []

    def __getitem__(self, kind: str) -> nn.ParameterList:
        return self.gates[kind]

    def attach(self, model: nn.Module) -> "Gates":
        for i, block in enumerate(model.blocks):
            for kind, layer in _gated_layers(block).items():
                self._handles.append(layer.register_forward_pre_hook(self._hook(kind, i)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, kind: str, i: int):
        def hook(module, inputs):
            x = inputs[0]
            return (x * self.gates[kind][i].reshape(-1).to(x.dtype),) + tuple(inputs[1:])
        return hook

    def l1(self, reduction: str = "sum") -> torch.Tensor:
        """VTP's sparsity term Σ|g| over every gate of the network (``"sum"``, the paper's); ``"mean"`` divides it
        by the number of gates, which weakens each gate's pull by that number (the study's reading)."""
        params = list(self.parameters())
        total = sum(p.abs().sum() for p in params)
        if reduction == "sum":
            return total
        if reduction == "mean":
            return total / sum(p.numel() for p in params)
        raise ValueError(f"l1 reduction = {reduction!r}: use 'sum' or 'mean'")

    def magnitudes(self) -> dict[str, list[torch.Tensor]]:
        """|gate| of every dimension: VTP's importance score."""
        return {k: [g.detach().abs().cpu() for g in self.gates[k]] for k in KINDS}


def taylor_scores(model: nn.Module, batches, loss_fn) -> dict[str, list[torch.Tensor]]:
    """First-order Taylor importance of every prunable dimension: per batch, |g · dL/dg| with unit gates
    attached (the loss change a zeroed dimension would cause; g · dL/dg = sum over the dimension's input
    column of w · dL/dw), summed over ``batches`` as magnitudes, so batches whose signs differ add up
    instead of cancelling (Molchanov et al.). Each layer's scores are divided by their mean, so the
    global ranking compares relative importance across layers and kinds."""
    gates = Gates(model).attach(model)
    totals = {k: [torch.zeros_like(g) for g in gates[k]] for k in KINDS}
    try:
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            gates.zero_grad(set_to_none=True)
            loss_fn(model, x, y).backward()
            for k in KINDS:
                for t, g in zip(totals[k], gates[k]):
                    t += (g.grad * g.detach()).abs()
    finally:
        gates.detach()
        model.zero_grad(set_to_none=True)
    return {k: [(t / t.mean().clamp_min(1e-12)).detach() for t in v] for k, v in totals.items()}


def params_per_unit(model: nn.Module) -> dict[str, list[int]]:
    """How many weights one dimension of each kind carries, per block (for the histogram): the input
    column it removes from its linear layer, plus what feeds it (a value row of qkv, an fc1 row, a norm's
    weight and bias)."""
    out = {k: [] for k in KINDS}
    for b in model.blocks:
        qkv, proj, fc1, fc2 = b.attn.qkv, b.attn.proj, b.mlp.fc1, b.mlp.fc2
        out["attn_in"].append(qkv.out_features + 2)
        out["attn_out"].append(proj.out_features + qkv.in_features + int(qkv.bias is not None))
        out["mlp_in"].append(fc1.out_features + 2)
        out["mlp_hidden"].append(fc2.out_features + fc1.in_features + int(fc1.bias is not None))
    return out


def fold_gates(model: nn.Module, gates: Gates) -> nn.Module:
    """Multiply each learned gate into the input columns of the layer it scales (exact: W(g⊙x) = (W·diag g)x)."""
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            for kind, layer in _gated_layers(block).items():
                layer.weight.mul_(gates[kind][i].reshape(1, -1).to(layer.weight.device))
    return model


def importance_histogram(scores: dict, counts: dict, out, title: str) -> None:
    """The study's Figure 3: how many parameters sit at each importance score."""
    from vitcompress.plotting import save_png, subplots

    fig, ax = subplots(figsize=(6.5, 4))
    labels = {"attn_in": "features into q/k/v", "attn_out": "attention output (v dims)",
              "mlp_in": "features into fc1", "mlp_hidden": "MLP hidden units"}
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
    save_png(fig, out, dpi=120)


def histogram_from_artifact(artifact: str, out: str, title: str) -> None:
    art = Artifact.load(artifact)
    if "prune_scores" not in art.meta:
        raise ValueError(f"{artifact} has no importance scores (not a prune_gates artifact)")
    scores = {k: [torch.tensor(s) for s in v] for k, v in art.meta["prune_scores"].items()}
    importance_histogram(scores, art.meta["prune_unit_params"], out, title)
