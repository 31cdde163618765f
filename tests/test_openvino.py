"""OpenVINO and NNCF: the IR a device loads, checked against PyTorch; int8 that really is int8; precision
as asked; accuracy control judged on the validation split; the per-step speed-up; chains that cannot run."""
import copy
import os
import platform
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_VIT, saved, step_ctx

from vitcompress.artifacts import Artifact, ArtifactError
from vitcompress.config import ConfigError, resolve
from vitcompress.data import InputAdapter, PreparedData
from vitcompress.measure import cpu_flags, evaluate, int8_flags, ov_int8_recipe, speed
from vitcompress.methods import build_model, get_method
from vitcompress.models import arch_for, count_params, create
from vitcompress.runtimes import describe, get_runtime, load_artifact, runtime_of
from vitcompress.runtimes.openvino import OvArtifact, OvModule, core, quantization_summary

_ctx, _saved = step_ctx, saved


@pytest.fixture(scope="module")
def trained(digits_file, tmp_path_factory):
    """The tiny ViT trained for a few epochs on digits (accuracy an int8 step can lose), saved."""
    from vitcompress.train import fit

    torch.set_num_threads(1)
    data = PreparedData(digits_file)
    arch = arch_for(TINY_VIT, data.meta)
    torch.manual_seed(0)
    model = create(arch)
    adapter = InputAdapter(data.meta, arch["kwargs"]["img_size"])
    fit(model, data, {"epochs": 4, "batch_size": 32, "lr": 0.003, "num_workers": 0, "warmup_epochs": 0}, adapter,
        seed=0, desc="ov-test")
    return _saved(Artifact(arch, model.state_dict(), [], {"steps": [{"id": "vit", "method": "train"}]}),
                  tmp_path_factory.mktemp("ov") / "vit.pt")


@pytest.fixture(scope="module")
def converted(trained, digits_file, tmp_path_factory):
    art = get_method("ov")().run(_ctx({"id": "ov", "method": "ov"}, trained, digits_file))
    return _saved(art, tmp_path_factory.mktemp("ov_ir") / "model.xml")


@pytest.fixture(scope="module")
def quantized(converted, digits_file, tmp_path_factory):
    step = {"id": "ov_int8", "method": "ov_int8", "subset_size": 128}
    art = get_method("ov_int8")().run(_ctx(step, converted, digits_file))
    return _saved(art, tmp_path_factory.mktemp("ov_int8") / "model.xml")


def _top1(art, data_file) -> float:
    data = PreparedData(data_file)
    return evaluate(build_model(art), data.loader("test", 256), InputAdapter(data.meta, art.arch["kwargs"]["img_size"]))["top1"]


def test_conversion_runs_in_openvino_and_predicts_as_pytorch_does(trained, converted, digits_file):
    art = converted
    assert isinstance(art, OvArtifact) and art.meta["runtime"] == "openvino" and art.meta["cpu_only"]
    assert runtime_of(art.path).name == "openvino" and Path(art.path).with_suffix(".bin").is_file()
    check = art.meta["export_check"]
    assert check["images"] == len(PreparedData(digits_file).splits["test"][1]) and check["agreement"] >= 0.995
    data = PreparedData(digits_file)
    x = InputAdapter(data.meta, art.arch["kwargs"]["img_size"])(data.splits["test"][0][:7])  # not a shape seen yet
    with torch.inference_mode():
        torch.testing.assert_close(build_model(art)(x), build_model(trained)(x), atol=1e-4, rtol=1e-4)
    assert count_params(build_model(art)) == pytest.approx(count_params(build_model(trained)), rel=0.05)
    # the IR keeps f32 weights (no fp16 compression) and no quantization
    summary = quantization_summary(core().read_model(art.path))
    assert summary["fake_quantize"] == 0 and summary["int_weights"] == 0
    assert summary["weight_layers"] == len(summary["float_layers"]) > 0
    again = load_artifact(art.path)
    assert again.arch == art.arch and again.meta == art.meta and describe(art.meta) == "OpenVINO, f32"


def test_a_conversion_that_computes_another_model_is_refused(trained, digits_file, monkeypatch):
    from vitcompress.runtimes.openvino import OpenVINO

    real = OpenVINO.convert.__func__

    def wrong_weights(cls, model, example):
        other = copy.deepcopy(model)
        torch.manual_seed(123)
        for p in other.parameters():
            p.data.normal_()
        return real(cls, other, example)

    monkeypatch.setattr(OpenVINO, "convert", classmethod(wrong_weights))
    with pytest.raises(ValueError, match=r"OpenVINO conversion of step 'ov' predicts differently from PyTorch"):
        get_method("ov")().run(_ctx({"id": "ov", "method": "ov"}, trained, digits_file))


def test_int8_ir_holds_integer_weights_and_keeps_the_accuracy(converted, quantized, digits_file):
    summary = quantization_summary(core().read_model(quantized.path))
    assert summary["fake_quantize"] > 0 and summary["int_weights"] >= summary["weight_layers"] > 0
    assert summary["float_layers"] == [] and quantized.meta["ov_quantization"] == summary
    assert describe(quantized.meta) == "OpenVINO, int8 + f32"
    weights = Path(quantized.path).with_suffix(".bin").stat().st_size
    assert weights < 0.45 * Path(converted.path).with_suffix(".bin").stat().st_size  # int8, not f32, on disk
    assert abs(_top1(quantized, digits_file) - _top1(converted, digits_file)) <= 2.0
    recipe = ov_int8_recipe(int8_flags(), platform.machine())
    assert quantized.transforms[-1] == {"method": "ov_int8", "subset_size": 128, "preset": "mixed",
                                        "smooth_quant": True, "fast_bias_correction": True, "precision": "f32",
                                        "overflow_fix": recipe["overflow_fix"], "attention": recipe["attention"],
                                        "recipe_reason": recipe["reason"]}
    check = quantized.meta["deploy_check"]  # the IR as deployed against its own FakeQuantize math, val split
    assert check["reference"] == "simulation" and check["split"] == "val"
    assert check["images"] == len(PreparedData(digits_file).splits["val"][1]) and check["gap"] <= 1.0


def test_precision_is_the_one_asked_for(converted):
    assert describe({"runtime": "openvino", "ov_precision": "bf16", "ov_int8": True}) == "OpenVINO, int8 + bf16"
    assert describe({"runtime": "openvino", "ov_precision": "f32", "ov_int8": False}) == "OpenVINO, f32"
    x = torch.zeros(2, *[int(converted.arch["kwargs"]["in_chans"])], *converted.arch["kwargs"]["img_size"])
    f32 = OvModule(converted.path, "f32").eval()
    f32(x)
    assert f32.reported_precision() == "f32"
    if not {"avx512_bf16", "amx_bf16"} & set(cpu_flags()):
        pytest.skip("this CPU has no bf16: OpenVINO would run f32 (and the module refuses that)")
    bf16 = OvModule(converted.path, "bf16").eval()
    bf16(x)
    assert bf16.reported_precision() == "bf16"


@pytest.mark.parametrize("max_drop", [0.0, 100.0])
def test_accuracy_control_respects_max_drop_on_the_validation_split(converted, digits_file, monkeypatch, max_drop):
    """The int8 IR's validation top-1 is within ``max_drop`` of the float IR's (NNCF reverts operations, enough
    rounds given, until it is); what it reverted is recorded; every image it judges on is a validation image.
    A bound any quantization meets reverts nothing."""
    import vitcompress.runtimes.openvino as ov_runtime

    data = PreparedData(digits_file)
    adapter = InputAdapter(data.meta, converted.arch["kwargs"]["img_size"])
    batches = {split: [adapter(x).numpy() for x, _ in data.loader(split, 64)] for split in ("val", "test")}
    judged = {"val": 0, "test": 0, "other": 0}
    real_top1 = ov_runtime.validation_top1

    def spy(compiled, items):
        items = list(items)
        for x, _ in items:
            split = next((k for k, bs in batches.items() if any(b.shape == x.shape and (b == x).all() for b in bs)),
                         "other")
            judged[split] += len(x)
        return real_top1(compiled, items)

    monkeypatch.setattr(ov_runtime, "validation_top1", spy)
    step = {"id": "ac", "method": "ov_int8_accuracy_control", "subset_size": 16, "max_drop": max_drop,
            "max_num_iterations": 50, "preset": "performance", "fast_bias_correction": True}
    art = get_method("ov_int8_accuracy_control")().run(_ctx(step, converted, digits_file))
    ac = art.meta["accuracy_control"]
    assert judged["val"] >= 2 * len(data.splits["val"][1]) and judged["test"] == 0 and judged["other"] == 0
    assert ac["split"] == "val" and ac["max_drop"] == max_drop and ac["int8_top1"] >= ac["float_top1"] - max_drop
    assert ac["float_layers"] == art.meta["ov_quantization"]["float_layers"]
    assert art.transforms[-1]["max_num_iterations"] == 50 and art.transforms[-1]["smooth_quant"] is False
    if max_drop == 100.0:
        assert ac["reverted_operations"] == [] and ac["float_layers"] == []
        assert art.meta["ov_quantization"]["fake_quantize"] > 0


def test_accuracy_control_that_misses_its_bound_writes_nothing(converted, digits_file, monkeypatch):
    """NNCF returns its last model when it runs out of rounds; the step refuses it instead of labelling it bounded."""
    import vitcompress.runtimes.openvino as ov_runtime

    calls = iter([90.0, 80.0])  # after NNCF: the float IR's score, then the int8 IR's

    def scores(compiled, items):
        if sys._getframe(1).f_code.co_name == "quantize_with_accuracy_control":
            return next(calls)
        return 50.0  # what NNCF sees: no drop, nothing to revert

    monkeypatch.setattr(ov_runtime, "validation_top1", scores)
    step = {"id": "ac", "method": "ov_int8_accuracy_control", "subset_size": 8, "max_drop": 1.0, "max_num_iterations": 1}
    with pytest.raises(ValueError, match=r"could not keep the int8 IR within max_drop = 1 top-1 points .*90.00% -> "
                                         r"80.00%.* nothing was written: raise max_drop or max_num_iterations"):
        get_method("ov_int8_accuracy_control")().run(_ctx(step, converted, digits_file))


def test_the_parent_speed_up_is_timed_in_the_same_alternation(converted, quantized, trained):
    fp32, int8, torch_model = (build_model(a) for a in (converted, quantized, trained))
    shape = [int(trained.arch["kwargs"]["in_chans"]), *trained.arch["kwargs"]["img_size"]]
    out = speed(int8, shape, 16, threads=1, warmup=1, repeats=5, baseline=torch_model, parent=fp32)
    assert {"vs_baseline", "vs_parent", "vs_parent_ci", "parent_it_per_s", "baseline_it_per_s"} <= set(out)
    assert out["vs_parent_ci"][0] <= out["vs_parent"] <= out["vs_parent_ci"][1]
    same = speed(fp32, shape, 16, threads=1, warmup=1, repeats=5, baseline=torch_model, parent=torch_model)
    assert same["vs_parent"] == same["vs_baseline"]  # a parent that is the baseline is not timed twice


def test_nothing_leaves_the_machine(converted, digits_file, tmp_path):
    """Converting and quantizing, in a process of their own without pytest (NNCF alone silences its telemetry
    under pytest), open no network connection, and both OpenVINO's converter and NNCF use their no-op stubs."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import socket, sys
        def refuse(*a, **k):
            raise SystemExit("a network connection was attempted")
        socket.socket.connect = socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        import torch
        from pathlib import Path
        from vitcompress.methods import StepContext, get_method
        from vitcompress.runtimes import load_artifact
        from vitcompress.runtimes.openvino import ov, nncf
        ir = load_artifact({converted.path!r})
        ctx = StepContext(step={{"id": "q", "method": "ov_int8", "subset_size": 8}}, dataset="digits",
                          data_file=Path({str(digits_file)!r}), device="cpu", parent=ir)
        get_method("ov_int8")().run(ctx)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
        ov().convert_model(model, example_input=torch.zeros(2, 1, 8, 8))
        import openvino.tools.ovc.convert_impl as ovc
        import nncf.telemetry.wrapper as wrapper
        assert "pytest" not in sys.modules
        assert ovc.tm.__name__.endswith("telemetry_stub"), ovc.tm.__name__
        from unittest.mock import MagicMock
        assert isinstance(wrapper.telemetry, MagicMock), type(wrapper.telemetry)  # NNCF's stub
        assert sys.modules["openvino_telemetry"] is None
        print("offline")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k not in ("NNCF_CI", "CI")})
    assert proc.returncode == 0 and "offline" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_openvino_telemetry_imported_elsewhere_first_is_refused(monkeypatch):
    import types

    from vitcompress.runtimes import openvino as ov_runtime

    monkeypatch.setitem(sys.modules, "openvino_telemetry", types.ModuleType("openvino_telemetry"))
    with pytest.raises(RuntimeError, match="openvino_telemetry was imported before vitcompress"):
        ov_runtime.ov()


@pytest.mark.parametrize("what", ["xml", "bin", "record"])
def test_damaged_or_foreign_ir_is_refused(converted, tmp_path, what):
    import shutil

    xml, bin_ = tmp_path / "model.xml", tmp_path / "model.bin"
    shutil.copy(converted.path, xml)
    shutil.copy(Path(converted.path).with_suffix(".bin"), bin_)
    if what == "xml":
        xml.write_bytes(xml.read_bytes()[:200])
        match = "corrupt or truncated OpenVINO IR file"
    elif what == "bin":
        bin_.unlink()
        match = "no such artifact file"
    else:  # an IR OpenVINO wrote, not this project
        from openvino import save_model

        save_model(get_runtime("openvino").convert(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)),
                                                   torch.zeros(2, 1, 8, 8)), str(xml))
        match = "without vitcompress's record"
    with pytest.raises(ArtifactError, match=match):
        load_artifact(xml)


def _chain(raw, chain):
    raw = copy.deepcopy(raw)
    raw["profiles"]["demo"]["rows"].append({"id": "x", "model": "X", "method": "Y", "chain": chain})
    return raw


@pytest.mark.parametrize("chain, match", [
    (["vit", "ov_int8"], r"'ov_int8' uses method 'ov_int8', which needs an OpenVINO IR, but the step before it makes "
                         r"a PyTorch model; put an `ov` step \(method ov\) before it"),
    (["vit", "onnx", "ov"], r"'ov' converts to OpenVINO, but step 'onnx' \(onnx\) earlier in the chain already "
                            r"converted to ONNX Runtime .*start 'ov' from the PyTorch model instead, e.g. \[vit, ov\]"),
    (["vit", "onnx", "ov_int8"], r"needs an OpenVINO IR, but the step before it makes an ONNX model; convert the "
                                 r"PyTorch model with an `ov` step \(method ov\) in place of step 'onnx'"),
    (["vit", "ov", "int8_static"], r"needs an ONNX model, but the step before it makes an OpenVINO IR"),
    (["vit", "dynamic_ptq", "ov"], r"'ov' converts to OpenVINO, but method 'dynamic_ptq' earlier .* cannot trace"),
    (["vit", "ov", "ov"], r"already converted to OpenVINO .*a chain converts once: remove one of them"),
    (["vit", "ov", "ov_int8", "ov_int8"], r"'ov_int8' .* needs a float model .* makes an int8 model"),
    (["vit", "ov", "dynamic_ptq"], r"needs a PyTorch model, but the step before it makes an OpenVINO IR; move it "
                                   r"before the chain's `ov` step"),
    (["deit_tiny", "ov", "ov_int8"], None),
    (["vit", "gates", "prune_0.2", "ov", "ov_int8_ac"], None),
])
def test_chains_that_cannot_run_stop_before_any_job(raw_params, chain, match):
    raw = _chain(raw_params, chain)
    if match is None:
        resolve(raw, {"profile": "demo"})
        return
    with pytest.raises(ConfigError, match=match):
        resolve(raw, {"profile": "demo"})


@pytest.mark.parametrize("step, edit, match", [
    ("ov_int8_ac", {"smooth_quant": True}, r"ov_int8_ac.smooth_quant = true: accuracy control reverts"),
    ("ov_int8_ac", {"precision": "bf16"}, r"ov_int8_ac.precision = 'bf16': NNCF judges max_drop with f32"),
    ("ov_int8_ac", {"max_drop": -1}, r"max_drop = -1"),
    ("ov_int8", {"precision": "f16"}, r"precision = 'f16'"),
    ("ov_int8", {"preset": "fast"}, r"preset = 'fast'"),
    ("ov_int8", {"subset_size": 0}, r"subset_size = 0"),
    ("ov_int8", {"smooth_quant": "yes"}, r"smooth_quant"),
    ("ov", {"min_agreement": 0}, r"min_agreement = 0"),
])
def test_bad_openvino_settings_stop_before_any_job(raw_params, step, edit, match):
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["demo"]["steps"][step].update(edit)
    with pytest.raises(ConfigError, match=match):
        resolve(raw, {"profile": "demo"})


def test_a_row_labelled_fp32_cannot_run_in_bf16(raw_params):
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["demo"]["steps"]["ov"]["precision"] = "bf16"
    with pytest.raises(ConfigError, match=r"rows\[\d+\] is labelled fp32 .* runs OpenVINO at precision bf16; rename"):
        resolve(raw, {"profile": "demo"})
    raw["profiles"]["demo"]["rows"] = [r for r in raw["profiles"]["demo"]["rows"] if "fp32" not in r["id"]]
    resolve(raw, {"profile": "demo"})  # a bf16 row labelled as such runs


def test_the_row_note_says_what_accuracy_control_reverted():
    from vitcompress.workflow import artifact_notes

    ac = {"max_drop": 0.5, "float_top1": 98.0, "int8_top1": 97.6, "float_layers": ["blocks.0.mlp.fc2"],
          "reverted_operations": ["__module.blocks.0.mlp.fc2/aten::linear/MatMul"], "quantized_operations": 19}
    meta = {"accuracy_control": ac, "ov_quantization": {"weight_layers": 18}}
    (note,) = artifact_notes(meta)
    assert "reverted 1 of 19 quantized operations to float (__module.blocks.0.mlp.fc2/aten::linear/MatMul)" in note
    assert "1 of 18 weight layers are in float" in note and "98.00% (float IR) -> 97.60% (int8), bound 0.5" in note
    none = {**meta, "accuracy_control": {**ac, "float_layers": [], "reverted_operations": [], "quantized_operations": None}}
    assert "reverted no operation (the fully quantized IR met the bound); 0 of 18" in artifact_notes(none)[0]
    assert artifact_notes({"ov_quantization": {}}) == []
