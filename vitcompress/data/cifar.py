"""``cifar10`` / ``cifar100``: CIFAR from its official "python version" files, read without running code
(:func:`~vitcompress.data.safe_pickle.read_pickle_safely`, never torchvision's plain unpickling), downloaded into
``root`` through torchvision first when ``download`` is on and the network allows; checked against the published
md5 sums (``verify_checksums``); a seeded ``val_size`` carved out of the training images.
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitcompress.data.base import DataSource, SourceSettings, register_source
from vitcompress.data.safe_pickle import read_pickle_safely
from vitcompress.errors import ConfigError, DataError
from vitcompress.io import atomic_path
from vitcompress.settings import setting

log = logging.getLogger("vitcompress.data")

# The official "python version" files: folder, training batches, test batch, meta file, label keys.
_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta",
                "labels", "label_names"),
    "cifar100": ("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names"),
}
CIFAR_LAYOUT = {k: (v[0], (*v[1], v[2], v[3])) for k, v in _CIFAR_FILES.items()}  # folder, every file


def _text_keys(obj) -> dict:
    if not isinstance(obj, dict):
        raise TypeError(f"a {type(obj).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_cifar_folder(folder: Path, which: str):
    """(train x, train y), (test x, test y) as NCHW uint8 / int64 arrays, and the class names."""
    _, train_files, test_file, meta_file, label_key, names_key = _CIFAR_FILES[which]

    def batch(name):
        path = folder / name
        entry = _text_keys(read_pickle_safely(path))
        try:
            x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(entry[label_key], dtype=np.int64).reshape(-1)
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{path}: corrupt: not a CIFAR batch (`data` of N x 3072 bytes and `{label_key}`): "
                            f"{type(exc).__name__}: {exc}.") from None
        if len(x) != len(y):
            raise DataError(f"{path}: corrupt: {len(x)} images but {len(y)} labels.")
        return x, y

    parts = [batch(f) for f in train_files]
    train = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    test = batch(test_file)
    try:
        names = _text_keys(read_pickle_safely(folder / meta_file))[names_key]
        classes = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    except (KeyError, TypeError) as exc:
        raise DataError(f"{folder / meta_file}: corrupt: no `{names_key}` list ({exc}).") from None
    for split, (_, y) in (("training", train), ("test", test)):
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(f"{folder}: {split} labels run from {y.min()} to {y.max()}, but {meta_file} names "
                            f"{len(classes)} classes.")
    return train, test, classes



@dataclass(frozen=True, kw_only=True)
class CifarSettings(SourceSettings):
    root: str | None = setting(None, help="folder holding the official files (default data/raw/<source>)")
    val_size: int = setting(5000, low=1, help="validation images carved out of the training set, seeded")
    download: bool = setting(True, help="download the official archive into root when its files are missing")
    verify_checksums: bool = setting(True, help="check the files against the published md5 sums (turn off only "
                                                "for hand-made test files)")


class Cifar(DataSource):
    """CIFAR-10 or CIFAR-100 (``name``)."""

    Settings = CifarSettings

    def root(self, s) -> Path:
        return Path(s.root or f"data/raw/{self.name}")

    def _torchvision_class(self):
        import torchvision

        return torchvision.datasets.CIFAR10 if self.name == "cifar10" else torchvision.datasets.CIFAR100

    def load(self, s, seed, groups=None):
        root = self.root(s)
        folder, files = CIFAR_LAYOUT[self.name]
        missing = [f for f in files if not (root / folder / f).is_file()]
        if missing and s.download:
            from torchvision.datasets.utils import download_and_extract_archive

            cls = self._torchvision_class()
            try:
                download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
            except Exception as exc:  # no network, or the mirror is gone
                log.warning("download of %s failed: %s", self.name, exc)
            missing = [f for f in files if not (root / folder / f).is_file()]
        if missing:
            raise DataError(
                f"{self.name}: not found under {root}/ and it could not be downloaded ({', '.join(missing)} missing). "
                f"Provide the Python version of the data set there: {root}/{folder}/ with {', '.join(files)} "
                f"(as in the official archive), or run once with network access.")
        if s.verify_checksums:
            # Hand-made files (tests, re-packed copies) cannot match the published md5 sums: verify_checksums: false.
            from torchvision.datasets.utils import check_integrity

            cls = self._torchvision_class()
            expected = {name: md5 for name, md5 in (*cls.train_list, *cls.test_list)}
            expected[cls.meta["filename"]] = cls.meta["md5"]
            bad = [f for f in files if not check_integrity(str(root / folder / f), expected[f])]
            if bad:
                raise DataError(
                    f"{self.name}: {', '.join(bad)} under {root / folder}/ do not match the official md5 sums (not "
                    f"found or corrupt, or a re-packed copy); replace them, or set verify_checksums: false for a copy "
                    f"you trust.")
        (x, y), test, classes = _read_cifar_folder(root / folder, self.name)
        if not 0 < s.val_size < len(y):
            raise DataError(f"{self.name}: val_size = {s.val_size} must be between 1 and the {len(y)} training images.")
        perm = np.random.default_rng(seed).permutation(len(y))
        val, train = np.sort(perm[:s.val_size]), np.sort(perm[s.val_size:])
        return {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": test}, classes

    def split_sizes(self, s, seed):
        folder, files = CIFAR_LAYOUT[self.name]
        local = self.root(s) / folder
        if all((local / f).is_file() for f in files):
            (_, y), (_, test_y), _ = _read_cifar_folder(local, self.name)
            train_total, test_total = len(y), len(test_y)
        else:  # downloaded by the run: the official archive
            train_total, test_total = 50000, 10000
        return {"train": train_total - s.val_size, "val": s.val_size, "test": test_total}

    def check_files(self, s, where):
        if s.download:
            return
        root = self.root(s)
        folder, files = CIFAR_LAYOUT[self.name]
        missing = [f for f in files if not (root / folder / f).is_file()]
        if missing:
            raise ConfigError(f"params.yaml: {where}.root = {str(root)!r}: {root / folder}/ lacks {', '.join(missing)} and "
                              f"`download` is off; put the official python-version files there "
                              f"({', '.join(files)}) or set {where}.download: true.")

    def smoke_files(self, s):
        return [] if s.download else [write_cifar(self.root(s), self.name)]


@register_source
class Cifar10(Cifar):
    name = "cifar10"
    shape = (10, 3, [32, 32])


@register_source
class Cifar100(Cifar):
    name = "cifar100"
    shape = (100, 3, [32, 32])


# -- hand-made files in the official layout (random pixels: code paths, not results) ----------------------------
def _dump(path: Path, obj) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)  # as the official files: Python 2's protocol, numpy arrays


def write_cifar(root: str | Path, which: str, n_train: int = 40, n_test: int = 20, seed: int = 0) -> Path:
    """CIFAR-10 (``which="cifar10"``) or CIFAR-100 files under ``root`` in the official layout; returns the folder."""
    rng = np.random.default_rng(seed)
    classes = 10 if which == "cifar10" else 100

    def batch(n, label):
        labels = (np.arange(n) % classes).tolist()  # every class present where n allows
        rng.shuffle(labels)
        return {"batch_label": f"smoke {label}", label_key: labels,
                "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "filenames": [f"smoke_{label}_{i}.png" for i in range(n)]}

    if which == "cifar10":
        folder, label_key = Path(root) / "cifar-10-batches-py", "labels"
        for i in range(1, 6):
            _dump(folder / f"data_batch_{i}", batch(n_train // 5, f"data_batch_{i}"))
        _dump(folder / "test_batch", batch(n_test, "test_batch"))
        _dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072})
    elif which == "cifar100":
        folder, label_key = Path(root) / "cifar-100-python", "fine_labels"
        for name, n in (("train", n_train), ("test", n_test)):
            entry = batch(n, name)
            entry["coarse_labels"] = [y % 20 for y in entry["fine_labels"]]
            _dump(folder / name, entry)
        _dump(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)],
                                "coarse_label_names": [f"super{i}" for i in range(20)]})
    else:
        raise ValueError(f"which = {which!r}: use cifar10 or cifar100")
    return folder
