"""The ``onnxruntime`` runtime: export, load, run and quantize, as the rest of the pipeline runs PyTorch models.

An ONNX artifact is the ``.onnx`` file a device loads, nothing else: the model graph and its weights
(``onnx`` writes them as protocol buffers, which hold no code), plus, in the file's own metadata, the
same ``arch`` / ``transforms`` / ``meta`` record a PyTorch artifact carries, so reports, chains and
labels read both alike. Its size on disk is the deployable size.

:class:`OrtModule` wraps an ONNX Runtime session as an ``nn.Module`` that takes and returns torch
tensors, so accuracy (:func:`vitcompress.measure.evaluate`) and speed (:func:`vitcompress.measure.speed`,
side by side with the PyTorch baseline) are measured by the same code for both runtimes. The session is
(re)made with as many intra-op threads as PyTorch has when the module is put in eval mode, which both
measurement functions do after setting the thread count: a timing never includes building the session.

``onnx``, ``onnxruntime`` and the exporter are imported only by the functions that need them.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from vitcompress.errors import ConfigError
from vitcompress.io import DIGEST_PLACEHOLDER, atomic_path, package_version, seal_files
from vitcompress.runtimes.base import Runtime, RuntimeArtifact, register_runtime
from vitcompress.settings import Settings, setting

META_KEY = "vitcompress.artifact"
DIGEST_META = "vitcompress.digest"  # the file's content digest (vitcompress.io.seal_files)
INPUT, OUTPUT = "image", "logits"
# operators that compute in integers as written (no float form to simulate them with)
INTEGER_OPS = {"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "DynamicQuantizeMatMul",
               "MatMulIntegerToFloat"}
RUNTIME = "onnxruntime"


class OrtModule(nn.Module):
    """An ONNX Runtime CPU session as a module: ``forward(x: Tensor) -> Tensor`` (float logits)."""

    def __init__(self, path: str | Path, fuse: bool = True, simulate: bool = False):
        super().__init__()
        self.path, self.fuse, self.simulate = str(path), fuse and not simulate, simulate
        self._session = None
        self._threads = None

    def _ensure_session(self):
        threads = torch.get_num_threads()
        if self._session is None or self._threads != threads:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            # every fusion ORT has: QDQ pairs around MatMul become integer MatMul kernels, LayerNorm/GELU fuse;
            # none (fuse=False): each QuantizeLinear/DequantizeLinear runs as written, the QDQ math in float
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if self.fuse else \
                ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            source = float_simulation(self.path).SerializeToString() if self.simulate else self.path
            self._session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
            self._threads = threads
        return self._session

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("an ONNX Runtime model runs inference only")
        self._ensure_session()
        return super().train(False)

    def _apply(self, fn, recurse=True):  # .to(device): the session is CPU-only and holds no torch tensors
        return self

    def num_params(self) -> int:
        """Weights in the graph: every stored tensor but the quantization scales and zero points."""
        import onnx

        graph = onnx.load(self.path, load_external_data=False).graph
        stored = list(graph.initializer)  # the exporter also folds small tensors into Constant nodes
        stored += [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
        return sum(int(np.prod(t.dims)) for t in stored if not t.name.endswith(("_scale", "_zero_point")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise RuntimeError("the ONNX Runtime artifacts run on the CPU execution provider only")
        session = self._ensure_session()
        out = session.run(None, {self._input: np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out)


@dataclass
class OnnxArtifact(RuntimeArtifact):
    """A ``.onnx`` deployment artifact; ``native`` is the ``onnx.ModelProto`` a step made (until saved)."""

    def write(self, path: Path, record: str) -> None:
        import onnx

        kept = [p for p in self.native.metadata_props if p.key not in (META_KEY, DIGEST_META)]
        del self.native.metadata_props[:]
        self.native.metadata_props.extend(kept)
        self.native.metadata_props.add(key=META_KEY, value=record)
        self.native.metadata_props.add(key=DIGEST_META, value=DIGEST_PLACEHOLDER)
        with atomic_path(path) as tmp:
            onnx.save_model(self.native, str(tmp), save_as_external_data=False)
            seal_files([tmp])

    @classmethod
    def read_record(cls, path: Path) -> str | None:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        return next((p.value for p in proto.metadata_props if p.key == META_KEY), None)


@register_runtime
class OnnxRuntime(Runtime):
    name = RUNTIME
    label = "ONNX Runtime"
    files = ("model.onnx",)
    converter = "onnx"
    cpu_backend = "its CPU execution provider"
    file_kind = "ONNX"
    model_noun = "an ONNX model"
    artifact = OnnxArtifact

    @classmethod
    def convert(cls, model, example):
        return export(model, example)

    @classmethod
    def module(cls, path, meta):
        return OrtModule(path)

    @classmethod
    def simulation(cls, path, meta):
        """The quantized model's math in float, run with no graph fusion (:func:`float_simulation`): each
        QuantizeLinear/DequantizeLinear pair (static, QDQ) computed as written, each integer MatMul or Conv
        (dynamic) as its float operator on the integer values. None for a model with nothing quantized or an
        integer operator this cannot write in float."""
        import onnx

        ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
        if not ops & ({"DequantizeLinear"} | INTEGER_OPS) or ops & (INTEGER_OPS - set(FLOAT_FORMS)):
            return None
        return OrtModule(path, simulate=True)

    @classmethod
    def versions(cls):
        return {"onnxruntime": package_version("onnxruntime")}



def check_onnx(parent, step_id: str) -> None:
    """Raise ValueError unless ``parent`` is an ONNX file (what ORT's quantizers take)."""
    if not isinstance(parent, OnnxArtifact) or parent.path is None:
        raise ValueError(f"step {step_id!r} quantizes an ONNX file: put an `onnx` step before it.")


@dataclass(frozen=True, kw_only=True)
class ReduceRange(Settings):
    """The ``reduce_range`` key both ORT int8 steps have: ``auto`` (7-bit weights on x86 CPUs without
    VNNI, where ORT's u8xs8 kernels saturate), true or false."""

    reduce_range: bool | str = setting("auto", help="auto, true or false")

    def check(self, where):
        if self.reduce_range != "auto" and not isinstance(self.reduce_range, bool):
            raise ConfigError(f"params.yaml: {where}.reduce_range = {self.reduce_range!r}: use auto (7-bit weights "
                              f"on x86 CPUs without VNNI), true or false.")

    def resolved(self) -> tuple[bool, str]:
        """The bool ORT gets, and the reason the step records."""
        if self.reduce_range == "auto":
            import platform

            from vitcompress.measure import cpu_flags, reduce_range_for

            return reduce_range_for(cpu_flags(), platform.machine())
        return bool(self.reduce_range), "set in params.yaml"


FLOAT_FORMS = {"MatMulInteger": "MatMul", "ConvInteger": "Conv"}  # integer operators written in float


def float_simulation(path: str | Path):
    """The ``onnx.ModelProto`` at ``path`` with each MatMulInteger / ConvInteger replaced by its float operator
    on the same integer values (inputs cast to float less their zero points, the result cast back to int32):
    what dynamic quantization computes, without the CPU's integer kernels (which, without VNNI, sum u8×s8
    products in a saturating int16). QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear stay: they
    are float arithmetic already, and with no graph fusion ORT runs them as written."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(path), load_external_data=False)
    graph, nodes = proto.graph, []
    for node in graph.node:
        if node.op_type not in FLOAT_FORMS:
            nodes.append(node)
            continue
        name = node.name or node.output[0]
        operands = []
        for i, which in ((0, "a"), (1, "b")):
            value = f"{name}/{which}_float"
            nodes.append(helper.make_node("Cast", [node.input[i]], [value], to=TensorProto.FLOAT))
            zero = node.input[i + 2] if len(node.input) > i + 2 and node.input[i + 2] else None
            if zero:
                zero_f = f"{name}/{which}_zero_float"
                nodes.append(helper.make_node("Cast", [zero], [zero_f], to=TensorProto.FLOAT))
                if node.op_type == "ConvInteger" and i == 1:  # one zero point per output channel: (M, 1, 1, ...)
                    shape = f"{name}/w_zero_shape"
                    nodes.append(helper.make_node("Constant", [], [shape], value=helper.make_tensor(
                        shape, TensorProto.INT64, [2], [-1, 1])))
                    nodes.append(helper.make_node("Reshape", [zero_f, shape], [f"{zero_f}/2d"]))
                    flat = f"{name}/w_flat"
                    nodes.append(helper.make_node("Shape", [value], [f"{name}/w_shape"]))
                    nodes.append(helper.make_node("Flatten", [value], [flat], axis=1))
                    nodes.append(helper.make_node("Sub", [flat, f"{zero_f}/2d"], [f"{flat}/centred"]))
                    nodes.append(helper.make_node("Reshape", [f"{flat}/centred", f"{name}/w_shape"], [f"{value}/centred"]))
                else:
                    nodes.append(helper.make_node("Sub", [value, zero_f], [f"{value}/centred"]))
                value = f"{value}/centred"
            operands.append(value)
        result = f"{name}/float_result"
        nodes.append(helper.make_node(FLOAT_FORMS[node.op_type], operands, [result], name=f"{name}/float",
                                      **{a.name: helper.get_attribute_value(a) for a in node.attribute}))
        nodes.append(helper.make_node("Cast", [result], [node.output[0]], to=TensorProto.INT32))
    del graph.node[:]
    graph.node.extend(nodes)
    return proto


def reduce_range_fix(s) -> str:
    """The fix to suggest when an ORT int8 model misses its reference: 7-bit weights if they are off."""
    reduce, _ = s.resolved()
    if not reduce:
        return "set reduce_range: true on this step (7-bit weights: what auto chooses on an x86 CPU without VNNI)"
    return "raise max_gap to accept the loss, or report the model and this CPU"


def export(model: nn.Module, example: torch.Tensor):
    """``model`` as an ``onnx.ModelProto`` with a dynamic batch dimension (torch.export-based exporter).

    The batch of ``example`` must be at least 2: exported at batch 1, the graph would be specialised to it."""
    import warnings

    from torch.export import Dim

    model = model.cpu().eval()
    for name in ("onnx_ir", "onnxscript", "torch.onnx"):  # a line per folded constant at INFO: not job-log news
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example.cpu(),), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes=({0: Dim("batch")},), optimize=True, verbose=False,
                                    external_data=False)
    proto = program.model_proto
    # the exporter annotates every node with its Python stack trace and module path: debugging aids that
    # are a quarter of a small model's file and name this machine's paths; a deployed file carries neither
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    return proto


class _Batches:
    """``onnxruntime.quantization.CalibrationDataReader`` over model-ready images in batches, readable one
    stretch of batches at a time (``set_range``: what ORT's strided min-max calibration asks for)."""

    def __init__(self, images: torch.Tensor, batch_size: int, input_name: str):
        self._batches = [{input_name: b.numpy().astype(np.float32)} for b in images.split(batch_size)]
        self.set_range(0, len(self._batches))

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self._batches[start_index:end_index])

    def get_next(self):
        return next(self._iter, None)


def _without_initializer_shapes(proto, tmp: str) -> str:
    """``proto`` (a loaded model, changed in place) saved in ``tmp`` without the shapes its exporter recorded for
    initializers (``value_info`` entries that name a weight); returns the file's path. A weight carries its own
    shape; the recorded copy goes stale when a quantizer rewrites the weight (onnxruntime 1.30 transposes the
    head's Gemm weight and its shape inference then fails: "Inferred shape and existing shape differ in
    dimension 0: (64) vs (10)"; 1.32 does not). Saved models hold their weights inline, so the copy is complete."""
    import onnx

    weights = {t.name for t in proto.graph.initializer}
    kept = [v for v in proto.graph.value_info if v.name not in weights]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept)
    path = str(Path(tmp) / "parent.onnx")
    onnx.save_model(proto, path)
    return path


def quantize_static(parent_path: str | Path, images: torch.Tensor, batch_size: int, per_channel: bool = True,
                    reduce_range: bool = False):
    """ONNX Runtime static int8 quantization (QDQ format) of ``parent_path``, calibrated (min-max) on
    ``images``: int8 weights (per output channel when ``per_channel``), uint8 activations; returns the
    ``onnx.ModelProto``.

    Two parts stay float. The classifier head: ORT cannot give its bias an int32 scale when its input comes
    from a Gather (the class token) or a ReduceMean (average pooling); it is a tiny share of the weights.
    And softmax: a softmax between QDQ pairs becomes ORT's QLinearSoftmax, slower than the float one. So
    softmax nodes are excluded and no MatMul output is quantized for its own sake
    (``OpTypesToExcludeOutputQuantization``): q·kᵀ runs as an integer MatMul with a float output, straight
    into a float softmax. A MatMul output that feeds an int8 operator (a bias Add) is still quantized by
    that operator."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    proto = onnx.load(str(parent_path))
    floats = [n.name for n in proto.graph.node if n.op_type in ("Gemm", "Softmax")]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        parent = _without_initializer_shapes(proto, tmp)
        del proto  # ONNX Runtime reads the file: the weights need not stay in memory twice while it calibrates
        ort_quantize_static(
            parent, str(out), _Batches(images, batch_size, INPUT),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=floats,
            # ranges are reduced after every batch and merged (min of mins, max of maxes): kept until the end,
            # every intermediate tensor of every image would stay in memory. (CalibMaxIntermediateOutputs, meant for
            # this, drops the batches it clears in onnxruntime 1.32 without reducing them.)
            extra_options={"CalibStridedMinMax": 1, "OpTypesToExcludeOutputQuantization": ["MatMul"]},
        )
        return onnx.load(str(out))


def quantize_dynamic(parent_path: str | Path, per_channel: bool = False, reduce_range: bool = False):
    """ONNX Runtime dynamic int8 quantization of ``parent_path``'s MatMul/Gemm weights (activations
    quantized at run time); returns the ``onnx.ModelProto``."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        ort_quantize_dynamic(_without_initializer_shapes(onnx.load(str(parent_path)), tmp), str(out), weight_type=QuantType.QInt8,
                             per_channel=per_channel, reduce_range=reduce_range)
        return onnx.load(str(out))
