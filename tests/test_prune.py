import copy

import pytest
import torch

from vitcompress.artifacts import Artifact
from vitcompress.config import ConfigError, resolve
from vitcompress.data import InputAdapter, PreparedData, prepare
from vitcompress.methods import build_model
from vitcompress.methods.base import StepContext
from vitcompress.methods.prune import Prune
from vitcompress.methods.prune_gates import PruneGates
from vitcompress.models import arch_for, count_params, create
from vitcompress.pruning.gates import Gates, fold_gates, histogram_from_artifact, taylor_scores
from vitcompress.pruning.slim import KINDS, SelectNorm, SlimAttention, apply_pruning, random_scores, select, shapes_of

ARCH = arch_for({"timm": "vit_small_patch16_224",
                 "kwargs": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}},
                {"num_classes": 10, "channels": 1, "size": [8, 8]})
TRAIN = {"epochs": 1, "batch_size": 64, "lr": 0.002, "weight_decay": 0.0, "warmup_epochs": 0,
         "label_smoothing": 0.0, "augment": {}, "num_workers": 0, "max_steps": 3}


def test_ratio_zero_changes_nothing():
    model = create(ARCH).eval()
    x = torch.randn(4, 1, 8, 8)
    same = apply_pruning(copy.deepcopy(model), select(random_scores(model), 0.0))
    full = {"heads": 2, "dim_qk": 16, "dim_v": 16, "hidden": 128, "attn_in": 32, "mlp_in": 32}
    assert shapes_of(same) == [full] * 2
    assert count_params(same) == count_params(model)
    assert torch.allclose(same(x), model(x), atol=1e-5)


@pytest.mark.parametrize("dim_qk, dim_v", [(8, 5), (5, 8), (8, 8)])
def test_slim_attention_computes_attention_with_unequal_head_widths(dim_qk, dim_v):
    """Pruned value (or query/key) dimensions leave heads of two widths; the layer pads the narrower side for
    the fused kernel and must still compute softmax(q·kᵀ·scale)·v exactly, with the original model's scale."""
    torch.manual_seed(0)
    attn = SlimAttention(12, 10, num_heads=3, dim_qk=dim_qk, dim_v=dim_v, scale=0.3).eval()
    x = torch.randn(2, 7, 12)
    q, k, v = attn.qkv(x).split([3 * dim_qk, 3 * dim_qk, 3 * dim_v], dim=-1)
    q, k, v = (t.reshape(2, 7, 3, -1).transpose(1, 2) for t in (q, k, v))
    expected = attn.proj((torch.softmax(q @ k.transpose(-2, -1) * 0.3, dim=-1) @ v).transpose(1, 2).reshape(2, 7, -1))
    with torch.no_grad():
        assert torch.allclose(attn(x), expected, atol=1e-5)


N_UNITS = 2 * (32 + 32 + 32 + 128)  # per block: features into qkv, v dims, features into fc1, hidden units


def test_pruning_removes_the_lowest_scored_fraction_globally_and_physically():
    model = create(ARCH).eval()
    scores = random_scores(model)
    scores["mlp_hidden"][1][:40] = -1.0  # the 40 least important dimensions of the whole network
    slim = apply_pruning(copy.deepcopy(model), select(scores, 40 / N_UNITS))
    shapes = shapes_of(slim)
    assert shapes[1]["hidden"] == 128 - 40
    assert shapes[0] == {"heads": 2, "dim_qk": 16, "dim_v": 16, "hidden": 128, "attn_in": 32, "mlp_in": 32}
    assert isinstance(slim.blocks[1].attn, SlimAttention)
    assert slim.blocks[1].mlp.fc1.weight.shape == (88, 32) and slim.blocks[1].mlp.fc2.weight.shape == (32, 88)
    kept = torch.arange(40, 128)
    assert torch.equal(slim.blocks[1].mlp.fc1.weight, model.blocks[1].mlp.fc1.weight[kept])
    assert count_params(slim) < count_params(model)


def test_tied_scores_are_pruned_in_a_seeded_random_order_not_by_position():
    """Gates that barely moved (a short gate training) tie: by position the ties would all fall on the first
    kind (the features entering qkv, the costliest per dimension); drawn at random each kind loses about its
    share, and the same seed draws the same dimensions."""
    model = create(ARCH).eval()
    tied = {k: [torch.ones_like(t) for t in v] for k, v in random_scores(model).items()}
    keep = select(tied, 0.25)
    lost = {k: sum(int(t.numel()) for t in random_scores(model)[k]) - sum(int(i.numel()) for i in keep[k])
            for k in KINDS}
    total = {k: sum(int(t.numel()) for t in random_scores(model)[k]) for k in KINDS}
    for k in KINDS:
        assert 0.1 < lost[k] / total[k] < 0.45, (k, lost, total)  # about a quarter of each, not all of one
    again = select(tied, 0.25)
    assert all(torch.equal(a, b) for k in KINDS for a, b in zip(keep[k], again[k]))
    other = select(tied, 0.25, seed=1)
    assert not all(torch.equal(a, b) for k in KINDS for a, b in zip(keep[k], other[k]))


def test_vtp_prunes_embedding_dims_into_qkv_and_fc1_and_value_dims_but_never_query_key():
    """VTP's placement: the lowest-scored features entering qkv and fc1 leave those layers' input columns
    (the residual stream keeps its width), value dimensions leave v and proj, q/k dimensions stay."""
    model = create(ARCH).eval()
    scores = random_scores(model)
    scores["attn_in"][0][[3, 7, 11]] = -1.0
    scores["mlp_in"][1][[0, 5]] = -1.0
    scores["attn_out"][0][:, :4] = -1.0  # 4 value dims of each head of block 0
    slim = apply_pruning(copy.deepcopy(model), select(scores, 13 / N_UNITS))
    b0, b1 = slim.blocks
    assert isinstance(b0.norm1, SelectNorm) and b0.attn.qkv.in_features == 29
    assert b0.attn.dim_qk == 16 and b0.attn.dim_v == 12 and b0.attn.proj.weight.shape == (32, 24)
    assert isinstance(b1.norm2, SelectNorm) and b1.mlp.fc1.in_features == 30
    keep = [i for i in range(32) if i not in (3, 7, 11)]
    assert torch.equal(b0.attn.qkv.weight[:32], model.blocks[0].attn.qkv.weight[:32][:, keep])  # q rows, kept cols
    assert slim(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_pruning_dimensions_whose_gates_are_zero_changes_no_output():
    """Gates fold exactly, and pruning removes what the lowest importance says: zero a set of gates,
    fold them, then prune exactly those dimensions, and the output is the gated network's."""
    torch.manual_seed(0)
    model = create(ARCH).eval()
    x = torch.randn(4, 1, 8, 8)
    gates = Gates(model).attach(model)
    with torch.no_grad():
        for kind in KINDS:
            for g in gates[kind]:
                g.uniform_(0.5, 1.5)
        gates["attn_in"][0][[1, 2]] = 0.0
        gates["attn_out"][1][:, [0, 9]] = 0.0
        gates["mlp_in"][1][[4]] = 0.0
        gates["mlp_hidden"][0][:10] = 0.0
        gated = model(x)
    gates.detach()
    fold_gates(model, gates)
    with torch.no_grad():
        assert torch.allclose(model(x), gated, atol=1e-5)  # folding is exact
        scores = gates.magnitudes()
        n_zero = sum(int((s == 0).sum()) for k in KINDS for s in scores[k])
        assert n_zero == 2 + 4 + 1 + 10
        slim = apply_pruning(model, select(scores, n_zero / N_UNITS))
        assert slim.blocks[1].attn.dim_v == 14 and slim.blocks[0].mlp.fc1.out_features == 118
        assert torch.allclose(slim(x), gated, atol=1e-5)  # what went carried nothing


def test_taylor_scores_add_per_batch_magnitudes_so_opposite_signs_do_not_cancel():
    """Two batches whose gradients on a dimension have opposite signs: summing g·dL/dg first would give 0;
    Taylor importance sums the per-batch magnitudes."""
    torch.manual_seed(0)
    model = create(ARCH).eval()
    x = torch.randn(2, 1, 8, 8)

    def loss_fn(m, xb, sign):
        return sign * m(xb).sum()

    plus, minus = taylor_scores(model, [(x, 1.0)], loss_fn), taylor_scores(model, [(x, -1.0)], loss_fn)
    both = taylor_scores(model, [(x, 1.0), (x, -1.0)], loss_fn)
    for kind in KINDS:
        for p, m, b in zip(plus[kind], minus[kind], both[kind]):
            assert torch.allclose(p, m) and torch.allclose(b, p, atol=1e-5)  # normalised: same ranking, not zero
            assert b.abs().sum() > 0
    # and the raw score is |g·dL/dg| = |sum over the input column of w·dL/dw|: check one by hand
    model.zero_grad()
    model(x).sum().backward()
    w = model.blocks[0].mlp.fc2.weight
    raw = (w.grad * w).sum(dim=0).abs().detach()
    assert torch.allclose(plus["mlp_hidden"][0], raw / raw.mean(), rtol=1e-4, atol=1e-6)


def test_pruned_model_saves_and_reloads_to_identical_predictions(tmp_path):
    model = create(ARCH).eval()
    slim = apply_pruning(model, select(random_scores(model, 3), 0.2))
    art = Artifact(ARCH, slim.state_dict(), [{"method": "prune", "shapes": shapes_of(slim)}])
    art.save(tmp_path / "p.pt")
    Artifact(ARCH, create(ARCH).state_dict()).save(tmp_path / "full.pt")
    assert (tmp_path / "p.pt").stat().st_size < 0.9 * (tmp_path / "full.pt").stat().st_size
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(build_model(Artifact.load(tmp_path / "p.pt"))(x), slim(x))


def test_heads_keep_equal_widths_each_its_own_best_value_dimensions():
    """Head 0 holds 6 of the 8 least important value dimensions, head 1 holds 2: both keep the block's
    surviving count / 2 dimensions, and each keeps its own highest-scored ones."""
    model = create(ARCH)
    scores = random_scores(model)
    for kind in KINDS:
        for s in scores[kind]:
            s += 10.0  # only block 0's value dimensions below are pruned
    scores["attn_out"][0][0, :6] = torch.arange(6) * 0.01
    scores["attn_out"][0][1, :2] = torch.arange(2) * 0.01
    keep = select(scores, 8 / N_UNITS)["attn_out"][0]
    assert keep.shape == (2, 12)  # 32 - 8 = 24 survivors, 12 a head
    for head in range(2):
        expected = torch.sort(scores["attn_out"][0][head].topk(12).indices).values
        assert torch.equal(keep[head], expected)
    assert keep[0].tolist() == list(range(4, 16))  # head 0 loses its own 4 lowest (not all 6 low ones)
    assert {0, 1}.isdisjoint(keep[1].tolist())  # head 1 its 2 low ones and its 2 lowest others


def test_heads_keep_equal_widths_and_a_whole_layer_is_never_removed():
    model = create(ARCH)
    scores = random_scores(model)
    keep = select(scores, 0.3)
    for idx in keep["attn_out"]:
        assert idx.shape[0] == 2  # both heads, same width
    scores["mlp_hidden"][0][:] = -1.0  # every hidden unit of block 0 is the least important
    with pytest.raises(ValueError, match="ratio = 0.4 would remove every mlp_hidden dimension of block 0"):
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
        gates["mlp_hidden"][0].zero_()
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
    assert set(gated.meta["prune_scores"]) == set(KINDS)
    assert gated.transforms == []  # gates change values, not shapes
    gated.save(tmp_path / "g.pt")
    histogram_from_artifact(tmp_path / "g.pt", tmp_path / "hist.png", "t")
    assert (tmp_path / "hist.png").stat().st_size > 1000

    ctx2 = StepContext(step={"id": "prune_0.2", "method": "prune", "ratio": 0.2, "epochs": 1, "train": TRAIN},
                       dataset="digits", data_file=tmp_path / "d.pt", device="cpu", parent=gated)
    pruned = Prune().run(ctx2)
    assert "prune_scores" not in pruned.meta
    assert pruned.transforms[-1]["method"] == "prune"
    model = build_model(pruned)
    assert count_params(model) < count_params(build_model(gated))


@pytest.fixture(scope="module")
def trained_small_vit(tmp_path_factory):
    """A small ViT trained on digits for a few epochs, and its data: what VTP's sparsity training starts from."""
    from vitcompress.methods.train import Train

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("vtp")
    prepare({"source": "digits"}, d / "d.pt")
    step = {"id": "vit", "method": "train", "model": "vit", "train": {**TRAIN, "epochs": 6, "max_steps": None,
                                                                       "batch_size": 32, "lr": 0.003},
            "model_cfg": {"timm": "vit_small_patch16_224", "kwargs": ARCH["kwargs"]}, "image_size": "native",
            "image_scale": 1}
    parent = Train().run(StepContext(step=step, dataset="digits", data_file=d / "d.pt", device="cpu"))
    return parent, d / "d.pt"


def _sparsity_train(parent, data_file, **settings):
    step = {"id": "gates", "method": "prune_gates", "score": "gate", "epochs": 8, "gate_lr": 0.05,
            "sparsity": 1e-4, "l1": "sum",  # the profiles' λ (the paper's)
            "train": {**TRAIN, "max_steps": None, "batch_size": 32, "lr": 0.0005, "weight_decay": 0.05}}
    step.update(settings)
    return PruneGates().run(StepContext(step=step, dataset="digits", data_file=data_file, device="cpu",
                                        parent=parent))


def test_the_l1_term_is_the_sum_of_the_gates_magnitudes_or_its_mean():
    model = create(ARCH)
    gates = Gates(model)
    n = sum(p.numel() for p in gates.parameters())
    with torch.no_grad():
        gates["mlp_hidden"][0][:3] = torch.tensor([-2.0, 0.5, 0.0])
    total = n - 3 + 2.5
    assert gates.l1("sum").item() == pytest.approx(total)
    assert gates.l1("mean").item() == pytest.approx(total / n)
    gates.l1("sum").backward()  # each gate pulled toward zero by exactly λ = 1: the sign of its value
    assert gates["mlp_hidden"][0].grad[:2].tolist() == [-1.0, 1.0]
    assert torch.all(gates["attn_in"][0].grad == 1.0)


def test_the_gates_train_in_their_own_group_at_their_rate_without_weight_decay():
    from vitcompress.methods.prune_gates import gate_group

    model = create(ARCH)
    gates = Gates(model)
    model.vc_gates = gates
    opt = torch.optim.AdamW([{"params": list(model.parameters()), "weight_decay": 0.05}], lr=1e-3)
    gate_group(opt, gates, 0.02)
    mine = {id(p) for p in gates.parameters()}
    assert not any(id(p) in mine for p in opt.param_groups[0]["params"])
    assert {id(p) for p in opt.param_groups[-1]["params"]} == mine
    assert opt.param_groups[-1]["lr"] == 0.02 and opt.param_groups[-1]["weight_decay"] == 0.0


def test_sparsity_training_separates_the_scores_and_without_l1_it_does_not(trained_small_vit):
    """VTP's claim: under the L1 term the unneeded dimensions' scores fall to near zero while the needed stay
    near 1 (bimodal); with λ = 0 no score reaches zero. The record gives the spread."""
    parent, data_file = trained_small_vit
    gated = _sparsity_train(parent, data_file)
    flat = torch.cat([torch.tensor(t).reshape(-1) for v in gated.meta["prune_scores"].values() for t in v])
    near_zero, kept = float((flat < 0.05).float().mean()), float((flat > 0.3).float().mean())
    assert near_zero >= 0.15 and kept >= 0.5 and near_zero + kept >= 0.85, (near_zero, kept)
    assert gated.meta["steps"][-1]["scores"]["near_zero"] >= 0.15
    assert gated.meta["steps"][-1]["l1"] == "sum" and gated.meta["steps"][-1]["gate_lr"] == 0.05
    free = _sparsity_train(parent, data_file, sparsity=0.0)  # weight decay 0.05 on the network, none on gates
    flat0 = torch.cat([torch.tensor(t).reshape(-1) for v in free.meta["prune_scores"].values() for t in v])
    assert float((flat0 < 0.05).float().mean()) < 0.02


def test_pruning_the_lowest_scores_changes_the_model_less_than_pruning_the_highest(trained_small_vit, tmp_path):
    """After sparsity training, removing the lowest-scored fifth barely moves the outputs; removing the same
    number of the highest-scored ones moves them far more. The record counts what went, kind by kind, and the
    fine-tune is VTP's third step."""
    parent, data_file = trained_small_vit
    gated = _sparsity_train(parent, data_file)
    scores = {k: [torch.tensor(t) for t in v] for k, v in gated.meta["prune_scores"].items()}
    model = build_model(gated).eval()
    data = PreparedData(data_file)
    x = InputAdapter(data.meta, gated.arch["kwargs"]["img_size"], "cpu")(next(iter(data.loader("test", 128)))[0])
    with torch.no_grad():
        ref = model(x)
        low = apply_pruning(copy.deepcopy(model), select(scores, 0.2)).eval()(x)
        inverted = {k: [-t for t in v] for k, v in scores.items()}
        high = apply_pruning(copy.deepcopy(model), select(inverted, 0.2)).eval()(x)
    assert (low - ref).abs().mean() * 5 < (high - ref).abs().mean()
    step = {"id": "prune_0.2", "method": "prune", "ratio": 0.2, "epochs": 1,
            "train": {**TRAIN, "max_steps": 2, "lr": 0.0005}}
    pruned = Prune().run(StepContext(step=step, dataset="digits", data_file=data_file, device="cpu", parent=gated))
    record = pruned.meta["steps"][-1]
    units = sum(t.numel() for v in scores.values() for t in v)
    assert sum(record["removed"].values()) == pytest.approx(0.2 * units, abs=2 * 2)  # heads round per block
    assert record["threshold"] < 0.05 and record["training"]["epochs"] == 1
    assert record["achieved_ratio"] == pytest.approx(0.2, abs=0.01)
    assert record["removed_above_threshold"] + record["kept_under_threshold"] <= 0.02 * units  # equal head widths


def test_pruning_removes_exactly_the_dimensions_under_the_threshold():
    """Distinct scores: the removed dimensions are the lowest-scored ones of the whole network, whatever their
    kind or block (the value dimensions here all score high, so no per-head rounding enters)."""
    model = create(ARCH).eval()
    scores = random_scores(model, seed=3)
    scores["attn_out"] = [t + 10.0 for t in scores["attn_out"]]
    n = 50
    keep = select(scores, n / N_UNITS)
    flat = [(float(v), k, i, j) for k in KINDS for i, t in enumerate(scores[k]) for j, v in enumerate(t.reshape(-1))]
    lowest = {(k, i, j) for _, k, i, j in sorted(flat)[:n]}
    removed = {(k, i, j) for k in ("attn_in", "mlp_in", "mlp_hidden") for i, t in enumerate(scores[k])
               for j in range(t.numel()) if j not in set(keep[k][i].tolist())}
    assert removed == lowest


def test_histogram_of_scores_that_did_not_move(tmp_path):
    from vitcompress.pruning.gates import importance_histogram

    scores = {"attn_in": [torch.ones(8)], "attn_out": [torch.ones(2, 4)], "mlp_in": [torch.ones(8)],
              "mlp_hidden": [torch.ones(16)]}
    importance_histogram(scores, {k: [10] for k in KINDS}, tmp_path / "h.png", "flat")
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_prune_settings_are_checked(raw_params):
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["demo"]["steps"]["prune_0.1"]["ratio"] = 1.2
    with pytest.raises(ConfigError, match=r"steps.prune_0.1.ratio = 1.2 must be in \[0, 1\) \(the fraction r"):
        resolve(raw)
    raw["profiles"]["demo"]["steps"]["prune_0.1"]["ratio"] = 0.1
    raw["profiles"]["demo"]["steps"]["gates"]["score"] = "magnitude"
    with pytest.raises(ConfigError, match=r"steps.gates.score = 'magnitude'"):
        resolve(raw)
