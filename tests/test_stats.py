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
    same = paired_delta(a, a)  # no image differs: the change is 0, and could be up to θ's bound either way
    assert same["delta"] == 0 and same["lo"] == -same["hi"] < 0 and not same["distinguishable"]
    assert same["hi"] == pytest.approx(100 * (1 - 0.025 ** (1 / 270)))  # Clopper-Pearson upper bound of 0 in 270


def _split(first: int, second: int, n: int = 270):
    """Per-image correctness of two rows on n images: `first` images only the first got right, `second` only the
    second, the rest both right."""
    a, b = np.ones(n, dtype=bool), np.ones(n, dtype=bool)
    b[:first] = False
    a[first:first + second] = False
    return a, b


@pytest.mark.parametrize("first, second", [(4, 0), (5, 0), (7, 1), (8, 8), (6, 0), (30, 10), (0, 9), (2, 1)])
def test_distinguishable_is_the_exact_mcnemar_test(first, second):
    """Independent images: the interval excludes 0 exactly when statsmodels' exact McNemar test rejects at 5%
    (4-0: p = 0.125, 5-0: 0.0625, 7-1: 0.070 are not distinguishable; 6-0: 0.031 is)."""
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = _split(first, second)
    d = paired_delta(a, b)
    p = mcnemar([[270 - first - second, first], [second, 0]], exact=True).pvalue
    assert d["distinguishable"] is bool(p < 0.05), (d, p)
    assert d["p_value"] == pytest.approx(p) and d["discordant"] == [first, second] and d["method"] == "exact"
    assert d["lo"] <= d["delta"] <= d["hi"] and d["delta"] == pytest.approx(100 * (first - second) / 270)
    if (first, second) in ((4, 0), (5, 0), (7, 1), (8, 8)):
        assert not d["distinguishable"]


def test_sparse_discordance_under_the_null_rarely_flags_a_change():
    """Two rows equally good that disagree on about 1% of 270 independent images (2-3 images): the exact
    method's false "distinguishable" rate stays at or below its 5% level (the percentile bootstrap's did not)."""
    rng = np.random.default_rng(4)
    flagged, trials = 0, 1000
    for _ in range(trials):
        discordant = rng.random(270) < 0.01
        first = discordant & (rng.random(270) < 0.5)
        a = ~(discordant & ~first)
        b = ~first
        flagged += paired_delta(a, b)["distinguishable"]
    assert flagged / trials <= 0.05


@pytest.mark.parametrize("theta, pi", [(0.02, 1.0), (0.05, 0.7), (0.2, 0.55), (0.01, 0.5)])
def test_the_exact_interval_covers_the_true_change(theta, pi):
    """Coverage of the change θ(2π - 1) on 400 independent images, at least the nominal 95% (it is exact)."""
    rng = np.random.default_rng(5)
    truth, covered, trials = 100 * theta * (2 * pi - 1), 0, 400
    for _ in range(trials):
        discordant = rng.random(400) < theta
        first = discordant & (rng.random(400) < pi)
        d = paired_delta(~(discordant & ~first), ~first)
        covered += d["lo"] - 1e-9 <= truth <= d["hi"] + 1e-9
    assert covered / trials >= 0.94  # exact: at least 95%, less 400 trials' sampling error


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
    assert covered / trials >= 0.93  # the exact interval is conservative: at least its level, up to sampling


def test_pairs_that_share_digits_are_resampled_by_digit_and_the_interval_widens():
    """All of a change sits on pairs containing one digit: resampling images treats those pairs as
    independent evidence; resampling digits knows they are one digit's, and is wider."""
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 270, size=(2000, 2))
    a = np.ones(2000, dtype=bool)
    b = a.copy()
    b[(groups == 7).any(axis=1)] = False  # one source digit misread: every pair holding it is wrong
    by_image, by_digit = paired_delta(a, b), paired_delta(a, b, groups)
    assert by_image["delta"] == pytest.approx(by_digit["delta"])
    assert (by_digit["hi"] - by_digit["lo"]) > 2 * (by_image["hi"] - by_image["lo"])
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
    assert median_interval([1.2, 1.1, 1.4, 1.3, 1.25]) == (1.1, 1.4)  # fewer values than blocks: each its own


def _ar1(n: int, rho: float, rng) -> np.ndarray:
    e = rng.normal(size=n)
    u = np.empty(n)
    u[0] = e[0] / np.sqrt(1 - rho ** 2)
    for t in range(1, n):
        u[t] = rho * u[t - 1] + e[t]
    return u * np.sqrt(1 - rho ** 2)


@pytest.mark.parametrize("profile", ["demo", "paper"])
@pytest.mark.parametrize("rho, floor", [(0.0, 0.95), (0.8, 0.90)])
def test_the_speedup_interval_covers_under_serial_correlation(rho, floor, profile, raw_params):
    """The profile's paired ratios (repeats x rounds: the demo's 32, the paper's 40) whose log noise is AR(1):
    the block interval covers the true median at least 90% of the time for ρ = 0.8 (a bootstrap of the pairs as
    if they were independent covered 50-60%), and its nominal level when they are independent. Coverage at
    ρ = 0.8 grows with the pairs: about 90% at 24 (the floor), 92% at 32, 95% at 40."""
    from vitcompress.config import resolve

    measure = resolve(raw_params, {"profile": profile}).measure
    n = measure.repeats * measure.rounds
    rng = np.random.default_rng(7)
    covered, trials = 0, 2000
    for _ in range(trials):
        ratios = 1.5 * np.exp(0.05 * _ar1(n, rho, rng))
        lo, hi = median_interval(ratios)
        covered += lo <= 1.5 <= hi
    assert covered / trials >= floor


def test_timed_calls_rotate_their_order():
    from vitcompress.measure import time_alternating

    calls = []
    fns = [lambda name=name: calls.append(name) for name in "abc"]
    times = time_alternating(fns, cuda=False, warmup=0, repeats=3)
    assert calls == list("abcbcacab") and [len(t) for t in times] == [3, 3, 3]


def test_the_shared_parts_bootstrap_is_the_same_through_the_pair_form_and_per_image(monkeypatch):
    """Two parts an image (digit pairs): the sums formed per pair of parts (one matrix product) give exactly the
    interval the per-image weights give, on paired vectors with a real change and with none."""
    import vitcompress.stats as stats

    rng = np.random.default_rng(3)
    groups = rng.integers(0, 150, (800, 2))
    a = rng.random(800) < 0.9
    cases = [(a, rng.random(800) < 0.85), (a, a.copy())]
    pair_form = [paired_delta(x, y, groups, resamples=300) for x, y in cases]
    monkeypatch.setattr(stats, "PAIR_FORM_PARTS", 0)  # every part count takes the per-image path
    per_image = [paired_delta(x, y, groups, resamples=300) for x, y in cases]
    assert pair_form == per_image
    assert pair_form[0]["lo"] < pair_form[0]["hi"] and pair_form[0]["delta"] > 0
