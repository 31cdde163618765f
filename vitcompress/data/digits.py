"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 real images, 10 classes), offline; a seeded,
stratified train/val/test split."""
from __future__ import annotations

import numpy as np

from vitcompress.data.base import DataSource, SplitSettings, register_source, split_indices


def load_digits_splits(s: SplitSettings, seed: int):
    """The digits' splits as (uint8 N x 1 x 8 x 8, labels), and the class names."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.rint(d.images * 16.0), 0, 255).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    parts = split_indices(d.target, s.split, seed)
    return {k: (images[i], d.target[i].astype(np.int64)) for k, i in parts.items()}, [str(c) for c in range(10)]


@register_source
class Digits(DataSource):
    name = "digits"
    Settings = SplitSettings
    shape = (10, 1, [8, 8])

    def load(self, s, seed, groups=None):
        return load_digits_splits(s, seed)

    def split_sizes(self, s, seed):
        from sklearn.datasets import load_digits

        return {k: len(i) for k, i in split_indices(load_digits().target, s.split, seed).items()}
