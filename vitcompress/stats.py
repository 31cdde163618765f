"""Uncertainty of what the tables compare: accuracy changes between two rows on the same test images,
and speed-ups from paired timings.

An accuracy change is paired: both rows answered the same test images, and only the images on which they
disagree (the discordant ones: ``b`` right by the first row alone, ``c`` by the second alone, ``d = b + c``)
carry information about the change ``(b - c) / n``.

- **Independent test images** (digits, CIFAR, image folders): an exact interval (:func:`exact_paired_delta`).
  The change is ``θ (2π - 1)``, θ the share of discordant images and π the share of them the first row got
  right. Each has its Clopper-Pearson interval (exact binomial), and the change's interval is the range of
  ``θ (2π - 1)`` over both. It contains 0 exactly when π's interval contains 1/2, i.e. when the exact McNemar
  test does not reject at the same level: a split of 4-0 (p = 0.125), 5-0 (0.0625) or 7-1 (0.070) is not
  "distinguishable", 6-0 (0.031) is. A bootstrap of so few discordant images would call 4-0 distinguishable.
- **Images that share parts** (digit pairs: each test digit is in many pairs) are not independent, and
  neither the bootstrap of images nor McNemar applies: the bootstrap resamples the parts instead (the
  pigeonhole bootstrap for crossed factors, Owen 2007): a resample draws the digits with replacement and
  weighs each pair by how often both of its digits were drawn.

Over **training seeds** (:func:`across_seeds`): a row trained under S seeds is S models, each answering the same
test images. Its accuracy (or change) is the mean over seeds, and its interval joins two sources of error, the
seeds' spread (a t interval on the S per-seed values, S - 1 degrees of freedom) and the test images' (each
seed's own interval above, averaged: the seeds answer the same images, so that error does not shrink with S),
added in quadrature around the mean (MOVER, Zou & Donner 2008). With one seed the interval is the images' alone,
conditional on that one trained model.

It is **conservative**: each seed's image interval also carries that model's own hit-or-miss on borderline
images, which the seeds' spread already holds and which would shrink with S; it is counted twice. A crossed
random-effects interval on the seeds × images matrix would be narrower (up to about half as wide when the
models' per-image answers vary a lot between seeds), but it is a normal approximation that calls a change
distinguishable on a few discordant images where the exact test does not; this one keeps each seed's exact
interval, so three seeds with the same 4-0 split stay as undecided as one. Where the seeds' spread dominates,
three skewed values leave the t interval short of its level (about 93% at a 5-point spread between seeds in
simulation, lower beyond): use 5 or more seeds when ``sd`` is large against the images' arm.

A speed-up is the median of paired call-by-call ratios, the calls' order rotated every repeat; its interval
(:func:`median_interval`) is the range of the medians of 8 contiguous blocks of those pairs, which stays
honest when neighbouring timings are correlated, as a bootstrap of the pairs does not. It covers the timing
job's own variation (within-job), not the spread between two jobs at different moments.
"""
from __future__ import annotations

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000
PAIR_FORM_PARTS = 1024  # the bootstrap's bilinear form holds a parts x parts matrix: at most 8 MB


def exact_paired_delta(a: np.ndarray, b: np.ndarray, level: float = LEVEL) -> dict:
    """Accuracy of ``a`` minus accuracy of ``b`` (points) on the same, independent test images, with an exact
    ``level`` interval consistent with the exact McNemar test (see the module's docstring): {"delta", "lo",
    "hi", "distinguishable", "method": "exact", "discordant": [b, c], "p_value"}. With no discordant image the
    interval is ±θ's upper bound (the change is 0, but up to that share of images could have differed)."""
    from scipy.stats import binomtest

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    n = len(a)
    first, second = int((a & ~b).sum()), int((~a & b).sum())
    d = first + second
    theta = binomtest(d, n).proportion_ci(confidence_level=level, method="exact")
    if d == 0:
        lo, hi, p = -theta.high, theta.high, 1.0
    else:
        test = binomtest(first, d, 0.5)
        pi = test.proportion_ci(confidence_level=level, method="exact")
        corners = [t * (2 * q - 1) for t in (theta.low, theta.high) for q in (pi.low, pi.high)]
        lo, hi, p = min(corners), max(corners), float(test.pvalue)
    return {"delta": 100.0 * (first - second) / n, "lo": 100.0 * lo, "hi": 100.0 * hi,
            "distinguishable": bool(lo > 0 or hi < 0), "method": "exact", "discordant": [first, second],
            "p_value": p}


def paired_delta(a: np.ndarray, b: np.ndarray, groups: np.ndarray | None = None, resamples: int = RESAMPLES,
                 level: float = LEVEL, seed: int = 0) -> dict:
    """Accuracy of ``a`` minus accuracy of ``b`` (points) on the same test images, and its ``level``
    interval; ``a``, ``b``: per-image correctness (bool). Independent images (``groups`` None): the exact
    interval of :func:`exact_paired_delta`. ``groups``: (images, k) ids of the source parts each image is
    made of (digit pairs: its two digits): a paired bootstrap that resamples the parts. Returns {"delta",
    "lo", "hi", "distinguishable" (the interval excludes 0), "method"}."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired_delta needs two per-image vectors of one length, got {a.shape} and {b.shape}")
    if groups is None:
        return exact_paired_delta(a.astype(bool), b.astype(bool), level)
    diff = a - b
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    if groups.ndim == 1:
        groups = groups[:, None]
    ids, inverse = np.unique(groups, return_inverse=True)
    inverse = inverse.reshape(groups.shape)
    parts = len(ids)
    draws = rng.integers(0, parts, (resamples, parts))  # the same draws as one call per resample, in one
    counts = np.bincount((draws + parts * np.arange(resamples)[:, None]).ravel(),
                         minlength=resamples * parts).reshape(resamples, parts)  # (resamples, parts)
    # an image is drawn as often as the product of its parts' counts; each resample's sums over the images
    # (of those weights, and of weights x diff) are exact integers. Two parts an image (digit pairs): formed per
    # pair of parts, a bilinear form (one matrix product for all resamples); otherwise per image.
    if inverse.shape[1] == 2 and parts <= PAIR_FORM_PARTS:
        c = counts.astype(float)
        cell = inverse[:, 0] * parts + inverse[:, 1]
        pair_n = np.bincount(cell, minlength=parts * parts).reshape(parts, parts)
        pair_d = np.bincount(cell, weights=diff, minlength=parts * parts).reshape(parts, parts)
        total, hits = ((c @ pair_n) * c).sum(axis=1), ((c @ pair_d) * c).sum(axis=1)
    else:
        weights = counts[:, inverse[:, 0]]  # (resamples, images)
        for j in range(1, inverse.shape[1]):
            weights = weights * counts[:, inverse[:, j]]
        total, hits = weights.sum(axis=1), weights @ diff
    boot = np.where(total > 0, hits / np.maximum(total, 1), 0.0)
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail])
    delta = 100.0 * diff.mean()
    return {"delta": delta, "lo": 100.0 * float(lo), "hi": 100.0 * float(hi),
            "distinguishable": bool(lo > 0 or hi < 0), "method": "bootstrap of shared parts"}


def accuracy_interval(correct: np.ndarray, groups: np.ndarray | None = None, level: float = LEVEL,
                      resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Top-1 accuracy (%) of per-image correctness ``correct`` with its ``level`` interval over the test images:
    Clopper-Pearson (exact) for independent images; with ``groups`` (the source parts each image is made of),
    the bootstrap of those parts :func:`paired_delta` uses. {"value", "lo", "hi", "method"}."""
    from scipy.stats import binomtest

    c = np.asarray(correct, dtype=bool)
    if c.ndim != 1 or not len(c):
        raise ValueError(f"accuracy_interval needs one per-image vector, got shape {c.shape}")
    if groups is not None:
        d = paired_delta(c, np.zeros_like(c), groups, resamples=resamples, level=level, seed=seed)
        return {"value": d["delta"], "lo": d["lo"], "hi": d["hi"], "method": d["method"]}
    ci = binomtest(int(c.sum()), len(c)).proportion_ci(confidence_level=level, method="exact")
    return {"value": 100.0 * c.mean(), "lo": 100.0 * ci.low, "hi": 100.0 * ci.high, "method": "exact"}


def across_seeds(per_seed: list[dict], key: str = "delta", level: float = LEVEL) -> dict:
    """One estimate over training seeds from each seed's estimate ``per_seed[i][key]`` and its interval over the
    test images (``lo``, ``hi``): the mean, and an interval that covers both the seeds' spread and the images'
    (module docstring). Returns {key, "lo", "hi", "distinguishable" (excludes 0), "seeds", "sd" (between seeds),
    "by_seed", "method"}; one seed: that seed's own estimate and interval."""
    from scipy.stats import t as student_t

    if not per_seed:
        raise ValueError("across_seeds needs at least one seed's estimate")
    values = np.array([float(p[key]) for p in per_seed])
    mean, n = float(values.mean()), len(values)
    down = float(np.mean([v - p["lo"] for v, p in zip(values, per_seed)]))
    up = float(np.mean([p["hi"] - v for v, p in zip(values, per_seed)]))
    if n == 1:
        seed_half, sd = 0.0, None
        method = per_seed[0].get("method", "")
    else:
        sd = float(values.std(ddof=1))
        seed_half = float(student_t.ppf(0.5 + level / 2, n - 1)) * sd / np.sqrt(n)
        method = f"{per_seed[0].get('method', '')} per seed + t over {n} seeds (MOVER)".strip()
    lo, hi = mean - float(np.hypot(down, seed_half)), mean + float(np.hypot(up, seed_half))
    return {key: mean, "lo": lo, "hi": hi, "distinguishable": bool(lo > 0 or hi < 0), "seeds": n, "sd": sd,
            "by_seed": [float(v) for v in values], "method": method}


BLOCKS = 8  # contiguous blocks whose medians bound a speed-up's median


def median_interval(values, blocks: int = BLOCKS) -> tuple[float, float]:
    """An interval for the median of ``values`` taken in time order (e.g. paired speed-up ratios, call by call)
    that holds under serial correlation: the values are cut into ``blocks`` contiguous blocks and the interval
    is the lowest to the highest block median. For independent blocks this is the distribution-free order-
    statistic interval of the median, with coverage 1 - 2·0.5^blocks (99.2% for 8); neighbouring timings are
    correlated (a machine's state drifts), which that margin absorbs: on simulated AR(1) ratios with ρ = 0.8
    it covers about 92% with 32 pairs and 95% with 40 (tested). With fewer values than blocks, each value is a block (5 values:
    93.8% for independent ones)."""
    v = np.asarray(values, dtype=float)
    if not len(v):
        raise ValueError("median_interval needs at least one value")
    parts = np.array_split(v, min(blocks, len(v)))
    medians = [float(np.median(p)) for p in parts]
    return min(medians), max(medians)


def interval_coverage(n: int, blocks: int = BLOCKS) -> float:
    """The coverage :func:`median_interval` has for ``n`` independent values."""
    return 1.0 - 2.0 * 0.5 ** min(blocks, n)
