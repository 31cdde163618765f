"""Hand-made inputs for running the paper profile with no network: CIFAR-10/100 in the official
"python version" layout (random pixels, a few dozen images), and a weights file in timm's format for
each model a profile marks pretrained (random weights, with the model's own ImageNet 1000-class head).

Nothing here is a result: these files only let the paper profile's code paths run end to end
(``make paper-smoke``; the profile ``paper_smoke`` in params.yaml).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from vitcompress.io import atomic_path


def _dump(path: Path, obj) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)  # as the official files: Python 2's protocol, numpy arrays


def write_cifar(root: str | Path, which: str, n_train: int = 40, n_test: int = 20, seed: int = 0) -> Path:
    """CIFAR-10 (``which="cifar10"``) or CIFAR-100 files under ``root`` in the official layout; returns the folder."""
    rng = np.random.default_rng(seed)
    classes = 10 if which == "cifar10" else 100

    def batch(n, label):
        labels = (np.arange(n) % classes).tolist()  # every class present where n allows
        rng.shuffle(labels)
        return {"batch_label": f"smoke {label}", label_key: labels,
                "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "filenames": [f"smoke_{label}_{i}.png" for i in range(n)]}

    if which == "cifar10":
        folder, label_key = Path(root) / "cifar-10-batches-py", "labels"
        for i in range(1, 6):
            _dump(folder / f"data_batch_{i}", batch(n_train // 5, f"data_batch_{i}"))
        _dump(folder / "test_batch", batch(n_test, "test_batch"))
        _dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072})
    elif which == "cifar100":
        folder, label_key = Path(root) / "cifar-100-python", "fine_labels"
        for name, n in (("train", n_train), ("test", n_test)):
            entry = batch(n, name)
            entry["coarse_labels"] = [y % 20 for y in entry["fine_labels"]]
            _dump(folder / name, entry)
        _dump(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)],
                                "coarse_label_names": [f"super{i}" for i in range(20)]})
    else:
        raise ValueError(f"which = {which!r}: use cifar10 or cifar100")
    return folder


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
        if cfg["source"] in ("cifar10", "cifar100") and not cfg.get("download", True):
            written.append(write_cifar(cfg["root"], cfg["source"]))
    for model in profile.raw["models"].values():
        if model.get("pretrained") and model.get("pretrained_file"):
            written.append(write_weights(model["pretrained_file"], model["timm"], model.get("kwargs")))
    return written
