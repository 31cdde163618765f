import copy

import pytest
import torch

from vitcompress.artifacts import Artifact
from vitcompress.config import ConfigError, resolve
from vitcompress.data import InputAdapter, PreparedData
from vitcompress.measure import evaluate
from vitcompress.models import count_params
from vitcompress.methods import StepContext, get_method
from vitcompress.fqvit.observers import ActQuant, fake_quant, log2_quant, uniform_qparams
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


def test_fq_vit_artifact_is_uint8_reloads_identically_and_is_never_timed(random_vit, digits_file, tmp_path):
    art = run_fq(random_vit, digits_file)
    sd = art.state_dict
    assert sd["blocks.0.attn.qkv.weight_q"].dtype == torch.uint8
    assert "blocks.0.attn.qkv.weight" not in sd and "patch_embed.proj.weight_q" in sd
    assert sd["blocks.0.norm1.input_quant.scale"].shape == (32,)  # PTF: one factor per channel
    assert count_params(art.build()) == count_params(random_vit.build())  # same weights, stored as uint8
    art.save(tmp_path / "fq.pt")
    Artifact(random_vit.arch, random_vit.state_dict).save(tmp_path / "float.pt")
    assert (tmp_path / "fq.pt").stat().st_size < 0.6 * (tmp_path / "float.pt").stat().st_size

    data = PreparedData(digits_file)
    x = InputAdapter(data.meta, random_vit.arch["kwargs"]["img_size"])(data.splits["test"][0][:32])
    with torch.no_grad():
        reloaded = Artifact.load(tmp_path / "fq.pt").build()(x)
        assert torch.equal(reloaded, art.build()(x))
        assert not torch.equal(reloaded, random_vit.build()(x))  # it really is quantized
    result = measure_model(art.build(), art.meta, [1, 16, 16], {"batch_size": 2, "cpu_threads": 1, "warmup": 1,
                                                                "repeats": 5}, {})
    assert result["cpu"] is None and result["gpu"] is None and "simulated" in result["notes"][0]


def test_ablation_reports_all_variants_and_matches_the_row(random_vit, digits_file, tmp_path):
    from vitcompress.fqvit.ablation import ablation

    random_vit.save(tmp_path / "vit.pt")
    step = {"method": "fq_vit", "calib_images": 128, "calib_batch_size": 64}
    rows = ablation(str(tmp_path / "vit.pt"), str(digits_file), step, csv=str(tmp_path / "a.csv"),
                    md=str(tmp_path / "a.md"), figure=str(tmp_path / "fig.png"), dataset="digits")
    assert [r["variant"] for r in rows][-1] == "PTF + LIS (FQ-ViT)" and len(rows) == 5
    assert (tmp_path / "fig.png").stat().st_size > 10_000
    assert (tmp_path / "a.csv").read_text().count("\n") == 6
    data = PreparedData(digits_file)
    adapter = InputAdapter(data.meta, random_vit.arch["kwargs"]["img_size"])
    row_acc = evaluate(run_fq(random_vit, digits_file).build(), data.loader("test", 512), adapter)["top1"]
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
