"""The one interface every step of a chain implements, and each method's settings.

A *method* turns its input (nothing, for a root method such as ``train``; the artifact of the chain's
previous step otherwise) into a new :class:`~vitcompress.artifacts.Artifact`. Its step keys are one
frozen :class:`Settings` dataclass (type, default and range of each key), read by the configuration
check before any job and by :meth:`Method.run`, so the two cannot disagree. Methods that change a
model's structure also re-apply that change to a freshly built architecture (:meth:`Method.restructure`),
so an artifact reloads from tensors alone (:func:`build_model`), never from pickled code.

The hooks, all in :class:`Method`:

========================  =====================================================================
``Settings``              the step keys (a :class:`Settings` subclass); ``keys`` lists them
``check_step``            config time: the step's settings (and what they ask of the profile)
``check_model``           before any job: what the method asks of its chain's root model
``step_inputs``           other chains a step needs (a distillation teacher); ``check_inputs``
``run``                   the job: the parent artifact (``ctx.parent``) to this step's artifact
``restructure``           re-apply the recorded structural change (``spec``) to a fresh model
``untrained``             the change on random weights, no data (architecture benchmarks)
``untrained_deploy``      the same for steps of another runtime, from the parent's saved file
========================  =====================================================================

Two kinds of step of another runtime share their shape: a :class:`Conversion` (PyTorch into a runtime,
checked against PyTorch) and a :class:`RuntimeQuantizer` (a runtime's int8 quantizer, its deployed model
checked against the quantization's own float math).

The runner calls :meth:`Method.execute`: the parent's kind (``makes``/``accepts``) checked once, then
:meth:`Method.run`.
"""
from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch.nn as nn

from vitcompress.errors import ArtifactError, ConfigError
from vitcompress.sections import TrainSettings
from vitcompress.settings import NoSettings, Settings, setting  # noqa: F401  (re-exported)

log = logging.getLogger("vitcompress")

COMMON_KEYS = frozenset({"method", "model", "train", "train_overrides"})  # every step may carry these


@dataclass
class StepContext:
    """Everything a method may use while it runs one step on one dataset."""

    step: dict                      # the step's resolved settings (Profile.step_cfg)
    dataset: str
    data_file: Path                 # the prepared data set (vitcompress.data.prepare output)
    device: str                     # "cpu" or "cuda"
    seed: int = 0
    threads: int = 1
    parent: Any = None              # the previous step's Artifact, or None for a root step
    extra: dict = field(default_factory=dict)  # other artifacts the step declared (e.g. a teacher)


class Untrained(NamedTuple):
    """What :meth:`Method.untrained` makes of a random-weight model: the changed model, the spec
    :meth:`Method.restructure` re-applies (or None), meta the artifact carries, and a quantized state
    that holds the parameters (diffq's), if any."""

    model: nn.Module
    spec: dict | None = None
    meta: dict | None = None
    quantized: dict | None = None


KIND_NAMES = {"float": "a float model", "qat": "a quantization-aware-trained model (dequantized weights)",
              "int8": "an int8 model", "simulated": "a simulated-quantization model"}
KIND_ADJECTIVES = {"qat": "quantization-aware-trained", "int8": "int8", "simulated": "simulated-quantized"}


class Method(abc.ABC):
    """Base class: subclass, set ``name`` and ``Settings``, implement :meth:`run`, and :func:`register`."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type[Settings]] = NoSettings
    is_root: ClassVar[bool] = False     # builds a model from scratch (must be first in a chain)
    # Which runtime runs the artifact this method makes, and which runtime's artifact it takes as input:
    # "pytorch" (a .pt artifact, rebuilt from timm + transforms) or "onnxruntime" (a .onnx file).
    runtime: ClassVar[str] = "pytorch"
    input_runtime: ClassVar[str] = "pytorch"
    # Whether the model this method makes is still plain PyTorch that the ONNX exporter can trace
    # (torch.ao's int8 layers and simulated quantization are not).
    exportable: ClassVar[bool] = True
    # What kind of model this method makes, and which kinds it can take as input (checked along every
    # chain before any job, and by execute()): "float"; "qat" (a float model holding quantized-then-
    # dequantized weights, stored packed); "int8" (integer kernels: torch.ao or ONNX Runtime);
    # "simulated" (fake-quantized).
    makes: ClassVar[str] = "float"
    accepts: ClassVar[tuple[str, ...]] = ("float", "qat")
    keys: ClassVar[dict[str, Any]] = {}  # set by register(): the Settings' keys and types
    # How the reports group it: the family its rows are plotted and compared in (its own name if unset), and
    # whether the model it makes has fewer parameters than its input (pruning, a smaller student).
    family: ClassVar[str] = ""
    shrinks: ClassVar[bool] = False

    # -- configuration (before any job) ----------------------------------------------------------------
    @classmethod
    def settings(cls, step: dict, where: str = "step"):
        """The step's settings as this method's frozen dataclass."""
        return cls.Settings.from_step(step, where)

    @classmethod
    def check_step(cls, step: dict, where: str, profile: dict) -> None:
        """Raise ConfigError for a step setting this method cannot work with: unknown keys, then the
        Settings' types and ranges. Override (calling super) for what the settings ask of the profile."""
        for key in step:
            if key not in COMMON_KEYS and key not in cls.keys:
                allowed = ", ".join(sorted(COMMON_KEYS | set(cls.keys)))
                raise ConfigError(f"params.yaml: unknown key '{where}.{key}' for method {cls.name!r}; allowed: {allowed}.")
        cls.settings(step, where)

    @classmethod
    def check_model(cls, model: nn.Module, step: dict) -> None:
        """Raise ValueError, saying what to change, if this step cannot work on ``model``: the root model
        of its chain, built on the meta device (shapes only) before any job runs. Default: no condition."""

    @classmethod
    def check_inputs(cls, model: nn.Module, step: dict, inputs: dict[str, nn.Module]) -> None:
        """Like :meth:`check_model`, for a root step against the root models of the chains it declares in
        :meth:`step_inputs` (``inputs``: name -> model, shapes only). Default: no condition."""

    @classmethod
    def step_inputs(cls, step: dict, profile) -> dict[str, str]:
        """Other chains this step needs besides its parent: {name: chain id}. Default: none."""
        return {}

    # -- the job ---------------------------------------------------------------------------------------
    def execute(self, ctx: StepContext):
        """What the runner calls: the parent's kind checked (:meth:`check_parent`), then :meth:`run`."""
        if ctx.parent is not None:
            self.check_parent(ctx)
        return self.run(ctx)

    def check_parent(self, ctx: StepContext) -> None:
        """Raise ValueError unless the parent artifact is a kind of model this method ``accepts``: the kind its
        last step's method ``makes`` (what the config check asks along a chain, asked again of the artifact a
        job was given, for steps run outside the workflow). An artifact with no recorded steps is float."""
        steps = ctx.parent.meta.get("steps") or [{}]
        made_by = METHODS.get(steps[-1].get("method"))
        kind = made_by.makes if made_by is not None else "float"
        if kind not in self.accepts:
            wants = " or ".join(KIND_NAMES[k] for k in self.accepts)
            raise ValueError(f"step {ctx.step['id']!r} ({self.name}) needs {wants}, but its parent is already "
                             f"{KIND_ADJECTIVES[kind]} (step {steps[-1]['id']!r}, method {made_by.name!r}); chain "
                             f"{ctx.step['id']!r} right after a float step.")

    @abc.abstractmethod
    def run(self, ctx: StepContext):
        """The step itself: ``ctx.parent`` (an artifact, or None for a root step) to this step's artifact."""

    @staticmethod
    def finetune(model: nn.Module, ctx: StepContext, epochs: int, img_size, **fit_kwargs) -> dict | None:
        """Fine-tune ``model`` in place for ``epochs`` with the step's training settings (0: no-op).

        ``fit_kwargs`` go to :func:`vitcompress.train.fit` (``loss_fn``, ``setup_optimizer``, ...)."""
        if not epochs:
            return None
        from vitcompress.data import InputAdapter, PreparedData
        from vitcompress.train import fit

        data = PreparedData(ctx.data_file)
        adapter = InputAdapter(data.meta, img_size, ctx.device)
        return fit(model, data, TrainSettings.of(ctx.step["train"]).replace(epochs=int(epochs)), adapter, ctx.device, ctx.seed,
                   desc=f"{ctx.dataset}/{ctx.step['id']}", **fit_kwargs)

    # -- rebuilding ------------------------------------------------------------------------------------
    @classmethod
    def restructure(cls, model: nn.Module, spec: dict) -> nn.Module:
        """Re-apply this method's structural change (recorded as ``spec``) to a fresh model."""
        return model

    @classmethod
    def untrained(cls, model: nn.Module, step: dict) -> Untrained:
        """The method's change on a model with random weights and no data (architecture benchmarks)."""
        return Untrained(model)

    @classmethod
    def untrained_deploy(cls, parent, step: dict):
        """For a method of another runtime (``runtime`` not "pytorch"): its artifact made from ``parent``,
        the saved artifact of an untrained chain (architecture benchmarks)."""
        raise NotImplementedError(f"method {cls.name!r} makes PyTorch artifacts: see untrained()")


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no name")
    cls.keys = cls.Settings.keys()
    cls.family = cls.family or cls.name  # a new method is its own family until it names one
    METHODS[cls.name] = cls
    return cls


def build_model(art) -> nn.Module:
    """The model an artifact holds, in eval mode: for a PyTorch artifact its timm architecture with every
    recorded structural change re-applied (each method's :meth:`Method.restructure`) and its weights (or
    diffq's quantized state) loaded; another runtime's artifact builds itself (e.g. an ONNX Runtime
    session as a module)."""
    if callable(getattr(art, "build", None)):
        return art.build()
    from vitcompress.models import create

    model = create(art.arch)
    for spec in art.transforms:
        model = METHODS[spec["method"]].restructure(model, spec)
    restored: set[str] = set()
    if art.quantized is not None:
        from vitcompress.quantized_state import restore

        try:
            restore(model, art.quantized)
        except (KeyError, ValueError, AssertionError, RuntimeError, IndexError) as exc:
            raise ArtifactError(f"artifact's quantized state does not fit its architecture ({exc}); "
                                f"re-run its step.") from None
        restored = {name for name, _ in model.named_parameters()}
    missing, unexpected = model.load_state_dict(art.state_dict, strict=False)
    missing = [k for k in missing if k not in restored]
    if missing or unexpected:
        raise ArtifactError(
            f"artifact weights do not fit its architecture (missing {list(missing)[:3]}, "
            f"unexpected {list(unexpected)[:3]}); it was written by another version: re-run its step."
        )
    return model.eval()


VERIFY_BATCH = 64


@dataclass(frozen=True, kw_only=True)
class ConversionSettings(Settings):
    min_agreement: float = setting(0.995, low=0, low_open=True, high=1,
                                   help="the share of test images whose top-1 the converted model and PyTorch must "
                                        "agree on")


class Conversion(Method):
    """A step that converts the chain's PyTorch model into another runtime (``runtime``), then predicts the
    whole test split with both and refuses the conversion when they agree on fewer than ``min_agreement``
    of the images: a graph that computes something else must not reach a device or the table. The
    artifact is the runtime's file(s); its accuracy and speed are that runtime's.

    Subclasses set ``name``, ``runtime`` and ``Settings`` (a :class:`ConversionSettings`), and may add to
    the artifact's meta (:meth:`converted_meta`)."""

    Settings = ConversionSettings
    input_runtime = "pytorch"

    @classmethod
    def converted_meta(cls, s, model: nn.Module) -> dict:
        """What the converted artifact records besides the chain (e.g. its inference precision); ``model`` is
        the PyTorch model converted."""
        return {}

    @classmethod
    def converted(cls, parent, model: nn.Module, step: dict, example):
        from vitcompress.runtimes import get_runtime

        rt = get_runtime(cls.runtime)
        s = cls.settings(step)
        return rt.artifact.child(parent, rt.convert(model, example), {"method": cls.name}, step,
                                 **cls.converted_meta(s, model))

    def run(self, ctx: StepContext):
        import logging
        import tempfile

        from vitcompress.data import InputAdapter, PreparedData
        from vitcompress.measure import agreement
        from vitcompress.runtimes import get_runtime

        parent, step, rt = ctx.parent, ctx.step, get_runtime(self.runtime)
        s = self.settings(step)
        data = PreparedData(ctx.data_file)
        adapter = InputAdapter(data.meta, parent.arch["kwargs"]["img_size"], ctx.device)
        model = build_model(parent)
        art = self.converted(parent, model, step, adapter(data.splits["test"][0][:2]).cpu())
        with tempfile.TemporaryDirectory() as tmp:  # run the graph as a device would: from its file(s)
            path = Path(tmp) / rt.files[0]
            art.save(path)
            check = agreement(model.to(ctx.device), rt.module(path, art.meta).eval(),
                              data.loader("test", VERIFY_BATCH), adapter)
        art.path = None
        logging.getLogger("vitcompress").info(
            "%s: %s agrees with PyTorch on %.2f%% of %d test images (top-1 %.2f%% vs %.2f%%, largest logit "
            "difference %.2g)", ctx.dataset, rt.describe(art.meta), 100 * check["agreement"], check["images"],
            check["top1"], check["reference_top1"], check["max_abs_logit_diff"])
        if check["agreement"] < s.min_agreement:
            raise ValueError(
                f"{ctx.dataset}: the {rt.label} conversion of step {step['id']!r} predicts differently from "
                f"PyTorch on {100 * (1 - check['agreement']):.2f}% of {check['images']} test images (allowed: "
                f"{100 * (1 - s.min_agreement):.2f}%); the converted graph does not compute the model. Nothing "
                f"was written; report the architecture, or lower min_agreement to accept it.")
        art.meta["export_check"] = check
        return art

    @classmethod
    def untrained_deploy(cls, parent, step: dict):
        """The conversion of an untrained (random-weight) artifact, for architecture benchmarks."""
        import torch

        kwargs = parent.arch["kwargs"]
        example = torch.randn(2, int(kwargs["in_chans"]), *map(int, kwargs["img_size"]),
                              generator=torch.Generator().manual_seed(0))
        return cls.converted(parent, build_model(parent), step, example)


@dataclass(frozen=True, kw_only=True)
class VerifySettings(Settings):
    """The keys of the check every runtime quantizer makes of what it deploys."""

    max_gap: float = setting(1.0, low=0, help="top-1 points the deployed int8 model may lose, on validation images, "
                                              "against its quantization's own float simulation (against its parent "
                                              "where the runtime has none); a larger gap beyond chance stops the job")
    verify_images: int = setting(1000, low=1, help="validation images (the split's first) the deployed model is "
                                                    "checked on")


UNTRAINED_CALIB_IMAGES = 16  # random images calibrate an untrained (architecture benchmark) model


def untrained_images(parent) -> "torch.Tensor":  # noqa: F821
    """Seeded random model-ready images for quantizing an untrained chain (architecture benchmarks)."""
    import torch

    kwargs = parent.arch["kwargs"]
    return torch.randn(UNTRAINED_CALIB_IMAGES, int(kwargs["in_chans"]), *map(int, kwargs["img_size"]),
                       generator=torch.Generator().manual_seed(0))


class RuntimeQuantizer(Method):
    """A runtime's own int8 quantizer (ONNX Runtime's, NNCF's for OpenVINO), which takes that runtime's
    artifact and makes another, and verifies what it deploys: the saved int8 model, run by the runtime's
    integer kernels on this CPU, against the same file evaluated with its quantization's math in float
    (:meth:`~vitcompress.runtimes.base.Runtime.simulation`; the parent, with the quantization's own loss in
    the gap, only for a model a runtime cannot simulate), on validation images. Their top-1 may differ by at
    most ``max_gap`` points: a loss beyond that which is also beyond chance (exact McNemar) means the CPU's
    int8 kernels do not compute what the quantizer described (e.g. 16-bit saturation on x86 CPUs without
    VNNI), and the job stops, naming the instruction sets, the gap and the fix; one on too few images to tell
    keeps the artifact, flagged. The check is recorded in the artifact (``deploy_check``).

    Subclasses set ``name``, ``runtime``, ``Settings`` (a :class:`VerifySettings` subclass) and implement
    :meth:`quantize` (the unsaved child artifact); ``calibration`` says which images they calibrate on."""

    makes = "int8"
    calibration_key: ClassVar[str | None] = None  # the Settings field that counts calibration images

    def calibration(self, ctx: StepContext, s):
        """The training images the quantizer calibrates on (None: it needs none)."""
        if self.calibration_key is None:
            return None
        from vitcompress.data import calibration_images

        return calibration_images(ctx.data_file, ctx.parent.arch["kwargs"]["img_size"],
                                  getattr(s, self.calibration_key), "cpu", ctx.seed, key=self.calibration_key)

    def quantize(self, ctx: StepContext, s, images):
        """The quantized child artifact of ``ctx.parent`` (not saved)."""
        raise NotImplementedError

    @classmethod
    def fix(cls, s, check: dict) -> str:
        """What to change, for settings ``s``, when the deployed model misses its reference (said in the error)."""
        return "run the step on the CPU class the model will be deployed to, or raise max_gap to accept the loss"

    def run(self, ctx: StepContext):
        s = self.settings(ctx.step)
        art = self.quantize(ctx, s, self.calibration(ctx, s))
        art.meta["deploy_check"] = check = verify_deployed(art, ctx, s.verify_images)
        ref = "its quantization's float simulation" if check["reference"] == "simulation" else \
            "its parent (this runtime has no float simulation of it: the gap includes the quantization's own loss)"
        check["max_gap"] = s.max_gap
        if check["gap"] > s.max_gap + 1e-9 and not check["distinguishable"]:
            # beyond the bound on a handful of images: too few to tell a kernel's error from near-tied logits
            check["flagged"] = True
            log.warning("%s: step %s loses %.2f points against %s on %d %s images, beyond max_gap = %g but not "
                        "distinguishable (exact McNemar p = %.3g): kept, flagged in the row's notes", ctx.dataset,
                        ctx.step["id"], check["gap"], ref, check["images"], check["split"], s.max_gap, check["p_value"])
        elif check["gap"] > s.max_gap + 1e-9:
            flags = ", ".join(check["cpu_flags"]) or "none reported"
            if check["onednn_max_cpu_isa"]:
                flags += f"; ONEDNN_MAX_CPU_ISA={check['onednn_max_cpu_isa']}"
            raise ValueError(
                f"{ctx.dataset}: step {ctx.step['id']!r} ({self.name}) deploys an int8 model that scores "
                f"{check['top1']:.2f}% on {check['images']} {check['split']} images against "
                f"{check['reference_top1']:.2f}% "
                f"for {ref} ({check['gap']:.2f} points lost, max_gap = {s.max_gap:g}; top-1 agrees on "
                f"{100 * check['agreement']:.2f}%, exact McNemar p = {check['p_value']:.2g}): this CPU's int8 kernels "
                f"({check['machine']}, instruction sets: {flags}) do not compute what the quantizer described. "
                f"Nothing was written; {self.fix(s, check)}.")
        return art


def verify_deployed(art, ctx: StepContext, images: int = 1000) -> dict:
    """The deployed model of ``art`` (saved to a scratch folder and loaded as a device would) against its
    quantization's float simulation, or against ``ctx.parent`` where its runtime has none, on the first
    ``images`` validation images (training images where the data set has no validation split: a kernel's
    error needs no unseen image, and the test split stays the table's): both top-1s, the gap (reference minus
    deployed, points), their top-1 agreement, whether the two differ beyond chance (the exact McNemar test
    of :func:`vitcompress.stats.exact_paired_delta` on their per-image results) and the CPU it ran on."""
    import platform
    import tempfile

    import torch

    from vitcompress.data import InputAdapter, PreparedData
    from vitcompress.measure import cpu_flags, isa_cap
    from vitcompress.runtimes import get_runtime
    from vitcompress.stats import exact_paired_delta

    rt = get_runtime(art.runtime.name)
    data = PreparedData(ctx.data_file)
    split = "val" if len(data.splits["val"][1]) else "train"
    x, y = data.splits[split]
    x, y = x[:images], y[:images]
    adapter = InputAdapter(data.meta, art.arch["kwargs"]["img_size"], "cpu")
    batches = list(zip(x.split(VERIFY_BATCH), y.split(VERIFY_BATCH)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / rt.files[0]
        art.save(path)
        try:
            reference, kind = rt.simulation(path, art.meta), "simulation"
            if reference is None:
                reference, kind = build_model(ctx.parent), "parent"
            deployed, reference = rt.module(path, art.meta).eval(), reference.eval()
            preds = {"deployed": [], "reference": []}
            with torch.inference_mode():
                for xb, _ in batches:
                    inputs = adapter(xb)
                    preds["deployed"].append(deployed(inputs).argmax(-1))
                    preds["reference"].append(reference(inputs).argmax(-1).cpu())
        finally:
            art.path = None
    dep, ref = torch.cat(preds["deployed"]), torch.cat(preds["reference"])
    change = exact_paired_delta((ref == y).numpy(), (dep == y).numpy())  # reference minus deployed
    return {"split": split, "images": len(y), "reference": kind,
            "reference_top1": 100.0 * float((ref == y).float().mean()),
            "top1": 100.0 * float((dep == y).float().mean()), "gap": change["delta"],
            "agreement": float((dep == ref).float().mean()), "discordant": change["discordant"],
            "p_value": change["p_value"], "distinguishable": change["distinguishable"],
            "machine": platform.machine(), "cpu_flags": cpu_flags(), "onednn_max_cpu_isa": isa_cap()}
