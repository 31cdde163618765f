"""The intervals the tables print: paired accuracy changes and speed-up medians."""
import numpy as np
import pytest

from vitcompress.stats import median_interval, paired_delta


def test_a_known_difference_is_the_point_and_lies_inside_its_interval():
    rng = np.random.default_rng(0)
    a = rng.random(270) < 0.95
    b = a.copy()
    b[np.flatnonzero(a)[:6]] = False  # b misses 6 images a got right, and nothing else differs
    d = paired_delta(a, b)
    assert d["delta"] == pytest.approx(100 * 6 / 270)
    assert d["lo"] < d["delta"] < d["hi"] and d["distinguishable"]
    same = paired_delta(a, a)
    assert same["delta"] == same["lo"] == same["hi"] == 0 and not same["distinguishable"]


def test_the_interval_covers_the_true_change_about_95_times_in_100():
    """Test sets drawn again and again from one pair of models whose true accuracies differ by 2 points."""
    rng = np.random.default_rng(1)
    covered = 0
    trials = 200
    for t in range(trials):
        u = rng.random(400)
        a = u < 0.92            # model A right on 92% of images
        b = u < 0.90            # model B right on a subset: 2 points fewer, paired
        d = paired_delta(a, b, resamples=500, seed=t)
        covered += d["lo"] <= 2.0 <= d["hi"]
    assert 0.88 <= covered / trials <= 0.99


def test_pairs_that_share_digits_are_resampled_by_digit_and_the_interval_widens():
    """All of a change sits on pairs containing one digit: resampling images treats those pairs as
    independent evidence; resampling digits knows they are one digit's, and is wider."""
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 270, size=(2000, 2))
    a = np.ones(2000, dtype=bool)
    b = a.copy()
    b[(groups == 7).any(axis=1)] = False  # one source digit misread: every pair holding it is wrong
    by_image, by_digit = paired_delta(a, b), paired_delta(a, b, groups)
    assert by_image["delta"] == by_digit["delta"]
    assert (by_digit["hi"] - by_digit["lo"]) > 3 * (by_image["hi"] - by_image["lo"])
    assert by_image["distinguishable"] and not by_digit["distinguishable"]  # one digit is one observation


def test_digit_pairs_record_each_pairs_two_source_digits(tmp_path):
    from vitcompress.data import PreparedData, load_source, prepare

    cfg = {"source": "digit_pairs", "samples": [50, 20, 30]}
    prepare(cfg, tmp_path / "p.pt")
    data = PreparedData(tmp_path / "p.pt")
    base, _ = load_source({"source": "digits"})
    g = data.groups["test"]
    assert tuple(g.shape) == (30, 2)
    x, y = data.splits["test"]
    digits_x, digits_y = base["test"]
    for i in range(30):
        left, right = g[i].tolist()
        assert np.array_equal(x[i].numpy(), np.concatenate([digits_x[left], digits_x[right]], axis=2))
        assert y[i].item() == 10 * digits_y[left] + digits_y[right]


def test_a_speedup_median_interval_brackets_the_median():
    ratios = np.random.default_rng(3).normal(1.3, 0.05, 40)
    lo, hi = median_interval(ratios)
    assert lo <= float(np.median(ratios)) <= hi and hi - lo < 0.1
