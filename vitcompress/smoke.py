"""Hand-made inputs for running the paper profile with no network: each data set's stand-in files from its
source (CIFAR-10/100 in the official "python version" layout, random pixels, a few dozen images:
:func:`vitcompress.data.cifar.write_cifar`), and a weights file in timm's format for each model a profile
marks pretrained (random weights, with the model's own ImageNet 1000-class head).

Nothing here is a result: these files only let the paper profile's code paths run end to end
(``make paper-smoke``; the profile ``paper_smoke`` in params.yaml).
"""
from __future__ import annotations

from pathlib import Path

from vitcompress.data import get_source
from vitcompress.data.cifar import write_cifar  # noqa: F401  (re-exported)
from vitcompress.io import atomic_path


def write_weights(path: str | Path, timm_name: str, kwargs: dict | None = None, seed: int = 0) -> Path:
    """A state dict of ``timm_name`` as timm's pretrained checkpoints hold it (1000-class head), random weights."""
    import torch

    from vitcompress.models import create

    torch.manual_seed(seed)
    model = create({"timm": timm_name, "kwargs": {**(kwargs or {}), "num_classes": 1000}})
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return Path(path)


def write_profile_files(profile) -> list[Path]:
    """Every file ``profile`` expects to find: its CIFAR data sets (``download`` off) and its models'
    ``pretrained_file``s. Returns what was written."""
    written = []
    for ds in profile.datasets:
        cfg = profile.dataset_cfg(ds)
        source = get_source(cfg["source"])
        written += source.smoke_files(source.settings(cfg, f"datasets.{ds}"))
    for model in profile.models().values():
        if model.pretrained and model.pretrained_file:
            written.append(write_weights(model.pretrained_file, model.timm, model.kwargs))
    return written
