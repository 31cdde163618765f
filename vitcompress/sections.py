"""A profile's own sections as frozen dataclasses: ``train``, ``measure``, ``scaling`` and a ``models`` entry.

The same :class:`~vitcompress.settings.Settings` machinery as a method's step keys: each key's type, default,
range and meaning in one place. The configuration check reads every section with ``from_step`` before any job
(so the schema lists only which keys a section has), and the code reads the same dataclass, so a default is
applied once and cannot differ between readers.

Example::

    >>> m = MeasureSettings.from_step({"eval_batch_size": 512, "batch_size": 128, "cpu_threads": 1,
    ...                                "warmup": 5, "repeats": 20}, "profiles.demo.measure")
    >>> m.rounds, m.gpu            # the defaults, applied here and nowhere else
    (1, True)
    >>> TrainSettings.from_step({"epochs": 3, "batch_size": 64, "lr": 1e-4}).label_smoothing
    0.0
    >>> TrainSettings.from_step({"epochs": 3, "batch_size": 64}, "profiles.mine.train")
    Traceback (most recent call last):
    vitcompress.errors.ConfigError: params.yaml: profiles.mine.train needs `lr`: peak learning rate of AdamW's cosine schedule.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from vitcompress.errors import ConfigError
from vitcompress.settings import Settings, setting

AMP = ("auto", "bf16", "fp16", "none")


@dataclass(frozen=True, kw_only=True)
class AugmentSettings(Settings):
    """``train.augment``: the training images' random augmentation."""

    shift: int = setting(0, low=0, help="random translation by up to this many pixels")
    hflip: bool = setting(False, help="random horizontal flip")


@dataclass(frozen=True, kw_only=True)
class TrainSettings(Settings):
    """``train`` (a profile's, laid under a data set's and a step's overrides): how a model is trained or
    fine-tuned. ``augment`` is read as :class:`AugmentSettings` (:meth:`augmentation`; none: no augmentation)."""

    epochs: int = setting(low=0, help="passes over the training split")
    batch_size: int = setting(low=1, help="training images per step")
    lr: float = setting(low=0, low_open=True, help="peak learning rate of AdamW's cosine schedule")
    weight_decay: float = setting(0.0, low=0, help="AdamW's decoupled weight decay (none on biases, norms, "
                                                   "position embeddings, class tokens and pruning gates)")
    warmup_epochs: float = setting(0.0, low=0, help="linear warm-up, in epochs (fractions allowed)")
    label_smoothing: float = setting(0.0, low=0, high=1, high_open=True, help="of the cross-entropy")
    augment: dict | None = setting(None, help="the training images' augmentation: `train.augment`'s keys")
    num_workers: int = setting(0, low=0, help="data-loader worker processes")
    threads: int | None = setting(None, low=1, help="CPU threads of each training/compression job (default: all "
                                                     "the workflow's cores)")
    max_steps: int | None = setting(None, low=1, help="stop each epoch after this many steps (smoke runs)")
    amp: str = setting("auto", choices=AMP, help="mixed precision: auto = bf16 on a CUDA GPU that has it, else "
                                                 "fp16 there, none on CPU; bf16 also runs on CPU")

    def check(self, where: str) -> None:
        if self.augment is not None:  # its own section: unknown keys, types and ranges named
            unknown = sorted(set(self.augment) - set(AugmentSettings.keys()))
            if unknown:
                raise ConfigError(f"params.yaml: unknown key '{where}.augment.{unknown[0]}'. Allowed keys here: "
                                  f"{', '.join(AugmentSettings.keys())}.")
            AugmentSettings.from_step(self.augment, f"{where}.augment")

    def augmentation(self) -> dict | None:
        """``augment`` with its defaults (``{"shift": int, "hflip": bool}``), or None for no augmentation."""
        return None if self.augment is None else AugmentSettings.from_step(self.augment).as_dict()

    def replace(self, **changes) -> "TrainSettings":
        """These settings with some keys changed (e.g. a fine-tune's ``epochs``)."""
        return replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class MeasureSettings(Settings):
    """``measure``: how accuracy is evaluated and speed is timed."""

    eval_batch_size: int = setting(256, low=1, help="the batch of accuracy evaluation (any size gives the same accuracy)")
    batch_size: int = setting(low=1, help="the batch of the study's iterations per second")
    cpu_threads: int = setting(low=1, help="PyTorch threads of a timing job")
    warmup: int = setting(low=0, help="untimed calls before each round")
    repeats: int = setting(low=2, help="timed repeats per round (2 only proves the code runs)")
    rounds: int = setting(1, low=1, help="rounds of repeats; the fastest round's median is reported")
    gpu: bool = setting(True, help="also time on CUDA when available")


@dataclass(frozen=True, kw_only=True)
class ScalingSettings(Settings):
    """``scaling``: `snakemake attention_scaling`, one attention layer exact vs Nystrom over sequence lengths."""

    seq_lens: tuple[int, ...] = setting(help="the sequence lengths to time, each at least 2")
    landmarks: tuple[int, ...] = setting(help="the Nystrom landmark counts, each at least 1")
    embed_dim: int = setting(768, low=1, help="the attention layer's width")
    num_heads: int = setting(12, low=1, help="its heads (embed_dim a multiple of them)")
    pinv_iterations: int = setting(6, low=1, help="Newton-Schulz iterations of the pseudo-inverse")
    warmup: int = setting(1, low=0, help="untimed calls before each length's timing")
    repeats: int = setting(5, low=5, help="timed calls per length and method (their median is reported)")

    def check(self, where: str) -> None:
        for key, values, low in (("seq_lens", self.seq_lens, 2), ("landmarks", self.landmarks, 1)):
            if not values:
                raise ConfigError(f"params.yaml: {where}.{key} is empty; give at least one value.")
            for i, v in enumerate(values):
                if v < low:
                    raise ConfigError(f"params.yaml: {where}.{key}[{i}] = {v} must be at least {low}.")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"params.yaml: {where}.embed_dim = {self.embed_dim} is not a multiple of num_heads = "
                              f"{self.num_heads}; make it one.")


@dataclass(frozen=True, kw_only=True)
class ModelSettings(Settings):
    """An entry of a profile's ``models``: a timm architecture and where its weights come from."""

    timm: str = setting(help="a timm model name (timm.list_models())")
    kwargs: dict | None = setting(None, help="keyword overrides passed to timm.create_model")
    pretrained: bool = setting(False, help="start from timm's pretrained weights (or pretrained_file offline)")
    pretrained_file: str | None = setting(None, help="local weights used when pretrained and offline")


SECTIONS = {"train": TrainSettings, "measure": MeasureSettings, "scaling": ScalingSettings, "model": ModelSettings}
# as a profile names them (docs/configuration.md's table: `vitcompress sections --keys`)
PROFILE_KEYS = {"train": TrainSettings, "train.augment": AugmentSettings, "measure": MeasureSettings,
                "scaling": ScalingSettings, "models.<name>": ModelSettings}
