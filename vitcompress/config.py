"""params.yaml: loading, JSON-schema validation and the resolved view of one profile.

Every error is a :class:`ConfigError` whose message names the offending key (as a dotted path into
params.yaml), the bad value, and what to do, so a typo stops the workflow before any job starts.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jsonschema
import yaml


class ConfigError(ValueError):
    """params.yaml is wrong; the message says where and how to fix it."""


CHAIN_SEP = "+"
LABEL_FIELD = re.compile(r"\{(\w+)\}")  # "ViT-Nystromformer(m={landmarks})": a setting of the row's chain


def chain_settings(steps: dict, chain: list[str]) -> dict:
    """The scalar settings of a chain's steps, in chain order (a later step's win): what labels show."""
    return {k: v for sid in chain for k, v in steps[sid].items()
            if k not in ("method", "model", "train") and isinstance(v, (bool, int, float, str))}


def fill_label(label: str, settings: dict) -> str:
    """A row label with each ``{name}`` replaced by the chain's setting ``name`` (an artifact's resolved
    value, e.g. the landmark count a fraction came to on this data set). Unknown names stay as written."""
    def value(match: re.Match) -> str:
        v = settings.get(match.group(1))
        if v is None:
            return match.group(0)
        return f"{v:g}" if isinstance(v, float) else str(v)

    return LABEL_FIELD.sub(value, label)


def row_labels(row: dict, settings: dict, resolved: dict | None = None) -> dict:
    """A row's Model and Method labels, filled from its chain's settings (``settings``, from params.yaml)
    and what its artifact resolved them to on one data set (``resolved``, which wins)."""
    values = {**settings, **(resolved or {})}
    return {key: fill_label(row[key], values) for key in ("model", "method")}


def _takes_step_epochs(method: str) -> bool:
    """Whether a method fine-tunes for a step-level ``epochs`` (QAT, pruning) instead of ``train.epochs``."""
    from vitcompress.methods import METHODS  # local: methods import torch

    return method in METHODS and "epochs" in METHODS[method].keys


def load_schema() -> dict:
    text = resources.files("vitcompress").joinpath("schemas/params.schema.yaml").read_text()
    return yaml.safe_load(text)


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _schema_message(err: jsonschema.ValidationError) -> str:
    where = _path(err.absolute_path)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(sorted(err.schema.get("properties", {}))) or "none"
        key = f"{where}.{extra[0]}" if err.absolute_path else extra[0]
        return f"params.yaml: unknown key '{key}'. Allowed keys here: {allowed}."
    if err.validator == "required":
        return f"params.yaml: {where} is missing a required key: {err.message}."
    value = err.instance if not isinstance(err.instance, (dict, list)) else None
    shown = f" = {value!r}" if value is not None else ""
    return f"params.yaml: {where}{shown}: {err.message}."


def validate_raw(raw: dict) -> None:
    """Validate the whole params.yaml (all profiles) against the schema, then the cross-references."""
    if not isinstance(raw, dict):
        raise ConfigError("params.yaml: the file must be a mapping of keys to values.")
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # The deepest error is the most specific one (oneOf/anyOf wrap their children).
        err = max(errors, key=lambda e: len(e.absolute_path))
        raise ConfigError(_schema_message(err))
    if raw["profile"] not in raw["profiles"]:
        raise ConfigError(
            f"params.yaml: profile = {raw['profile']!r} is not defined; "
            f"choose one of {', '.join(raw['profiles'])} (e.g. --config profile=demo)."
        )
    for name in raw["profiles"]:
        _check_profile(raw, name)


def _check_profile(raw: dict, name: str) -> None:
    from vitcompress.methods import METHODS  # local: methods import torch

    prof = raw["profiles"][name]
    base = f"profiles.{name}"
    for i, ds in enumerate(prof["datasets"]):
        if ds not in raw["datasets"]:
            raise ConfigError(
                f"params.yaml: {base}.datasets[{i}] = {ds!r} is not a known dataset; "
                f"define it under `datasets` (known: {', '.join(raw['datasets'])})."
            )
    for ds in prof.get("train_overrides", {}):
        if ds not in raw["datasets"]:
            raise ConfigError(
                f"params.yaml: {base}.train_overrides.{ds}: {ds!r} is not a known dataset "
                f"(known: {', '.join(raw['datasets'])})."
            )
    for sid, step in prof["steps"].items():
        for ds in step.get("train_overrides", {}):
            if ds not in raw["datasets"]:
                raise ConfigError(
                    f"params.yaml: {base}.steps.{sid}.train_overrides.{ds}: {ds!r} is not a known dataset "
                    f"(known: {', '.join(raw['datasets'])})."
                )
        method = step["method"]
        if method not in METHODS:
            raise ConfigError(
                f"params.yaml: {base}.steps.{sid}.method = {method!r} is not a known method; "
                f"known methods: {', '.join(sorted(METHODS))}."
            )
        METHODS[method].check_step(step, f"{base}.steps.{sid}", prof)
    seen: set[str] = set()
    for i, row in enumerate(prof["rows"]):
        where = f"{base}.rows[{i}]"
        if row["id"] in seen:
            raise ConfigError(f"params.yaml: {where}.id = {row['id']!r} is used by two rows; row ids must be unique.")
        seen.add(row["id"])
        for j, sid in enumerate(row["chain"]):
            if sid not in prof["steps"]:
                raise ConfigError(
                    f"params.yaml: {where}.chain[{j}] = {sid!r} is not a step of profile {name!r}; "
                    f"define it under {base}.steps (known: {', '.join(prof['steps'])})."
                )
            method = METHODS[prof["steps"][sid]["method"]]
            if j == 0 and not method.is_root:
                raise ConfigError(
                    f"params.yaml: {where}.chain[0] = {sid!r} uses method {method.name!r}, which needs an input "
                    f"model; start the chain with a step that makes one (e.g. a `train` step)."
                )
            if j > 0 and method.is_root:
                raise ConfigError(
                    f"params.yaml: {where}.chain[{j}] = {sid!r} uses method {method.name!r}, which builds a model "
                    f"from scratch; it can only be the first step of a chain."
                )
        settings = chain_settings(prof["steps"], row["chain"])
        for key in ("model", "method"):
            for field in LABEL_FIELD.findall(row[key]):
                if field not in settings:
                    raise ConfigError(
                        f"params.yaml: {where}.{key} = {row[key]!r}: {{{field}}} is not a setting of a step of "
                        f"its chain; use one of {', '.join(sorted(settings)) or '(none: the chain has no settings)'}."
                    )


@dataclass(frozen=True)
class Profile:
    """One resolved profile: what the workflow and the library read."""

    name: str
    raw: dict
    device: str
    seed: int

    @property
    def datasets(self) -> list[str]:
        return list(self.raw["datasets"])

    @property
    def rows(self) -> list[dict]:
        return list(self.raw["rows"])

    @property
    def steps(self) -> dict:
        return self.raw["steps"]

    @property
    def measure(self) -> dict:
        return self.raw["measure"]

    def dataset_cfg(self, name: str) -> dict:
        return self.raw["_datasets"][name]

    def row(self, row_id: str) -> dict:
        for row in self.raw["rows"]:
            if row["id"] == row_id:
                return row
        raise KeyError(row_id)

    def row_settings(self, row_id: str) -> dict:
        return chain_settings(self.raw["steps"], self.row(row_id)["chain"])

    def chain_id(self, row_id: str) -> str:
        return CHAIN_SEP.join(self.row(row_id)["chain"])

    def chains(self) -> list[str]:
        """Every chain and every prefix of a chain that some row needs, in dependency order."""
        out: list[str] = []
        for row in self.raw["rows"]:
            for k in range(1, len(row["chain"]) + 1):
                cid = CHAIN_SEP.join(row["chain"][:k])
                if cid not in out:
                    out.append(cid)
        return out

    def step_cfg(self, step_id: str, dataset: str | None = None) -> dict:
        """A step's settings, with `train` = profile train < per-dataset override < the step's own
        < the step's own per-dataset override. Methods that fine-tune for a step-level ``epochs``
        (QAT, pruning) take it from the step's own per-dataset override too, when that sets one."""
        step = copy.deepcopy(self.raw["steps"][step_id])
        train = copy.deepcopy(self.raw["train"])
        if dataset is not None:
            train.update(self.raw.get("train_overrides", {}).get(dataset, {}))
        train.update(step.get("train", {}))
        own_overrides = step.pop("train_overrides", {})
        if dataset is not None:
            train.update(own_overrides.get(dataset, {}))
            if "epochs" in own_overrides.get(dataset, {}) and _takes_step_epochs(step["method"]):
                step["epochs"] = own_overrides[dataset]["epochs"]
        step["train"] = train
        if "model" in step:
            step["model_cfg"] = copy.deepcopy(self.raw["models"][step["model"]])
        step["image_size"] = self.raw.get("image_size", "native")
        step["image_scale"] = self.raw.get("image_scale", 1)
        step["id"] = step_id
        return step


def load_params(path: str | Path = "params.yaml", overrides: dict | None = None) -> Profile:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {path} not found; run from the repository root or pass its path.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"params.yaml is not valid YAML: {exc}") from None
    return resolve(raw, overrides)


def resolve(raw: dict, overrides: dict | None = None) -> Profile:
    raw = copy.deepcopy(raw)
    for key, value in (overrides or {}).items():
        raw[key] = value
    validate_raw(raw)
    name = raw["profile"]
    prof = copy.deepcopy(raw["profiles"][name])
    prof["_datasets"] = {k: raw["datasets"][k] for k in prof["datasets"]}
    return Profile(name=name, raw=prof, device=raw.get("device", "auto"), seed=raw.get("seed", 0))


def split_chain(chain: str) -> list[str]:
    return chain.split(CHAIN_SEP)
