import copy

import pytest
import torch

from vitcompress.artifacts import Artifact
from vitcompress.config import ConfigError, resolve
from vitcompress.data import PreparedData, prepare
from vitcompress.methods.base import StepContext
from vitcompress.methods.prune import Prune
from vitcompress.methods.prune_gates import PruneGates
from vitcompress.pruning.gates import Gates, histogram_from_artifact
from vitcompress.pruning.slim import SlimAttention, apply_pruning, random_scores, select, shapes_of
from vitcompress.models import arch_for, count_params, create

ARCH = arch_for({"timm": "vit_small_patch16_224",
                 "kwargs": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}},
                {"num_classes": 10, "channels": 1, "size": [8, 8]})
TRAIN = {"epochs": 1, "batch_size": 64, "lr": 0.002, "weight_decay": 0.0, "warmup_epochs": 0,
         "label_smoothing": 0.0, "augment": {}, "num_workers": 0, "max_steps": 3}


def test_ratio_zero_changes_nothing():
    model = create(ARCH).eval()
    x = torch.randn(4, 1, 8, 8)
    same = apply_pruning(copy.deepcopy(model), select(random_scores(model), 0.0))
    assert shapes_of(same) == [{"heads": 2, "dim_qk": 16, "dim_v": 16, "hidden": 128}] * 2
    assert count_params(same) == count_params(model)
    assert torch.allclose(same(x), model(x), atol=1e-5)


def test_pruning_removes_the_lowest_scored_fraction_globally_and_physically():
    model = create(ARCH).eval()
    scores = random_scores(model)
    scores["mlp"][1][:40] = -1.0  # the 40 least important dimensions of the whole network
    slim = apply_pruning(copy.deepcopy(model), select(scores, 40 / (2 * (32 + 32 + 128))))
    shapes = shapes_of(slim)
    assert shapes[1]["hidden"] == 128 - 40 and shapes[0] == {"heads": 2, "dim_qk": 16, "dim_v": 16, "hidden": 128}
    assert isinstance(slim.blocks[1].attn, SlimAttention)
    assert slim.blocks[1].mlp.fc1.weight.shape == (88, 32) and slim.blocks[1].mlp.fc2.weight.shape == (32, 88)
    kept = torch.arange(40, 128)
    assert torch.equal(slim.blocks[1].mlp.fc1.weight, model.blocks[1].mlp.fc1.weight[kept])
    assert count_params(slim) < count_params(model)


def test_pruned_model_saves_and_reloads_to_identical_predictions(tmp_path):
    model = create(ARCH).eval()
    slim = apply_pruning(model, select(random_scores(model, 3), 0.2))
    art = Artifact(ARCH, slim.state_dict(), [{"method": "prune", "shapes": shapes_of(slim)}])
    art.save(tmp_path / "p.pt")
    Artifact(ARCH, create(ARCH).state_dict()).save(tmp_path / "full.pt")
    assert (tmp_path / "p.pt").stat().st_size < 0.9 * (tmp_path / "full.pt").stat().st_size
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(Artifact.load(tmp_path / "p.pt").build()(x), slim(x))


def test_heads_keep_equal_widths_and_a_whole_layer_is_never_removed():
    model = create(ARCH)
    scores = random_scores(model)
    keep = select(scores, 0.3)
    for idx in keep["qk"] + keep["v"]:
        assert idx.shape[0] == 2  # both heads, same width
    scores["mlp"][0][:] = -1.0  # every hidden unit of block 0 is the least important
    with pytest.raises(ValueError, match="ratio = 0.4 would remove every MLP hidden unit of block 0"):
        select(scores, 0.4)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=f"ratio = {bad}"):
            select(scores, bad)


def test_gates_scale_dimensions_and_detach_cleanly():
    model = create(ARCH).eval()
    x = torch.randn(2, 1, 8, 8)
    ref = model(x)
    gates = Gates(model).attach(model)
    assert torch.equal(model(x), ref)  # gates start at 1
    with torch.no_grad():
        gates.mlp[0].zero_()
    assert not torch.allclose(model(x), ref)
    gates.detach()
    assert torch.equal(model(x), ref)


@pytest.mark.parametrize("score", ["gate", "taylor"])
def test_gate_training_then_pruning_steps(tmp_path, score):
    torch.set_num_threads(1)
    prepare({"source": "digits"}, tmp_path / "d.pt")
    meta = PreparedData(tmp_path / "d.pt").meta
    arch = arch_for({"timm": "vit_small_patch16_224", "kwargs": ARCH["kwargs"]}, meta)
    parent = Artifact(arch, create(arch).state_dict(), meta={"steps": []})
    ctx = StepContext(step={"id": "gates", "method": "prune_gates", "sparsity": 5.0, "score": score, "epochs": 1,
                            "score_batches": 2, "train": TRAIN}, dataset="digits", data_file=tmp_path / "d.pt",
                      device="cpu", parent=parent)
    gated = PruneGates().run(ctx)
    assert set(gated.meta["prune_scores"]) == {"qk", "v", "mlp"}
    assert gated.transforms == []  # gates change values, not shapes
    gated.save(tmp_path / "g.pt")
    histogram_from_artifact(tmp_path / "g.pt", tmp_path / "hist.png", "t")
    assert (tmp_path / "hist.png").stat().st_size > 1000

    ctx2 = StepContext(step={"id": "prune_0.2", "method": "prune", "ratio": 0.2, "epochs": 1, "train": TRAIN},
                       dataset="digits", data_file=tmp_path / "d.pt", device="cpu", parent=gated)
    pruned = Prune().run(ctx2)
    assert "prune_scores" not in pruned.meta
    assert pruned.transforms[-1]["method"] == "prune"
    model = pruned.build()
    assert count_params(model) < count_params(gated.build())


def test_histogram_of_scores_that_did_not_move(tmp_path):
    from vitcompress.pruning.gates import importance_histogram

    scores = {"qk": [torch.ones(2, 4)], "v": [torch.ones(2, 4)], "mlp": [torch.ones(8)]}
    importance_histogram(scores, {"qk": [10], "v": [10], "mlp": [10]}, tmp_path / "h.png", "flat")
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_prune_settings_are_checked(raw_params):
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["demo"]["steps"]["prune_0.1"]["ratio"] = 1.2
    with pytest.raises(ConfigError, match=r"steps.prune_0.1.ratio = 1.2: r must be in \[0, 1\)"):
        resolve(raw)
    raw["profiles"]["demo"]["steps"]["prune_0.1"]["ratio"] = 0.1
    raw["profiles"]["demo"]["steps"]["gates"]["score"] = "magnitude"
    with pytest.raises(ConfigError, match=r"steps.gates.score = 'magnitude'"):
        resolve(raw)
