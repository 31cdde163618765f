"""``distill``: DeiT knowledge distillation with a distillation token (study section 3.2).

The student is one of timm's distilled DeiT models (a class token *and* a distillation token, each
with its own head). The teacher is the trained model of another chain of the same data set (the
vanilla ViT), loaded from its artifact, frozen, in eval mode; it is never retrained here.

Losses (``loss:`` in the step):

- ``hard`` (default, the study's Eq. 5): ½·CE(class head, labels) + ½·CE(distillation head, teacher's argmax)
- ``soft`` (Eq. 4): (1−λ)·CE(class head, labels) + λ·τ²·KL(softmax(teacher/τ) ‖ softmax(distillation head/τ)),
  the KL summed over the batch and divided by its number of logits (batch × classes), as DeiT's own
  loss does, so its weight does not grow with the class count

Training uses both heads (timm's ``set_distilled_training``); inference averages them.

``init`` (in the step): ``scratch`` (default; or the model's ``pretrained`` weights) or ``teacher``: the
student starts from the teacher's encoder (patch embedding, positions, blocks, final norm, head), its
class and distillation tokens new. The study fine-tunes ImageNet-pretrained DeiT models; where no
pretrained weights exist (the offline demo), the teacher's is the only trained encoder of that shape.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitcompress.artifacts import Artifact
from vitcompress.data import InputAdapter, PreparedData
from vitcompress.errors import ConfigError
from vitcompress.methods.base import Method, StepContext, build_model, register
from vitcompress.models import arch_for, create
from vitcompress.sections import ModelSettings, TrainSettings
from vitcompress.settings import Settings, setting
from vitcompress.train import fit, summary

log = logging.getLogger(__name__)


class DistillationLoss:
    """Loss over a DeiT student's (class, distillation) outputs against labels and a frozen teacher."""

    def __init__(self, teacher: nn.Module, kind: str = "hard", lam: float = 0.5, tau: float = 1.0,
                 label_smoothing: float = 0.0, teacher_size=None):
        if kind not in ("hard", "soft"):
            raise ValueError(f"loss = {kind!r}: use 'hard' or 'soft'")
        self.teacher = teacher.eval().requires_grad_(False)
        self.kind, self.lam, self.tau, self.smoothing = kind, float(lam), float(tau), float(label_smoothing)
        self.teacher_size = tuple(teacher_size) if teacher_size else None

    cache: "TeacherCache | None" = None  # the teacher's logits of every augmented training image, if worth it

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.cache is not None:
            hit = self.cache.lookup(x)
            if hit is not None:
                return hit
        if self.teacher_size and tuple(x.shape[-2:]) != self.teacher_size:
            x = F.interpolate(x, size=self.teacher_size, mode="bilinear", align_corners=False)
        with torch.no_grad():
            return self.teacher(x).float()

    def loss(self, outputs, teacher_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
            raise TypeError("the student must return (class logits, distillation logits): "
                            "a timm *_distilled_* model with set_distilled_training(True)")
        cls_out, dist_out = outputs
        base = F.cross_entropy(cls_out, y, label_smoothing=self.smoothing)
        if self.kind == "hard":
            return 0.5 * base + 0.5 * F.cross_entropy(dist_out, teacher_logits.argmax(dim=-1))
        t = self.tau
        kl = F.kl_div(F.log_softmax(dist_out / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                      reduction="sum", log_target=True) / dist_out.numel()  # KL(teacher ‖ student), per logit
        return (1 - self.lam) * base + self.lam * t * t * kl

    def __call__(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(student(x), self.teacher_logits(x), y)


class TeacherCache:
    """The frozen teacher's logits for every image the training loop can draw: each training image under
    each of its augmentations (every shift, flipped or not), computed once before training, looked up by
    the input's bytes. A teacher recomputes the same logits for the same input every epoch; with few
    augmentations and many epochs (the demo: 9 shifts, 30-100 epochs) this skips most teacher passes.
    A batch with any input not in the table falls back to the teacher."""

    def __init__(self, table: dict[bytes, torch.Tensor]):
        self.table, self.hits, self.misses = table, 0, 0

    @staticmethod
    def variants(augment: dict | None) -> list[tuple[int, int, bool]]:
        s = int((augment or {}).get("shift", 0))
        flips = (False, True) if (augment or {}).get("hflip") else (False,)
        return [(dy, dx, f) for dy in range(2 * s + 1) for dx in range(2 * s + 1) for f in flips]

    @classmethod
    def worth_it(cls, augment: dict | None, epochs: int) -> bool:
        """Caching costs one teacher pass per augmentation; training, one per epoch."""
        return 2 * len(cls.variants(augment)) <= epochs

    @classmethod
    def build(cls, loss: "DistillationLoss", images: torch.Tensor, augment: dict | None, adapter,
              batch_size: int = 512) -> "TeacherCache":
        s = int((augment or {}).get("shift", 0))
        h, w = images.shape[-2:]
        padded = F.pad(images, (s, s, s, s))
        table: dict[bytes, torch.Tensor] = {}
        for dy, dx, flip in cls.variants(augment):
            shifted = padded[..., dy:dy + h, dx:dx + w]
            if flip:
                shifted = shifted.flip(-1)
            for start in range(0, len(shifted), batch_size):
                x = adapter(shifted[start:start + batch_size])
                logits = loss.teacher_logits(x).cpu()
                for key, row in zip(cls._keys(x), logits):
                    table[key] = row
        return cls(table)

    @staticmethod
    def _keys(x: torch.Tensor) -> list[bytes]:
        flat = x.detach().cpu().reshape(len(x), -1).numpy()
        return [row.tobytes() for row in flat]

    def lookup(self, x: torch.Tensor) -> torch.Tensor | None:
        rows = [self.table.get(k) for k in self._keys(x)]
        if any(r is None for r in rows):
            self.misses += 1
            return None
        self.hits += 1
        return torch.stack(rows).to(x.device)


def init_from_teacher(student: nn.Module, teacher: nn.Module) -> int:
    """Copy ``teacher``'s weights into ``student`` where they mean the same thing: every tensor of the same
    name and shape; the teacher's patch positions into the positions after the student's extra tokens; a
    pooled teacher's ``fc_norm`` into the student's ``norm``; its ``head`` into both of the student's heads.
    Returns the number of tensors copied; raises ValueError, naming the first, if an encoder tensor cannot be."""
    src, dst = teacher.state_dict(), student.state_dict()
    copied = 0
    for name, value in src.items():
        targets = [name]
        if name.startswith("fc_norm.") and not any(k.startswith("fc_norm.") for k in dst):
            targets = ["norm." + name[len("fc_norm."):]]
        elif name.startswith("head."):
            targets = [name, "head_dist." + name[len("head."):]]
        for target in targets:
            if target not in dst:
                continue
            have = dst[target]
            if have.shape == value.shape:
                have.copy_(value)
            elif name == "pos_embed" and have.shape[0] == value.shape[0] and have.shape[2:] == value.shape[2:] \
                    and have.shape[1] > value.shape[1]:
                have[:, have.shape[1] - value.shape[1]:].copy_(value)  # the patches' positions; tokens' stay new
            elif name.startswith(("blocks.", "patch_embed.", "pos_embed")):
                raise ValueError(f"init: teacher: the teacher's {name} has shape {tuple(value.shape)}, the student's "
                                 f"{target} {tuple(have.shape)}; a student initialised from its teacher needs the "
                                 f"teacher's embed_dim, depth and patch size (or use init: scratch)")
            else:
                continue
            copied += 1

    def blocks(state):
        return len({k.split(".")[1] for k in state if k.startswith("blocks.")})

    if blocks(src) != blocks(dst) or not blocks(src):
        raise ValueError(f"init: teacher: the teacher has {blocks(src)} blocks and the student {blocks(dst)}; a "
                         f"student initialised from its teacher needs the teacher's embed_dim, depth and patch "
                         f"size (or use init: scratch)")
    student.load_state_dict(dst)
    return copied


def make_student(arch: dict, pretrained: bool = False, pretrained_file: str | None = None) -> nn.Module:
    student = create(arch, pretrained=pretrained, pretrained_file=pretrained_file)
    if not hasattr(student, "set_distilled_training"):
        raise ValueError(f"{arch['timm']} has no distillation token; use a timm *_distilled_* model "
                         f"(e.g. deit_tiny_distilled_patch16_224)")
    return student


class _DistilledTraining:
    """Switches the student's distilled training on for fit() and off again for validation."""

    def __init__(self, student: nn.Module):
        self.student = student
        self._train = student.train

        def train(mode: bool = True):
            self._train(mode)
            student.set_distilled_training(mode)
            return student

        student.train = train


@dataclass(frozen=True, kw_only=True)
class DistillSettings(Settings):
    teacher: str = setting(help="the chain whose model teaches (e.g. vit)")
    loss: str = setting("hard", choices=("hard", "soft"), help="hard: Eq. 5; soft: Eq. 4")
    lam: float = setting(0.5, low=0, high=1, key="lambda", help="the soft loss's weight")
    tau: float = setting(1.0, low=0, low_open=True, help="the soft loss's temperature")
    init: str = setting("scratch", choices=("scratch", "teacher"),
                        help="scratch: random, or the model's pretrained weights; teacher: the teacher's encoder")


@register
class Distill(Method):
    name = "distill"
    family = "distilled"
    shrinks = True
    Settings = DistillSettings
    is_root = True

    @classmethod
    def check_step(cls, step, where, profile):
        super().check_step(step, where, profile)
        s = cls.settings(step, where)
        if step.get("model") not in profile["models"]:
            raise ConfigError(f"params.yaml: {where}.model = {step.get('model')!r} is not a model of this profile; "
                              f"define the student under `models` (known: {', '.join(profile['models'])}).")
        teacher, init = s.teacher, s.init
        missing = [part for part in teacher.split("+") if part not in profile["steps"]]
        if missing:
            raise ConfigError(f"params.yaml: {where}.teacher = {teacher!r}: step {missing[0]!r} is not defined "
                              f"under steps.")
        # the teacher must be one trained model; shapes are compared once the models are built
        # (check_inputs), after each model's own settings have been checked
        parts = teacher.split("+")
        if init == "teacher" and (len(parts) > 1 or profile["steps"][parts[0]].get("method") != "train"):
            raise ConfigError(f"params.yaml: {where}.init = 'teacher' needs a teacher that is a trained model "
                              f"(a chain of one `train` step), not {teacher!r}; or use init: scratch.")

    @classmethod
    def check_model(cls, model, step):
        if not hasattr(model, "set_distilled_training"):
            raise ValueError(f"the student {step['model_cfg']['timm']!r} has no distillation token/head; use a "
                             f"timm *_distilled_* model (e.g. deit_tiny_distilled_patch16_224) under "
                             f"models.{step['model']}.timm")

    @classmethod
    def step_inputs(cls, step, profile):
        return {"teacher": cls.settings(step).teacher}

    @classmethod
    def check_inputs(cls, model, step, inputs):
        if cls.settings(step).init == "teacher":  # the job's own copy, on shapes only (meta tensors)
            init_from_teacher(copy.deepcopy(model), inputs["teacher"])

    def run(self, ctx: StepContext) -> Artifact:
        step = ctx.step
        data = PreparedData(ctx.data_file)
        model_cfg = step["model_cfg"]
        arch = arch_for(model_cfg, data.meta, step["image_size"], step.get("image_scale", 1))
        model = ModelSettings.of(model_cfg, f"models.{step['model']}")
        student = make_student(arch, model.pretrained, model.pretrained_file)
        teacher_art: Artifact = ctx.extra["teacher"]
        teacher = build_model(teacher_art).to(ctx.device)
        s, train = self.settings(step), TrainSettings.of(step["train"])
        if s.init == "teacher":
            copied = init_from_teacher(student, teacher)
            log.info("%s: student initialised from the teacher (%d tensors)", step["id"], copied)
        loss = DistillationLoss(teacher, s.loss, s.lam, s.tau,
                                train.label_smoothing, teacher_art.arch["kwargs"]["img_size"])
        _DistilledTraining(student)
        adapter = InputAdapter(data.meta, arch["kwargs"]["img_size"], ctx.device)
        augment, epochs = train.augmentation(), train.epochs
        if TeacherCache.worth_it(augment, epochs):
            loss.cache = TeacherCache.build(loss, data.splits["train"][0], augment, adapter)
            log.info("%s: teacher logits of %d augmented training images computed once", step["id"],
                     len(loss.cache.table))
        history = fit(student, data, train, adapter, ctx.device, ctx.seed, loss_fn=loss,
                      desc=f"{ctx.dataset}/{step['id']}")
        if loss.cache is not None:
            log.info("%s: %d batches used cached teacher logits, %d ran the teacher", step["id"], loss.cache.hits,
                     loss.cache.misses)
        del student.train  # drop the instance override: back to the class's train()
        student.set_distilled_training(False)
        return Artifact(arch=arch, state_dict=student.cpu().state_dict(), transforms=[], meta={
            "steps": [{"id": step["id"], "method": self.name, "teacher": s.teacher,
                       "loss": s.loss, "init": s.init,
                       "training": summary(history)}],
        })
