"""ONNX export and ONNX Runtime int8: the artifacts a device loads, checked against PyTorch."""
import copy
from pathlib import Path

import onnx
import pytest
import torch
from conftest import TINY_VIT, saved, step_ctx

from vitcompress.artifacts import Artifact, ArtifactError
from vitcompress.config import ConfigError, resolve
from vitcompress.data import InputAdapter, PreparedData, calibration_images
from vitcompress.methods import build_model, get_method
from vitcompress.models import count_params
from vitcompress.runtimes import load_artifact
from vitcompress.runtimes.onnxruntime import OnnxArtifact
from vitcompress.workflow import bench_row, build_untrained, evaluate_artifact

_ctx, _saved = step_ctx, saved


@pytest.fixture(scope="module")
def exported(random_vit, digits_file, tmp_path_factory):
    """The tiny random ViT as the `onnx` step makes it, saved and reloaded."""
    tmp = tmp_path_factory.mktemp("onnx")
    parent = _saved(random_vit, tmp / "vit.pt")
    art = get_method("onnx")().run(_ctx({"id": "onnx", "method": "onnx"}, parent, digits_file))
    return parent, _saved(art, tmp / "model.onnx")


def test_export_runs_in_onnx_runtime_and_predicts_as_pytorch_does(exported, digits_file):
    parent, art = exported
    assert isinstance(art, OnnxArtifact) and art.meta["runtime"] == "onnxruntime" and art.meta["cpu_only"]
    check = art.meta["export_check"]
    data = PreparedData(digits_file)
    assert check["images"] == len(data.splits["test"][1]) and check["agreement"] >= 0.995
    assert check["top1"] == pytest.approx(check["reference_top1"], abs=100 / check["images"])
    # the file itself, on a batch size it was not exported at (dynamic batch), computes the PyTorch logits
    x = InputAdapter(data.meta, art.arch["kwargs"]["img_size"])(data.splits["test"][0][:7])
    with torch.inference_mode():
        torch.testing.assert_close(build_model(art)(x), build_model(parent)(x), atol=1e-4, rtol=1e-4)
    # the exporter stores identical tensors once: this untrained model's LayerNorm ones and zeros are shared
    assert count_params(build_model(art)) == pytest.approx(count_params(build_model(parent)), rel=0.05)
    assert [s["method"] for s in art.meta["steps"]] == ["onnx"] and art.settings() == {}


def test_exported_file_holds_no_debug_annotations_and_reloads_its_record(exported):
    _, art = exported
    proto = onnx.load(art.path)
    assert not any(node.metadata_props for node in proto.graph.node)  # no stack traces or local paths
    again = load_artifact(art.path)
    assert again.arch == art.arch and again.meta == art.meta and again.transforms == art.transforms


def test_an_export_that_computes_another_model_is_refused(random_vit, digits_file, tmp_path, monkeypatch):
    """The step compares the file's test-set predictions with PyTorch's: a graph of other weights fails."""
    from vitcompress.runtimes.onnxruntime import OnnxRuntime, export

    parent = _saved(random_vit, tmp_path / "vit.pt")

    def wrong_weights(cls, model, example):  # a graph of another model than the one the step checks against
        other = copy.deepcopy(model)
        torch.manual_seed(123)
        for p in other.parameters():
            p.data.normal_()
        return export(other, example)

    monkeypatch.setattr(OnnxRuntime, "convert", classmethod(wrong_weights))
    with pytest.raises(ValueError, match=r"predicts differently from PyTorch on .* test images"):
        get_method("onnx")().run(_ctx({"id": "onnx", "method": "onnx"}, parent, digits_file))


def test_static_int8_quantizes_weights_and_activations_with_calibration(exported, digits_file, tmp_path):
    _, fp32 = exported
    step = {"id": "int8_static", "method": "ort_int8_static", "calib_images": 64, "calib_batch_size": 16}
    art = _saved(get_method("ort_int8_static")().run(_ctx(step, fp32, digits_file)), tmp_path / "s8.onnx")
    graph = onnx.load(art.path).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "MatMul"} <= ops
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
    assert len(int8_weights) >= 4  # every Linear of the encoder (qkv, proj, fc1, fc2) stores int8 weights
    # per-channel: a weight's scale has one entry per output channel
    scales = {t.name: t for t in graph.initializer if t.name.endswith("_scale")}
    assert any(len(t.dims) == 1 and t.dims[0] > 1 for t in scales.values())
    assert Path(art.path).stat().st_size < 0.7 * Path(fp32.path).stat().st_size
    assert art.meta["ort_quantized"] == "static int8 (QDQ)" and "export_check" not in art.meta
    reduce, why = art.settings()["reduce_range"], art.settings()["reduce_range_reason"]
    assert art.settings() == {"calib_images": 64, "per_channel": True, "reduce_range": reduce,
                              "reduce_range_reason": why}
    from vitcompress.measure import fingerprint

    assert fingerprint(1, gpu=False)["ort_reduce_range"] == reduce  # this machine's choice, in the fingerprint


def test_static_int8_runs_integer_matmuls_and_a_float_softmax(exported, digits_file, tmp_path):
    """What the session runs after ORT's own fusions: integer MatMul kernels, and softmax in float (ORT's
    QLinearSoftmax is the slower one); the int8 model still predicts like the float one."""
    import onnxruntime as ort

    _, fp32 = exported
    step = {"id": "int8_static", "method": "ort_int8_static", "calib_images": 64, "calib_batch_size": 16}
    art = _saved(get_method("ort_int8_static")().run(_ctx(step, fp32, digits_file)), tmp_path / "s8.onnx")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "as_run.onnx")
    session = ort.InferenceSession(art.path, opts, providers=["CPUExecutionProvider"])
    ran = [n.op_type for n in onnx.load(str(tmp_path / "as_run.onnx")).graph.node]
    assert "QLinearMatMul" in ran and "MatMulIntegerToFloat" in ran  # int8 GEMMs; q·kᵀ with a float output
    assert "Softmax" in ran and "QLinearSoftmax" not in ran
    images = calibration_images(digits_file, fp32.arch["kwargs"]["img_size"], 256, "cpu", 1)
    float_out = build_model(fp32)(images)
    int8_out = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])
    # 8-bit error is small against the logits themselves (a random model's near-tied logits make top-1
    # agreement a weak check on its own), and predictions follow
    assert (int8_out - float_out).norm() < 0.05 * float_out.norm()
    assert (float_out.argmax(1) == int8_out.argmax(1)).float().mean() >= 0.95


@pytest.mark.parametrize("flags, machine, reduce", [
    (["avx2"], "x86_64", True),                    # u8s8 VPMADDUBSW saturates int16
    (["avx2", "avx512f"], "x86_64", True),
    (["avx2", "avx512f", "avx512_vnni"], "x86_64", False),
    (["avx2", "avx_vnni"], "x86_64", False),
    (["neon", "asimd"], "aarch64", False),
])
def test_reduce_range_is_chosen_by_instruction_set(flags, machine, reduce):
    from vitcompress.measure import reduce_range_for

    assert reduce_range_for(flags, machine)[0] is reduce


@pytest.mark.parametrize("method", ["ort_int8_static", "ort_int8_dynamic"])
def test_reduce_range_gives_7_bit_weights_and_is_recorded(exported, digits_file, tmp_path, method):
    _, fp32 = exported
    out = {}
    for reduce in (True, False):
        step = {"id": "q", "method": method, "calib_images": 32, "calib_batch_size": 16, "reduce_range": reduce}
        if method == "ort_int8_dynamic":
            step = {k: v for k, v in step.items() if not k.startswith("calib")}
        art = _saved(get_method(method)().run(_ctx(step, fp32, digits_file)), tmp_path / f"{reduce}.onnx")
        weights = [onnx.numpy_helper.to_array(t) for t in onnx.load(art.path).graph.initializer
                   if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
        out[reduce] = max(int(abs(w.astype(int)).max()) for w in weights)
        assert art.settings()["reduce_range"] is reduce and art.settings()["reduce_range_reason"] == "set in params.yaml"
    assert out[True] <= 64 < out[False]


def test_a_bad_reduce_range_is_named(raw_params):
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["demo"]["steps"]["int8_static"]["reduce_range"] = "sometimes"
    with pytest.raises(ConfigError, match=r"int8_static.reduce_range = 'sometimes': use auto"):
        resolve(raw)


def test_static_calibration_asks_no_more_images_than_the_training_split_has(exported, digits_file):
    _, fp32 = exported
    step = {"id": "int8_static", "method": "ort_int8_static", "calib_images": 10 ** 6}
    with pytest.raises(ValueError, match="calib_images = 1000000 exceeds"):
        get_method("ort_int8_static")().run(_ctx(step, fp32, digits_file))


def test_dynamic_int8_quantizes_at_run_time_and_accuracy_comes_from_onnx_runtime(exported, digits_file, tmp_path):
    _, fp32 = exported
    step = {"id": "int8_dynamic", "method": "ort_int8_dynamic"}
    path = tmp_path / "d8.onnx"
    _saved(get_method("ort_int8_dynamic")().run(_ctx(step, fp32, digits_file)), path)
    assert "DynamicQuantizeLinear" in {n.op_type for n in onnx.load(path).graph.node}
    evaluate_artifact(str(path), str(digits_file), str(tmp_path / "acc.json"))
    from vitcompress.io import read_json

    acc = read_json(tmp_path / "acc.json")
    assert acc["runtime"] == "ONNX Runtime" and acc["eval_device"] == "cpu" and acc["test_images"] == 270
    assert acc["size_mb"] == pytest.approx(path.stat().st_size / 2 ** 20)  # an ONNX file counts as it is
    import zlib

    assert acc["compressed_mb"] == pytest.approx(len(zlib.compress(path.read_bytes(), 9)) / 2 ** 20)


def test_int8_steps_refuse_a_pytorch_or_an_already_quantized_input(random_vit, exported, digits_file, tmp_path):
    _, fp32 = exported
    s8 = _saved(get_method("ort_int8_dynamic")().run(_ctx({"id": "d", "method": "ort_int8_dynamic"}, fp32,
                                                            digits_file)), tmp_path / "d8.onnx")
    for method in ("ort_int8_static", "ort_int8_dynamic"):
        with pytest.raises(ValueError, match="put an `onnx` step before it"):
            get_method(method)().execute(_ctx({"id": "q", "method": method}, random_vit, digits_file))
        with pytest.raises(ValueError, match="already int8"):
            get_method(method)().execute(_ctx({"id": "q", "method": method, "calib_images": 8}, s8, digits_file))


def test_onnx_session_follows_the_thread_count_set_before_eval(exported):
    _, art = exported
    model = build_model(art)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        model.eval()
        assert model._session.get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(RuntimeError, match="inference only"):
        model.train()


@pytest.mark.parametrize("content, match", [
    (b"not a protobuf at all \xff\xfe", "corrupt or truncated ONNX file"),
    (None, "without vitcompress's record"),
])
def test_foreign_or_damaged_onnx_files_are_refused(tmp_path, content, match):
    path = tmp_path / "model.onnx"
    if content is None:  # a valid ONNX model that this project did not write
        node = onnx.helper.make_node("Identity", ["x"], ["y"])
        info = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in ("x", "y")]
        onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", info[:1], info[1:])), path)
    else:
        path.write_bytes(content)
    with pytest.raises(ArtifactError, match=match):
        load_artifact(path)


DEIT = {"timm": "deit_tiny_distilled_patch16_224", "kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 1,
                                                                "num_heads": 1}}
ROW_CHAINS = {  # every kind of row whose model the exporter must trace, built with random weights
    "vanilla": (TINY_VIT, []),
    "deit_distilled": (DEIT, []),  # class + distillation token, two heads averaged at inference
    "nystrom": (TINY_VIT, [{"id": "ny", "method": "nystrom", "landmarks": 4}]),
    "prune": (TINY_VIT, [{"id": "g", "method": "prune_gates"}, {"id": "p", "method": "prune", "ratio": 0.3}]),
    "lsq": (TINY_VIT, [{"id": "lsq", "method": "lsq", "bits": 4, "min_size": 0.0}]),
    "diffq": (TINY_VIT, [{"id": "dq", "method": "diffq", "min_size": 0.0, "group_size": 8, "init_bits": 4,
                          "exclude": ["head.bias"]}]),
}


@pytest.mark.parametrize("kind", sorted(ROW_CHAINS))
def test_compressed_rows_export_and_compute_the_same_logits(kind, tmp_path):
    model, chain = ROW_CHAINS[kind]
    arch = copy.deepcopy({**model, "kwargs": {**model["kwargs"], "img_size": [16, 16], "in_chans": 1,
                                              "num_classes": 10}})
    steps = [{"id": "vit", "method": "train"}, *chain]
    torch.manual_seed(0)
    parent = _saved(build_untrained(steps, arch), tmp_path / "model.pt")
    art = _saved(get_method("onnx").untrained_deploy(parent, {"id": "onnx", "method": "onnx"}), tmp_path / "m.onnx")
    assert art.meta["runtime"] == "onnxruntime" and art.transforms[:-1] == parent.transforms
    x = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(build_model(art)(x), build_model(parent)(x), atol=2e-4, rtol=2e-4)


def test_bench_row_times_an_onnx_chain_beside_the_pytorch_baseline(tmp_path):
    arch = {**TINY_VIT, "kwargs": {**TINY_VIT["kwargs"], "img_size": [16, 16], "in_chans": 1, "num_classes": 10}}
    base = [{"id": "vit", "method": "train"}]
    chain = base + [{"id": "onnx", "method": "onnx"}, {"id": "s8", "method": "ort_int8_static"}]
    measure = {"batch_size": 4, "cpu_threads": 1, "warmup": 1, "repeats": 2}
    bench_row(chain, arch, measure, {"label": "test"}, str(tmp_path / "b.json"), baseline_steps=base,
              baseline_arch=arch)
    from vitcompress.io import read_json

    r = read_json(tmp_path / "b.json")
    assert r["runtime"] == "ONNX Runtime" and r["cpu"]["vs_baseline"] > 0 and r["gpu"] is None
    assert r["chain"] == ["vit", "onnx", "s8"] and r["params"] > 0
    assert any("ONNX Runtime" in n for n in r["notes"])


def _profile_with_chain(raw, chain, **step_edits):
    raw = copy.deepcopy(raw)
    prof = raw["profiles"]["demo"]
    for sid, edit in step_edits.items():
        prof["steps"][sid].update(edit)
    prof["rows"].append({"id": "x", "model": "X", "method": "Y", "chain": chain})
    return raw


@pytest.mark.parametrize("chain, edits, match", [
    (["vit", "int8_static"], {}, r"chain\[1\] = 'int8_static' .* needs an ONNX model.*put an `onnx` step"),
    (["vit", "dynamic_ptq", "onnx"], {}, r"method 'dynamic_ptq' earlier in the chain .* cannot trace"),
    (["vit", "fq_vit", "onnx"], {}, r"method 'fq_vit' earlier"),
    (["vit", "onnx", "dynamic_ptq"], {}, r"needs a PyTorch model, but the step before it makes an ONNX model"),
    (["vit", "onnx", "int8_static", "int8_dynamic"], {},
     r"chain\[3\] = 'int8_dynamic' .* but the step before it, 'int8_static' \(ort_int8_static\), makes an int8 "
     r"model; chain 'int8_dynamic' on the model before 'int8_static' instead \(e.g. \[vit, onnx, int8_dynamic\]\)"),
    (["vit", "onnx", "onnx"], {}, r"chain\[2\] = 'onnx' converts to ONNX Runtime, but step 'onnx' .* already converted"),
    # the kind of model a step makes (float, QAT, int8, simulated) against what the next step takes
    (["vit", "dynamic_ptq", "dynamic_ptq"], {}, r"chain\[2\] = 'dynamic_ptq' .*'dynamic_ptq' \(dynamic_ptq\), makes an int8"),
    (["vit", "dynamic_ptq", "lsq"], {}, r"'lsq' uses method 'lsq', which needs a float model, .* makes an int8 model"),
    (["vit", "lsq", "fq_vit"], {}, r"'fq_vit' .* needs a float model, .*'lsq' \(lsq\), makes a quantization-aware"),
    (["vit", "lsq", "diffq"], {}, r"'diffq' .* needs a float model"),
    (["vit", "fq_vit", "gates"], {}, r"'gates' uses method 'prune_gates', .* makes a simulated-quantization model"),
    (["vit", "fq_vit", "dynamic_ptq"], {}, r"'dynamic_ptq' .* makes a simulated-quantization model"),
    (["vit", "dynamic_ptq", "nystrom_0.5"], {}, r"'nystrom_0.5' uses method 'nystrom', .* makes an int8 model"),
    (["vit", "lsq", "dynamic_ptq"], {}, None),  # int8 kernels for a QAT model's (dequantized) weights
    (["vit", "lsq", "onnx", "int8_static"], {}, None),  # the same in ONNX Runtime
    (["vit", "lsq", "gates"], {}, None),
    (["vit", "onnx"], {"onnx": {"min_agreement": 1.5}}, r"min_agreement = 1.5"),
    (["vit", "onnx", "int8_static"], {"int8_static": {"calib_images": 0}}, r"calib_images = 0"),
    (["vit", "onnx", "int8_static"], {"int8_static": {"per_chanel": True}}, r"unknown key .*per_chanel"),
])
def test_chains_that_cannot_run_stop_before_any_job(raw_params, chain, edits, match):
    raw = _profile_with_chain(raw_params, chain, **edits)
    if match is None:
        resolve(raw, {"profile": "demo"})
        return
    with pytest.raises(ConfigError, match=match):
        resolve(raw, {"profile": "demo"})


def test_a_pytorch_artifact_never_loads_as_onnx_and_back(random_vit, tmp_path):
    path = tmp_path / "model.pt"
    random_vit.save(path)
    assert type(load_artifact(path)) is Artifact
    with pytest.raises(ArtifactError):
        OnnxArtifact.load(path)


def _with_weight_shapes(path, out):
    """The exported file with every weight's shape recorded a second time (``value_info``), as torch's exporter
    writes it today (whatever a later exporter does)."""
    proto = onnx.load(str(path))
    recorded = {v.name for v in proto.graph.value_info}
    for t in proto.graph.initializer:
        if t.name not in recorded:
            proto.graph.value_info.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    onnx.save_model(proto, str(out))
    return out


def test_quantizers_read_a_copy_without_the_exporters_stale_weight_shapes(exported, tmp_path):
    """A quantizer that rewrites a weight (onnxruntime 1.30 transposes the head's Gemm weight) fails its own
    shape inference on the shape the exporter recorded for it. The quantizers read a copy without those
    entries: rewritten as 1.30 does, it still infers; the other recorded shapes are kept."""
    from vitcompress.runtimes.onnxruntime import _without_initializer_shapes

    _, onnx_art = exported
    original = onnx.load(str(_with_weight_shapes(onnx_art.path, tmp_path / "recorded.onnx")))
    weights = {t.name for t in original.graph.initializer}

    def transpose_head(proto):  # what onnxruntime 1.30's quantizer does to the head's Gemm (transB) weight
        head = next(n for n in proto.graph.node if n.op_type == "Gemm")
        w = next(t for t in proto.graph.initializer if t.name == head.input[1])
        w.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w).T.copy(), w.name))
        attr = next(a for a in head.attribute if a.name == "transB")
        attr.i = 1 - attr.i
        return proto

    with pytest.raises(onnx.shape_inference.InferenceError, match="differ"):
        onnx.shape_inference.infer_shapes(transpose_head(copy.deepcopy(original)), strict_mode=True)
    cleaned = onnx.load(_without_initializer_shapes(onnx.load(str(tmp_path / "recorded.onnx")), str(tmp_path)))
    assert not {v.name for v in cleaned.graph.value_info} & weights
    assert {v.name for v in cleaned.graph.value_info} == {v.name for v in original.graph.value_info} - weights
    onnx.shape_inference.infer_shapes(transpose_head(cleaned), strict_mode=True)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_both_quantizers_hand_onnx_runtime_the_copy(exported, tmp_path, monkeypatch, kind):
    import onnxruntime.quantization as ortq

    from vitcompress.runtimes import onnxruntime as ort_rt

    _, onnx_art = exported
    recorded = _with_weight_shapes(onnx_art.path, tmp_path / "recorded.onnx")
    seen = {}

    def stop(model_input, *args, **kwargs):  # what ONNX Runtime's quantizer would read, then stop
        proto = onnx.load(str(model_input))
        weights = {t.name for t in proto.graph.initializer}
        seen["weights_with_shapes"] = {v.name for v in proto.graph.value_info} & weights
        raise RuntimeError("stop")

    monkeypatch.setattr(ortq, f"quantize_{kind}", stop)
    with pytest.raises(RuntimeError, match="stop"):
        if kind == "dynamic":
            ort_rt.quantize_dynamic(recorded)
        else:
            ort_rt.quantize_static(recorded, torch.zeros(2, 1, 8, 8), 2)  # stopped before calibration
    assert seen["weights_with_shapes"] == set()
