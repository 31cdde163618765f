"""Uncertainty of what the tables compare: accuracy changes between two rows on the same test images,
and speed-ups from paired timings.

An accuracy change is paired: both rows answered the same test images, so the interval comes from
resampling *images* (a paired bootstrap of the per-image difference), not from two independent
accuracies. Where test images share parts, images are not independent and the bootstrap resamples
the parts instead: digit pairs are composed from the test split's digits, each digit in many pairs,
so it resamples source digits (the pigeonhole bootstrap for crossed factors, Owen 2007): a resample
draws the digits with replacement and weighs each pair by how often both of its digits were drawn.
An exact McNemar interval would assume independent images, which these are not.

A speed-up is the median of paired call-by-call ratios; its interval is a bootstrap over those pairs.
"""
from __future__ import annotations

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000


def paired_delta(a: np.ndarray, b: np.ndarray, groups: np.ndarray | None = None, resamples: int = RESAMPLES,
                 level: float = LEVEL, seed: int = 0) -> dict:
    """Accuracy of ``a`` minus accuracy of ``b`` (points) on the same test images, and its ``level``
    interval by a paired bootstrap; ``a``, ``b``: per-image correctness (bool). ``groups``: (images, k)
    ids of the source parts each image is made of (digit pairs: its two digits), resampled instead
    of images. Returns {"delta", "lo", "hi", "distinguishable"} (the interval excludes 0)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired_delta needs two per-image vectors of one length, got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    if groups is None:  # in chunks: a CIFAR test split is 10,000 images a resample
        chunk = max(1, 2_000_000 // len(diff))
        boot = np.concatenate([diff[rng.integers(0, len(diff), size=(min(chunk, resamples - i), len(diff)))].mean(axis=1)
                               for i in range(0, resamples, chunk)])
    else:
        groups = np.asarray(groups)
        if groups.ndim == 1:
            groups = groups[:, None]
        ids, inverse = np.unique(groups, return_inverse=True)
        inverse = inverse.reshape(groups.shape)
        counts = np.stack([np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))
                           for _ in range(resamples)])  # (resamples, parts)
        weights = np.prod(counts[:, inverse], axis=2)  # (resamples, images): how often each image was drawn
        total = weights.sum(axis=1)
        boot = np.where(total > 0, (weights * diff).sum(axis=1) / np.maximum(total, 1), 0.0)
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail])
    delta = 100.0 * diff.mean()
    return {"delta": delta, "lo": 100.0 * float(lo), "hi": 100.0 * float(hi),
            "distinguishable": bool(lo > 0 or hi < 0)}


def median_interval(values, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """The ``level`` bootstrap interval of the median of ``values`` (e.g. paired speed-up ratios)."""
    v = np.asarray(values, dtype=float)
    if not len(v):
        raise ValueError("median_interval needs at least one value")
    rng = np.random.default_rng(seed)
    boot = np.median(v[rng.integers(0, len(v), size=(resamples, len(v)))], axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail])
    return float(lo), float(hi)
