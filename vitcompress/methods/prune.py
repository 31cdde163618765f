"""``prune`` (``ratio`` r): VTP's second and third steps (study section 3.3; Zhu et al. 2021): pruning and
fine-tuning.

Ranks all prunable dimensions of the network globally by the importance its ``prune_gates`` parent
stored (:mod:`vitcompress.methods.prune_gates`) and removes the fraction r with the lowest scores: those
under the global threshold r implies (equal scores at the threshold, rare once the scores have separated,
are broken in a seeded random order), except where heads keep equal value widths (below). The record says how
many of each kind went (``removed``), the threshold, how many value dimensions equal widths removed above it
or kept under it, and the fraction really removed.
Pruning is physical: qkv, proj, fc1 and fc2 (and their biases) are rebuilt smaller, so the artifact is
smaller and inference faster. Heads keep equal widths (the number a block keeps per head is the block's
surviving count divided by its heads; each head keeps its own best dimensions). The slim model is
fine-tuned for ``epochs`` (0: none); it reloads from the shapes stored in its artifact.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vitcompress.artifacts import Artifact
from vitcompress.methods.base import Method, StepContext, Untrained, build_model, register
from vitcompress.pruning.slim import apply_pruning, check_prunable, random_scores, restructure_slim, select, shapes_of
from vitcompress.settings import Settings, setting
from vitcompress.train import summary

KIND_LABELS = {"attn_in": "embedding into qkv", "attn_out": "value", "mlp_in": "embedding into fc1",
               "mlp_hidden": "MLP hidden"}


def removed_by_kind(scores: dict, keep: dict) -> dict[str, int]:
    """How many dimensions of each kind (:data:`KIND_LABELS`) the pruning removes, over all blocks."""
    return {k: sum(int(s.numel()) for s in scores[k]) - sum(int(i.numel()) for i in keep[k]) for k in scores}


def threshold(scores: dict, ratio: float) -> float | None:
    """The score under which VTP's global threshold for ``ratio`` removes a dimension: the highest removed score."""
    flat = torch.sort(torch.cat([t.reshape(-1).float() for v in scores.values() for t in v])).values
    n = int(ratio * flat.numel())
    return float(flat[n - 1]) if n else None


def off_threshold(scores: dict, keep: dict, cut: float | None) -> dict:
    """Where equal head widths part from the global threshold: value dimensions removed although they score
    above it, and any dimension kept although it scores at or under it; and the fraction really removed."""
    above = under = 0
    total = removed = 0
    for k in scores:
        for s, idx in zip(scores[k], keep[k]):
            mask = torch.zeros(s.shape, dtype=torch.bool)
            if k == "attn_out":
                mask.scatter_(1, idx, True)
            else:
                mask[idx] = True
            total += s.numel()
            removed += int((~mask).sum())
            if cut is not None:
                above += int(((~mask) & (s > cut)).sum())
                under += int((mask & (s <= cut)).sum())
    return {"removed_above_threshold": above, "kept_under_threshold": under,
            "achieved_ratio": removed / total if total else 0.0}


@dataclass(frozen=True, kw_only=True)
class PruneSettings(Settings):
    ratio: float = setting(low=0, high=1, high_open=True, help="the fraction r of dimensions to remove")
    epochs: int = setting(0, low=0, help="fine-tuning epochs of the pruned model (VTP fine-tunes)")


@register
class Prune(Method):
    name = "prune"
    family = "pruned (VTP)"
    shrinks = True
    Settings = PruneSettings

    check_model = staticmethod(check_prunable)  # every block a plain timm ViT block

    def run(self, ctx: StepContext) -> Artifact:
        step = ctx.step
        s = self.settings(step)
        scores = ctx.parent.meta.get("prune_scores")
        if scores is None:
            raise ValueError(f"step {step['id']!r}: its parent has no importance scores; "
                             f"chain it after a `prune_gates` step (e.g. [vit, gates, {step['id']}])")
        scores = {k: [torch.tensor(s) for s in v] for k, v in scores.items()}
        model = build_model(ctx.parent)
        keep = select(scores, s.ratio)  # raises before anything is written
        removed = removed_by_kind(scores, keep)
        cut = threshold(scores, s.ratio)
        off = off_threshold(scores, keep, cut)
        model = apply_pruning(model, keep)
        history = self.finetune(model, ctx, s.epochs, ctx.parent.arch["kwargs"]["img_size"])
        spec = {"method": "prune", "shapes": shapes_of(model)}
        meta = {k: v for k, v in ctx.parent.meta.items() if k not in ("prune_scores", "prune_unit_params")}
        steps = meta.get("steps", []) + [{"id": step["id"], "method": self.name, "ratio": s.ratio,
                                          "removed": removed, "threshold": cut, **off,
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
        model = apply_pruning(model, select(random_scores(model), cls.settings(step).ratio))
        return Untrained(model, {"method": "prune", "shapes": shapes_of(model)})
