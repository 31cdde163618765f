"""``prune`` (``ratio`` r): the second of ViT pruning's two steps (study section 3.3; Zhu et al., VTP).

Ranks all prunable dimensions of the network globally by the importance its ``prune_gates`` parent
stored (:mod:`vitcompress.methods.prune_gates`) and removes the fraction r with the lowest scores.
Pruning is physical: qkv, proj, fc1 and fc2 (and their biases) are rebuilt smaller, so the artifact is
smaller and inference faster. Heads keep equal widths (the number a block keeps per head is the block's
surviving count divided by its heads; each head keeps its own best dimensions). The slim model is
fine-tuned for ``epochs`` (0: none); it reloads from the shapes stored in its artifact.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vitcompress.artifacts import Artifact
from vitcompress.errors import ConfigError
from vitcompress.methods.base import Method, StepContext, register
from vitcompress.models import vit_blocks
from vitcompress.pruning.slim import apply_pruning, check_plain, random_scores, restructure_slim, select, shapes_of
from vitcompress.train import summary


class PruningStep(Method):
    """What both pruning steps (``prune_gates``, ``prune``) ask of the chain's model before any job: every
    block a plain ViT block (the ValueError names what is in the way)."""

    @classmethod
    def check_model(cls, model, step):
        for i, block in enumerate(vit_blocks(model, "pruning")):
            check_plain(block.attn)
            if not isinstance(getattr(block.mlp, "norm", nn.Identity()), nn.Identity):
                raise ValueError(f"pruning does not support an MLP with a hidden-layer norm (block {i}'s mlp.norm)")


@register
class Prune(PruningStep):
    name = "prune"
    keys = {"ratio": (int, float), "epochs": int}

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
