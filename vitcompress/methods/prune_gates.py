"""``prune_gates``: the first of ViT pruning's two steps (study section 3.3; Zhu et al., VTP).

Learnable soft gates, initialised at 1, sit where VTP puts them (:mod:`vitcompress.pruning.slim`): on the
normalised features entering q/k/v and entering fc1 (embedding dimensions), on the attention output
entering the output projection (each head's value dimensions) and on the MLP's hidden features entering
fc2. The trained model is fine-tuned with an L1 sparsity term on the gates (``sparsity`` × mean |gate|)
for ``epochs``. Importance of a dimension is VTP's |gate| (``score: gate``) or, selectable, the
first-order Taylor score of Eq. 7 (``score: taylor``: |g · dL/dg| summed per batch over training batches,
divided by its layer's mean so that layers compare). The trained gates are then folded into the weights
(exactly: each scales a linear layer's input) and the scores travel in the artifact; no shape changes yet. The ``prune`` step (:mod:`vitcompress.methods.prune`) then removes dimensions, so every pruning ratio
reuses one gate training through the chain mechanism.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from vitcompress.artifacts import Artifact
from vitcompress.data import InputAdapter, PreparedData
from vitcompress.methods.base import Method, StepContext, build_model, register
from vitcompress.pruning.gates import Gates, fold_gates, params_per_unit, taylor_scores
from vitcompress.pruning.slim import SlimAttention, check_prunable
from vitcompress.settings import Settings, setting
from vitcompress.train import fit, summary


def _ce(smoothing: float):
    def loss(m, x, y):
        return F.cross_entropy(m(x), y, label_smoothing=smoothing)
    return loss


@dataclass(frozen=True, kw_only=True)
class PruneGatesSettings(Settings):
    sparsity: float = setting(1.0, low=0, help="weight of the L1 term on the gates (x mean |gate|)")
    score: str = setting("gate", choices=("gate", "taylor"), help="gate: VTP's |gate|; taylor: Eq. 7")
    epochs: int = setting(1, low=0, help="gate-training epochs")
    score_batches: int = setting(8, low=1, help="training batches the Taylor score sums over")


@register
class PruneGates(Method):
    name = "prune_gates"
    Settings = PruneGatesSettings

    check_model = staticmethod(check_prunable)  # every block a plain timm ViT block

    def run(self, ctx: StepContext) -> Artifact:
        step = ctx.step
        s = self.settings(step)
        data = PreparedData(ctx.data_file)
        model = build_model(ctx.parent)
        if any(isinstance(b.attn, SlimAttention) for b in model.blocks):
            raise ValueError("prune_gates runs on an unpruned ViT; put it before `prune` in the chain")
        adapter = InputAdapter(data.meta, ctx.parent.arch["kwargs"]["img_size"], ctx.device)
        gates = Gates(model)
        model.vc_gates = gates  # a submodule while training: fit() restores the best epoch's gates too
        gates.attach(model)
        sparsity = s.sparsity
        ce = _ce(step["train"].get("label_smoothing", 0.0))

        def loss_fn(m, x, y):
            return ce(m, x, y) + sparsity * gates.l1()

        cfg = {**step["train"], "epochs": s.epochs}
        # VTP scores the gates as training leaves them: the best-validation epoch would be the least sparse
        history = fit(model, data, cfg, adapter, ctx.device, ctx.seed, loss_fn=loss_fn, keep="last",
                      desc=f"{ctx.dataset}/{step['id']}")
        gates.detach()
        del model.vc_gates
        model.cpu()
        gates.cpu()
        kind = s.score
        scores = gates.magnitudes()
        fold_gates(model, gates)  # the gated network, now with plain weights
        if kind == "taylor":
            cpu_adapter = InputAdapter(data.meta, ctx.parent.arch["kwargs"]["img_size"], "cpu")
            loader = data.loader("train", int(cfg["batch_size"]), max_batches=s.score_batches)
            scores = taylor_scores(model.train(), [(cpu_adapter(x), y) for x, y in loader], ce)
            model.eval()
        meta_scores = {k: [t.tolist() for t in v] for k, v in scores.items()}
        steps = ctx.parent.meta.get("steps", []) + [{"id": step["id"], "method": self.name, "score": kind,
                                                     "sparsity": sparsity, "training": summary(history)}]
        return ctx.parent.child(model, None, steps=steps, prune_scores=meta_scores,
                                prune_unit_params=params_per_unit(model))

