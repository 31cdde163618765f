import copy

import pytest
import torch
from conftest import TINY_VIT

from vitcompress.artifacts import Artifact, ArtifactError
from vitcompress.config import ConfigError, resolve
from vitcompress.data import InputAdapter, PreparedData
from vitcompress.methods import StepContext, build_model, get_method
from vitcompress.methods.qat import quantized_params
from vitcompress.workflow import build_untrained

TRAIN = {"epochs": 1, "batch_size": 64, "lr": 0.002, "max_steps": 8, "eval_batch_size": 512,
         "label_smoothing": 0.1, "warmup_epochs": 0, "weight_decay": 0.05}


def run(method: str, settings: dict, parent: Artifact, data_file, epochs: int = 1) -> Artifact:
    step = {"method": method, "id": method, "train": TRAIN, "epochs": epochs, **settings}
    ctx = StepContext(step=step, dataset="digits", data_file=data_file, device="cpu", parent=parent)
    return get_method(method)().execute(ctx)


def predictions(model, data_file, arch):
    data = PreparedData(data_file)
    x, _ = data.splits["test"]
    with torch.no_grad():
        return model(InputAdapter(data.meta, arch["kwargs"]["img_size"])(x[:64]))


def test_lsq_artifact_holds_4bit_levels_with_learned_steps_and_reloads_safely(random_vit, digits_file, tmp_path):
    art = run("lsq", {"bits": 4, "min_size": 0.002}, random_vit, digits_file)
    state = art.quantized
    assert state["meta"]["klass"] == "LSQ" and state["meta"]["init_kwargs"]["bits"] == 4
    assert art.state_dict == {}  # every parameter lives in the quantized state

    art.save(tmp_path / "lsq.pt")
    Artifact(random_vit.arch, random_vit.state_dict).save(tmp_path / "float.pt")
    loaded = Artifact.load(tmp_path / "lsq.pt")  # weights_only=True: no pickled class inside
    model = build_model(loaded)
    assert not any(name.endswith("_lsq") for name, _ in model.named_parameters())  # quantizer detached
    assert not model._forward_pre_hooks

    float_weights = dict(random_vit.state_dict)
    quantized = {name for name, _ in quantized_params(model, 0.002, [])}
    assert "blocks.0.attn.qkv.weight" in quantized and "blocks.0.mlp.fc2.weight" in quantized
    for name, w in model.named_parameters():
        if name in quantized:
            levels = torch.unique(w.detach())
            assert len(levels) <= 16, name
            step = levels.diff().min()
            assert torch.allclose(levels / step, (levels / step).round(), atol=1e-3), name
            # the learned step is not LSQ's initial guess from the float weights: it was trained
            init = 2 * float_weights[name].abs().mean() / (2 ** 3) ** 0.5
            assert abs(step.item() - init.item()) > 1e-6, name

    arch = random_vit.arch
    assert torch.equal(predictions(model, digits_file, arch), predictions(build_model(art), digits_file, arch))
    # 4-bit levels, but this tiny model has many small float tensors and per-tensor file overhead
    assert (tmp_path / "lsq.pt").stat().st_size < 0.4 * (tmp_path / "float.pt").stat().st_size


def test_diffq_size_penalty_buys_fewer_bits(random_vit, digits_file, tmp_path):
    settings = {"min_size": 0.002, "group_size": 8, "bits_lr": 0.2, "init_bits": 6.0}
    free = run("diffq", {**settings, "penalty": 0.0}, random_vit, digits_file)
    squeezed = run("diffq", {**settings, "penalty": 1000.0}, random_vit, digits_file)
    assert squeezed.quantized["meta"]["klass"] == "DiffQuantizer"
    assert squeezed.meta["diffq_size_estimate_mb"] < 0.8 * free.meta["diffq_size_estimate_mb"]
    free.save(tmp_path / "free.pt")
    squeezed.save(tmp_path / "squeezed.pt")
    assert (tmp_path / "squeezed.pt").stat().st_size < (tmp_path / "free.pt").stat().st_size
    model = build_model(Artifact.load(tmp_path / "squeezed.pt"))
    assert predictions(model, digits_file, random_vit.arch).isfinite().all()


def test_diffq_stores_bytes_per_level_whose_compressed_size_is_diffqs_own(random_vit, digits_file, tmp_path):
    """By default DiffQ stores one byte per level, uncompressed: the Compressed column (zlib of the raw
    bytes) is then diffq's own compressed_model_size plus the file's bookkeeping; a file stored compressed
    counts as its payload (one storage form); every form holds the same levels."""
    from vitcompress.measure import storage_sizes

    settings = {"min_size": 0.002, "group_size": 8, "bits_lr": 0.2, "init_bits": 4.0, "penalty": 100.0}
    art = run("diffq", settings, random_vit, digits_file)
    assert art.quantized["meta"]["packed"] is False and art.meta["compress"] == "none"
    assert art.meta["steps"][-1]["training"]["kept"] == "last"
    unpacked = art
    run("diffq", {**settings, "packed": True}, random_vit, digits_file).save(tmp_path / "packed.pt")
    levels = unpacked.quantized["quantized"][0][0]
    assert levels.dtype == torch.uint8 and levels.shape[1] == 8  # one byte per weight, a row per group
    unpacked.save(tmp_path / "plain.pt")
    unpacked.save(tmp_path / "zlib.pt", compress="zlib")
    unpacked.save(tmp_path / "xz.pt", compress="xz")
    expected = predictions(build_model(art), digits_file, random_vit.arch)
    for form in ("packed", "plain", "zlib", "xz"):
        model = build_model(Artifact.load(tmp_path / f"{form}.pt"))
        assert torch.equal(predictions(model, digits_file, random_vit.arch), expected), form
    sizes = {form: storage_sizes(tmp_path / f"{form}.pt") for form in ("packed", "plain", "zlib", "xz")}
    # one storage form: a file stored compressed counts as its payload, so the three unpacked files agree
    assert sizes["plain"] == sizes["zlib"] == sizes["xz"]
    assert sizes["packed"]["size_mb"] < sizes["plain"]["size_mb"]
    assert art.meta["steps"][-1]["diffq_size_estimate_mb"] < sizes["packed"]["size_mb"]  # true_model_size: the bits
    # diffq's compressed_model_size is zlib of the one-byte levels: the unpacked form's Compressed column
    diffq_compressed = unpacked.meta["steps"][-1]["diffq_compressed_mb"]
    assert diffq_compressed < sizes["plain"]["compressed_mb"] < diffq_compressed + 4096 / 2 ** 20


def test_diffq_group_size_must_divide_every_quantized_tensor(random_vit, digits_file):
    with pytest.raises(ValueError, match=r"group_size = 7 does not divide"):
        run("diffq", {"min_size": 0.002, "group_size": 7}, random_vit, digits_file)


def test_qat_needs_a_float_parent(random_vit, digits_file):
    int8 = get_method("dynamic_ptq")().run(
        StepContext(step={"method": "dynamic_ptq", "id": "q"}, dataset="digits", data_file=digits_file, device="cpu",
                    parent=random_vit))
    with pytest.raises(ValueError, match="needs a float model"):
        run("lsq", {}, int8, digits_file)


def test_unknown_quantizer_class_in_a_state_is_refused(random_vit, digits_file, tmp_path):
    art = run("lsq", {"min_size": 0.002}, random_vit, digits_file, epochs=0)
    art.quantized["meta"]["klass"] = "os.system"
    art.save(tmp_path / "bad.pt")
    with pytest.raises(ArtifactError, match="unknown quantizer 'os.system'"):
        build_model(Artifact.load(tmp_path / "bad.pt"))


@pytest.mark.parametrize("step, message", [
    ({"method": "lsq", "bits": 1}, r"lsq.bits = 1 must be in \[2, 15\] \(1 bit leaves no positive level"),
    ({"method": "lsq", "bits": 16}, r"lsq.bits = 16"),
    ({"method": "diffq", "group_size": 0}, r"diffq.group_size = 0 must be at least 1"),
    ({"method": "diffq", "min_bits": 8}, r"min_bits = 8, init_bits = 8, max_bits = 15 must satisfy"),
    ({"method": "diffq", "penalty": -1}, r"diffq.penalty = -1"),
    ({"method": "lsq", "epochs": -1}, r"lsq.epochs = -1"),
    ({"method": "diffq", "keep": "worst"}, r"diffq.keep = 'worst': use one of best, last"),
    ({"method": "diffq", "compress": "gzip"}, r"diffq.compress = 'gzip': use one of none, zlib, xz"),
])
def test_bad_qat_settings_name_the_parameter(raw_params, step, message):
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["demo"]["steps"][step["method"]] = step
    with pytest.raises(ConfigError, match=message):
        resolve(raw)


def test_untrained_lsq_artifact_is_about_an_eighth_of_float(tmp_path):
    """4-bit levels of float32 weights: an eighth, plus each tensor's scale and the file's own overhead
    (a few percent at this size), with every tensor quantized (min_size 0)."""
    arch = {"timm": TINY_VIT["timm"], "kwargs": {**TINY_VIT["kwargs"], "embed_dim": 192, "img_size": [16, 16],
                                           "in_chans": 1, "num_classes": 10}}
    art = build_untrained([{"method": "lsq", "bits": 4, "id": "lsq", "min_size": 0.0}], arch)
    art.save(tmp_path / "q.pt")
    build_untrained([], arch).save(tmp_path / "f.pt")
    ratio = (tmp_path / "q.pt").stat().st_size / (tmp_path / "f.pt").stat().st_size
    assert 0.125 <= ratio < 0.145
    build_model(Artifact.load(tmp_path / "q.pt"))


def test_a_constant_tensor_is_refused_by_name_and_an_untrained_one_gets_a_range(random_vit, digits_file, tmp_path):
    g = torch.Generator().manual_seed(0)  # a trained-like model: every tensor has a range ...
    state = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in random_vit.state_dict.items()}
    state["blocks.0.mlp.fc1.bias"] = torch.zeros_like(state["blocks.0.mlp.fc1.bias"])  # ... but one
    parent = Artifact(random_vit.arch, state, list(random_vit.transforms), dict(random_vit.meta))
    for method in ("lsq", "diffq"):
        with pytest.raises(ValueError, match=r"blocks.0.mlp.fc1.bias holds a single value.*`exclude`\.$"):
            run(method, {"min_size": 0.0, "exclude": ["head.bias"]}, parent, digits_file)
    run("lsq", {"min_size": 0.0, "exclude": ["blocks.0.mlp.fc1.bias"]}, parent, digits_file, epochs=0)
    # the architecture benchmark's random weights: timm zero-initialises every bias, which would give NaN levels
    arch = {"timm": TINY_VIT["timm"], "kwargs": {**TINY_VIT["kwargs"], "img_size": [16, 16], "in_chans": 1,
                                               "num_classes": 8}}
    for method in ("lsq", "diffq"):
        art = build_untrained([{"method": method, "id": method, "min_size": 0.0}], arch)
        art.save(tmp_path / f"{method}.pt")
        model = build_model(Artifact.load(tmp_path / f"{method}.pt"))
        assert all(p.isfinite().all() for p in model.parameters())
