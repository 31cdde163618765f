"""Training seeds: a row's accuracy over several trained models, with an interval that covers the seeds' spread
and the test images'; the `seeds` setting and the DAG that runs every chain under each seed."""
import numpy as np
import pytest
from scipy.special import expit

from vitcompress.config import ConfigError, load_params
from vitcompress.io import read_json, write_json
from vitcompress.measure import pack_bits
from vitcompress.stats import accuracy_interval, across_seeds, exact_paired_delta
from vitcompress.workflow import row_metrics


def test_one_seed_keeps_its_own_estimate_and_interval():
    a = np.arange(270) % 20 != 0
    own = accuracy_interval(a)
    one = across_seeds([own], "value")
    assert (one["value"], one["lo"], one["hi"], one["seeds"]) == (own["value"], own["lo"], own["hi"], 1)
    assert one["sd"] is None


def test_seeds_that_agree_add_no_width_and_seeds_that_differ_widen_it():
    """Three seeds with the same 4-0 split (the same 4 images) are as undecided as one: the images did not
    change. Seeds whose changes differ widen the interval by their t interval."""
    a, b = np.ones(270, dtype=bool), np.ones(270, dtype=bool)
    b[:4] = False
    one = exact_paired_delta(a, b)
    same = across_seeds([one] * 3)
    assert same["delta"] == pytest.approx(one["delta"]) and same["lo"] == pytest.approx(one["lo"])
    assert not same["distinguishable"] and same["sd"] == pytest.approx(0, abs=1e-12)
    b2 = b.copy()
    b2[4:14] = False  # another seed's model misses 10 more
    spread = across_seeds([one, exact_paired_delta(a, b2), one])
    assert spread["hi"] - spread["lo"] > (one["hi"] - one["lo"]) + 1.0
    assert spread["by_seed"] == pytest.approx([one["delta"], 100 * 14 / 270, one["delta"]])


def _simulate(seeds: int, seed_sd: float, image_sd: float, trials: int, rng) -> tuple[float, float]:
    """Coverage of the seed-inclusive intervals of an accuracy and of a paired change, for models whose
    correctness on an image is a logistic function of the image's difficulty plus the training seed's effect
    (Bernoulli given both); the truths are expectations over seeds and images."""
    beta, delta = 3.0, -0.4
    u, v = rng.normal(0, seed_sd, 100_000), rng.normal(0, image_sd, 100_000)
    w = rng.normal(0, seed_sd, 100_000)
    acc_truth = 100 * expit(beta + u + v).mean()
    change_truth = 100 * (expit(beta + delta + w + v) - expit(beta + u + v)).mean()
    acc_in = change_in = 0
    for _ in range(trials):
        img = rng.normal(0, image_sd, 270)
        accs, changes = [], []
        for _s in range(seeds):
            base = rng.random(270) < expit(beta + rng.normal(0, seed_sd) + img)
            row = rng.random(270) < expit(beta + delta + rng.normal(0, seed_sd) + img)
            accs.append(accuracy_interval(base))
            changes.append(exact_paired_delta(row, base))
        a, c = across_seeds(accs, "value"), across_seeds(changes)
        acc_in += a["lo"] <= acc_truth <= a["hi"]
        change_in += c["lo"] <= change_truth <= c["hi"]
    return acc_in / trials, change_in / trials


@pytest.mark.parametrize("seed_sd, image_sd, floor", [(0.5, 2.0, 0.93), (1.0, 0.5, 0.87)])
def test_the_seed_inclusive_interval_covers_seeds_and_images(seed_sd, image_sd, floor):
    """3 seeds × 270 images, nominal 95%: seeds moving accuracy by about 1 point (first case) to 5 (last, where
    the seeds' spread dominates and 3 skewed values make the t interval short of its level)."""
    acc, change = _simulate(3, seed_sd, image_sd, 200, np.random.default_rng(11))
    assert acc >= floor and change >= floor


def _accuracy_json(path, correct):
    correct = np.asarray(correct, dtype=bool)
    write_json(path, {"accuracy": 100 * correct.mean(), "size_mb": 1.0, "params": 10, "test_images": len(correct),
                      "per_image": {"n": len(correct), "top1": pack_bits(correct)}})
    return str(path)


def test_a_row_over_three_seeds_reports_their_mean_and_a_wider_interval(tmp_path):
    rng = np.random.default_rng(2)
    speed = tmp_path / "speed.json"
    write_json(speed, {"cpu": None, "gpu": None, "fingerprint": {}})
    row = {"id": "q", "model": "ViT", "method": "Q", "chain": ["vit", "q"]}
    bases, rows = [], []
    for s in range(3):
        base = rng.random(270) < 0.95
        mine = base.copy()
        mine[np.flatnonzero(base)[: 2 + 6 * s]] = False  # seeds lose 2, 8, 14 images
        bases.append(_accuracy_json(tmp_path / f"base{s}.json", base))
        rows.append(_accuracy_json(tmp_path / f"row{s}.json", mine))
    out = tmp_path / "cell.json"
    row_metrics(row, "digits", rows[0], str(speed), str(out), "demo", baseline_accuracy=bases[0],
                parent_accuracy=bases[0], seed_accuracy=rows[1:], seed_baseline=bases[1:], seed_parent=bases[1:])
    cell = read_json(out)
    by_seed = [read_json(f)["accuracy"] for f in rows]
    assert cell["seeds"] == 3 and cell["accuracy_by_seed"] == pytest.approx(by_seed)
    assert cell["accuracy"] == pytest.approx(np.mean(by_seed))
    lo, hi = cell["accuracy_ci"]
    assert lo < cell["accuracy"] < hi
    assert cell["delta_first"]["delta"] == pytest.approx(-100 * (2 + 8 + 14) / 3 / 270)
    assert cell["delta_first"]["seeds"] == 3 and cell["delta_first"]["by_seed"][0] == pytest.approx(-200 / 270)
    single = tmp_path / "single.json"
    row_metrics(row, "digits", rows[0], str(speed), str(single), "demo", baseline_accuracy=bases[0])
    one = read_json(single)
    assert one["seeds"] == 1 and one["delta_first"]["method"] == "exact"
    width = cell["delta_first"]["hi"] - cell["delta_first"]["lo"]
    assert width > one["delta_first"]["hi"] - one["delta_first"]["lo"]
    with pytest.raises(ValueError, match="every other seed"):
        row_metrics(row, "digits", rows[0], str(speed), str(single), "demo", baseline_accuracy=bases[0],
                    seed_accuracy=rows[1:], seed_baseline=bases[1:2])


def test_seeds_is_a_profile_key_and_a_command_line_override():
    assert load_params().seeds == [0]
    assert load_params(overrides={"seeds": 3, "seed": 5}).seeds == [5, 6, 7]
    with pytest.raises(ConfigError, match="seeds"):
        load_params(overrides={"seeds": 0})


def test_the_training_check_reads_a_retraining_against_the_reference_seeds(tmp_path):
    """The reference run's three seeds say how far one more training may land by chance alone; a retraining
    inside that range is noise, one far outside is not, and the change from the same seed's model is paired."""
    from vitcompress.report.reference import write_training_reference
    from vitcompress.report.tables import render_training_check

    rng = np.random.default_rng(3)
    truth = rng.random(270) < 0.97
    seeds = []
    for s, lost in enumerate((0, 3, 6)):
        c = truth.copy()
        c[np.flatnonzero(truth)[:lost]] = False
        seeds.append(_accuracy_json(tmp_path / f"seed{s}.json", c))
    fp = {"cpu": "Test CPU", "cpu_flags": ["avx2"], "torch": "2.x", "label": "test"}
    ref = tmp_path / "reference.json"
    write_training_reference(seeds, [0, 1, 2], ["digits"], "vit", "demo", fp, str(ref))
    with pytest.raises(ValueError, match="seeds=3"):
        write_training_reference(seeds[:1], [0], ["digits"], "vit", "demo", fp, str(tmp_path / "one.json"))
    near, far = truth.copy(), truth.copy()
    near[np.flatnonzero(truth)[:2]] = False
    far[np.flatnonzero(truth)[:40]] = False
    readings = {}
    for name, c in (("near", near), ("far", far)):
        mine = _accuracy_json(tmp_path / f"{name}.json", c)
        md, csv = tmp_path / f"{name}.md", tmp_path / f"{name}.csv"
        render_training_check([mine], [mine] * 3, ["digits"], "vit", "demo", fp, str(md), str(csv), reference=ref)
        readings[name] = md.read_text()
    assert "within the seeds' spread (±" in readings["near"]
    assert "beyond the seeds' spread" in readings["far"] and "-14.81 (-" in readings["far"].replace("−", "-")
    render_training_check([mine], [mine] * 3, ["digits"], "vit", "tiny", fp, str(md), str(csv), reference=ref)
    assert "No reference run of profile `tiny`" in md.read_text()
    render_training_check([mine], [mine] * 3, ["digits"], "vit", "demo", fp, str(md), str(csv), reference=ref, seed=4)
    assert "first seed is 0, this run's 4" in md.read_text()
    agree = tmp_path / "agree.json"  # three seeds with the same accuracy: no spread, so no verdict either way
    write_training_reference([seeds[0]] * 3, [0, 1, 2], ["digits"], "vit", "demo", fp, str(agree))
    render_training_check([mine], [mine] * 3, ["digits"], "vit", "demo", fp, str(md), str(csv), reference=agree)
    assert "no spread to judge by" in md.read_text()
