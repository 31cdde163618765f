"""The one interface every data source implements, and the registry ``source:`` in params.yaml names.

A source is one module with one :class:`DataSource` subclass: its keys as a frozen :class:`Settings`
dataclass (type, default, range: read by the configuration check before any job and by the source itself,
so the two cannot disagree), how it loads its splits, and what it knows before any job (split sizes, image
shape, the files a run must find, the hand-made files a smoke run writes). A new source is one module:

    @register_source
    class MyImages(DataSource):
        name = "my_images"
        Settings = MyImagesSettings

        def load(self, s, seed, groups=None):
            ...  # {"train": (uint8 N x C x H x W, int64 labels), "val": ..., "test": ...}, class names
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from vitcompress.errors import ConfigError
from vitcompress.settings import Settings, setting

SPLITS = ("train", "val", "test")
COMMON_KEYS = frozenset({"source"})  # every data set carries it; the rest are its source's Settings


@dataclass(frozen=True, kw_only=True)
class SourceSettings(Settings):
    """Keys every source takes."""

    limit: int | None = setting(None, low=1, help="keep at most this many images per split (quick runs)")


class DataSource:
    """Base class: subclass, set ``name`` and ``Settings``, implement :meth:`load`, and :func:`register_source`."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type[SourceSettings]] = SourceSettings
    # (classes, channels, [H, W]) when fixed by the source (no file needs reading), else None
    shape: ClassVar[tuple[int, int, list[int]] | None] = None

    @classmethod
    def settings(cls, cfg: dict, where: str = "datasets") -> SourceSettings:
        """A data set's definition as this source's frozen dataclass: unknown keys, then types and ranges."""
        for key in cfg:
            if key not in COMMON_KEYS and key not in cls.Settings.keys():
                allowed = ", ".join(sorted(COMMON_KEYS | set(cls.Settings.keys())))
                raise ConfigError(f"params.yaml: unknown key '{where}.{key}' for source {cls.name!r}; allowed: {allowed}.")
        return cls.Settings.from_step({k: v for k, v in cfg.items() if k not in COMMON_KEYS}, where)

    def load(self, s, seed: int, groups: dict | None = None) -> tuple[dict, list[str]]:
        """Every split as (uint8 images N x C x H x W, int64 labels), and the class names. ``groups``, if
        given, receives per split the ids of the parts each image shares with others (digit pairs' digits)."""
        raise NotImplementedError

    def split_sizes(self, s, seed: int) -> dict[str, int] | None:
        """Images per split before any job, where cheap to know; None otherwise."""
        return None

    def data_shape(self, s) -> dict:
        """Classes, channels and image size without preparing the data (architecture benchmarks)."""
        classes, channels, size = self.shape or (2, 3, [32, 32])
        return {"num_classes": classes, "channels": channels, "size": list(size)}

    def check_files(self, s, where: str) -> None:
        """Before any job: raise ConfigError naming what a run will not find and how to provide it."""

    def smoke_files(self, s) -> list[Path]:
        """Hand-made files standing in for what the run would read (`vitcompress smoke-files`); none by default."""
        return []


SOURCES: dict[str, type[DataSource]] = {}


def register_source(cls: type[DataSource]) -> type[DataSource]:
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no name")
    SOURCES[cls.name] = cls
    return cls


def get_source(name: str) -> DataSource:
    try:
        return SOURCES[name]()
    except KeyError:
        raise ConfigError(f"params.yaml: unknown data source {name!r}; known: {', '.join(sorted(SOURCES))}.") from None


def split_indices(labels: np.ndarray, fractions, seed: int) -> dict[str, np.ndarray]:
    """A seeded, stratified train/val/test split by ``fractions`` (normalised)."""
    from sklearn.model_selection import train_test_split

    train_f, val_f, test_f = fractions
    total = train_f + val_f + test_f
    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=test_f / total, stratify=labels, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_f / (train_f + val_f), stratify=labels[rest], random_state=seed + 1
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


@dataclass(frozen=True, kw_only=True)
class SplitSettings(SourceSettings):
    """A source that splits one pool of images: its train/val/test fractions."""

    split: tuple[float, float, float] = setting((0.7, 0.15, 0.15), help="train/val/test fractions")

    def check(self, where):
        if not all(0 < f < 1 for f in self.split):
            raise ConfigError(f"params.yaml: {where}.split = {list(self.split)}: each fraction must lie between 0 "
                              f"and 1.")
        if abs(sum(self.split) - 1.0) > 1e-6:
            raise ConfigError(
                f"params.yaml: {where}.split = {list(self.split)}: the train/val/test fractions sum to "
                f"{sum(self.split):g}, not 1; give fractions that add up to 1 (e.g. [0.7, 0.15, 0.15]).")
