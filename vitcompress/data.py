"""Data sets, prepared once into one tensor file per data set, and the loaders that read them.

Sources (``source:`` in params.yaml):

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 real images, 10 classes), offline.
  A seeded, stratified train/val/test split.
- ``digit_pairs``: 100 classes "00".."99". Each image puts two ``digits`` images side by side (8x16);
  the class is the two-digit number. Every split is composed *only* from the same split of
  ``digits``, so no test digit image is ever seen in training. Classes are balanced.
- ``cifar10`` / ``cifar100``: torchvision's CIFAR classes. Downloaded into ``root`` when
  ``download`` is on and the network allows; otherwise read from ``root`` in CIFAR's own layout.
- ``imagefolder``: a class-per-folder data set (torchvision ImageFolder), with ``train/``, ``val/``,
  ``test/`` sub-folders or one folder that is split with ``split``.

A prepared file holds uint8 images (N, C, H, W) and int64 labels per split plus ``meta``
(classes, channels, size, per-channel mean/std of the training split). Augmentation, resizing and
normalisation happen when batches are drawn, so one prepared file serves every model size.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vitcompress.errors import DataError, UnsafeFileError  # noqa: F401  (re-exported)
from vitcompress.io import atomic_path, check_sealed, content_digest, seal

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------- sources
def _split_indices(labels: np.ndarray, fractions, seed: int) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    train_f, val_f, test_f = fractions
    total = train_f + val_f + test_f
    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=test_f / total, stratify=labels, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_f / (train_f + val_f), stratify=labels[rest], random_state=seed + 1
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _digits(cfg: dict, seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.rint(d.images * 16.0), 0, 255).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    parts = _split_indices(d.target, cfg.get("split", [0.7, 0.15, 0.15]), seed)
    splits = {s: (images[i], d.target[i].astype(np.int64)) for s, i in parts.items()}
    return splits, [str(c) for c in range(10)]


def _digit_pairs(cfg: dict, seed: int, groups: dict | None = None):
    """``groups``, if given, receives per split the (pairs, 2) indices of the two source digits of each pair:
    pairs share digits, so a test of their accuracy resamples digits (vitcompress.stats)."""
    base, _ = _digits(cfg, seed)
    counts = dict(zip(SPLITS, cfg.get("samples", [8000, 1000, 2000])))
    splits = {}
    for k, split in enumerate(SPLITS):
        images, labels = base[split]
        rng = np.random.default_rng(seed * 1000 + k)
        by_digit = [np.flatnonzero(labels == d) for d in range(10)]
        n = counts[split]
        classes = np.resize(np.arange(100), n)  # balanced: every class n/100 times
        rng.shuffle(classes)
        left = np.array([rng.choice(by_digit[c // 10]) for c in classes])
        right = np.array([rng.choice(by_digit[c % 10]) for c in classes])
        splits[split] = (np.concatenate([images[left], images[right]], axis=3), classes.astype(np.int64))
        if groups is not None:
            groups[split] = np.stack([left, right], axis=1).astype(np.int64)
    return splits, [f"{c:02d}" for c in range(100)]


# The official "python version" files: folder, training batches, test batch, meta file, label keys.
_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta",
                "labels", "label_names"),
    "cifar100": ("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names"),
}
CIFAR_LAYOUT = {k: (v[0], (*v[1], v[2], v[3])) for k, v in _CIFAR_FILES.items()}  # folder, every file


def _numpy_globals() -> dict:
    """The only callables a CIFAR pickle may name: numpy's array, dtype and scalar rebuilders (under
    numpy 1's and numpy 2's module names), and the bytes decoder of protocol-2 pickles."""
    import codecs

    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric
    rebuild = {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar}
    out = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out.update({(mod, name): fn for name, fn in rebuild.items()})
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        out[(mod, "_frombuffer")] = numeric._frombuffer
    return out


class _SafeUnpickler(pickle.Unpickler):
    """Reads a pickle that holds only numpy arrays and plain values; any other global it names (a
    callable that could run code: os.system, eval, ...) is refused before it is ever looked up."""

    allowed: dict = {}

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafeFileError(f"names {module}.{name}") from None


def read_pickle_safely(path: Path):
    """Unpickle ``path`` without running code from it (CIFAR's batches are pickles)."""
    _SafeUnpickler.allowed = _SafeUnpickler.allowed or _numpy_globals()
    with open(path, "rb") as fh:
        try:
            return _SafeUnpickler(fh, encoding="latin1").load()
        except UnsafeFileError as exc:
            raise UnsafeFileError(
                f"{path}: refused as unsafe: the file {exc}, which would run code when unpickled; an official "
                f"CIFAR batch holds only numpy arrays and lists. Replace it with the official file.") from None
        except Exception as exc:  # truncated, not a pickle, ...
            raise DataError(f"{path}: corrupt ({type(exc).__name__}: {str(exc)[:200]}); replace it with the "
                            f"official file.") from None


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


def _cifar(cfg: dict, seed: int, which: str):
    """CIFAR from its official python-version files, read with :func:`read_pickle_safely` (never
    torchvision's plain unpickling), downloaded first through torchvision when allowed and absent."""
    root = Path(cfg.get("root", f"data/raw/{which}"))
    folder, files = CIFAR_LAYOUT[which]
    missing = [f for f in files if not (root / folder / f).is_file()]
    if missing and cfg.get("download", True):
        import torchvision
        from torchvision.datasets.utils import download_and_extract_archive

        cls = torchvision.datasets.CIFAR10 if which == "cifar10" else torchvision.datasets.CIFAR100
        try:
            download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
        except Exception as exc:  # no network, or the mirror is gone
            log.warning("download of %s failed: %s", which, exc)
        missing = [f for f in files if not (root / folder / f).is_file()]
    if missing:
        raise DataError(
            f"{which}: not found under {root}/ and it could not be downloaded ({', '.join(missing)} missing). "
            f"Provide the Python version of the data set there: {root}/{folder}/ with {', '.join(files)} "
            f"(as in the official archive), or run once with network access.")
    if cfg.get("verify_checksums", True):
        # Hand-made files (tests, re-packed copies) cannot match the published md5 sums: verify_checksums: false.
        import torchvision
        from torchvision.datasets.utils import check_integrity

        cls = torchvision.datasets.CIFAR10 if which == "cifar10" else torchvision.datasets.CIFAR100
        expected = {name: md5 for name, md5 in (*cls.train_list, *cls.test_list)}
        expected[cls.meta["filename"]] = cls.meta["md5"]
        bad = [f for f in files if not check_integrity(str(root / folder / f), expected[f])]
        if bad:
            raise DataError(
                f"{which}: {', '.join(bad)} under {root / folder}/ do not match the official md5 sums (not found "
                f"or corrupt, or a re-packed copy); replace them, or set verify_checksums: false for a copy you trust.")
    (x, y), test, classes = _read_cifar_folder(root / folder, which)
    val_size = int(cfg.get("val_size", 5000))
    if not 0 < val_size < len(y):
        raise DataError(f"{which}: val_size = {val_size} must be between 1 and the {len(y)} training images.")
    perm = np.random.default_rng(seed).permutation(len(y))
    val, train = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    return {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": test}, classes


def _imagefolder(cfg: dict, seed: int):
    import torchvision
    from torchvision.transforms import v2

    root = Path(cfg.get("root", ""))
    if not root.is_dir():
        raise DataError(f"imagefolder: root = {str(root)!r} is not a folder; point `root` at a class-per-folder tree.")
    size = int(cfg.get("image_size", 32))
    tf = v2.Compose([v2.PILToTensor(), v2.Resize((size, size), antialias=True)])

    def read(folder: Path):
        empty = [d.name for d in sorted(folder.iterdir()) if d.is_dir() and not any(f.is_file() for f in d.rglob("*"))]
        if empty:
            raise DataError(f"imagefolder: class folder(s) {', '.join(empty)} under {folder} hold no images; add images or remove them.")
        try:
            ds = torchvision.datasets.ImageFolder(str(folder), transform=tf)
        except (FileNotFoundError, RuntimeError) as exc:
            raise DataError(f"imagefolder: {folder}: {exc}") from None
        if len(ds.classes) < 2:
            raise DataError(f"imagefolder: {folder} holds {len(ds.classes)} class folder ({', '.join(ds.classes)}); "
                            f"a classifier needs at least two: add a folder of images per class.")
        xs, bad = [], []
        for i, (path, _) in enumerate(ds.samples):
            try:  # a truncated, empty or mislabelled file fails only when decoded: name every one, whatever the error
                xs.append(ds[i][0])
            except Exception as exc:  # noqa: BLE001 (any failure to decode is the file's)
                bad.append(f"{path} ({type(exc).__name__}: {exc})")
        if bad:
            raise DataError(f"imagefolder: {len(bad)} file(s) under {folder} cannot be read as images; fix or remove "
                            f"them: " + "; ".join(bad))
        chans = max(x.shape[0] for x in xs)
        xs = [x.expand(chans, -1, -1) if x.shape[0] != chans else x for x in xs]
        return np.stack([x.numpy() for x in xs]), np.asarray(ds.targets, dtype=np.int64), list(ds.classes)

    if all((root / s).is_dir() for s in SPLITS):
        parts = {s: read(root / s) for s in SPLITS}
        classes = parts["train"][2]
        for s in SPLITS[1:]:
            if parts[s][2] != classes:
                raise DataError(f"imagefolder: {root / s} has classes {parts[s][2]}, train has {classes}; they must match.")
        return {s: parts[s][:2] for s in SPLITS}, classes
    x, y, classes = read(root)
    idx = _split_indices(y, cfg.get("split", [0.8, 0.1, 0.1]), seed)
    return {s: (x[i], y[i]) for s, i in idx.items()}, classes


def load_source(cfg: dict, seed: int = 0, groups: dict | None = None):
    """Every split of a data set as (uint8 images, labels), and the class names. ``groups``, if given,
    receives per split the ids of the parts each image shares with others (digit pairs' source digits)."""
    source = cfg["source"]
    if source == "digits":
        splits, classes = _digits(cfg, seed)
    elif source == "digit_pairs":
        splits, classes = _digit_pairs(cfg, seed, groups)
    elif source in ("cifar10", "cifar100"):
        splits, classes = _cifar(cfg, seed, source)
    elif source == "imagefolder":
        splits, classes = _imagefolder(cfg, seed)
    else:
        raise DataError(f"unknown data source {source!r}")
    limit = cfg.get("limit")
    if limit:
        splits = {s: (x[:limit], y[:limit]) for s, (x, y) in splits.items()}
        if groups:
            groups.update({s: g[:limit] for s, g in groups.items()})
    for s, (x, y) in splits.items():
        if len(y) == 0:
            raise DataError(f"{source}: the {s} split is empty; give it more images or change `split`.")
    return splits, classes


# ----------------------------------------------------------------------------- prepared file
def prepare(cfg: dict, out: str | Path, seed: int = 0) -> dict:
    """Materialise a data set into one tensor file (written atomically); return its meta."""
    groups: dict = {}
    splits, classes = load_source(cfg, seed, groups)
    train_x = torch.from_numpy(splits["train"][0]).float() / 255.0
    meta = {
        "source": cfg["source"],
        "num_classes": len(classes),
        "classes": classes,
        "channels": int(train_x.shape[1]),
        "size": [int(train_x.shape[2]), int(train_x.shape[3])],
        "mean": train_x.mean(dim=(0, 2, 3)).tolist(),
        "std": train_x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist(),
        "counts": {s: int(len(y)) for s, (_, y) in splits.items()},
        # which configuration made it: another profile's file at the same path is not taken for this one's
        "config": config_digest(cfg, seed),
    }
    payload = {"meta": meta}
    for s, (x, y) in splits.items():
        payload[f"{s}_x"] = torch.from_numpy(np.ascontiguousarray(x))
        payload[f"{s}_y"] = torch.from_numpy(np.ascontiguousarray(y))
    for s, g in groups.items():
        payload[f"{s}_groups"] = torch.from_numpy(np.ascontiguousarray(g))
    with atomic_path(out) as tmp:
        torch.save(seal(payload), tmp)  # with the content digest every read checks
    log.info("prepared %s: %s", cfg["source"], meta["counts"])
    return meta


class PreparedData:
    """A prepared data set in memory: splits of uint8 images and their labels."""

    def __init__(self, path: str | Path):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DataError(f"{path}: unreadable prepared data ({exc}); delete it and re-run the workflow.") from None
        payload = check_sealed(payload, path, "prepared data file")
        self.meta: dict = payload["meta"]
        self.splits = {s: (payload[f"{s}_x"], payload[f"{s}_y"]) for s in SPLITS}
        # per split, the parts each image shares with others (digit pairs' two source digits), if any
        self.groups = {s: payload[f"{s}_groups"] for s in SPLITS if f"{s}_groups" in payload}

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    def loader(self, split: str, batch_size: int, train: bool = False, augment: dict | None = None,
               seed: int = 0, num_workers: int = 0, max_batches: int | None = None):
        x, y = self.splits[split]
        ds = _AugmentedTensors(x, y, augment if train else None)
        g = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=train, generator=g, num_workers=num_workers,
            drop_last=False, persistent_workers=False,
        )
        if max_batches:
            import itertools

            return list(itertools.islice(loader, max_batches))
        return loader


class _AugmentedTensors(torch.utils.data.Dataset):
    """uint8 images with optional random shift (zero padding) and horizontal flip, per sample."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, augment: dict | None):
        self.x, self.y = x, y
        self.shift = int((augment or {}).get("shift", 0))
        self.hflip = bool((augment or {}).get("hflip", False))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i]
        if self.shift:
            s = self.shift
            h, w = img.shape[1:]
            dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
            img = F.pad(img, (s, s, s, s))[:, dy:dy + h, dx:dx + w]
        if self.hflip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.y[i]


class InputAdapter:
    """uint8 batch -> normalised float batch at the model's input size, on the model's device."""

    def __init__(self, meta: dict, size: list[int], device: str | torch.device = "cpu"):
        self.mean = torch.tensor(meta["mean"], device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(meta["std"], device=device).view(1, -1, 1, 1)
        self.size = tuple(size)
        self.device = device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float().div_(255.0)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


def calibration_images(ctx_or_file, img_size, count: int, device: str = "cpu", seed: int = 0,
                       key: str = "calib_images") -> torch.Tensor:
    """The first ``count`` images of a seeded shuffle of the training split, model-ready (``key``: the step
    setting that asked for them, which an error names)."""
    data = PreparedData(ctx_or_file)
    x, _ = data.splits["train"]
    if count > len(x):
        raise ValueError(f"{key} = {count} exceeds the {len(x)} training images of this data set; lower {key}.")
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:count]
    return InputAdapter(data.meta, img_size, device)(x[pick])


_KNOWN_SHAPES = {  # (classes, channels, [H, W]) of the built-in sources, known without reading any file
    "digits": (10, 1, [8, 8]),
    "digit_pairs": (100, 1, [8, 16]),
    "cifar10": (10, 3, [32, 32]),
    "cifar100": (100, 3, [32, 32]),
}


def config_digest(cfg: dict, seed: int = 0) -> str:
    """The digest of a data set's configuration (and seed), recorded in its prepared file."""
    return content_digest({"cfg": cfg, "seed": int(seed)})


def split_sizes(cfg: dict, seed: int = 0, prepared: str | Path | None = None) -> dict[str, int] | None:
    """Images per split (train, val, test) of a data set, before any job: from its prepared file if there
    is one made from this configuration (its meta, memory-mapped; another profile's file at the same path
    is not taken), else from params.yaml (digits, digit pairs, CIFAR's official sizes)
    or the files a run will read (CIFAR's batches when present); None where it cannot be known cheaply
    (an unprepared imagefolder)."""
    if prepared is not None and Path(prepared).is_file():
        try:
            meta = torch.load(prepared, map_location="cpu", weights_only=True, mmap=True)["meta"]
            if meta.get("config") == config_digest(cfg, seed):  # made from this configuration, not another's
                return {s: int(n) for s, n in meta["counts"].items()}
        except Exception:  # unreadable: the job that prepares it says why
            pass
    source, sizes = cfg["source"], None
    if source == "digits":
        from sklearn.datasets import load_digits

        parts = _split_indices(load_digits().target, cfg.get("split", [0.7, 0.15, 0.15]), seed)
        sizes = {s: len(i) for s, i in parts.items()}
    elif source == "digit_pairs":
        sizes = dict(zip(SPLITS, cfg.get("samples", [8000, 1000, 2000])))
    elif source in CIFAR_LAYOUT:
        folder, files = CIFAR_LAYOUT[source]
        local = Path(cfg.get("root", f"data/raw/{source}")) / folder
        if all((local / f).is_file() for f in files):
            (_, y), (_, test_y), _ = _read_cifar_folder(local, source)
            train_total, test_total = len(y), len(test_y)
        else:  # downloaded by the run: the official archive
            train_total, test_total = 50000, 10000
        val = int(cfg.get("val_size", 5000))
        sizes = {"train": train_total - val, "val": val, "test": test_total}
    if sizes is not None and cfg.get("limit"):
        sizes = {s: min(n, int(cfg["limit"])) for s, n in sizes.items()}
    return sizes


def describe(cfg: dict) -> dict:
    """Classes, channels and image size of a data set without preparing it (architecture benchmarks)."""
    source = cfg["source"]
    if source in _KNOWN_SHAPES:
        classes, chans, size = _KNOWN_SHAPES[source]
    else:  # imagefolder: one class per sub-folder of train/ (or of the root)
        root = Path(cfg.get("root", ""))
        base = root / "train" if (root / "train").is_dir() else root
        classes = len([d for d in base.iterdir() if d.is_dir()]) if base.is_dir() else 2
        chans, size = 3, [int(cfg.get("image_size", 32))] * 2
    return {"num_classes": classes, "channels": chans, "size": size}
