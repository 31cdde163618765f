"""Checks that need more than the schema, run before any job: every model of every row's chain is
built for every data set of the profile, at its input size and class count, on PyTorch's meta device
(shapes only: no weights are allocated, no data is read), and each method's preconditions are checked
on it; the files a run must find (data when it will not download, pretrained weights) are looked for.

A failure is one :class:`ConfigError` naming the key, the value and the fix, so a typo in the last row's
model stops the workflow before the first row trains, not hours later. The model checks import timm
(~2 s), so a passing result is remembered per (profile, library and timm version) in ``cache_dir``:
a no-op re-run stays fast. File checks always run.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from vitcompress.config import CHAIN_SEP, Profile
from vitcompress.data import data_shape, get_source
from vitcompress.errors import ConfigError

SOURCE = Path(__file__).resolve().parent


def check_files(profile: Profile) -> None:
    """Files a run must find: data roots when they will not be downloaded, and pretrained weights."""
    for ds in profile.datasets:
        cfg = profile.dataset_cfg(ds)
        source = get_source(cfg["source"])
        source.check_files(source.settings(cfg, f"datasets.{ds}"), f"datasets.{ds}")
    for name, model in profile.models().items():
        if model.pretrained and model.pretrained_file:
            path = Path(model.pretrained_file)
            if not path.is_file():
                raise ConfigError(f"params.yaml: profiles.{profile.name}.models.{name}.pretrained_file = "
                                  f"{str(path)!r} does not exist; point it at a weights file for "
                                  f"{model.timm} (torch.save'd state dict or .safetensors), or set "
                                  f"`pretrained_file: null` to download timm's weights.")


def check_counts(profile: Profile, prepared: str = "data/prepared/{dataset}.pt") -> None:
    """Every step setting that counts images of a split (a calibration set) against the data set's size,
    known before the first job (:func:`vitcompress.data.split_sizes`): the message names the key, the value,
    the size and the fix, instead of the job failing after hours of earlier jobs."""
    from vitcompress.data import split_sizes
    from vitcompress.methods import get_method

    used = {sid for row in profile.rows for sid in row["chain"]}
    for ds in profile.datasets:
        sizes = split_sizes(profile.dataset_cfg(ds), profile.seed, prepared.format(dataset=ds))
        if not sizes:
            continue
        for sid in sorted(used):
            step = profile.step_cfg(sid, ds)
            for key, (value, split) in get_method(step["method"]).settings(step).counted().items():
                if value > sizes[split]:
                    images = {"train": "training", "val": "validation"}.get(split, split)
                    raise ConfigError(
                        f"params.yaml: profiles.{profile.name}.steps.{sid}.{key} = {value} exceeds the {sizes[split]} "
                        f"{images} images of data set {ds}; lower {key} to at most {sizes[split]}, or give {ds} "
                        f"more images.")


def _config_digest(profile: Profile) -> str:
    """What the model checks depend on: the profile, the library's code and timm's version."""
    h = hashlib.sha256(json.dumps([profile.raw, profile.dataset_cfgs], sort_keys=True, default=str).encode())
    for model in profile.models().values():  # a weights file replaced in place is checked again
        weights = Path(model.pretrained_file or "")
        if model.pretrained and weights.is_file():
            h.update(f"{weights.resolve()}:{weights.stat().st_size}:{weights.stat().st_mtime_ns}".encode())
    for f in sorted(SOURCE.rglob("*.py")):
        h.update(f.read_bytes())
    try:
        h.update(version("timm").encode())
    except PackageNotFoundError:
        pass
    return h.hexdigest()[:20]


def _model_error(exc: Exception, where: str, model_cfg: dict, ds: str, arch: dict) -> ConfigError:
    import timm

    name, kw = model_cfg["timm"], arch["kwargs"]
    shape = f"data set {ds}: input {'x'.join(map(str, kw['img_size']))}, {kw['num_classes']} classes"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if name not in timm.list_models():
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else " See timm.list_models('*vit*')."
        return ConfigError(f"{where}.timm = {name!r} is not a timm model.{hint}")
    if isinstance(exc, TypeError) and "keyword" in text:
        bad = text.split("'")[1] if "'" in text else text
        return ConfigError(f"{where}.kwargs.{bad} = {kw.get(bad)!r}: timm's {name} takes no keyword {bad!r} "
                           f"({text}); remove it or use one of the model's constructor arguments.")
    if "divisible" in text or "num_heads" in text:
        return ConfigError(f"{where}.kwargs: embed_dim = {kw.get('embed_dim', 'default')} is not divisible by "
                           f"num_heads = {kw.get('num_heads', 'default')} ({text}); choose num_heads that "
                           f"divides embed_dim.")
    if "patch_size" in text:
        return ConfigError(f"{where}.kwargs.patch_size = {kw.get('patch_size')!r} ({shape}): {text}")
    return ConfigError(f"{where}: timm.create_model({name!r}, ...) fails for {shape}: "
                       f"{type(exc).__name__}: {text}. Fix the model's kwargs.")


def check_models(profile: Profile) -> None:
    """Build every root model of every row for every data set on the meta device and check each
    later step of the row's chain against it."""
    import torch

    from vitcompress.errors import PretrainedUnavailable
    from vitcompress.methods import get_method
    from vitcompress.models import arch_for, create, load_pretrained_file

    base = f"params.yaml: profiles.{profile.name}"
    for ds in profile.datasets:
        meta = data_shape(profile.dataset_cfg(ds))
        built: dict[str, object] = {}

        def build_root(root_id):
            step = profile.step_cfg(root_id, ds)
            where = f"{base}.models.{step['model']}"
            arch = arch_for(step["model_cfg"], meta, step["image_size"], step["image_scale"])
            try:
                with torch.device("meta"):
                    model = create(arch)
                    model.eval()(torch.empty(1, arch["kwargs"]["in_chans"], *arch["kwargs"]["img_size"]))
            except Exception as exc:  # noqa: BLE001 (any failure to build is the model's settings)
                raise _model_error(exc, where, step["model_cfg"], ds, arch) from None
            weights = profile.model(step["model"])
            if weights.pretrained and weights.pretrained_file:
                try:  # the file's tensor names and shapes against the model's (memory-mapped: cheap)
                    load_pretrained_file(model, weights.timm, weights.pretrained_file)
                except PretrainedUnavailable as exc:
                    raise ConfigError(f"{where}.pretrained_file (data set {ds}): {exc}") from None
            method = get_method(step["method"])
            try:
                method.check_model(model, step)
            except ValueError as exc:
                raise ConfigError(f"{base}.steps.{root_id} (data set {ds}): {exc}") from None
            built[root_id] = model  # before its inputs: a (mistaken) cycle of teachers ends here
            inputs = {}
            for name, chain in method.step_inputs(step, profile).items():
                other = chain.split(CHAIN_SEP)[0]
                inputs[name] = built[other] if other in built else build_root(other)
            try:
                method.check_inputs(model, step, inputs)
            except ValueError as exc:
                raise ConfigError(f"{base}.steps.{root_id} (data set {ds}): {exc}") from None
            return model

        for row in profile.rows:
            root_id = row["chain"][0]
            if root_id not in built:
                build_root(root_id)
            for sid in row["chain"][1:]:
                step = profile.step_cfg(sid, ds)
                try:
                    get_method(step["method"]).check_model(built[root_id], step)
                except ValueError as exc:
                    chain = CHAIN_SEP.join(row["chain"])
                    raise ConfigError(f"{base}.steps.{sid} (row {row['id']}, chain {chain}, data set {ds}): "
                                      f"{exc}") from None


def preflight(profile: Profile, cache_dir: str | Path | None = None) -> bool:
    """Every check; ``cache_dir``: remember a passing model check there. Returns whether models were built."""
    check_files(profile)
    stamp = Path(cache_dir) / f"preflight-{profile.name}-{_config_digest(profile)}" if cache_dir else None
    if stamp is not None and stamp.exists():
        return False
    check_counts(profile)  # may read CIFAR's files: remembered with the model checks
    check_models(profile)
    if stamp is not None:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()
    return True
