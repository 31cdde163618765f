"""``digit_pairs``: 100 classes "00".."99". Each image puts two ``digits`` images side by side (8x16); the class is
the two-digit number. Every split is composed *only* from the same split of ``digits``, so no test digit image is
ever seen in training. Classes are balanced. Pairs share digits: a prepared file records each pair's two source
digits, so a test of their accuracy resamples digits (vitcompress.stats)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vitcompress.data.base import SPLITS, DataSource, SplitSettings, register_source
from vitcompress.data.digits import load_digits_splits
from vitcompress.settings import setting


@dataclass(frozen=True, kw_only=True)
class DigitPairsSettings(SplitSettings):
    samples: tuple[int, int, int] = setting((8000, 1000, 2000), help="composed images per split (train, val, test)")

    def check(self, where):
        super().check(where)
        if any(n < 1 for n in self.samples):
            from vitcompress.errors import ConfigError

            raise ConfigError(f"params.yaml: {where}.samples = {list(self.samples)}: each split needs at least 1 image.")


@register_source
class DigitPairs(DataSource):
    name = "digit_pairs"
    Settings = DigitPairsSettings
    shape = (100, 1, [8, 16])

    def load(self, s, seed, groups=None):
        base, _ = load_digits_splits(s, seed)
        splits = {}
        for k, split in enumerate(SPLITS):
            images, labels = base[split]
            rng = np.random.default_rng(seed * 1000 + k)
            by_digit = [np.flatnonzero(labels == d) for d in range(10)]
            n = s.samples[k]
            classes = np.resize(np.arange(100), n)  # balanced: every class n/100 times
            rng.shuffle(classes)
            left = np.array([rng.choice(by_digit[c // 10]) for c in classes])
            right = np.array([rng.choice(by_digit[c % 10]) for c in classes])
            splits[split] = (np.concatenate([images[left], images[right]], axis=3), classes.astype(np.int64))
            if groups is not None:
                groups[split] = np.stack([left, right], axis=1).astype(np.int64)
        return splits, [f"{c:02d}" for c in range(100)]

    def split_sizes(self, s, seed):
        return dict(zip(SPLITS, s.samples))
