"""The one training loop every step uses: AdamW, linear warm-up + cosine decay, label smoothing,
seeded and deterministic on CPU, mixed precision on CUDA, tqdm progress, validation every epoch,
best weights kept.

Methods customise it through ``loss_fn(model, x, y) -> loss`` (distillation, size penalties),
``after_step(model)`` and ``setup_optimizer(optimizer)`` hooks, not by copying it.
"""
from __future__ import annotations

import copy
import logging
import math
import random
import sys
import time
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from vitcompress.data import InputAdapter, PreparedData
from vitcompress.measure import evaluate
from vitcompress.sections import TrainSettings

VAL_BATCH = 256  # the validation split's evaluation batch while training (any size gives the same accuracy)

log = logging.getLogger(__name__)


def seed_everything(seed: int, device: str = "cpu") -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear from ~0 to 1 over ``warmup_steps``, then cosine down to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def amp_settings(amp: str, device: str) -> tuple[bool, torch.dtype]:
    """(autocast on?, its dtype) for a train block's ``amp``: ``auto`` is bf16 on a CUDA GPU that has it,
    fp16 on one that does not, and off on CPU (float32, as every CPU result in the project is)."""
    cuda = device.startswith("cuda")
    if amp == "auto":
        if not cuda:
            return False, torch.float32
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "none":
        return False, torch.float32
    if amp not in ("bf16", "fp16"):
        raise ValueError(f"amp = {amp!r}: use auto, bf16, fp16 or none")
    return True, torch.bfloat16 if amp == "bf16" else torch.float16


def _param_groups(model: nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "dist_token")) or name.startswith("vc_gates.")
        (no_decay if plain else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def fit(
    model: nn.Module,
    data: PreparedData,
    cfg: TrainSettings | dict,
    adapter: InputAdapter,
    device: str = "cpu",
    seed: int = 0,
    loss_fn: Callable | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
    extra_params: list | None = None,
    setup_optimizer: Callable[[torch.optim.Optimizer], None] | None = None,
    desc: str = "train",
    keep: str = "best",
) -> dict:
    """Train ``model`` in place on ``data`` per ``cfg`` (a step's resolved `train`: :class:`TrainSettings` or its
    mapping).

    ``keep="best"`` leaves the best-validation weights in ``model``; ``keep="last"`` the last epoch's,
    for losses that trade accuracy for something else (a size penalty): the most accurate epoch
    is then the one that traded least. Returns the history.
    """
    if keep not in ("best", "last"):
        raise ValueError(f"fit: keep = {keep!r} must be 'best' or 'last'.")
    seed_everything(seed, device)
    model.to(device)
    cfg = TrainSettings.of(cfg, "train")
    epochs, smoothing = cfg.epochs, cfg.label_smoothing
    if loss_fn is None:
        def loss_fn(m, x, y):
            return F.cross_entropy(m(x), y, label_smoothing=smoothing)

    history: dict = {"epochs": [], "best_val_acc": None, "best_epoch": None, "kept": keep}
    val_loader = data.loader("val", VAL_BATCH)
    if epochs == 0:
        history["best_val_acc"] = evaluate(model, val_loader, adapter, device)["top1"]
        return history

    max_steps = cfg.max_steps
    train_loader = data.loader("train", cfg.batch_size, train=True, augment=cfg.augmentation(), seed=seed,
                               num_workers=cfg.num_workers)
    steps_per_epoch = min(len(train_loader), max_steps or len(train_loader))
    total = epochs * steps_per_epoch
    groups = _param_groups(model, cfg.weight_decay)
    if extra_params:
        groups.append({"params": extra_params, "weight_decay": 0.0})
    # fused: one kernel for every parameter's update (CPU and CUDA) instead of a Python loop over tensors,
    # which is a large share of a small model's step
    opt = torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
    if setup_optimizer is not None:  # e.g. a diffq quantizer adds its own parameter group
        setup_optimizer(opt)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, warmup))

    use_amp, amp_dtype = amp_settings(cfg.amp, device)
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    scaler = torch.amp.GradScaler(dev_type, enabled=use_amp and amp_dtype == torch.float16)

    best_acc, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        running, seen, steps = 0.0, 0, 0
        started = time.perf_counter()
        bar = tqdm(train_loader, total=steps_per_epoch, desc=f"{desc} {epoch + 1}/{epochs}", leave=False,
                   file=sys.stderr, mininterval=1.0, dynamic_ncols=True)
        for i, (x, y) in enumerate(bar):
            if i >= steps_per_epoch:
                break
            x, y = adapter(x), y.to(device)
            with torch.autocast(dev_type, dtype=amp_dtype, enabled=use_amp):
                loss = loss_fn(model, x, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {loss.item()} at epoch {epoch + 1}; lower `lr`.")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if after_step is not None:
                after_step(model)
            running += loss.item() * len(y)
            seen += len(y)
            steps += 1
            bar.set_postfix(loss=f"{running / seen:.3f}", refresh=False)
        bar.close()
        train_s = time.perf_counter() - started
        val = evaluate(model, val_loader, adapter, device)["top1"]
        history["epochs"].append({"epoch": epoch + 1, "train_loss": running / max(1, seen), "val_top1": val,
                                  "train_s": train_s, "steps": steps})
        log.info("%s epoch %d/%d: train loss %.4f, val top-1 %.2f%% (%d steps of %d images, %.3f s a step)", desc,
                 epoch + 1, epochs, running / max(1, seen), val, steps, cfg.batch_size, train_s / max(1, steps))
        if keep == "best" and val > best_acc:
            best_acc, best_state = val, copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            history["best_val_acc"], history["best_epoch"] = val, epoch + 1
    if keep == "last" and history["epochs"]:
        history["best_val_acc"], history["best_epoch"] = history["epochs"][-1]["val_top1"], epochs
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def summary(history: dict | None) -> dict | None:
    """What an artifact keeps of a training history: the per-epoch record is in the step's log and
    would otherwise add kilobytes to every checkpoint whose size the tables compare."""
    if not history:
        return None
    epochs = history["epochs"]
    return {"epochs": len(epochs), "best_val_acc": history["best_val_acc"], "best_epoch": history["best_epoch"],
            "kept": history.get("kept", "best"), "final_train_loss": epochs[-1]["train_loss"] if epochs else None}
