"""``tome``: Token Merging (Bolya et al., ICLR 2023) on a trained ViT, training-free or fine-tuned: one of the
remedies the study proposes (its section 4.2, "input patch reduction ... as opposed to direct weight pruning").

Every block merges up to ``r`` tokens between its attention and its MLP by bipartite soft matching on the
keys' similarity (or, with ``keep``, the smallest ``r`` that leaves at most that share of the data set's tokens
after the last block: one strength across inputs of different token counts) (:mod:`vitcompress.tome.merge`), size-weighted, with proportional attention
(``proportional_attention``) and size-weighted average pooling; the class token is never merged
(:mod:`vitcompress.tome.vit`). The weights are the parent's (optionally fine-tuned for ``epochs``); the record
holds ``r`` and the tokens entering each block, and an artifact rebuilds the same model from it.
"""
from __future__ import annotations

from dataclasses import dataclass

from vitcompress.artifacts import Artifact
from vitcompress.errors import ConfigError
from vitcompress.methods.base import Method, StepContext, Untrained, build_model, register
from vitcompress.settings import Settings, setting
from vitcompress.tome.merge import block_rs, schedule
from vitcompress.train import summary


@dataclass(frozen=True, kw_only=True)
class ToMeSettings(Settings):
    r: int | None = setting(None, low=0, help="tokens merged in every block (fewer where fewer are left to merge)")
    keep: float | None = setting(None, low=0, low_open=True, high=1,
                                 help="instead of r: the share of tokens left after the last block; r is the smallest "
                                      "that leaves at most this many (on each data set's token count)")
    schedule: str = setting("constant", choices=("constant", "decreasing"),
                            help="r in every block, or from 2r in the first block linearly down to 0 in the last")
    proportional_attention: bool = setting(True, help="add log(token size) to the attention logits (ToMe's Eq. 1)")
    epochs: int = setting(0, low=0, help="fine-tuning epochs with merging on (0: training-free)")

    def check(self, where):
        if (self.r is None) == (self.keep is None):
            raise ConfigError(f"params.yaml: {where}: set exactly one of r (tokens merged per block) and keep (the "
                              f"share of tokens left after the last block); got r = {self.r}, keep = {self.keep}.")


def resolve_r(model, s: ToMeSettings) -> int:
    """The ``r`` a step merges with on ``model``: its own, or the smallest that leaves at most ``keep`` of the
    model's tokens (prefix tokens included) after the last block."""
    if s.r is not None:
        return s.r
    protected = model.num_prefix_tokens
    tokens, depth = model.patch_embed.num_patches + protected, len(model.blocks)
    left = [schedule(tokens, depth, block_rs(r, depth, s.schedule), protected)[-1] for r in range(tokens + 1)]
    target = s.keep * tokens if min(left) <= s.keep * tokens else min(left)  # past what merging reaches: its most
    return next(r for r, n in enumerate(left) if n <= target)


def _spec(model, s: ToMeSettings, r: int) -> dict:
    """What the artifact records (and ``restructure`` rebuilds from): r, its schedule and the tokens per block."""
    tokens, depth = model.patch_embed.num_patches + model.num_prefix_tokens, len(model.blocks)
    return {"method": "tome", "r": r, "schedule": s.schedule, "proportional_attention": s.proportional_attention,
            "tokens": schedule(tokens, depth, block_rs(r, depth, s.schedule), model.num_prefix_tokens)}


def _merging(model, s: ToMeSettings):
    """``model`` with merging on as ``s`` asks (r resolved on its token count), and the spec it records."""
    spec = _spec(model, s, resolve_r(model, s))
    return ToMe.restructure(model, spec), spec


@register
class ToMe(Method):
    name = "tome"
    family = "token merging"
    Settings = ToMeSettings

    @staticmethod
    def check_model(model, step=None) -> None:
        from vitcompress.tome.vit import check_tome  # timm's ViT classes: imported when a job runs, not when the
        # workflow is parsed (timm pulls in torchvision: seconds on every `snakemake` call)

        check_tome(model)

    def run(self, ctx: StepContext) -> Artifact:
        s = self.settings(ctx.step)
        model = build_model(ctx.parent)
        model, spec = _merging(model, s)
        r = spec["r"]
        history = self.finetune(model, ctx, s.epochs, ctx.parent.arch["kwargs"]["img_size"])
        steps = ctx.parent.meta.get("steps", []) + [{"id": ctx.step["id"], "method": self.name, "r": r,
                                                     "tokens": spec["tokens"], "training": summary(history)}]
        return Artifact(ctx.parent.arch, model.cpu().state_dict(), list(ctx.parent.transforms) + [spec],
                        {**ctx.parent.meta, "steps": steps})

    @classmethod
    def restructure(cls, model, spec):
        rs = block_rs(spec["r"], len(model.blocks), spec.get("schedule", "constant"))
        from vitcompress.tome.vit import apply_tome

        return apply_tome(model, rs, spec.get("proportional_attention", True))

    @classmethod
    def untrained(cls, model, step):
        model, spec = _merging(model, cls.settings(step))
        return Untrained(model, spec)
