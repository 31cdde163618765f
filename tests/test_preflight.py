"""Mistakes that can be known before the first job: each stops the run with one message naming the key,
the value and the fix (issue: nothing fails silently, nothing fails hours in)."""
import copy
import pickle

import pytest
import torch
from conftest import make_workflow, snakemake

from vitcompress.config import ConfigError, NotInProfile, read_params, resolve
from vitcompress.models import PretrainedMismatch, arch_for, create
from vitcompress.preflight import preflight

DEMO = ("profiles", "demo")


def _demo(raw):
    return raw["profiles"]["demo"]


def _tiny_vit_weights(path, num_classes=1000):
    """A weights file in timm's format for the demo's vit model (its own 1000-class head)."""
    raw_model = {"timm": "vit_small_patch16_224",
                 "kwargs": {"patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 4, "global_pool": "avg",
                            "class_token": False}}
    torch.save(create(arch_for(raw_model, {"num_classes": num_classes, "channels": 1, "size": [8, 8]})).state_dict(),
               path)
    return path


CASES = {
    "unknown timm name": (lambda r, t: _demo(r)["models"]["deit_tiny"].update(timm="deit_tiny_distiled_patch16_224"),
                          ["models.deit_tiny.timm", "deit_tiny_distiled_patch16_224", "deit_tiny_distilled_patch16_224"]),
    "unknown timm keyword": (lambda r, t: _demo(r)["models"]["vit"]["kwargs"].update(colour=3),
                             ["models.vit.kwargs.colour", "takes no keyword"]),
    "heads do not divide width": (lambda r, t: _demo(r)["models"]["vit"]["kwargs"].update(num_heads=5),
                                  ["models.vit.kwargs", "embed_dim = 64", "num_heads = 5"]),
    "patch does not tile input": (lambda r, t: _demo(r)["models"]["vit"]["kwargs"].update(patch_size=5),
                                  ["models.vit.kwargs.patch_size = 5", "does not tile", "16x16"]),
    "landmarks not below tokens": (lambda r, t: _demo(r)["steps"]["nystrom_0.25"].update(landmarks=16),
                                   ["steps.nystrom_0.25", "landmarks = 16", "data set digits", "16 tokens"]),
    "student without distillation head": (
        lambda r, t: _demo(r)["models"]["deit_tiny"].update(timm="deit_tiny_patch16_224"),
        ["steps.deit_tiny", "deit_tiny_patch16_224", "distillation"]),
    "FQ-ViT on normalised attention": (
        lambda r, t: _demo(r)["models"]["vit"]["kwargs"].update(qk_norm=True),
        ["steps.fq_vit", "row fq_vit", "no quantizer for block 0's attn.q_norm"]),
    "pruning on normalised attention": (
        lambda r, t: (_demo(r)["models"]["vit"]["kwargs"].update(qk_norm=True),
                      _demo(r).update(rows=[x for x in _demo(r)["rows"] if x["id"] != "fq_vit"])),
        ["steps.gates", "row prune_0.1", "pruning supports plain ViT attention only", "q_norm"]),
    "imagefolder root missing": (
        lambda r, t: (r["datasets"].update(mine={"source": "imagefolder", "root": str(t / "nope")}),
                      _demo(r)["datasets"].append("mine")),
        ["datasets.mine.root", "nope", "not a folder"]),
    "cifar offline without files": (
        lambda r, t: (r["datasets"]["cifar10"].update(root=str(t / "c10"), download=False),
                      _demo(r)["datasets"].append("cifar10")),
        ["datasets.cifar10.root", "c10", "data_batch_1", "download"]),
    "pretrained file missing": (
        lambda r, t: _demo(r)["models"]["vit"].update(pretrained=True, pretrained_file=str(t / "no.pth")),
        ["models.vit.pretrained_file", "no.pth", "does not exist"]),
    "pretrained file of another model": (
        lambda r, t: (torch.save({"encoder.weight": torch.zeros(3)}, t / "other.pth"),
                      _demo(r)["models"]["vit"].update(pretrained=True, pretrained_file=str(t / "other.pth"))),
        ["models.vit.pretrained_file", "other.pth", "only 0 of the"]),
    "student initialised from a teacher of another shape": (
        lambda r, t: _demo(r)["models"]["deit_base"]["kwargs"].update(depth=3),
        ["steps.deit_base", "data set digits", "init: teacher", "4 blocks and the student 3"]),
    "split fractions do not sum to 1": (lambda r, t: r["datasets"]["digits"].update(split=[0.7, 0.2, 0.2]),
                                        ["datasets.digits.split", "sum to 1.1"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_known_mistakes_stop_before_any_job_naming_key_and_value(case, raw_params, tmp_path):
    edit, expected = CASES[case]
    raw = copy.deepcopy(raw_params)
    edit(raw, tmp_path)
    with pytest.raises(ConfigError) as info:
        preflight(resolve(raw))
    msg = str(info.value)
    assert all(part in msg for part in expected), msg
    assert "\n" not in msg


def test_the_repository_profiles_pass_and_a_pass_is_remembered(raw_params, tmp_path):
    for name in raw_params["profiles"]:
        if name == "paper_smoke":  # reads hand-made files first: test_paper_smoke.py writes them and plans it
            continue
        prof = resolve(raw_params, {"profile": name})
        assert preflight(prof, cache_dir=tmp_path) is True  # models built
        assert preflight(prof, cache_dir=tmp_path) is False  # remembered: a no-op start skips timm
    changed = copy.deepcopy(raw_params)
    for model in ("vit", "deit_base"):  # DeiT base starts from the ViT's encoder: the same depth
        _demo(changed)["models"][model]["kwargs"]["depth"] = 2
    assert preflight(resolve(changed), cache_dir=tmp_path) is True


def test_a_matching_pretrained_file_passes_and_loads_every_tensor_but_the_head(raw_params, tmp_path):
    weights = _tiny_vit_weights(tmp_path / "vit.pth")
    raw = copy.deepcopy(raw_params)
    _demo(raw)["models"]["vit"].update(pretrained=True, pretrained_file=str(weights))
    prof = resolve(raw)
    preflight(prof)
    step = prof.step_cfg("vit", "digits")
    model = create(arch_for(step["model_cfg"], {"num_classes": 10, "channels": 1, "size": [8, 8]}), pretrained=True,
                   pretrained_file=str(weights))
    source = torch.load(weights, weights_only=True)
    assert torch.equal(model.blocks[3].mlp.fc2.weight, source["blocks.3.mlp.fc2.weight"])
    assert model.head.out_features == 10


def test_pretrained_file_of_another_model_is_refused_when_the_job_loads_it(tmp_path):
    """Not only at start: a file swapped after the check is refused by the job, never trained from scratch."""
    other = tmp_path / "deit.pth"
    torch.save(create({"timm": "deit_tiny_patch16_224", "kwargs": {"depth": 1}}).state_dict(), other)
    arch = {"timm": "vit_small_patch16_224", "kwargs": {"depth": 1, "num_classes": 10}}
    with pytest.raises(PretrainedMismatch) as info:
        create(arch, pretrained=True, pretrained_file=str(other))
    assert "deit.pth" in str(info.value) and "tensors of vit_small_patch16_224" in str(info.value)


def test_patch_size_that_does_not_tile_is_refused_by_create():
    arch = {"timm": "vit_small_patch16_224",
            "kwargs": {"patch_size": 5, "embed_dim": 16, "depth": 1, "num_heads": 2, "img_size": [16, 16]}}
    with pytest.raises(ValueError, match="patch_size = 5 does not tile the 16x16 input"):
        create(arch)


@pytest.mark.parametrize("text,expected", [
    ("profile: demo\ndatasets: {digits: {source: digits}\nprofiles: {}\n", "line 3, column"),
    ("profile: demo\n  seed: 1\n", "line 2, column 7"),
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
    ("- a\n- b\n", "not a list"),
])
def test_params_file_errors_name_the_file_and_position(tmp_path, text, expected):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_params(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_snakemake_reports_yaml_position_and_targets_outside_the_profile(tmp_path, raw_params):
    wf = make_workflow(tmp_path / "wf", raw_params)
    proc = snakemake(wf, "-n", "data/prepared/cifar10.pt", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "'cifar10' is not in profile 'demo'" in out and "digits, digit_pairs" in out
    assert "KeyError" not in out
    proc = snakemake(wf, "-n", "results/demo/digits/rows/nosuchrow.json", check=False)
    assert proc.returncode != 0 and "row 'nosuchrow' is not in profile 'demo'" in proc.stdout + proc.stderr
    (wf / "params.yaml").write_text((wf / "params.yaml").read_text().replace("seed: 0", "seed: [0", 1))
    proc = snakemake(wf, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "params.yaml: YAML syntax error at line" in out and "column" in out
    (wf / "params.yaml").write_text("")
    proc = snakemake(wf, "-n", check=False)
    assert proc.returncode != 0 and "params.yaml is empty" in proc.stdout + proc.stderr
    assert not (wf / "results").exists()


def test_not_in_profile_is_a_config_error_and_a_key_error(raw_params):
    prof = resolve(raw_params)
    for call in (lambda: prof.dataset_cfg("cifar10"), lambda: prof.row("nope"), lambda: prof.step_cfg("nope")):
        with pytest.raises(NotInProfile):
            call()
    with pytest.raises(KeyError):  # callers that catch KeyError keep working
        prof.row("nope")
    assert pickle.loads(pickle.dumps(NotInProfile("x"))).args == ("x",)


def test_a_calibration_set_larger_than_the_training_split_stops_before_any_job(tmp_path, raw_params):
    """The paper profile on hand-made CIFAR files cut to a few training images: ORT's calib_images and
    FQ-ViT's are checked against the split's size known from the files, not in their jobs hours later."""
    import os

    from vitcompress.config import resolve
    from vitcompress.preflight import check_counts
    from vitcompress.smoke import write_cifar

    raw = copy.deepcopy(raw_params)
    raw["profiles"]["paper_smoke"]["steps"]["int8_static"]["calib_images"] = 256
    prof = resolve(raw, {"profile": "paper_smoke"})
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for ds in prof.datasets:  # the smoke run's hand-made files: 40 training images, 8 of them validation
            write_cifar(prof.dataset_cfg(ds)["root"], ds)
        with pytest.raises(ConfigError, match=r"profiles.paper_smoke.steps.int8_static.calib_images = 256 exceeds the "
                                              r"32 training images of data set cifar10; lower calib_images to at most 32"):
            check_counts(prof)
        raw["profiles"]["paper_smoke"]["steps"]["int8_static"]["calib_images"] = 16
        check_counts(resolve(raw, {"profile": "paper_smoke"}))  # 16 fit
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("dataset, value, size", [("digits", 5000, 1257), ("digit_pairs", 6000, 5000)])
def test_counts_from_params_alone(raw_params, dataset, value, size):
    from vitcompress.config import resolve
    from vitcompress.preflight import check_counts

    raw = copy.deepcopy(raw_params)
    raw["profiles"]["demo"]["datasets"] = [dataset]
    raw["profiles"]["demo"]["steps"]["fq_vit"]["calib_images"] = value
    with pytest.raises(ConfigError, match=rf"fq_vit.calib_images = {value} exceeds the {size} training images of data set {dataset}"):
        check_counts(resolve(raw), prepared="/nonexistent/{dataset}.pt")
