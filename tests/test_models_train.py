import copy

import pytest
import torch

from vitcompress.data import InputAdapter, PreparedData
from vitcompress.measure import evaluate
from vitcompress.models import PretrainedUnavailable, arch_for, count_params, create, input_size
from vitcompress.train import fit, warmup_cosine

TINY = {"timm": "vit_small_patch16_224",
        "kwargs": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "global_pool": "avg", "class_token": False}}
META = {"num_classes": 10, "channels": 1, "size": [8, 8]}
TRAIN = {"epochs": 3, "batch_size": 64, "lr": 0.003, "weight_decay": 0.05, "warmup_epochs": 1,
         "label_smoothing": 0.1, "augment": {"shift": 1}, "num_workers": 0}


@pytest.fixture(scope="module")
def digits(digits_file):
    return PreparedData(digits_file)


def test_arch_follows_data_and_image_size():
    arch = arch_for(TINY, META, "native", 2)
    assert arch["kwargs"]["img_size"] == [16, 16] and arch["kwargs"]["num_classes"] == 10
    assert input_size(224, META) == [224, 224]
    model = create(arch)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
    assert count_params(model) == sum(p.numel() for p in model.parameters())


def test_pretrained_weights_from_a_local_file(tmp_path):
    source = create(arch_for(TINY, {**META, "num_classes": 5}))
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    loaded = create(arch_for(TINY, META), pretrained=True, pretrained_file=str(path))
    assert torch.equal(loaded.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert loaded.head.out_features == 10  # a new head for the new classes


def test_pretrained_offline_without_file_is_a_clear_error():
    with pytest.raises(PretrainedUnavailable, match="pretrained_file"):
        create(arch_for(TINY, META), pretrained=True)
    with pytest.raises(PretrainedUnavailable, match="does not exist"):
        create(arch_for(TINY, META), pretrained=True, pretrained_file="/nonexistent/w.pth")


def test_warmup_then_cosine():
    f = warmup_cosine(total_steps=100, warmup_steps=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    assert all(f(i) >= f(i + 1) for i in range(10, 100))


def test_training_learns_and_keeps_the_best_epoch(digits):
    torch.set_num_threads(1)
    arch = arch_for(TINY, digits.meta)
    model = create(arch)
    adapter = InputAdapter(digits.meta, arch["kwargs"]["img_size"])
    before = evaluate(model, digits.loader("val", 512), adapter)["top1"]
    history = fit(model, digits, TRAIN, adapter, seed=0)
    after = evaluate(model, digits.loader("val", 512), adapter)["top1"]
    assert len(history["epochs"]) == 3
    assert after > before + 20
    assert after == pytest.approx(history["best_val_acc"])
    assert history["best_val_acc"] == max(e["val_top1"] for e in history["epochs"])


def test_keep_last_leaves_the_last_epoch_not_the_best(digits):
    """A loss that trades accuracy away (a size penalty) wants the last epoch: here the second epoch
    unlearns (gradient ascent), so the best and the last epoch differ and each `keep` is visible."""
    torch.set_num_threads(1)
    arch = arch_for(TINY, digits.meta)
    adapter = InputAdapter(digits.meta, arch["kwargs"]["img_size"])
    cfg = {**TRAIN, "epochs": 2, "warmup_epochs": 0, "max_steps": 12, "lr": 0.005}
    for keep in ("best", "last"):
        calls = {"n": 0}

        def loss(m, x, y):
            calls["n"] += 1
            ce = torch.nn.functional.cross_entropy(m(x), y)
            return ce if calls["n"] <= cfg["max_steps"] else -20 * ce

        model = create(arch)
        history = fit(model, digits, cfg, adapter, seed=0, loss_fn=loss, keep=keep)
        first, last = (e["val_top1"] for e in history["epochs"])
        assert first > last + 10  # the second epoch unlearned
        now = evaluate(model, digits.loader("val", 512), adapter)["top1"]
        assert now == pytest.approx(first if keep == "best" else last)
        assert history["kept"] == keep and now == pytest.approx(history["best_val_acc"])
    with pytest.raises(ValueError, match="keep = 'worst'"):
        fit(create(arch), digits, cfg, adapter, keep="worst")


def test_same_seed_same_weights_on_cpu(digits):
    torch.set_num_threads(1)
    cfg = {**TRAIN, "epochs": 1, "max_steps": 4}
    states = []
    for _ in range(2):
        arch = arch_for(TINY, digits.meta)
        torch.manual_seed(123)
        model = create(arch)
        fit(model, digits, cfg, InputAdapter(digits.meta, arch["kwargs"]["img_size"]), seed=7)
        states.append(copy.deepcopy(model.state_dict()))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_a_workflow_step_is_reproducible_whatever_ran_before_it(tmp_path, digits_file):
    """Same seed, same CPU: two runs of a step give the same weights, even with the global RNG moved."""
    from vitcompress.artifacts import Artifact
    from vitcompress.workflow import run_step

    step = {"method": "train", "id": "vit", "model": "vit", "model_cfg": TINY, "image_size": "native",
            "image_scale": 1, "train": {**TRAIN, "epochs": 1, "max_steps": 2}}
    for name, noise in (("a.pt", 1), ("b.pt", 2)):
        torch.manual_seed(noise)  # what an earlier job in the same process might have left behind
        torch.rand(noise)
        run_step(step, "digits", str(digits_file), str(tmp_path / name), seed=5)
    a, b = (Artifact.load(tmp_path / n).state_dict for n in ("a.pt", "b.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # byte for byte, so the size column and DVC's hashes cannot differ between identical runs
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    trained = Artifact.load(tmp_path / "a.pt").meta["steps"][0]["training"]
    assert trained["epochs"] == 1 and "history" not in Artifact.load(tmp_path / "a.pt").meta["steps"][0]


def test_zero_epochs_leaves_the_model_untouched(digits):
    arch = arch_for(TINY, digits.meta)
    model = create(arch)
    before = copy.deepcopy(model.state_dict())
    history = fit(model, digits, {**TRAIN, "epochs": 0}, InputAdapter(digits.meta, arch["kwargs"]["img_size"]))
    assert history["epochs"] == [] and history["best_val_acc"] is not None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
