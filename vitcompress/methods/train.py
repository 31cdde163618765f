"""``train``: build a timm model (from scratch or pretrained) and train it on the data set.

The root of every chain: the study's "Vanilla ViT" row is the chain ``[train step]``.
"""
from __future__ import annotations

from vitcompress.artifacts import Artifact
from vitcompress.data import InputAdapter, PreparedData
from vitcompress.errors import ConfigError
from vitcompress.methods.base import Method, StepContext, register
from vitcompress.models import arch_for, create
from vitcompress.sections import ModelSettings
from vitcompress.train import fit, summary


@register
class Train(Method):
    name = "train"
    family = "trained"
    is_root = True

    @classmethod
    def check_step(cls, step, where, profile):
        super().check_step(step, where, profile)
        model = step.get("model")
        if model not in profile["models"]:
            raise ConfigError(
                f"params.yaml: {where}.model = {model!r} is not a model of this profile; "
                f"define it under `models` (known: {', '.join(profile['models'])})."
            )

    def run(self, ctx: StepContext) -> Artifact:
        step = ctx.step
        data = PreparedData(ctx.data_file)
        model_cfg = step["model_cfg"]
        arch = arch_for(model_cfg, data.meta, step["image_size"], step.get("image_scale", 1))
        weights = ModelSettings.of(model_cfg, f"models.{step['model']}")
        model = create(arch, pretrained=weights.pretrained, pretrained_file=weights.pretrained_file)
        adapter = InputAdapter(data.meta, arch["kwargs"]["img_size"], ctx.device)
        history = fit(model, data, step["train"], adapter, ctx.device, ctx.seed, desc=f"{ctx.dataset}/{step['id']}")
        return Artifact(arch=arch, state_dict=model.cpu().state_dict(), transforms=[],
                        meta={"steps": [{"id": step["id"], "method": self.name, "training": summary(history)}]})
