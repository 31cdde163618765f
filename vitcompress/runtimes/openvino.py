"""The ``openvino`` runtime: convert, load, run and quantize (NNCF) on OpenVINO's CPU plugin.

An OpenVINO artifact is the IR a device loads: ``model.xml`` (the graph) and ``model.bin`` (its
weights), nothing else; the same ``arch`` / ``transforms`` / ``meta`` record a PyTorch artifact carries
sits in the graph's ``rt_info`` (``vitcompress/artifact``). Weights are saved as they are computed
(``compress_to_fp16=False``): an fp32 row's IR holds f32 weights, an int8 row's int8 ones.

Precision is explicit. On a CPU with AVX-512 BF16 or AMX, the CPU plugin runs every operator that is
not quantized in bf16 unless told otherwise; :class:`OvModule` always passes the step's ``precision``
(``f32`` by default) as ``INFERENCE_PRECISION_HINT`` and refuses to run when the compiled model reports
another, so no row labelled f32 runs in bf16, and the Runtime column names the precision it ran.

Telemetry: OpenVINO's converter and NNCF send usage data through the ``openvino_telemetry`` package
unless opted out. This module makes that package unimportable in its process before it imports
either (both then fall back to their no-op stubs, as they do when it is not installed), and sets
NNCF's own switch (``NNCF_CI``): nothing leaves the machine.

``openvino`` and ``nncf`` are imported only by the functions that need them.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from vitcompress.io import DIGEST_PLACEHOLDER, file_mode, package_version, seal_files
from vitcompress.runtimes.base import Runtime, RuntimeArtifact, register_runtime
from vitcompress.settings import Settings, setting

RUNTIME = "openvino"
RECORD_KEY = ["vitcompress", "artifact"]
DIGEST_KEY_RT = ["vitcompress", "digest"]  # the IR's content digest, .xml and .bin (vitcompress.io.seal_files)
PRECISIONS = ("f32", "bf16")


def _no_telemetry() -> None:
    loaded = sys.modules.get("openvino_telemetry")
    if loaded is not None:
        raise RuntimeError("openvino_telemetry was imported before vitcompress could keep it out; import OpenVINO "
                           "and NNCF through vitcompress.runtimes.openvino (ov(), nncf()) so no usage data is sent")
    sys.modules["openvino_telemetry"] = None  # `import openvino_telemetry` now raises ImportError: both use stubs
    os.environ.setdefault("NNCF_CI", "1")


def ov():
    """The ``openvino`` package, its telemetry off."""
    _no_telemetry()
    import openvino

    return openvino


def nncf():
    """The ``nncf`` package, its telemetry off, its progress bars and INFO lines out of the job logs."""
    _no_telemetry()
    import logging

    import nncf as _nncf

    _nncf.set_log_level(logging.WARNING)
    return _nncf


_CORE = None


def core():
    global _CORE
    if _CORE is None:
        _CORE = ov().Core()
    return _CORE


class OvModule(nn.Module):
    """An OpenVINO CPU model as a module: ``forward(x: Tensor) -> Tensor`` (float logits).

    It is compiled for each input shape it meets (static shapes: what a deployment compiles; ``static=False``:
    the batch left dynamic, for an IR the plugin miscomputes at static shapes), with as many inference threads
    as PyTorch has (one stream) and the ``precision`` asked for as the inference precision hint, which the
    compiled model must report back."""

    def __init__(self, path: str | Path, precision: str = "f32", simulate: bool = False, static: bool = True):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision = {precision!r}: use one of {', '.join(PRECISIONS)}")
        self.path, self.precision, self.simulate, self.static = str(path), precision, simulate, static
        self._requests: dict = {}
        self._threads = None

    def compiled(self, shape: tuple[int, ...]):
        """The model compiled for inputs of ``shape`` (cached)."""
        threads = torch.get_num_threads()
        if threads != self._threads:
            self._requests.clear()
            self._threads = threads
        if shape not in self._requests:
            model = core().read_model(self.path)
            model.reshape({model.inputs[0]: ov().PartialShape(list(shape) if self.static else [-1, *shape[1:]])})
            config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                      "PERFORMANCE_HINT": "LATENCY"}
            if self.simulate:  # the quantization's own math in f32: no int8 kernel, no dynamic quantization
                model = float_simulation(model)
                config.update(INFERENCE_PRECISION_HINT="f32", EXECUTION_MODE_HINT="ACCURACY",
                              DYNAMIC_QUANTIZATION_GROUP_SIZE=0)
            compiled = core().compile_model(model, "CPU", config)
            got = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
            if got != config["INFERENCE_PRECISION_HINT"]:
                raise RuntimeError(f"{self.path}: OpenVINO compiled it for {got} inference, not the {self.precision} "
                                   f"its step asks for (this CPU cannot run {self.precision}); set the step's "
                                   f"precision to {got} or run it on a CPU that has it.")
            self._requests[shape] = compiled.create_infer_request()
        return self._requests[shape]

    def reported_precision(self) -> str:
        """The inference precision the compiled model reports (after a forward call has compiled it)."""
        request = next(iter(self._requests.values()))
        return request.get_compiled_model().get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("an OpenVINO model runs inference only")
        return super().train(False)

    def _apply(self, fn, recurse=True):  # .to(device): the CPU plugin holds no torch tensors
        return self

    def num_params(self) -> int:
        return count_weights(core().read_model(self.path))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise RuntimeError("the OpenVINO artifacts run on its CPU plugin only")
        request = self.compiled(tuple(x.shape))
        request.infer([np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)])
        return torch.from_numpy(request.get_output_tensor(0).data.copy())


@dataclass
class OvArtifact(RuntimeArtifact):
    """An OpenVINO IR deployment artifact; ``native`` is the ``openvino.Model`` a step made (until saved)."""

    def write(self, path: Path, record: str) -> None:
        self.native.set_rt_info(record, RECORD_KEY)
        self.native.set_rt_info(DIGEST_PLACEHOLDER, DIGEST_KEY_RT)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:  # both files in a scratch folder, sealed, then the weights and last the graph moved in place
            xml, weights = tmp / path.name, tmp / path.with_suffix(".bin").name
            ov().save_model(self.native, str(xml), compress_to_fp16=False)
            seal_files([xml, weights])
            for f in (xml, weights):
                os.chmod(f, file_mode())
            os.replace(weights, path.with_suffix(".bin"))
            os.replace(xml, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def read_record(cls, path: Path) -> str | None:
        model = core().read_model(str(path))
        return model.get_rt_info(RECORD_KEY).astype(str) if model.has_rt_info(RECORD_KEY) else None


@register_runtime
class OpenVINO(Runtime):
    name = RUNTIME
    label = "OpenVINO"
    files = ("model.xml", "model.bin")
    converter = "ov"
    cpu_backend = "its CPU plugin"
    file_kind = "OpenVINO IR"
    model_noun = "an OpenVINO IR"
    artifact = OvArtifact

    @classmethod
    def convert(cls, model: nn.Module, example: torch.Tensor):
        import warnings

        model = model.cpu().eval()
        with warnings.catch_warnings():  # tracer warnings about shape-dependent Python branches
            warnings.simplefilter("ignore")
            converted = ov().convert_model(model, example_input=example.cpu(),
                                           input=[ov().PartialShape([-1, *example.shape[1:]])])
        return converted

    @classmethod
    def module(cls, path, meta):
        return OvModule(path, meta.get("ov_precision", "f32"), static=meta.get("ov_static_shapes", True))

    @classmethod
    def simulation(cls, path, meta):
        """The IR with every FakeQuantize computed in float (:func:`float_simulation`); None for an IR
        without any (nothing quantized to simulate)."""
        if not any(op.get_type_name() == "FakeQuantize" for op in core().read_model(str(path)).get_ordered_ops()):
            return None
        return OvModule(path, meta.get("ov_precision", "f32"), simulate=True, static=meta.get("ov_static_shapes", True))

    @classmethod
    def describe(cls, meta: dict) -> str:
        precision = meta.get("ov_precision", "f32")
        return f"OpenVINO, int8 + {precision}" if meta.get("ov_int8") else f"OpenVINO, {precision}"

    @classmethod
    def versions(cls):
        return {"openvino": package_version("openvino"), "nncf": package_version("nncf")}



@dataclass(frozen=True, kw_only=True)
class Precision(Settings):
    """The ``precision`` key every OpenVINO step has: the CPU plugin's inference precision for what is not
    quantized."""

    precision: str = setting("f32", choices=PRECISIONS,
                             help="OpenVINO's inference precision hint for the operators not quantized")


def check_ir(parent, step_id: str) -> None:
    """Raise ValueError unless ``parent`` is a saved OpenVINO IR (what NNCF's OpenVINO backend takes)."""
    if not isinstance(parent, OvArtifact) or parent.path is None:
        raise ValueError(f"step {step_id!r} quantizes an OpenVINO IR: put an `ov` step before it.")


# -- NNCF post-training quantization -------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Int8Recipe(Settings):
    """The keys that make an int8 IR compute what NNCF's quantization describes on a given CPU class
    (:func:`vitcompress.measure.ov_int8_recipe`); ``auto`` decides each for the CPU the step runs on."""

    overflow_fix: str = setting("auto", choices=("auto", "enable", "disable", "first_layer"),
                                help="NNCF's overflow fix (7-bit weights): enable everywhere, first_layer only, "
                                     "disable; auto: enable on x86 CPUs without VNNI (16-bit saturation), else disable")
    attention: str = setting("auto", choices=("auto", "int8", "float"),
                             help="the attention's q·kᵀ in int8 (NNCF's transformer scheme) or float; auto: float "
                                  "on x86 CPUs without VNNI, where its two 8-bit activations saturate, else int8")

    def resolved(self) -> dict:
        """{overflow_fix, attention, reason}: the values NNCF gets and why (recorded in the artifact)."""
        import platform

        from vitcompress.measure import int8_flags, ov_int8_recipe

        auto = ov_int8_recipe(int8_flags(), platform.machine())
        out = {k: (auto[k] if getattr(self, k) == "auto" else getattr(self, k)) for k in ("overflow_fix", "attention")}
        set_here = [k for k in out if getattr(self, k) != "auto"]
        out["reason"] = auto["reason"] if not set_here else \
            (f"{', '.join(set_here)} set in params.yaml" + ("" if len(set_here) == 2 else f"; auto: {auto['reason']}"))
        return out


def attention_ops(model) -> list[str]:
    """The names of the operations that multiply two activations (an attention's q·kᵀ and its weights by v):
    fused ScaledDotProductAttention nodes and MatMuls neither of whose inputs is a weight (:func:`is_weight`)."""
    return [node.get_friendly_name() for node in model.get_ordered_ops()
            if node.get_type_name() == "ScaledDotProductAttention"
            or node.get_type_name() == "MatMul" and not any(is_weight(v) for v in node.input_values())]


def _quantization_args(s, images: torch.Tensor, model=None) -> dict:
    """NNCF's arguments for the step's settings ``s`` (with :class:`Int8Recipe`'s keys); ``model``: the IR,
    for the attention operations a float attention leaves out."""
    n = nncf()
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    recipe = s.resolved()
    alphas = AdvancedSmoothQuantParameters() if s.smooth_quant else AdvancedSmoothQuantParameters(matmul=-1)
    presets = {"performance": n.QuantizationPreset.PERFORMANCE, "mixed": n.QuantizationPreset.MIXED}
    fixes = {"enable": OverflowFix.ENABLE, "disable": OverflowFix.DISABLE, "first_layer": OverflowFix.FIRST_LAYER}
    args = dict(calibration_dataset=n.Dataset([im[None].numpy().astype(np.float32) for im in images]),
                model_type=n.ModelType.TRANSFORMER, preset=presets[s.preset], subset_size=len(images),
                fast_bias_correction=s.fast_bias_correction,
                advanced_parameters=AdvancedQuantizationParameters(smooth_quant_alphas=alphas,
                                                                   overflow_fix=fixes[recipe["overflow_fix"]]))
    if recipe["attention"] == "float" and model is not None:
        names = attention_ops(model)
        if names:
            args["ignored_scope"] = n.IgnoredScope(names=names, validate=False)
    return args


def quantize(parent_path: str | Path, images: torch.Tensor, s):
    """NNCF's post-training int8 quantization (``nncf.quantize``, ``model_type=TRANSFORMER``) of the IR at
    ``parent_path``, calibrated on ``images`` (one image a calibration item); ``s``: the step's settings
    (``preset``, ``smooth_quant``, ``fast_bias_correction``). Returns the ``openvino.Model``."""
    model = core().read_model(str(parent_path))
    args = _quantization_args(s, images, model)
    return nncf().quantize(model, args.pop("calibration_dataset"), **args)


def quantize_with_accuracy_control(parent_path: str | Path, images: torch.Tensor, val_batches, s):
    """``nncf.quantize_with_accuracy_control``: as :func:`quantize`, then quantized operations reverted to
    float, the most harmful first (ranked on every validation batch), until top-1 on ``val_batches``
    ((images, labels) pairs, the validation split) is within ``s.max_drop`` points of the float IR's; NNCF
    judges both with f32 inference, as do the scores returned.

    Returns the ``openvino.Model``, both IRs' validation top-1 (%) and what NNCF reverted
    (``{"operations": [...], "quantized_operations": n}``). Raises ValueError when the bound is not met
    within ``s.max_num_iterations`` (NNCF then returns its last model and only says so at INFO level)."""
    n = nncf()
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters
    from nncf.quantization.algorithms.accuracy_control import algorithm as restorer

    val_batches = [(x.numpy().astype(np.float32), y.numpy()) for x, y in val_batches]
    args = _quantization_args(s, images, core().read_model(str(parent_path)))
    args["advanced_quantization_parameters"] = args.pop("advanced_parameters")
    reverted = {"operations": [], "quantized_operations": None}
    report = restorer.QuantizationAccuracyRestorer.__dict__.get("_print_report")

    def keep_report(rep, max_num_iterations):  # NNCF's own report of what it reverted, kept as data
        reverted.update(operations=sorted(getattr(op, "node_name", str(op)) for op in rep.reverted_operations),
                        quantized_operations=rep.num_quantized_operations)
        return report.__func__(rep, max_num_iterations)

    if isinstance(report, staticmethod):
        restorer.QuantizationAccuracyRestorer._print_report = staticmethod(keep_report)
    try:
        model = n.quantize_with_accuracy_control(
            core().read_model(str(parent_path)), args.pop("calibration_dataset"),
            n.Dataset(val_batches, lambda item: item[0]), validation_top1, max_drop=s.max_drop,
            drop_type=n.DropType.ABSOLUTE,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                max_num_iterations=s.max_num_iterations, num_ranking_workers=1,
                ranking_subset_size=len(val_batches)), **args)
    finally:
        if isinstance(report, staticmethod):
            restorer.QuantizationAccuracyRestorer._print_report = report
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    scores = {"float": validation_top1(core().compile_model(core().read_model(str(parent_path)), "CPU", f32),
                                       val_batches),
              "int8": validation_top1(core().compile_model(model.clone(), "CPU", f32), val_batches)}
    if scores["float"] - scores["int8"] > s.max_drop + 1e-9:
        raise ValueError(
            f"NNCF's accuracy control could not keep the int8 IR within max_drop = {s.max_drop:g} top-1 points of the "
            f"float IR on the validation split ({scores['float']:.2f}% -> {scores['int8']:.2f}%) in "
            f"max_num_iterations = {s.max_num_iterations} rounds ({len(reverted['operations'])} operations reverted); "
            f"nothing was written: raise max_drop or max_num_iterations.")
    return model, scores, reverted


def validation_top1(compiled, items) -> float:
    """Top-1 (%) of a compiled model over (images, labels) items: the metric accuracy control bounds."""
    right = total = 0
    for x, y in items:
        right += int((compiled(x)[0].argmax(-1) == y).sum())
        total += len(y)
    return 100.0 * right / max(1, total)


# -- the quantization's own math ------------------------------------------------------------------------

def float_simulation(model):
    """A copy of ``model`` in which every FakeQuantize is computed with float operations, as the operation is
    specified: ``output_low`` where ``x <= min(input_low, input_high)``, ``output_high`` where
    ``x > max(input_low, input_high)``, else ``round((x - input_low) / (input_high - input_low) * (levels - 1))
    / (levels - 1) * (output_high - output_low) + output_low``, rounding half to even. The CPU plugin runs int8
    kernels only where it finds FakeQuantize nodes (its low-precision transformations), so this copy runs the
    quantized model's arithmetic in float: what the quantizer promised, independent of any CPU's int8
    kernels. Integer weight constants stay as they are (their dequantization is float arithmetic already)."""
    ov()
    import openvino.opset13 as ops

    out = model.clone()
    for node in out.get_ordered_ops():
        if node.get_type_name() != "FakeQuantize":
            continue
        x, in_lo, in_hi, out_lo, out_hi = (node.input_value(i) for i in range(5))
        steps = ops.constant(np.float32(int(node.get_attributes()["levels"]) - 1))
        level = ops.round(ops.divide(ops.multiply(ops.subtract(x, in_lo), steps), ops.subtract(in_hi, in_lo)),
                          "half_to_even")
        inside = ops.add(ops.multiply(ops.divide(level, steps), ops.subtract(out_hi, out_lo)), out_lo)
        value = ops.select(ops.less_equal(x, ops.minimum(in_lo, in_hi)), out_lo,
                           ops.select(ops.greater(x, ops.maximum(in_lo, in_hi)), out_hi, inside))
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(value.output(0))
    out.validate_nodes_and_infer_types()
    return out


def int8_kernels(path: str | Path, shape: tuple[int, ...], precision: str = "f32") -> dict[str, int]:
    """What the CPU plugin runs an IR with here: ``{"<layer type>:<primitive>:<precision>": count}`` for the
    weight and attention layers (e.g. ``Convolution:jit_avx2_I8:u8``), read from the compiled model, so a
    test or a report can see which ISA's kernels ran (``ONEDNN_MAX_CPU_ISA`` included)."""
    model = core().read_model(str(path))
    model.reshape({model.inputs[0]: ov().PartialShape(list(shape))})
    compiled = core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision})
    out: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind in ("Convolution", "FullyConnected", "MatMul", "ScaledDotProductAttention", "ScaledAttn"):
            key = f"{kind}:{info['primitiveType'].astype(str)}:{info['runtimePrecision'].astype(str)}"
            out[key] = out.get(key, 0) + 1
    return out


# -- what an IR holds ----------------------------------------------------------------------------------

_INT_TYPES = ("i8", "u8", "i4", "u4")
_PASS_THROUGH = ("Convert", "Multiply", "Subtract", "Reshape", "Transpose", "Unsqueeze")


def _sources(node, depth: int = 6):
    """The nodes feeding ``node`` through dequantization and layout ops, ``node``'s inputs first."""
    out, todo = [], [(i.get_source_output().get_node(), depth) for i in node.inputs()]
    while todo:
        src, d = todo.pop()
        out.append(src)
        if d and src.get_type_name() in _PASS_THROUGH:
            todo += [(i.get_source_output().get_node(), d - 1) for i in src.inputs()]
    return out


def _is_int_constant(node) -> bool:
    return node.get_type_name() == "Constant" and node.get_output_element_type(0).get_type_name() in _INT_TYPES


def _layer_name(node) -> str:
    """A weight layer's PyTorch module name from its OpenVINO name (``__module.blocks.0.attn.qkv/aten::linear/MatMul``)."""
    m = re.match(r"__module\.([^/]+)/", node.get_friendly_name())
    return m.group(1) if m else node.get_friendly_name()


_LAYOUT = ("Convert", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "FakeQuantize")  # data in input 0
_ELEMENTWISE = ("Multiply", "Subtract", "Add", "Divide")


def is_weight(value, depth: int = 8) -> bool:
    """Whether an output computes from constants alone, following only data inputs: a weight, as stored
    (a float constant) or dequantized (an integer constant through Convert, zero-point Subtract, scale
    Multiply), reshaped or fake-quantized. A scale applied to an activation (``Multiply(q, scale)``) is not."""
    node = value.get_node()
    kind = node.get_type_name()
    if kind == "Constant":
        return True
    if depth == 0:
        return False
    if kind in _LAYOUT:
        return is_weight(node.input_value(0), depth - 1)
    if kind in _ELEMENTWISE:
        return all(is_weight(v, depth - 1) for v in node.input_values())
    return False


def weight_layers(model) -> list:
    """The MatMul/Convolution nodes with a weight input (:func:`is_weight`): the layers a quantizer quantizes."""
    return [node for node in model.get_ordered_ops()
            if node.get_type_name() in ("MatMul", "Convolution") and any(is_weight(v) for v in node.input_values())]


def quantization_summary(model) -> dict:
    """What an IR holds: FakeQuantize nodes, integer weight constants, and the weight layers left in float
    (module names), i.e. neither an integer weight nor a quantized input."""
    ops = model.get_ordered_ops()
    float_layers = [_layer_name(n) for n in weight_layers(model)
                    if not any(_is_int_constant(s) or s.get_type_name() == "FakeQuantize" for s in _sources(n))]
    return {"fake_quantize": sum(op.get_type_name() == "FakeQuantize" for op in ops),
            "int_weights": sum(_is_int_constant(op) for op in ops),
            "weight_layers": len(weight_layers(model)), "float_layers": float_layers}


def count_weights(model) -> int:
    """Weights in the graph: the elements of every floating-point or integer weight constant, not shapes,
    axes, quantization ranges (FakeQuantize inputs 1-4) or dequantization scales and zero points."""
    total = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or op.get_output_element_type(0).get_type_name() in ("i64", "i32"):
            continue
        consumers = [t for t in op.output(0).get_target_inputs()]
        if all(t.get_node().get_type_name() == "FakeQuantize" and t.get_index() > 0 for t in consumers):
            continue
        if any(t.get_node().get_type_name() in ("Multiply", "Subtract") and _dequantizes(t.get_node())
               for t in consumers) and not _is_int_constant(op):
            continue
        total += int(np.prod(list(op.get_output_shape(0)))) if op.get_output_partial_shape(0).is_static else 0
    return total


def _dequantizes(node) -> bool:
    """A Multiply/Subtract whose other input is an integer constant turned float (a dequantization)."""
    return any(s.get_type_name() == "Convert" and any(_is_int_constant(c) for c in _sources(s, 1))
               for s in (i.get_source_output().get_node() for i in node.inputs()))
