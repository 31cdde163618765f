"""params.yaml: loading, JSON-schema validation and the resolved view of one profile.

Every error is a :class:`ConfigError` whose message names the offending key (as a dotted path into
params.yaml), the bad value, and what to do, so a typo stops the workflow before any job starts.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from vitcompress.errors import ConfigError, NotInProfile  # noqa: F401  (re-exported)
from vitcompress.io import load_yaml
from vitcompress.sections import SECTIONS, MeasureSettings, ModelSettings, ScalingSettings, TrainSettings

CHAIN_SEP = "+"
LABEL_FIELD = re.compile(r"\{(\w+)\}")  # "ViT-Nystromformer(m={landmarks})": a setting of the row's chain


def chain_settings(steps: dict, chain: list[str]) -> dict:
    """The scalar settings of a chain's steps as their methods read them (defaults included), in chain
    order (a later step's win): what labels show."""
    from vitcompress.methods import METHODS

    out: dict = {}
    for sid in chain:
        step = steps[sid]
        method = METHODS.get(step.get("method"))
        values = method.settings(step).as_dict() if method is not None else step
        out.update({k: v for k, v in values.items()
                    if k not in ("method", "model", "train") and isinstance(v, (bool, int, float, str))})
    return out


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
    """The params.yaml schema, its data-set keys from the registered sources (vitcompress.data): the source's
    name among theirs, and each key any source takes; a key's type and range are its source's Settings'."""
    from vitcompress.data import SOURCES

    schema = load_yaml(resources.files("vitcompress").joinpath("schemas/params.schema.yaml").read_text())
    keys = {k: {"description": f"a key of source(s) {', '.join(n for n, c in sorted(SOURCES.items()) if k in c.Settings.keys())}"}
            for cls in SOURCES.values() for k in cls.Settings.keys()}
    properties = {"source": {"enum": sorted(SOURCES)}, **keys}
    schema["$defs"]["dataset"]["properties"] = properties
    schema["$defs"]["dataset_override"]["properties"] = {k: v for k, v in properties.items() if k != "source"}
    for name, cls in SECTIONS.items():  # key names only: a key's type and range are the section dataclass's
        schema["$defs"][name]["properties"] = {k: {} for k in cls.keys()}
    return schema


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


def deep_merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` laid on top: mappings merge key by key, anything else (lists, values) is
    replaced, and a key set to null is removed (an extending profile drops what it does not want)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def expand_profiles(raw: dict) -> dict:
    """Every profile with ``extends: <other>`` becomes the other profile (itself expanded) with this
    profile's keys merged over it (:func:`deep_merge`), so a variant ("paper, 1 epoch") is the few keys
    that differ and cannot drift from its base. The result has no ``extends`` left."""
    profiles = raw.get("profiles")
    if not isinstance(profiles, dict):
        return raw
    done: dict = {}

    def expand(name: str, seen: tuple) -> dict:
        if name in done:
            return done[name]
        prof = profiles[name]
        parent = prof.get("extends") if isinstance(prof, dict) else None
        if parent is None:
            done[name] = prof
            return prof
        where = f"params.yaml: profiles.{name}.extends = {parent!r}"
        if not isinstance(parent, str) or parent not in profiles:
            raise ConfigError(f"{where} is not a profile; extend one of {', '.join(p for p in profiles if p != name)}.")
        if parent in seen:
            raise ConfigError(f"{where} makes a cycle ({' -> '.join((*seen, parent))}); a profile cannot extend itself.")
        own = {k: v for k, v in prof.items() if k != "extends"}
        done[name] = deep_merge(expand(parent, (*seen, parent)), own)
        return done[name]

    out = dict(raw)
    out["profiles"] = {name: expand(name, (name,)) for name in profiles}
    return out


def validate_raw(raw: dict) -> dict:
    """Validate the whole params.yaml (all profiles, ``extends`` expanded) against the schema, then each section's
    keys (types, ranges) and the cross-references; returns it with its profiles expanded."""
    if not isinstance(raw, dict):
        raise ConfigError("params.yaml: the file must be a mapping of keys to values.")
    raw = expand_profiles(raw)
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
    for name, ds in raw["datasets"].items():
        _check_dataset(name, ds)
    for name in raw["profiles"]:
        _check_profile(raw, name)
    return raw


def _check_dataset(name: str, ds: dict) -> None:
    """A data set's keys as its source reads them (vitcompress.data: unknown keys, types, ranges)."""
    from vitcompress.data import get_source

    get_source(ds["source"]).settings(ds, f"datasets.{name}")


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
    for ds in prof.get("dataset_overrides", {}):
        if ds not in raw["datasets"]:
            raise ConfigError(f"params.yaml: {base}.dataset_overrides.{ds}: {ds!r} is not a known dataset "
                              f"(known: {', '.join(raw['datasets'])}).")
        _check_dataset(f"{ds} (as {base}.dataset_overrides makes it)",
                       deep_merge(raw["datasets"][ds], prof["dataset_overrides"][ds]))
    for model_id, model in prof["models"].items():
        ModelSettings.from_step(model, f"{base}.models.{model_id}")
    MeasureSettings.from_step(prof["measure"], f"{base}.measure")
    if "scaling" in prof:
        ScalingSettings.from_step(prof["scaling"], f"{base}.scaling")
    TrainSettings.from_step(prof["train"], f"{base}.train")
    scale = prof.get("image_scale", 1)
    for ds in scale if isinstance(scale, dict) else []:
        if ds not in raw["datasets"]:
            raise ConfigError(
                f"params.yaml: {base}.image_scale.{ds}: {ds!r} is not a known dataset "
                f"(known: {', '.join(raw['datasets'])}).")
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
        for ds in prof["datasets"]:  # the train settings a job of this step reads on each data set
            try:
                TrainSettings.from_step(merged_train(prof, step, ds), f"{base}.steps.{sid}.train")
            except ConfigError as exc:
                raise ConfigError(f"{exc} (Step {sid!r} on {ds} trains with the profile's train, its train_overrides."
                                  f"{ds}, the step's train and its train_overrides.{ds}, merged in that order.)") from None
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
            if j > 0 and not method.is_root:
                _check_link(where, j, sid, method, [METHODS[prof["steps"][s]["method"]] for s in row["chain"][:j]],
                            row["chain"][:j])
        settings = chain_settings(prof["steps"], row["chain"])
        said = f"{row['id']} {row['model']} {row['method']}"
        if settings.get("precision") == "bf16" and re.search(r"fp32|\bf32\b|float32", said, re.I):
            raise ConfigError(
                f"params.yaml: {where} is labelled fp32 ({said!r}) but its chain runs OpenVINO at precision bf16; "
                f"rename the row (e.g. ov_bf16) or set the step's precision to f32."
            )
        # a label may name any key of its chain's methods: one left unset (ToMe's r under `keep`) is resolved
        # by the step and shown as the artifact recorded it
        known = set(settings) | {k for sid in row["chain"] for k in METHODS[prof["steps"][sid]["method"]].keys}
        for key in ("model", "method"):
            for label_key in LABEL_FIELD.findall(row[key]):
                if label_key not in known:
                    raise ConfigError(
                        f"params.yaml: {where}.{key} = {row[key]!r}: {{{label_key}}} is not a setting of a step of "
                        f"its chain; use one of {', '.join(sorted(known)) or '(none: the chain has no settings)'}."
                    )


def _check_link(where: str, j: int, sid: str, method, before: list, before_ids: list) -> None:
    """Step ``sid`` (``method``) can take what the chain's earlier steps (``before``, their methods, with
    step ids ``before_ids``) make: the runtime, and the kind of model (float, QAT, int8, simulated)."""
    from vitcompress.runtimes import get_runtime

    made, wants = get_runtime(before[-1].runtime), get_runtime(method.input_runtime)
    converts = method.runtime != method.input_runtime
    conversion = next((i for i, m in enumerate(before) if m.runtime != m.input_runtime), None)
    if converts and conversion is not None:
        conv_id, conv = before_ids[conversion], before[conversion]
        if conv.runtime == method.runtime:
            fix = "a chain converts once: remove one of them"
        else:
            fix = (f"a chain converts once: start {sid!r} from the PyTorch model instead, e.g. "
                   f"[{', '.join(before_ids[:conversion] + [sid])}]")
        raise ConfigError(
            f"params.yaml: {where}.chain[{j}] = {sid!r} converts to {get_runtime(method.runtime).label}, but step "
            f"{conv_id!r} ({conv.name}) earlier in the chain already converted to {get_runtime(conv.runtime).label} "
            f"(its steps make {get_runtime(conv.runtime).model_noun}); {fix}."
        )
    if method.input_runtime != made.name:
        if method.input_runtime == "pytorch":
            fix = (f"move it before the chain's `{before_ids[conversion]}` step: {made.label} models are not changed "
                   f"by PyTorch methods")
        elif made.name == "pytorch":
            fix = f"put an `{wants.converter}` step (method {wants.converter}) before it"
        else:
            fix = (f"convert the PyTorch model with an `{wants.converter}` step (method {wants.converter}) in place of "
                   f"step {before_ids[conversion]!r}")
        raise ConfigError(
            f"params.yaml: {where}.chain[{j}] = {sid!r} uses method {method.name!r}, which needs "
            f"{wants.model_noun}, but the step before it makes {made.model_noun}; {fix}."
        )
    if converts:  # every earlier step must leave a PyTorch model the converter can trace
        blocking = [m.name for m in before if not m.exportable]
        if blocking:
            raise ConfigError(
                f"params.yaml: {where}.chain[{j}] = {sid!r} converts to {get_runtime(method.runtime).label}, but "
                f"method {blocking[0]!r} earlier in the chain makes a model the converter cannot trace (torch.ao "
                f"int8 layers or simulated quantization); convert the float model and quantize in the runtime "
                f"(ort_int8_dynamic, ort_int8_static, ov_int8) instead."
            )
    if before[-1].makes not in method.accepts:
        from vitcompress.methods.base import KIND_NAMES

        wants = " or ".join(KIND_NAMES[k] for k in method.accepts)
        raise ConfigError(
            f"params.yaml: {where}.chain[{j}] = {sid!r} uses method {method.name!r}, which needs {wants}, but the "
            f"step before it, {before_ids[-1]!r} ({before[-1].name}), makes {KIND_NAMES[before[-1].makes]}; "
            f"chain {sid!r} on the model before {before_ids[-1]!r} instead (e.g. [{', '.join(before_ids[:-1] + [sid])}])."
        )


def merged_train(prof: dict, step: dict, dataset: str | None) -> dict:
    """A step's ``train`` mapping on ``dataset``: the profile's ``train`` < its ``train_overrides`` for the data set
    < the step's own ``train`` < the step's own ``train_overrides`` for the data set (None: no data set's)."""
    train = copy.deepcopy(prof["train"])
    if dataset is not None:
        train.update((prof.get("train_overrides") or {}).get(dataset, {}))
    train.update(step.get("train") or {})
    if dataset is not None:
        train.update((step.get("train_overrides") or {}).get(dataset, {}))
    return train


@dataclass(frozen=True)
class Profile:
    """One resolved profile: what the workflow and the library read. ``raw`` is the profile's mapping (its
    ``extends`` expanded); its sections are read as typed settings (:attr:`train`, :attr:`measure`, :attr:`scaling`,
    :meth:`model`), the data sets as their definitions with this profile's overrides (:meth:`dataset_cfg`)."""

    name: str
    raw: dict
    device: str
    seed: int
    seed_count: int = 1
    dataset_cfgs: dict = field(default_factory=dict)  # data set -> its definition, this profile's overrides laid on

    @property
    def seeds(self) -> list[int]:
        """The training seeds every chain runs under: ``seed``, ``seed + 1``, ... (``seeds`` of them); the first
        one's artifacts are the row's model (timed, sized, deployed), the others add their accuracy."""
        return [self.seed + k for k in range(self.seed_count)]

    @property
    def datasets(self) -> list[str]:
        return list(self.raw["datasets"])

    @property
    def rows(self) -> list[dict]:
        return list(self.raw["rows"])

    @property
    def steps(self) -> dict:
        return self.raw["steps"]

    @cached_property
    def measure(self) -> MeasureSettings:
        return MeasureSettings.from_step(self.raw["measure"], f"profiles.{self.name}.measure")

    @cached_property
    def train(self) -> TrainSettings:
        """The profile's own ``train`` (a step's, with its overrides: :meth:`step_cfg`)."""
        return TrainSettings.from_step(self.raw["train"], f"profiles.{self.name}.train")

    @cached_property
    def scaling(self) -> ScalingSettings | None:
        """`snakemake attention_scaling`'s settings; None when the profile has no ``scaling``."""
        cfg = self.raw.get("scaling")
        return None if cfg is None else ScalingSettings.from_step(cfg, f"profiles.{self.name}.scaling")

    def model(self, model_id: str) -> ModelSettings:
        return ModelSettings.from_step(self.raw["models"][model_id], f"profiles.{self.name}.models.{model_id}")

    def models(self) -> dict[str, ModelSettings]:
        return {m: self.model(m) for m in self.raw["models"]}

    def dataset_cfg(self, name: str) -> dict:
        if name not in self.dataset_cfgs:
            raise NotInProfile(
                f"data set {name!r} is not in profile {self.name!r}, whose data sets are {', '.join(self.datasets)}; "
                f"ask for one of those, or run another profile (--config profile=...).")
        return self.dataset_cfgs[name]

    def image_scale(self, dataset: str | None = None) -> int:
        """The upsampling factor of ``dataset`` (default: the profile's first data set)."""
        scale = self.raw.get("image_scale", 1)
        if isinstance(scale, dict):
            return int(scale.get(dataset or self.datasets[0], 1))
        return int(scale)

    def row(self, row_id: str) -> dict:
        for row in self.raw["rows"]:
            if row["id"] == row_id:
                return row
        raise NotInProfile(
            f"row {row_id!r} is not in profile {self.name!r}, whose rows are "
            f"{', '.join(r['id'] for r in self.raw['rows'])}; ask for one of those, or add it under "
            f"profiles.{self.name}.rows.")

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
        if step_id not in self.raw["steps"]:
            raise NotInProfile(
                f"step {step_id!r} is not in profile {self.name!r}, whose steps are {', '.join(self.raw['steps'])}; "
                f"a chain's steps are defined under profiles.{self.name}.steps.")
        if dataset is not None:
            self.dataset_cfg(dataset)
        step = copy.deepcopy(self.raw["steps"][step_id])
        train = merged_train(self.raw, step, dataset)
        own_overrides = step.pop("train_overrides", None) or {}
        if dataset is not None and "epochs" in own_overrides.get(dataset, {}) and _takes_step_epochs(step["method"]):
            step["epochs"] = own_overrides[dataset]["epochs"]
        # every key with its value, defaults applied (the record and the job read the same): TrainSettings.of()
        step["train"] = TrainSettings.from_step(train, f"profiles.{self.name}.steps.{step_id}.train").as_dict()
        if "model" in step:
            step["model_cfg"] = copy.deepcopy(self.raw["models"][step["model"]])
        step["image_size"] = self.raw.get("image_size", "native")
        step["image_scale"] = self.image_scale(dataset)
        step["id"] = step_id
        return step


def read_params(path: str | Path = "params.yaml") -> dict:
    """params.yaml as a mapping. A syntax error names the file, line and column; an empty file says so."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {path} not found; run from the repository root or pass its path.")
    try:
        raw = load_yaml(path.read_text())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        what = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ConfigError(f"{path}: YAML syntax error at {where}: {what}. Fix the file there "
                          f"(a quote, bracket or indentation).") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}).") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc}).") from None
    if raw is None:
        raise ConfigError(f"{path} is empty; it must define `profile`, `datasets` and `profiles` "
                          f"(restore it with `git checkout {path}`).")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the file must be a mapping of keys to values, not a {type(raw).__name__}.")
    return raw


def load_params(path: str | Path = "params.yaml", overrides: dict | None = None) -> Profile:
    """params.yaml (and ``overrides``, as ``--config`` gives them) read, checked and resolved: the one way in."""
    return resolve(read_params(path), overrides)


def resolve(raw: dict, overrides: dict | None = None) -> Profile:
    """The selected profile of a params mapping (``overrides`` laid on top), checked as a whole first."""
    raw = copy.deepcopy(raw)
    for key, value in (overrides or {}).items():
        raw[key] = value
    raw = validate_raw(raw)
    name = raw["profile"]
    prof = copy.deepcopy(raw["profiles"][name])
    datasets = {k: deep_merge(raw["datasets"][k], (prof.get("dataset_overrides") or {}).get(k, {}))
                for k in prof["datasets"]}
    return Profile(name=name, raw=prof, device=raw.get("device", "auto"), seed=raw.get("seed", 0),
                   seed_count=int(raw.get("seeds") or prof.get("seeds") or 1), dataset_cfgs=datasets)


def split_chain(chain: str) -> list[str]:
    return chain.split(CHAIN_SEP)


# `snakemake training_check`: the first row's training again with one thing changed. Twice the epochs says
# whether it had converged; other threads or instruction sets say how far float kernels alone move accuracy.
TRAINING_VARIANTS = {
    "epochs_x2": {"label": "twice the epochs", "epochs_factor": 2},
    "threads_2": {"label": "2 PyTorch threads", "threads": 2},
    "isa_avx2": {"label": "AVX2 kernels only (ATEN_CPU_CAPABILITY=avx2)", "env": {"ATEN_CPU_CAPABILITY": "avx2"}},
}


def variant_step(step: dict, variant: str) -> dict:
    """The resolved settings of ``step`` (a root step) under ``variant``."""
    spec = TRAINING_VARIANTS[variant]
    out = copy.deepcopy(step)
    out["train"]["epochs"] = int(out["train"]["epochs"]) * int(spec.get("epochs_factor", 1))
    return out  # a variant's threads and environment are the rule's (train_variant), not the step's
