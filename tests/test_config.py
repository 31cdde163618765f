import copy

import pytest

from vitcompress.config import ConfigError, resolve
from vitcompress.methods import get_method


def test_repository_params_are_valid_for_every_profile(raw_params):
    for name in raw_params["profiles"]:
        prof = resolve(raw_params, {"profile": name})
        assert prof.name == name
        assert prof.rows and prof.datasets
        for row in prof.rows:
            assert row["chain"][0] in prof.steps


def test_paper_profile_has_the_study_row_ids_and_datasets(raw_params):
    prof = resolve(raw_params, {"profile": "paper"})
    assert prof.datasets == ["cifar10", "cifar100"]
    assert prof.rows[0]["id"] == "vanilla"
    study_ids = ["vanilla", "dynamic_ptq", "fq_vit", "lsq", "diffq", "deit_base", "deit_tiny", "prune_0.1",
                 "prune_0.2", "nystrom_24", "nystrom_32", "nystrom_64", "deit_base+dynamic_ptq"]
    ids = [r["id"] for r in prof.rows]
    assert ids[:len(study_ids)] == study_ids  # the study's rows, in its order; then its remedies, deployment rows
    assert all(get_method(prof.steps[r["chain"][-1]]["method"]).runtime in ("onnxruntime", "openvino")
               or prof.steps[r["chain"][-1]]["method"] in ("structured_prune", "tome")
               for r in prof.rows[len(study_ids):])
    assert prof.raw["models"]["vit"]["timm"] == "vit_base_patch16_224"


def test_chains_list_every_prefix_once_before_its_extensions(raw_params):
    raw = copy.deepcopy(raw_params)
    demo = raw["profiles"]["demo"]
    demo["rows"] = [
        {"id": "a", "model": "A", "method": "-", "chain": ["vit"]},
        {"id": "b", "model": "B", "method": "-", "chain": ["vit", "dynamic_ptq"]},
        {"id": "c", "model": "C", "method": "-", "chain": ["deit_base", "dynamic_ptq"]},
        {"id": "d", "model": "D", "method": "-", "chain": ["vit", "nystrom_0.25"]},
    ]
    prof = resolve(raw)
    assert prof.chains() == ["vit", "vit+dynamic_ptq", "deit_base", "deit_base+dynamic_ptq", "vit+nystrom_0.25"]
    assert prof.chain_id("c") == "deit_base+dynamic_ptq"


def test_step_train_settings_merge_profile_dataset_and_step(raw_params):
    raw = copy.deepcopy(raw_params)
    demo = raw["profiles"]["demo"]
    demo["train_overrides"] = {"digit_pairs": {"epochs": 7, "lr": 0.5}}
    demo["steps"]["vit"]["train"] = {"lr": 0.25}
    demo["steps"]["vit"].pop("train_overrides", None)  # the repository's own (digits: batch 32)
    prof = resolve(raw)
    assert prof.step_cfg("vit", "digits")["train"]["epochs"] == demo["train"]["epochs"]
    pairs = prof.step_cfg("vit", "digit_pairs")["train"]
    assert pairs["epochs"] == 7 and pairs["lr"] == 0.25
    # the step's own per-dataset override wins over everything, for that data set only
    demo["steps"]["vit"]["train_overrides"] = {"digit_pairs": {"lr": 0.125, "epochs": 3}}
    prof = resolve(raw)
    pairs, digits = (prof.step_cfg("vit", d) for d in ("digit_pairs", "digits"))
    assert (pairs["train"]["lr"], pairs["train"]["epochs"]) == (0.125, 3) and "train_overrides" not in pairs
    assert (digits["train"]["lr"], digits["train"]["epochs"]) == (0.25, demo["train"]["epochs"])
    # a step-level `epochs` (QAT, pruning) follows the step's own per-dataset override, not the profile's
    demo["steps"]["lsq"]["train_overrides"] = {"digits": {"epochs": 9}}
    prof = resolve(raw)
    assert prof.step_cfg("lsq", "digits")["epochs"] == 9
    assert prof.step_cfg("lsq", "digit_pairs")["epochs"] == demo["steps"]["lsq"]["epochs"] != 7
    # ... also when the step leaves `epochs` at its method's default; a training step has no step-level one
    del demo["steps"]["lsq"]["epochs"]
    prof = resolve(raw)
    assert prof.step_cfg("lsq", "digits")["epochs"] == 9 and "epochs" not in prof.step_cfg("lsq", "digit_pairs")
    assert "epochs" not in prof.step_cfg("vit", "digit_pairs")
    demo["steps"]["vit"]["train_overrides"] = {"mnist": {"lr": 0.1}}
    with pytest.raises(ConfigError, match=r"steps.vit.train_overrides.mnist: 'mnist' is not a known dataset"):
        resolve(raw)


def _mutate(raw, path, value):
    node = raw
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value


BAD = [
    (("seeed",), 1, "unknown key 'seeed'"),
    (("profiles", "demo", "train", "epoch"), 3, "unknown key 'profiles.demo.train.epoch'"),
    (("profiles", "demo", "train", "epochs"), -1, "profiles.demo.train.epochs = -1"),
    (("profiles", "demo", "train", "lr"), "fast", "profiles.demo.train.lr = 'fast'"),
    (("profiles", "demo", "steps", "vit", "method"), "magic", "profiles.demo.steps.vit.method = 'magic'"),
    (("profiles", "demo", "datasets"), ["digits", "mnist"], "profiles.demo.datasets[1] = 'mnist'"),
    (("datasets", "digits", "source"), "mnist", "datasets.digits.source = 'mnist'"),
    (("profiles", "demo", "rows", 0, "chain"), ["vit", "nope"], "profiles.demo.rows[0].chain[1] = 'nope'"),
    (("device",), "tpu", "device = 'tpu'"),
    (("profile",), "nosuch", "profile = 'nosuch' is not defined"),
    (("profiles", "demo", "measure", "repeats"), 1, "profiles.demo.measure.repeats = 1"),
    # a profile's sections are read by their dataclasses (vitcompress/sections.py): types, ranges, required keys
    (("profiles", "demo", "measure", "gpu"), "yes", "profiles.demo.measure.gpu = 'yes' has the wrong type"),
    (("profiles", "demo", "measure", "batch_size"), KeyError, "profiles.demo.measure needs `batch_size`"),
    (("profiles", "demo", "train", "augment", "shfit"), 1, "unknown key 'profiles.demo.train.augment.shfit'"),
    (("profiles", "demo", "train", "augment", "shift"), -1, "profiles.demo.train.augment.shift = -1"),
    (("profiles", "demo", "train", "amp"), "fp8", "profiles.demo.train.amp = 'fp8': use one of auto, bf16"),
    (("profiles", "demo", "scaling", "seq_lens"), [64, 1], "profiles.demo.scaling.seq_lens[1] = 1"),
    (("profiles", "demo", "models", "vit", "pretrained"), "no", "profiles.demo.models.vit.pretrained = 'no'"),
    (("profiles", "demo", "models", "vit", "weights"), "x", "unknown key 'profiles.demo.models.vit.weights'"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_params_name_the_key_and_value(raw_params, path, value, message):
    raw = copy.deepcopy(raw_params)
    _mutate(raw, list(path), value)
    with pytest.raises(ConfigError) as info:
        resolve(raw)
    assert message in str(info.value)
    assert str(info.value).startswith("params.yaml")


def test_profile_sections_are_typed_with_their_defaults_applied_once(raw_params):
    """What the code reads is the sections' dataclasses: defaults applied, read-only, equal for every reader."""
    import dataclasses

    from vitcompress.sections import MeasureSettings, TrainSettings

    raw = copy.deepcopy(raw_params)
    del raw["profiles"]["demo"]["measure"]["rounds"]
    prof = resolve(raw)
    assert isinstance(prof.measure, MeasureSettings) and prof.measure.rounds == 1 and prof.measure.gpu is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        prof.measure.rounds = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        prof.name = "paper"
    train = prof.step_cfg("lsq", "digits")["train"]  # a step's train: every key, defaults included
    assert set(train) == set(TrainSettings.keys()) and train["max_steps"] is None
    assert TrainSettings.of(train).augmentation() == {"shift": 1, "hflip": False}
    assert prof.dataset_cfg("digits")["source"] == "digits" and "_datasets" not in prof.raw
    assert prof.scaling.seq_lens == tuple(raw["profiles"]["demo"]["scaling"]["seq_lens"])
    assert prof.model("vit").pretrained is False and prof.models()["deit_tiny"].kwargs["depth"] == 3


def test_a_value_only_an_override_brings_is_named_with_its_step_and_data_set(raw_params):
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["demo"]["steps"]["deit_tiny"]["train_overrides"]["digit_pairs"]["lr"] = 0
    with pytest.raises(ConfigError) as info:
        resolve(raw)
    assert "profiles.demo.steps.deit_tiny.train.lr = 0 must be above 0" in str(info.value)
    assert "Step 'deit_tiny' on digit_pairs trains with" in str(info.value)


def test_docs_list_every_section_key():
    from pathlib import Path

    from vitcompress.sections import PROFILE_KEYS
    from vitcompress.settings import markdown_keys

    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    section = doc.split("<!-- sections: generated by `vitcompress sections --keys` -->\n", 1)[1].split("<!-- /sections -->")[0]
    assert section == markdown_keys(PROFILE_KEYS, "section"), "docs/configuration.md is stale: paste `vitcompress sections --keys`"


def test_duplicate_row_ids_are_refused(raw_params):
    raw = copy.deepcopy(raw_params)
    rows = raw["profiles"]["demo"]["rows"]
    rows.append(copy.deepcopy(rows[0]))
    with pytest.raises(ConfigError, match=r"rows\[\d+\]\.id = 'vanilla' is used by two rows"):
        resolve(raw)


def test_unknown_step_key_for_a_method_is_refused(raw_params):
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["demo"]["steps"]["vit"]["bits"] = 4
    with pytest.raises(ConfigError, match=r"unknown key 'profiles.demo.steps.vit.bits' for method 'train'"):
        resolve(raw)


def test_train_step_needs_a_known_model(raw_params):
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["demo"]["steps"]["vit"]["model"] = "resnet"
    with pytest.raises(ConfigError, match=r"steps.vit.model = 'resnet' is not a model of this profile"):
        resolve(raw)


def test_a_profile_extends_another_with_only_the_keys_that_differ(raw_params):
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["one_epoch"] = {"extends": "paper", "train": {"epochs": 1},
                                    "steps": {"lsq": {"bits": 3}},
                                    "dataset_overrides": {"cifar10": {"root": "/data/c10", "download": False}}}
    base, prof = resolve(raw, {"profile": "paper"}), resolve(raw, {"profile": "one_epoch"})
    assert prof.raw["train"] == {**base.raw["train"], "epochs": 1}
    assert prof.steps["lsq"] == {**base.steps["lsq"], "bits": 3} and prof.rows == base.rows
    assert prof.dataset_cfg("cifar10") == {**raw["datasets"]["cifar10"], "root": "/data/c10", "download": False}
    assert base.dataset_cfg("cifar10") == raw["datasets"]["cifar10"]  # the base is untouched
    raw["profiles"]["again"] = {"extends": "one_epoch", "measure": {"repeats": 5}}
    assert resolve(raw, {"profile": "again"}).raw["train"]["epochs"] == 1  # chains of extends


def test_null_in_an_extending_profile_removes_the_inherited_key(raw_params):
    """The checked-in tiny profile drops the demo's per-step epochs and the scaling benchmark with null."""
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["tiny"]["scaling"] = None
    tiny, demo = resolve(raw, {"profile": "tiny"}), resolve(raw, {"profile": "demo"})
    assert "scaling" not in tiny.raw and "scaling" in demo.raw
    assert "train_overrides" in demo.steps["vit"] and "train_overrides" not in tiny.steps["vit"]
    assert tiny.step_cfg("vit", "digits")["train"]["epochs"] == tiny.raw["train"]["epochs"] == 1
    assert "epochs" not in tiny.steps["deit_base"]["train"] and tiny.steps["deit_base"]["train"]["lr"] == 0.001


@pytest.mark.parametrize("edit,expected", [
    (lambda p: p.update(extends="nope"), "profiles.child.extends = 'nope' is not a profile"),
    (lambda p: p.update(extends="child"), "makes a cycle"),
    (lambda p: p.update(train={"epochs": -1}), "profiles.child.train.epochs = -1"),
    (lambda p: p.update(dataset_overrides={"cifar10": {"rooot": "x"}}), "unknown key 'profiles.child.dataset_overrides.cifar10.rooot'"),
    (lambda p: p.update(dataset_overrides={"mnist": {"root": "x"}}), "dataset_overrides.mnist: 'mnist' is not a known dataset"),
])
def test_a_bad_extending_profile_is_refused_by_name(raw_params, edit, expected):
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["child"] = {"extends": "paper"}
    edit(raw["profiles"]["child"])
    with pytest.raises(ConfigError) as info:
        resolve(raw, {"profile": "child"})
    assert expected in str(info.value)


def test_mixed_precision_setting():
    import torch

    from vitcompress.train import amp_settings

    assert amp_settings("auto", "cpu") == (False, torch.float32)  # CPU results stay float32 unless asked
    assert amp_settings("bf16", "cpu") == (True, torch.bfloat16)
    assert amp_settings("fp16", "cuda") == (True, torch.float16)
    assert amp_settings("none", "cuda") == (False, torch.float32)


def test_longer_step_jobs_go_first_among_ready_ones(raw_params):
    """Snakemake's priority for a step job: its epochs, from training (a root step) or its own fine-tune."""
    from vitcompress.workflow import job_priority

    prof = resolve(raw_params)
    prio = {(s, d): job_priority(prof.step_cfg(s, d)) for s in prof.steps for d in prof.datasets}
    demo = raw_params["profiles"]["demo"]["steps"]
    assert prio[("deit_tiny", "digit_pairs")] == demo["deit_tiny"]["train_overrides"]["digit_pairs"]["epochs"] / 1000
    # digit pairs' DeiT tiny (the critical path) before its 10-epoch DeiT base and DiffQ's 7-epoch fine-tune
    assert prio[("deit_tiny", "digit_pairs")] > prio[("deit_base", "digit_pairs")] > prio[("diffq", "digit_pairs")]
    assert prio[("diffq", "digits")] == demo["diffq"]["epochs"] / 1000 > prio[("lsq", "digits")] > 0
    assert prio[("dynamic_ptq", "digits")] == prio[("onnx", "digits")] == 0
    assert prio[("prune_0.1", "digits")] == demo["prune_0.1"]["epochs"] / 1000 > 0  # VTP fine-tunes
