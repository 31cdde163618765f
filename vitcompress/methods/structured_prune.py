"""``structured_prune``: structured pruning with a learned group importance through `torch-pruning` (DepGraph,
Fang et al., CVPR 2023): one of the remedies the study proposes (its section 4.2, "more sophisticated importance
scores").

The library traces the timm ViT, groups every coupled channel (qkv's output rows with the projection's input
columns, per head; fc1's rows with fc2's columns) and ranks the groups by ``importance`` as the library names
it: ``magnitude`` (GroupMagnitudeImportance, L2 of a group's weights), ``taylor`` (GroupTaylorImportance,
|w · ∂L/∂w| from ``calib_batches`` training batches) or ``hessian`` (GroupHessianImportance, an
Optimal-Brain-Damage estimate from per-image gradients of those batches). It removes the fraction ``ratio`` of
them, ``global_pruning`` across layers or per layer, then fine-tunes for ``epochs``. ``unit: head_dims`` removes
dimensions inside every head (heads keep equal widths); ``unit: heads`` removes whole heads (``head_ratio`` of
each block's) besides MLP hidden units. The residual stream keeps its width: the patch embedding, every
block's output projection and fc2 outputs, and the head are left out of the graph's roots, as VTP's rows keep
it too, so the two compare at the same kind of cut.

The artifact records each block's heads, head width and MLP width; rebuilding makes timm's own ``Attention``
and ``Mlp`` at those shapes (attention scaled by the new head width, as timm's fused kernel does), so the model
exports to ONNX and OpenVINO like any other.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitcompress.artifacts import Artifact
from vitcompress.methods.base import Method, StepContext, Untrained, build_model, register
from vitcompress.pruning.slim import check_prunable
from vitcompress.sections import TrainSettings
from vitcompress.settings import Settings, setting
from vitcompress.train import summary

IMPORTANCES = ("magnitude", "taylor", "hessian")


@dataclass(frozen=True, kw_only=True)
class StructuredPruneSettings(Settings):
    ratio: float = setting(low=0, high=1, high_open=True, help="torch-pruning's pruning_ratio: the fraction of "
                           "prunable channels (attention dims or heads, MLP hidden units) removed")
    importance: str = setting("taylor", choices=IMPORTANCES, help="the library's group importance")
    unit: str = setting("head_dims", choices=("head_dims", "heads"), help="attention: dimensions inside every "
                        "head, or whole heads")
    head_ratio: float | None = setting(None, low=0, high=1, high_open=True,
                                       help="unit: heads: the fraction of each block's heads removed (null: ratio)")
    global_pruning: bool = setting(True, help="rank groups across layers (true) or remove ratio from each layer")
    calib_batches: int = setting(4, low=1, help="training batches the Taylor or Hessian importance sums over")
    epochs: int = setting(0, low=0, help="fine-tuning epochs of the pruned model")


def _importance(name: str):
    import torch_pruning as tp

    return {"magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
            "taylor": tp.importance.GroupTaylorImportance,
            "hessian": tp.importance.GroupHessianImportance}[name]()


def block_shapes(model: nn.Module) -> list[dict]:
    """Each block's attention heads, head width and MLP hidden width: what rebuilding needs."""
    return [{"heads": b.attn.num_heads, "head_dim": b.attn.head_dim, "hidden": b.mlp.fc1.out_features}
            for b in model.blocks]


def _sync_attention(model: nn.Module, num_heads: dict) -> None:
    """After the library sliced qkv and proj: timm's Attention reads its head count and widths from attributes."""
    for b in model.blocks:
        attn = b.attn
        attn.num_heads = int(num_heads.get(attn.qkv, attn.num_heads))
        attn.head_dim = attn.qkv.out_features // (3 * attn.num_heads)
        attn.attn_dim = attn.num_heads * attn.head_dim
        attn.scale = attn.head_dim ** -0.5  # what timm's fused kernel uses: the unfused path must agree


def prune_structured(model: nn.Module, s: StructuredPruneSettings, example: torch.Tensor, batches=()) -> nn.Module:
    """Prune ``model`` in place with torch-pruning per ``s``; ``batches``: (inputs, labels) for the Taylor and
    Hessian importances (ignored by magnitude)."""
    import torch_pruning as tp

    check_prunable(model)
    roots_kept = [model.head, model.patch_embed.proj] + [m for b in model.blocks for m in (b.attn.proj, b.mlp.fc2)]
    heads = {b.attn.qkv: b.attn.num_heads for b in model.blocks}
    imp = _importance(s.importance)
    whole = s.unit == "heads"
    pruner = tp.pruner.MetaPruner(
        model, example, importance=imp, pruning_ratio=s.ratio, global_pruning=s.global_pruning,
        num_heads=heads, prune_num_heads=whole, prune_head_dims=not whole,
        head_pruning_ratio=(s.ratio if s.head_ratio is None else s.head_ratio) if whole else 0.0,
        ignored_layers=roots_kept, unwrapped_parameters=[(p, -1) for n, p in model.named_parameters()
                                                         if n in ("pos_embed", "cls_token", "dist_token")])
    if s.importance in ("taylor", "hessian"):
        model.zero_grad(set_to_none=True)
        for x, y in batches:
            if s.importance == "taylor":
                F.cross_entropy(model(x), y).backward()  # gradients accumulate over the batches
            else:
                imp.zero_grad()
                for i in range(len(y)):  # OBD: per-image gradients, accumulated by the importance itself
                    model.zero_grad(set_to_none=True)
                    F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
                    imp.accumulate_grad(model)
    pruner.step()
    model.zero_grad(set_to_none=True)
    _sync_attention(model, pruner.num_heads)
    return model


def restructure_blocks(model: nn.Module, shapes: list[dict]) -> nn.Module:
    """Rebuild every block's attention and MLP at the recorded shapes, weights unset (timm's own modules)."""
    from timm.layers import Attention

    if len(shapes) != len(model.blocks):
        raise ValueError(f"artifact has {len(shapes)} block shapes, the model {len(model.blocks)} blocks")
    for b, sh in zip(model.blocks, shapes):
        old = b.attn
        if not hasattr(old, "qkv"):
            raise ValueError("structured_prune rebuilds plain timm attention only")
        dim = old.qkv.in_features
        attn = Attention(dim, num_heads=sh["heads"], attn_head_dim=sh["head_dim"], qkv_bias=old.qkv.bias is not None,
                         proj_bias=old.proj.bias is not None)
        attn.fused_attn = old.fused_attn
        b.attn = attn
        fc1, fc2 = b.mlp.fc1, b.mlp.fc2
        b.mlp.fc1 = nn.Linear(fc1.in_features, sh["hidden"], bias=fc1.bias is not None)
        b.mlp.fc2 = nn.Linear(sh["hidden"], fc2.out_features, bias=fc2.bias is not None)
    return model


@register
class StructuredPrune(Method):
    name = "structured_prune"
    family = "pruned (torch-pruning)"
    shrinks = True
    Settings = StructuredPruneSettings

    check_model = staticmethod(check_prunable)  # every block a plain timm ViT block

    def run(self, ctx: StepContext) -> Artifact:
        from vitcompress.data import InputAdapter, PreparedData

        s = self.settings(ctx.step)
        model = build_model(ctx.parent).cpu()
        data = PreparedData(ctx.data_file)
        img = ctx.parent.arch["kwargs"]["img_size"]
        adapter = InputAdapter(data.meta, img, "cpu")
        loader = data.loader("train", TrainSettings.of(ctx.step["train"]).batch_size, max_batches=s.calib_batches)
        batches = [(adapter(x), y) for x, y in loader]
        before = sum(p.numel() for p in model.parameters())
        prune_structured(model.eval(), s, batches[0][0][:2], batches)
        after = sum(p.numel() for p in model.parameters())
        history = self.finetune(model, ctx, s.epochs, img)
        spec = {"method": self.name, "shapes": block_shapes(model)}
        steps = ctx.parent.meta.get("steps", []) + [{
            "id": ctx.step["id"], "method": self.name, "ratio": s.ratio, "importance": s.importance, "unit": s.unit,
            "global_pruning": s.global_pruning, "params_removed": 1 - after / before, "shapes": spec["shapes"],
            "training": summary(history)}]
        return Artifact(ctx.parent.arch, model.cpu().state_dict(), list(ctx.parent.transforms) + [spec],
                        {**ctx.parent.meta, "steps": steps})

    @classmethod
    def restructure(cls, model, spec):
        return restructure_blocks(model, spec["shapes"])

    @classmethod
    def untrained(cls, model, step):
        """Architecture benchmark: the library's magnitude ranking of the random weights at the step's ratio."""
        s = cls.settings({**step, "importance": "magnitude"})
        example = torch.zeros(1, model.patch_embed.proj.in_channels, *model.patch_embed.img_size)
        model = prune_structured(model.eval(), s, example)
        return Untrained(model, {"method": cls.name, "shapes": block_shapes(model)})
