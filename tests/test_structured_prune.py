"""`structured_prune`: torch-pruning's DepGraph groups on the timm ViT, the library's importances, a physically
smaller model that rebuilds from its record and exports like any other."""
import copy

import pytest
import torch
from conftest import saved, step_ctx

from vitcompress.methods import build_model, get_method
from vitcompress.methods.structured_prune import StructuredPrune, StructuredPruneSettings, prune_structured
from vitcompress.models import count_params

TRAIN = {"epochs": 1, "batch_size": 64, "lr": 0.0005, "weight_decay": 0.0, "warmup_epochs": 0,
         "label_smoothing": 0.0, "augment": {}, "num_workers": 0, "max_steps": 2}


def _step(**over):
    return {"id": "sprune", "method": "structured_prune", "ratio": 0.25, "importance": "taylor", "unit": "head_dims",
            "epochs": 0, "calib_batches": 2, "train": TRAIN, **over}


@pytest.mark.parametrize("importance, unit", [("magnitude", "head_dims"), ("taylor", "heads"),
                                              ("hessian", "head_dims")])
def test_the_pruned_model_is_smaller_and_rebuilds_from_its_record(random_vit, digits_file, tmp_path, importance, unit):
    art = StructuredPrune().run(step_ctx(_step(importance=importance, unit=unit, ratio=0.5), random_vit, digits_file))
    model = build_model(art).eval()
    again = build_model(saved(art, tmp_path / "m.pt")).eval()  # rebuilt from the record, no pickled code
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert count_params(model) < 0.75 * count_params(build_model(random_vit))
    shapes = art.meta["steps"][-1]["shapes"]
    if unit == "heads":  # whole heads go, each kept head as wide as before
        assert all(s["head_dim"] == 16 for s in shapes) and sum(s["heads"] for s in shapes) < 4
    else:  # every head keeps its count, narrower
        assert all(s["heads"] == 2 for s in shapes) and sum(s["head_dim"] for s in shapes) < 32
    assert all(b.norm1.weight.numel() == 32 for b in model.blocks)  # the residual stream keeps its width


def test_magnitude_removes_the_weakest_mlp_units_of_each_layer(random_vit):
    """Per layer, magnitude importance: the hidden units whose fc1 rows and fc2 columns carry the least weight
    are the ones that go."""
    model = copy.deepcopy(build_model(random_vit)).eval()
    weak = [3, 17, 40, 99]
    before = []
    with torch.no_grad():
        for b in model.blocks:
            b.mlp.fc1.weight[weak] *= 1e-3
            b.mlp.fc1.bias[weak] *= 1e-3
            b.mlp.fc2.weight[:, weak] *= 1e-3
            before.append(b.mlp.fc1.weight.clone())
    s = StructuredPruneSettings(ratio=4 / 128, importance="magnitude", global_pruning=False)
    prune_structured(model, s, torch.zeros(1, 1, 8, 8))
    kept = [i for i in range(128) if i not in weak]
    for b, w in zip(model.blocks, before):
        assert b.mlp.fc1.out_features == 124
        assert torch.equal(b.mlp.fc1.weight, w[kept])


def test_a_pruned_model_exports_to_onnx_and_predicts_as_pytorch_does(random_vit, digits_file, tmp_path):
    art = saved(StructuredPrune().run(step_ctx(_step(), random_vit, digits_file)), tmp_path / "p.pt")
    onnx_art = get_method("onnx")().run(step_ctx({"id": "onnx", "method": "onnx"}, art, digits_file))
    assert onnx_art.meta["runtime"] == "onnxruntime"  # the conversion's own check compared it with PyTorch


def test_the_architecture_benchmark_prunes_random_weights_at_the_ratio(random_vit):
    model = copy.deepcopy(build_model(random_vit))
    out = StructuredPrune.untrained(model, _step(ratio=0.5))
    assert out.spec["method"] == "structured_prune" and count_params(out.model) < count_params(build_model(random_vit))
