"""``imagefolder``: a class-per-folder data set (torchvision ImageFolder), with ``train/``, ``val/``, ``test/``
sub-folders or one folder that is split with ``split``; images resized to ``image_size`` when prepared. Every file
the decoder cannot read is named with its path (whatever the reason), and fewer than two classes is refused."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitcompress.data.base import SPLITS, DataSource, SplitSettings, register_source, split_indices
from vitcompress.errors import ConfigError, DataError
from vitcompress.settings import setting


@dataclass(frozen=True, kw_only=True)
class ImageFolderSettings(SplitSettings):
    root: str = setting(help="a class-per-folder tree (one sub-folder of images per class, or train/ val/ test/ of those)")
    image_size: int = setting(32, low=4, help="images are resized to this square size when prepared")
    split: tuple[float, float, float] = setting((0.8, 0.1, 0.1), help="train/val/test fractions (one folder only)")


@register_source
class ImageFolder(DataSource):
    name = "imagefolder"
    Settings = ImageFolderSettings

    def load(self, s, seed, groups=None):
        import torchvision
        from torchvision.transforms import v2

        root = Path(s.root)
        if not root.is_dir():
            raise DataError(f"imagefolder: root = {str(root)!r} is not a folder; point `root` at a class-per-folder tree.")
        size = s.image_size
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
        idx = split_indices(y, s.split, seed)
        return {s: (x[i], y[i]) for s, i in idx.items()}, classes

    def data_shape(self, s):
        root = Path(s.root)  # one class per sub-folder of train/ (or of the root)
        base = root / "train" if (root / "train").is_dir() else root
        classes = len([d for d in base.iterdir() if d.is_dir()]) if base.is_dir() else 2
        return {"num_classes": classes, "channels": 3, "size": [s.image_size] * 2}

    def check_files(self, s, where):
        if not Path(s.root).is_dir():
            raise ConfigError(f"params.yaml: {where}.root = {s.root!r} is not a folder; point it at a class-per-folder "
                              f"tree (one sub-folder of images per class, or train/ val/ test/ of those).")
