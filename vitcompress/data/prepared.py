"""A data set prepared once into one tensor file, and what reads it: uint8 images (N, C, H, W) and int64 labels per
split plus ``meta`` (classes, channels, size, per-channel mean/std of the training split). Augmentation, resizing and
normalisation happen when batches are drawn, so one prepared file serves every model size. The sources are
:mod:`vitcompress.data`'s modules; here a data set's definition (its params.yaml dict) is read through its source.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vitcompress.data.base import SPLITS, get_source
from vitcompress.errors import DataError
from vitcompress.io import atomic_path, check_sealed, content_digest, seal

log = logging.getLogger("vitcompress.data")


def load_source(cfg: dict, seed: int = 0, groups: dict | None = None):
    """Every split of a data set as (uint8 images, labels), and the class names. ``groups``, if given,
    receives per split the ids of the parts each image shares with others (digit pairs' source digits)."""
    source = get_source(cfg["source"])
    s = source.settings(cfg, f"datasets ({cfg['source']})")
    splits, classes = source.load(s, seed, groups)
    if s.limit:
        splits = {k: (x[:s.limit], y[:s.limit]) for k, (x, y) in splits.items()}
        if groups:
            groups.update({k: g[:s.limit] for k, g in groups.items()})
    for k, (x, y) in splits.items():
        if len(y) == 0:
            raise DataError(f"{source.name}: the {k} split is empty; give it more images or change `split`.")
    return splits, classes


def prepare(cfg: dict, out: str | Path, seed: int = 0) -> dict:
    """Materialise a data set into one tensor file (written atomically); return its meta."""
    groups: dict = {}
    splits, classes = load_source(cfg, seed, groups)
    train_x = torch.from_numpy(splits["train"][0]).float() / 255.0
    meta = {
        "source": cfg["source"],
        "num_classes": len(classes),
        "classes": classes,
        "channels": int(train_x.shape[1]),
        "size": [int(train_x.shape[2]), int(train_x.shape[3])],
        "mean": train_x.mean(dim=(0, 2, 3)).tolist(),
        "std": train_x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist(),
        "counts": {s: int(len(y)) for s, (_, y) in splits.items()},
        # which configuration made it: another profile's file at the same path is not taken for this one's
        "config": config_digest(cfg, seed),
    }
    payload = {"meta": meta}
    for s, (x, y) in splits.items():
        payload[f"{s}_x"] = torch.from_numpy(np.ascontiguousarray(x))
        payload[f"{s}_y"] = torch.from_numpy(np.ascontiguousarray(y))
    for s, g in groups.items():
        payload[f"{s}_groups"] = torch.from_numpy(np.ascontiguousarray(g))
    with atomic_path(out) as tmp:
        torch.save(seal(payload), tmp)  # with the content digest every read checks
    log.info("prepared %s: %s", cfg["source"], meta["counts"])
    return meta


class PreparedData:
    """A prepared data set in memory: splits of uint8 images and their labels."""

    def __init__(self, path: str | Path):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DataError(f"{path}: unreadable prepared data ({exc}); delete it and re-run the workflow.") from None
        payload = check_sealed(payload, path, "prepared data file")
        self.meta: dict = payload["meta"]
        self.splits = {s: (payload[f"{s}_x"], payload[f"{s}_y"]) for s in SPLITS}
        # per split, the parts each image shares with others (digit pairs' two source digits), if any
        self.groups = {s: payload[f"{s}_groups"] for s in SPLITS if f"{s}_groups" in payload}

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    def loader(self, split: str, batch_size: int, train: bool = False, augment: dict | None = None,
               seed: int = 0, num_workers: int = 0, max_batches: int | None = None):
        x, y = self.splits[split]
        ds = _AugmentedTensors(x, y, augment if train else None)
        g = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=train, generator=g, num_workers=num_workers,
            drop_last=False, persistent_workers=False, collate_fn=_as_batch,
        )
        if max_batches:
            import itertools

            return list(itertools.islice(loader, max_batches))
        return loader


class _AugmentedTensors(torch.utils.data.Dataset):
    """uint8 images with optional random shift (zero padding) and horizontal flip, per sample."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, augment: dict | None):
        self.x, self.y = x, y
        self.shift = int((augment or {}).get("shift", 0))
        self.hflip = bool((augment or {}).get("hflip", False))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i]
        if self.shift:
            s = self.shift
            h, w = img.shape[1:]
            dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
            img = F.pad(img, (s, s, s, s))[:, dy:dy + h, dx:dx + w]
        if self.hflip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.y[i]

    def __getitems__(self, indices: list[int]):
        """A whole batch (the DataLoader's batched fetch): the random draws of ``__getitem__``, image by image in
        the same order, so the same batches; the shift and the flip applied to the batch in one operation each."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        imgs = self.x[idx]
        if not (self.shift or self.hflip):
            return imgs, self.y[idx]
        offsets, flips = [], []
        for _ in indices:
            if self.shift:
                offsets.append(torch.randint(0, 2 * self.shift + 1, (2,)))
            if self.hflip:
                flips.append(bool(torch.rand(()) < 0.5))
        if self.shift:
            s, (h, w) = self.shift, imgs.shape[-2:]
            off = torch.stack(offsets)
            rows = (off[:, 0, None] + torch.arange(h))[:, None, :, None]
            cols = (off[:, 1, None] + torch.arange(w))[:, None, None, :]
            batch = torch.arange(len(indices))[:, None, None, None]
            chans = torch.arange(imgs.shape[1])[None, :, None, None]
            imgs = F.pad(imgs, (s, s, s, s))[batch, chans, rows, cols]
        if any(flips):
            flip = torch.tensor(flips)
            imgs[flip] = imgs[flip].flip(-1)
        return imgs, self.y[idx]


def _as_batch(batch):
    """collate_fn for :meth:`_AugmentedTensors.__getitems__`, which returns the batch already stacked."""
    return batch


class InputAdapter:
    """uint8 batch -> normalised float batch at the model's input size, on the model's device."""

    def __init__(self, meta: dict, size: list[int], device: str | torch.device = "cpu"):
        self.mean = torch.tensor(meta["mean"], device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(meta["std"], device=device).view(1, -1, 1, 1)
        self.size = tuple(size)
        self.device = device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float().div_(255.0)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


def calibration_images(ctx_or_file, img_size, count: int, device: str = "cpu", seed: int = 0,
                       key: str = "calib_images") -> torch.Tensor:
    """The first ``count`` images of a seeded shuffle of the training split, model-ready (``key``: the step
    setting that asked for them, which an error names)."""
    data = PreparedData(ctx_or_file)
    x, _ = data.splits["train"]
    if count > len(x):
        raise ValueError(f"{key} = {count} exceeds the {len(x)} training images of this data set; lower {key}.")
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:count]
    return InputAdapter(data.meta, img_size, device)(x[pick])


def config_digest(cfg: dict, seed: int = 0) -> str:
    """The digest of a data set's configuration (and seed), recorded in its prepared file."""
    return content_digest({"cfg": cfg, "seed": int(seed)})


def split_sizes(cfg: dict, seed: int = 0, prepared: str | Path | None = None) -> dict[str, int] | None:
    """Images per split (train, val, test) of a data set, before any job: from its prepared file if there
    is one made from this configuration (its meta, memory-mapped; another profile's file at the same path
    is not taken), else what its source knows cheaply (params.yaml, or the files a run will read); None where
    it cannot be known cheaply (an unprepared imagefolder)."""
    if prepared is not None and Path(prepared).is_file():
        try:
            meta = torch.load(prepared, map_location="cpu", weights_only=True, mmap=True)["meta"]
            if meta.get("config") == config_digest(cfg, seed):  # made from this configuration, not another's
                return {k: int(n) for k, n in meta["counts"].items()}
        except Exception:  # unreadable: the job that prepares it says why
            pass
    source = get_source(cfg["source"])
    s = source.settings(cfg, f"datasets ({cfg['source']})")
    sizes = source.split_sizes(s, seed)
    if sizes is not None and s.limit:
        sizes = {k: min(n, s.limit) for k, n in sizes.items()}
    return sizes


def data_shape(cfg: dict) -> dict:
    """Classes, channels and image size of a data set without preparing it (architecture benchmarks)."""
    source = get_source(cfg["source"])
    return source.data_shape(source.settings(cfg, f"datasets ({cfg['source']})"))
