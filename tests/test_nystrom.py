import copy

import pytest
import torch

from vitcompress.artifacts import Artifact
from vitcompress.attention import exact_attention, iterative_pinv, nystrom_attention, segment_means
from vitcompress.config import ConfigError, fill_label, resolve
from vitcompress.methods import build_model
from vitcompress.methods.nystrom import Nystrom, NystromAttention, resolve_landmarks, tokens_of, use_nystrom
from vitcompress.models import arch_for, create
from vitcompress.scaling import attention_scaling


def test_segment_means_handle_uneven_segments():
    x = torch.arange(10.0).reshape(1, 10, 1)
    # boundaries floor(i*10/3) = 0, 3, 6, 10
    assert segment_means(x, 3).flatten().tolist() == [1.0, 4.0, 7.5]
    assert torch.equal(segment_means(x, 10), x)
    assert segment_means(x, 1).item() == pytest.approx(4.5)
    with pytest.raises(ValueError, match="landmarks = 11"):
        segment_means(x, 11)


def test_iterative_pinv_converges_to_the_inverse():
    a = torch.softmax(torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    z = iterative_pinv(a, iterations=20)
    assert torch.allclose(a @ z, torch.eye(8).expand(2, 8, 8), atol=1e-3)


@pytest.mark.parametrize("n", [16, 33, 197])  # 197: ViT-B/16 at 224, not divisible by usual m
def test_with_as_many_landmarks_as_tokens_it_is_exact_attention(n):
    g = torch.Generator().manual_seed(n)
    q, k, v = torch.randn(3, 2, 3, n, 16, generator=g).unbind(0)
    exact = exact_attention(q, k, v)
    assert torch.allclose(nystrom_attention(q, k, v, n, iterations=16), exact, atol=1e-3)
    assert (nystrom_attention(q, k, v, n) - exact).abs().max() < 0.1  # default 6 iterations: close


def test_fewer_landmarks_approximate_and_more_approximate_better():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 64, 32, generator=g).cumsum(1) / 8  # smooth sequences, like image tokens
    q, k, v = x.unsqueeze(1), (x * 0.9).unsqueeze(1), x.unsqueeze(1)
    exact = exact_attention(q, k, v)
    err = {m: (nystrom_attention(q, k, v, m, 10) - exact).norm() / exact.norm() for m in (4, 16, 64)}
    assert err[64] < err[16] < err[4] < 0.5


TINY = {"timm": "vit_small_patch16_224",
        "kwargs": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}}


def test_nystrom_vit_reuses_weights_and_round_trips(tmp_path):
    arch = arch_for(TINY, {"num_classes": 5, "channels": 1, "size": [16, 16]})  # 16 patches + class token
    vanilla = create(arch).eval()
    assert tokens_of(vanilla) == 17
    x = torch.randn(3, 1, 16, 16)
    reference = vanilla(x)
    model = use_nystrom(copy.deepcopy(vanilla), landmarks=17, iterations=16)
    assert all(isinstance(b.attn, NystromAttention) for b in model.blocks)
    assert model.state_dict().keys() == vanilla.state_dict().keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in vanilla.state_dict().items())
    assert torch.allclose(model(x), reference, atol=1e-3)  # m = n: the same network

    approx = use_nystrom(copy.deepcopy(vanilla), landmarks=4)
    art = Artifact(arch, approx.state_dict(), [{"method": "nystrom", "landmarks": 4, "pinv_iterations": 6}])
    art.save(tmp_path / "m.pt")
    reloaded = build_model(Artifact.load(tmp_path / "m.pt"))
    assert isinstance(reloaded.blocks[0].attn, NystromAttention) and reloaded.blocks[0].attn.landmarks == 4
    assert torch.equal(reloaded(x), approx(x))
    with pytest.raises(ValueError, match="exceeds the model's 17 tokens"):
        use_nystrom(create(arch), landmarks=18)


def test_bad_nystrom_settings_name_the_parameter(raw_params):
    raw = copy.deepcopy(raw_params)
    steps = raw["profiles"]["demo"]["steps"]
    steps["nystrom_0.25"]["landmarks"] = 0
    with pytest.raises(ConfigError, match=r"steps.nystrom_0.25.landmarks = 0 must be at least 1"):
        resolve(raw)
    steps["nystrom_0.25"]["landmarks"] = 1.5
    with pytest.raises(ConfigError, match=r"steps.nystrom_0.25.landmarks = 1.5: give a count .* or a fraction"):
        resolve(raw)
    steps["nystrom_0.25"]["landmarks"] = 0.25
    raw["profiles"]["demo"]["rows"][-1]["model"] = "ViT-Nystromformer(m={landmark})"
    with pytest.raises(ConfigError, match=r"rows\[\d+\].model = .*\{landmark\} is not a setting of a step of its chain"):
        resolve(raw)
    del steps["nystrom_0.25"]["landmarks"]
    with pytest.raises(ConfigError, match="needs `landmarks`"):
        resolve(raw)


def test_landmarks_as_a_fraction_of_the_tokens_resolve_per_model_and_show_in_labels(tmp_path):
    assert [resolve_landmarks(f, 16) for f in (0.25, 0.5, 0.75)] == [4, 8, 12]
    assert [resolve_landmarks(f, 197) for f in (0.12, 0.001)] == [24, 1] and resolve_landmarks(24, 197) == 24
    arch = arch_for(TINY, {"num_classes": 5, "channels": 1, "size": [16, 16]})  # 17 tokens
    model, spec, *_ = Nystrom.untrained(create(arch), {"method": "nystrom", "landmarks": 0.5})
    assert spec["landmarks"] == 9 and model.blocks[0].attn.landmarks == 9  # round(8.5) = 9, half up
    art = Artifact(arch, model.state_dict(), [spec])
    assert art.settings() == {"landmarks": 9, "pinv_iterations": 6}
    assert fill_label("ViT-Nystromformer(m={landmarks})", {"landmarks": 0.5, **art.settings()}) == \
        "ViT-Nystromformer(m=9)"
    assert fill_label("x={ratio}, {unknown}", {"ratio": 0.1}) == "x=0.1, {unknown}"


def test_scaling_benchmark_reports_every_variant():
    df = attention_scaling([32, 64], [8, 48], embed_dim=32, num_heads=2, repeats=5, progress=False)
    assert set(df["method"]) == {"exact", "exact_sdpa", "nystrom"}
    assert len(df) == 2 * 3 + 1  # m=48 is skipped at n=32
    assert (df["median_ms"] > 0).all()
