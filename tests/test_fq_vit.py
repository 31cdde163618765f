import copy
import dataclasses

import pytest
import torch

from vitcompress.artifacts import Artifact
from vitcompress.config import ConfigError, resolve
from vitcompress.data import InputAdapter, PreparedData
from vitcompress.fqvit.observers import ActQuant, fake_quant, log2_quant, uniform_qparams
from vitcompress.fqvit.settings import FQViTSettings
from vitcompress.measure import evaluate
from vitcompress.methods import StepContext, build_model, get_method
from vitcompress.models import count_params
from vitcompress.workflow import measure_model


def run_fq(parent, data_file, **settings) -> Artifact:
    step = {"method": "fq_vit", "id": "fq_vit", "calib_images": 128, "calib_batch_size": 64, **settings}
    ctx = StepContext(step=step, dataset="digits", data_file=data_file, device="cpu", parent=parent)
    return get_method("fq_vit")().run(ctx)


def test_log2_quantizer_keeps_powers_of_two_and_zero():
    p = torch.tensor([1.0, 0.6, 0.3, 0.1, 1e-3, 1e-6, 0.0])
    q = log2_quant(p, bits=4)
    assert q.tolist()[:3] == [1.0, 0.5, 0.25]  # round(-log2 p): 0.6 -> 2^-1, 0.3 -> 2^-2
    nonzero = q[q > 0]
    assert torch.equal(torch.exp2(torch.log2(nonzero).round()), nonzero)
    assert q[-2:].tolist() == [0.0, 0.0]  # beyond 2^-14 the top level means 0
    assert len(torch.unique(log2_quant(torch.rand(10_000), 4))) <= 16
    # near zero, where attention mass lies, log2 keeps resolution that uniform 4 bits throws away
    small = torch.tensor([0.004, 0.01, 0.02])
    uniform = torch.round(small * 15) / 15
    assert uniform.eq(0).all() and log2_quant(small, 4).gt(0).all()


def test_fake_quant_error_is_within_half_a_step_inside_the_range():
    x = torch.linspace(-3, 5, 1001)
    scale, zp = uniform_qparams(x.min(), x.max(), 8)
    err = (fake_quant(x, scale, zp, 8) - x).abs()
    assert err.max() <= scale / 2 + 1e-6


def test_ptf_gives_narrow_channels_finer_steps_and_less_error():
    torch.manual_seed(0)
    wide = torch.randn(4000, 1) * 40  # one outlier channel, as in the study's Figure 1
    narrow = torch.randn(4000, 7) * 0.5
    x = torch.cat([wide, narrow], dim=1)
    plain, ptf = ActQuant(8, "minmax"), ActQuant(8, "minmax", channels=8, ptf_k=3)
    for q in (plain, ptf):
        q.mode = "calibrate"
        q(x)
        q.freeze()
    assert ptf.scale[0] == plain.scale.max()  # the wide channel keeps the layer's full range (2^K)
    assert (ptf.scale[1:] < ptf.scale[0]).all()  # the narrow ones get 2^-K of it ...
    err_plain = (plain(x) - x)[:, 1:].pow(2).mean()
    err_ptf = (ptf(x) - x)[:, 1:].pow(2).mean()
    assert err_ptf < 0.1 * err_plain  # ... and far less error


def test_observers_clip_outliers_differently():
    torch.manual_seed(0)
    x = torch.randn(8000, 16)
    x[0, 0] = 80.0  # one outlier
    ranges = {}
    for kind in ("minmax", "ema", "percentile", "omse"):
        q = ActQuant(8, kind)
        q.mode = "calibrate"
        for chunk in x.split(1000):
            q(chunk)
        ranges[kind] = q.layer_range()
    assert ranges["minmax"][1] == pytest.approx(80.0)
    assert ranges["percentile"][1] < 10 and ranges["omse"][1] < ranges["minmax"][1]
    assert ranges["ema"][1] < ranges["minmax"][1]  # the outlier's batch is averaged away


def test_fq_vit_artifact_is_int8_reloads_identically_and_is_never_timed(random_vit, digits_file, tmp_path):
    art = run_fq(random_vit, digits_file)
    sd = art.state_dict
    assert sd["blocks.0.attn.qkv.weight_q"].dtype == torch.int8
    assert "blocks.0.attn.qkv.weight" not in sd and "patch_embed.proj.weight_q" in sd
    assert sd["blocks.0.res1.scale"].shape == (32,)  # PTF on the residual sum: one factor per channel
    assert sd["blocks.1.res2.scale"].shape == (32,)
    assert count_params(build_model(art)) == count_params(build_model(random_vit))  # same weights, stored as uint8
    art.save(tmp_path / "fq.pt")
    Artifact(random_vit.arch, random_vit.state_dict).save(tmp_path / "float.pt")
    assert (tmp_path / "fq.pt").stat().st_size < 0.6 * (tmp_path / "float.pt").stat().st_size

    data = PreparedData(digits_file)
    x = InputAdapter(data.meta, random_vit.arch["kwargs"]["img_size"])(data.splits["test"][0][:32])
    with torch.no_grad():
        reloaded = build_model(Artifact.load(tmp_path / "fq.pt"))(x)
        assert torch.equal(reloaded, build_model(art)(x))
        logits = build_model(random_vit)(x)
        assert not torch.equal(reloaded, logits)  # it really is quantized ...
        # ... at 8 bits: close to the float logits, and the logits themselves on one 8-bit grid
        assert (reloaded - logits).norm() < 0.1 * logits.norm()
        assert reloaded.unique().numel() <= 256
    result = measure_model(build_model(art), art.meta, [1, 16, 16], {"batch_size": 2, "cpu_threads": 1, "warmup": 1,
                                                                "repeats": 5}, {})
    assert result["cpu"] is None and result["gpu"] is None and "simulated" in result["notes"][0]


def test_ablation_reports_all_variants_and_matches_the_row(random_vit, digits_file, tmp_path):
    from vitcompress.fqvit.ablation import ablation

    s = FQViTSettings(calib_images=128, calib_batch_size=64)
    from vitcompress.report.tables import render_fq_vit_ablation

    result = ablation(lambda: build_model(random_vit), random_vit.arch["kwargs"]["img_size"], str(digits_file), s,
                      figure=str(tmp_path / "fig.png"), dataset="digits")
    rows = result["rows"]
    assert [r["variant"] for r in rows][-1] == "PTF + LIS (FQ-ViT)" and len(rows) == 5
    assert (tmp_path / "fig.png").stat().st_size > 10_000
    render_fq_vit_ablation(result, s, "digits", csv=str(tmp_path / "a.csv"), md=str(tmp_path / "a.md"))
    assert (tmp_path / "a.csv").read_text().count("\n") == 6
    md = (tmp_path / "a.md").read_text()
    change = rows[-1]["accuracy"] - rows[0]["accuracy"]
    assert f"| PTF + LIS (FQ-ViT) | {rows[-1]['accuracy']:.2f} | " in md and "| float (no quantization) |" in md
    assert ("−" if change < -0.005 else "") + f"{abs(change):.2f}" in md and "| ViT-B | 84.53 |" in md
    data = PreparedData(digits_file)
    adapter = InputAdapter(data.meta, random_vit.arch["kwargs"]["img_size"])
    row_acc = evaluate(build_model(run_fq(random_vit, digits_file)), data.loader("test", 512), adapter)["top1"]
    assert rows[-1]["accuracy"] == pytest.approx(row_acc)  # same calibration, same model


def test_more_calibration_images_than_training_images_is_a_clear_error(random_vit, digits_file):
    with pytest.raises(ValueError, match=r"calib_images = 99999 exceeds the \d+ training images"):
        run_fq(random_vit, digits_file, calib_images=99999)


@pytest.mark.parametrize("setting, message", [
    ({"observer": "median"}, r"fq_vit.observer = 'median': use one of minmax, ema, percentile, omse"),
    ({"calib_images": 0}, r"fq_vit.calib_images = 0 must be at least 1"),
    ({"weight_bits": 9}, r"fq_vit.weight_bits = 9"),
    ({"attn_bits": 0}, r"fq_vit.attn_bits = 0"),
    ({"percentile": 40}, r"fq_vit.percentile = 40"),
])
def test_bad_fq_vit_settings_name_the_parameter(raw_params, setting, message):
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["demo"]["steps"]["fq_vit"] = {"method": "fq_vit", **setting}
    with pytest.raises(ConfigError, match=message):
        resolve(raw)


FQ_SETTINGS = FQViTSettings()


def _calibrated(parent, digits_file, **over):
    from vitcompress.fqvit.modules import calibrate, quantize_model

    data = PreparedData(digits_file)
    x = InputAdapter(data.meta, parent.arch["kwargs"]["img_size"])(data.splits["test"][0][:64])
    model = quantize_model(build_model(parent), dataclasses.replace(FQ_SETTINGS, **over))
    return calibrate(model, x, 32), x


def _on_grid(t, q) -> bool:
    """``t`` equals its own quantization by the frozen quantizer ``q`` (so it is on q's integer grid)."""
    return torch.allclose(fake_quant(t, q.scale, q.zero_point, q.bits), t, atol=1e-6, rtol=0)


def test_every_linear_input_every_block_output_and_the_skip_path_are_quantized(random_vit, digits_file):
    """FQ-ViT's graph: what enters any Linear is on an 8-bit grid, each block's residual sums are on their
    PTF grid, and the skip path carries that quantized sum, not the float one."""
    from vitcompress.fqvit.modules import QBlock, QLinear

    model, x = _calibrated(random_vit, digits_file)
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, (i[0], o)))
             for n, m in model.named_modules() if isinstance(m, (QLinear, QBlock)) or n.endswith(("res1", "res2"))
             or n.endswith("mlp")]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    linears = [n for n, m in model.named_modules() if isinstance(m, QLinear)]
    assert len(linears) == 2 * 4 + 1  # qkv, proj, fc1, fc2 per block, and the head
    for name in linears:
        assert seen[name][0].unique().numel() <= 256, f"{name}'s input is not quantized"
    for i, block in enumerate(model.blocks):
        res1_out, res2_out = seen[f"blocks.{i}.res1"][1], seen[f"blocks.{i}.res2"][1]
        assert _on_grid(res1_out, block.res1) and _on_grid(res2_out, block.res2)
        assert block.res1.scale.numel() == 32 and block.res1.scale.unique().numel() > 1  # PTF factors differ
        # the second residual sum is (quantized first sum) + MLP branch: the skip path is quantized
        res2_in, mlp_out = seen[f"blocks.{i}.res2"][0], seen[f"blocks.{i}.mlp"][1]
        assert torch.allclose(res2_in - mlp_out, res1_out, atol=1e-5)
        if i > 0:  # and a block's input is the previous block's quantized output
            assert torch.equal(seen[f"blocks.{i}"][0], seen[f"blocks.{i - 1}"][1])


def test_weights_are_symmetric_int8_per_channel(random_vit, digits_file):
    model, _ = _calibrated(random_vit, digits_file)
    qkv = model.blocks[0].attn.qkv
    w = build_model(random_vit).blocks[0].attn.qkv.weight.detach()
    q = qkv.weight_q.int()
    # each row's absmax maps to the end of the signed grid: +127, or -128 when the extreme is negative
    assert q.min() >= -128 and q.max() <= 127 and (q.abs().amax(dim=1) >= 127).all()
    assert torch.allclose(qkv.weight_scale, w.abs().amax(dim=1) / 127.5)
    assert ((qkv.dequantized_weight() - w).abs() <= qkv.weight_scale[:, None] / 2 + 1e-7).all()


def test_uniform_attention_baseline_is_calibrated_8_bit_and_lis_is_4_bit(random_vit, digits_file):
    """Without LIS, FQ-ViT's baseline quantizes probabilities uniformly at act_bits (8) with a calibrated
    range; with LIS, log2 levels at attn_bits (4)."""
    from vitcompress.fqvit.observers import AttnProbQuant

    outs = {}
    for lis in (False, True):
        model, x = _calibrated(random_vit, digits_file, lis=lis)
        pq = model.blocks[0].attn.prob_quant
        hook = pq.register_forward_hook(lambda mod, i, o, lis=lis: outs.__setitem__(lis, o))
        with torch.no_grad():
            model(x)
        hook.remove()
        if lis:
            assert isinstance(pq, AttnProbQuant) and pq.bits == 4
        else:
            assert isinstance(pq, ActQuant) and pq.bits == 8 and pq.scale.item() < 1 / 255 + 1e-6
    assert 16 < outs[False].unique().numel() <= 256
    assert outs[True].unique().numel() <= 16


@pytest.mark.parametrize("kwargs", [{}, {"global_pool": "avg", "class_token": False, "fc_norm": False}],
                         ids=["class token", "average, norm before pooling"])
def test_what_the_head_sees_is_quantized_after_pooling(kwargs):
    """The head's input is on one 8-bit grid after the class token is taken (or the tokens averaged), as
    FQ-ViT quantizes norm(x)[:, 0]; a distilled DeiT's two heads likewise."""
    import timm

    from vitcompress.fqvit.modules import calibrate, quantize_model

    for name in ("vit_small_patch16_224", "deit_tiny_distilled_patch16_224"):
        if name.startswith("deit") and kwargs:
            continue
        torch.manual_seed(0)
        model = timm.create_model(name, patch_size=4, embed_dim=32, depth=1, num_heads=2, img_size=16, in_chans=1,
                                  num_classes=10, **kwargs).eval()
        x = torch.randn(32, 1, 16, 16)
        q = calibrate(quantize_model(model, FQ_SETTINGS), x, 16)
        seen = []
        heads = [q.head] + ([q.head_dist] if hasattr(q, "head_dist") else [])
        hooks = [h.register_forward_hook(lambda m, i, o: seen.append(i[0])) for h in heads]
        with torch.no_grad():
            q(x)
        for h in hooks:
            h.remove()
        for t in seen:
            assert t.unique().numel() <= 256 and _on_grid(t, q.head_drop.out_quant)


def test_ptf_takes_the_min_max_range_whatever_the_observer():
    torch.manual_seed(0)
    x = torch.randn(4000, 8)
    x[0, 0] = 50.0
    q = ActQuant(8, "percentile", channels=8, ptf_k=3)
    q.mode = "calibrate"
    q(x)
    q.freeze()
    assert q.scale.max() * 255 >= 50.0 - 1e-3  # the outlier's channel keeps the full min-max range


def test_fq_vit_refuses_blocks_it_has_no_quantizer_for(random_vit, digits_file):
    from vitcompress.fqvit.modules import quantize_model
    from vitcompress.pruning.slim import apply_pruning, random_scores, select

    pruned = apply_pruning(build_model(random_vit), select(random_scores(build_model(random_vit)), 0.1))
    with pytest.raises(ValueError, match="block 0 has SlimAttention .*right after the trained model"):
        quantize_model(pruned, FQ_SETTINGS)
    import timm

    scaled = timm.create_model("vit_small_patch16_224", patch_size=4, embed_dim=32, depth=1, num_heads=2, img_size=16,
                               in_chans=1, num_classes=10, init_values=1e-5)
    with pytest.raises(ValueError, match="no quantizer for block 0's ls1 .*LayerScale"):
        quantize_model(scaled, FQ_SETTINGS)
