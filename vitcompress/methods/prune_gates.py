"""``prune_gates``: the first of ViT pruning's steps (study section 3.3; Zhu et al. 2021, VTP): training with
sparsity regularization until the important dimensions emerge.

Learnable soft gates, initialised at 1, sit where VTP puts them (:mod:`vitcompress.pruning.slim`): on the
normalised features entering q/k/v and entering fc1 (embedding dimensions), on the attention output
entering the output projection (each head's value dimensions) and on the MLP's hidden features entering
fc2. The trained model is trained on with VTP's loss, cross-entropy + ``sparsity`` × Σ|gate| (the L1 norm
summed over every gate of the network, λ in VTP's units; ``l1: mean`` divides it by the number of gates, the
study's weaker reading), for ``epochs``. The gates are in the training optimizer (AdamW) as their own
parameter group at ``gate_lr``, without weight decay: a gate whose cross-entropy gradient stays under λ
drifts to zero by about one learning rate a step, so the gates can reach zero within the epochs given, and
those the loss needs stay near 1. Importance of a dimension is VTP's |gate| (``score: gate``) or, selectable,
the first-order Taylor score of Eq. 7 (``score: taylor``: |g · dL/dg| summed per batch over training batches,
divided by its layer's mean so that layers compare). The trained gates are then folded into the weights
(exactly: each scales a linear layer's input) and the scores travel in the artifact; no shape changes yet.
The ``prune`` step (:mod:`vitcompress.methods.prune`) then removes the lowest-scored dimensions and fine-tunes,
so every pruning ratio reuses one gate training through the chain mechanism.

The study's own scoring (its Figure 3: every score above 0.99) is ``l1: mean`` with ``gate_lr`` the fine-tuning
rate for one epoch: gates that barely move, pruned nearly at random.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from vitcompress.artifacts import Artifact
from vitcompress.data import InputAdapter, PreparedData
from vitcompress.methods.base import Method, StepContext, build_model, register
from vitcompress.pruning.gates import Gates, fold_gates, params_per_unit, taylor_scores
from vitcompress.pruning.slim import SlimAttention, check_prunable
from vitcompress.sections import TrainSettings
from vitcompress.settings import Settings, setting
from vitcompress.train import fit, summary


def _ce(smoothing: float):
    def loss(m, x, y):
        return F.cross_entropy(m(x), y, label_smoothing=smoothing)
    return loss


def gate_group(opt, gates: Gates, lr: float) -> None:
    """Move the gates out of the optimizer's shared groups into their own, at ``lr`` and without weight decay."""
    mine = {id(p) for p in gates.parameters()}
    for group in opt.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in mine]
    opt.add_param_group({"params": list(gates.parameters()), "lr": lr, "weight_decay": 0.0})


def score_summary(scores: dict) -> dict:
    """How the scores spread: quantiles of all of them and the share under 1% of the largest (VTP's claim is
    that many dimensions end with scores near zero)."""
    import torch

    flat = torch.cat([t.reshape(-1).float() for v in scores.values() for t in v])
    q = torch.quantile(flat, torch.tensor([0.0, 0.1, 0.2, 0.5, 0.9, 1.0])).tolist()
    return {"min": q[0], "p10": q[1], "p20": q[2], "median": q[3], "p90": q[4], "max": q[5],
            "near_zero": float((flat < 0.01 * flat.max()).float().mean())}


@dataclass(frozen=True, kw_only=True)
class PruneGatesSettings(Settings):
    sparsity: float = setting(1e-4, low=0, help="VTP's λ: weight of the L1 term on the gates (x Σ|gate| with l1: sum)")
    l1: str = setting("sum", choices=("sum", "mean"), help="sum: VTP's Σ|gate|; mean: divided by the gates' number")
    gate_lr: float | None = setting(None, low=0, low_open=True,
                                    help="the gates' learning rate (their own AdamW group, no weight decay); "
                                         "null: the step's lr")
    score: str = setting("gate", choices=("gate", "taylor"), help="gate: VTP's |gate|; taylor: Eq. 7")
    epochs: int = setting(1, low=0, help="sparsity-training epochs")
    score_batches: int = setting(8, low=1, help="training batches the Taylor score sums over")


@register
class PruneGates(Method):
    name = "prune_gates"
    family = "pruned (VTP)"
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
        train = TrainSettings.of(step["train"])
        ce = _ce(train.label_smoothing)

        def loss_fn(m, x, y):
            return ce(m, x, y) + sparsity * gates.l1(s.l1)

        cfg = train.replace(epochs=s.epochs)
        gate_lr = float(s.gate_lr or cfg.lr)
        # VTP scores the gates as training leaves them: the best-validation epoch would be the least sparse
        history = fit(model, data, cfg, adapter, ctx.device, ctx.seed, loss_fn=loss_fn, keep="last",
                      setup_optimizer=lambda opt: gate_group(opt, gates, gate_lr),
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
            loader = data.loader("train", cfg.batch_size, max_batches=s.score_batches)
            scores = taylor_scores(model.train(), [(cpu_adapter(x), y) for x, y in loader], ce)
            model.eval()
        meta_scores = {k: [t.tolist() for t in v] for k, v in scores.items()}
        steps = ctx.parent.meta.get("steps", []) + [{"id": step["id"], "method": self.name, "score": kind,
                                                     "sparsity": sparsity, "l1": s.l1, "gate_lr": gate_lr,
                                                     "scores": score_summary(scores),
                                                     "training": summary(history)}]
        return ctx.parent.child(model, None, steps=steps, prune_scores=meta_scores,
                                prune_unit_params=params_per_unit(model))

