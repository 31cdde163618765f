import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vitcompress.data import DataError, PreparedData, UnsafeFileError, data_shape, load_source, prepare


def _digits(cfg: dict, seed: int):
    """The digits source's splits of ``cfg``'s split fractions."""
    return load_source({"source": "digits", "split": cfg["split"]}, seed)


def test_digits_split_is_seeded_disjoint_and_stratified():
    a, classes = _digits({"split": [0.7, 0.15, 0.15]}, seed=0)
    b, _ = _digits({"split": [0.7, 0.15, 0.15]}, seed=0)
    c, _ = _digits({"split": [0.7, 0.15, 0.15]}, seed=1)
    assert classes == [str(i) for i in range(10)]
    assert sum(len(y) for _, y in a.values()) == 1797
    for s in a:
        assert np.array_equal(a[s][0], b[s][0])
    assert not np.array_equal(a["test"][0], c["test"][0])
    flat = {s: {x.tobytes() for x in a[s][0]} for s in a}
    # a handful of digits images are exact duplicates in the source; splits share almost none
    assert len(flat["train"] & flat["test"]) <= 3
    counts = np.bincount(a["test"][1], minlength=10)
    assert counts.min() >= 25 and counts.max() <= 29
    assert a["train"][0].dtype == np.uint8 and a["train"][0].max() == 255


def test_digit_pairs_compose_each_split_from_its_own_digits():
    cfg = {"source": "digit_pairs", "split": [0.7, 0.15, 0.15], "samples": [500, 100, 200]}
    splits, classes = load_source(cfg, seed=0)
    base, _ = _digits(cfg, seed=0)
    assert len(classes) == 100 and classes[42] == "42"
    x, y = splits["test"]
    assert x.shape == (200, 1, 8, 16)
    assert np.bincount(y, minlength=100).tolist() == [2] * 100  # balanced
    train_imgs = {im.tobytes() for im in base["train"][0]}
    test_imgs = {im.tobytes(): lab for im, lab in zip(base["test"][0], base["test"][1])}
    for img, label in zip(x, y):
        left, right = img[:, :, :8].copy(), img[:, :, 8:].copy()
        assert test_imgs[left.tobytes()] == label // 10
        assert test_imgs[right.tobytes()] == label % 10
    leaked = sum(img[:, :, :8].copy().tobytes() in train_imgs for img in x)
    assert leaked <= 3  # only the source's exact duplicate images can coincide


def test_prepare_writes_one_tensor_file_with_meta(tmp_path):
    out = tmp_path / "digits.pt"
    meta = prepare({"source": "digits", "split": [0.7, 0.15, 0.15]}, out, seed=0)
    data = PreparedData(out)
    assert meta == data.meta
    assert data.num_classes == 10 and meta["size"] == [8, 8] and meta["channels"] == 1
    x, y = data.splits["train"]
    assert x.dtype == torch.uint8 and y.dtype == torch.int64 and len(x) == meta["counts"]["train"]
    assert data_shape({"source": "digits"}) == {k: meta[k] for k in ("num_classes", "channels", "size")}
    assert not list(tmp_path.glob("*.tmp"))


def test_augmented_loader_shifts_but_keeps_labels(tmp_path):
    out = tmp_path / "d.pt"
    prepare({"source": "digits"}, out)
    data = PreparedData(out)
    plain = next(iter(data.loader("train", 64)))
    torch.manual_seed(0)
    aug = next(iter(data.loader("train", 64, train=True, augment={"shift": 1}, seed=0)))
    assert aug[0].shape == plain[0].shape and aug[0].dtype == torch.uint8
    first = data.loader("train", 64, train=True, augment={"shift": 1}, seed=3)
    again = data.loader("train", 64, train=True, augment={"shift": 1}, seed=3)
    assert torch.equal(next(iter(first))[1], next(iter(again))[1])  # seeded order


def _write_fake_cifar10(root, n_train=20, n_test=10):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n):
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(n_train // 5), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(n_test), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return folder


def test_cifar10_reads_files_in_cifar_format_offline(tmp_path):
    _write_fake_cifar10(tmp_path / "cifar10")
    cfg = {"source": "cifar10", "root": str(tmp_path / "cifar10"), "val_size": 5, "download": False,
           "verify_checksums": False}
    splits, classes = load_source(cfg)
    assert classes == [f"c{i}" for i in range(10)]
    assert splits["train"][0].shape == (15, 3, 32, 32)
    assert len(splits["val"][1]) == 5 and len(splits["test"][1]) == 10
    with open(tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f)
    assert np.array_equal(splits["test"][0][0].reshape(-1), raw["data"][0])


def test_cifar_missing_offline_says_which_folder_and_files(tmp_path):
    cfg = {"source": "cifar10", "root": str(tmp_path / "nothing"), "download": False}
    with pytest.raises(DataError) as info:
        load_source(cfg)
    msg = str(info.value)
    assert str(tmp_path / "nothing") in msg and "cifar-10-batches-py" in msg and "data_batch_1" in msg


def test_fake_cifar_fails_checksum_verification(tmp_path):
    _write_fake_cifar10(tmp_path / "c")
    with pytest.raises(DataError, match="not found or corrupt"):
        load_source({"source": "cifar10", "root": str(tmp_path / "c"), "download": False, "verify_checksums": True})


class _RunsCode:
    """Unpickling this calls a function of the os module (here: creating a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("victim", ["test_batch", "batches.meta", "data_batch_3"])
def test_cifar_file_that_would_run_code_is_refused_as_unsafe_and_never_runs(tmp_path, victim, verify):
    folder = _write_fake_cifar10(tmp_path / "c")
    marker = tmp_path / "ran"
    with open(folder / victim, "wb") as f:
        pickle.dump({"data": _RunsCode(marker), "labels": [0], "label_names": _RunsCode(marker)}, f, protocol=2)
    cfg = {"source": "cifar10", "root": str(tmp_path / "c"), "val_size": 5, "download": False,
           "verify_checksums": verify}
    with pytest.raises(DataError) as info:
        load_source(cfg)
    assert not marker.exists()
    if not verify:  # with checksums on, the md5 check refuses it before it is read
        assert isinstance(info.value, UnsafeFileError)
        assert "refused as unsafe" in str(info.value) and victim in str(info.value) and "system" in str(info.value)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_are_read(tmp_path, protocol):
    """The safe reader admits what numpy itself writes: Python 2's layout (protocol 2) and numpy 2's
    out-of-band buffers (protocol 5), bytes file names included."""
    folder = _write_fake_cifar10(tmp_path / "c")
    data = np.arange(4 * 3072, dtype=np.uint8).reshape(4, 3072)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "labels": [1, 2, 3, np.int64(4)], "data": data,
                     "filenames": [b"a.png"] * 4}, f, protocol=protocol)
    splits, _ = load_source({"source": "cifar10", "root": str(tmp_path / "c"), "val_size": 5, "download": False,
                             "verify_checksums": False})
    assert np.array_equal(splits["test"][0].reshape(4, -1), data) and list(splits["test"][1]) == [1, 2, 3, 4]


def test_a_truncated_cifar_batch_is_called_corrupt_and_named(tmp_path):
    folder = _write_fake_cifar10(tmp_path / "c")
    (folder / "data_batch_2").write_bytes((folder / "data_batch_2").read_bytes()[:100])
    with pytest.raises(DataError, match="data_batch_2: corrupt") as info:
        load_source({"source": "cifar10", "root": str(tmp_path / "c"), "val_size": 5, "download": False,
                     "verify_checksums": False})
    assert not isinstance(info.value, UnsafeFileError)


def _write_imagefolder(root, classes=("cat", "dog"), n=6):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_imagefolder_is_resized_and_split(tmp_path):
    _write_imagefolder(tmp_path / "imgs", n=10)
    splits, classes = load_source({"source": "imagefolder", "root": str(tmp_path / "imgs"), "image_size": 16,
                                   "split": [0.6, 0.2, 0.2]})
    assert classes == ["cat", "dog"]
    assert splits["train"][0].shape[1:] == (3, 16, 16)
    assert sum(len(y) for _, y in splits.values()) == 20


def test_imagefolder_with_an_empty_class_is_refused(tmp_path):
    _write_imagefolder(tmp_path / "imgs")
    (tmp_path / "imgs" / "bird").mkdir()
    with pytest.raises(DataError, match="bird"):
        load_source({"source": "imagefolder", "root": str(tmp_path / "imgs")})


def test_imagefolder_names_every_file_it_cannot_decode(tmp_path):
    """A truncated JPEG, an empty PNG and a text file named .jpg each fail only when decoded, with errors of
    different kinds; the message names every one by its path, and the images before them do not matter."""
    from PIL import Image

    root = tmp_path / "imgs"
    _write_imagefolder(root)
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(root / "cat" / "whole.jpg")
    data = (root / "cat" / "whole.jpg").read_bytes()
    (root / "cat" / "cut.jpg").write_bytes(data[: len(data) // 2])
    (root / "dog" / "empty.png").write_bytes(b"")
    (root / "dog" / "notes.jpg").write_text("not an image")
    with pytest.raises(DataError) as info:
        load_source({"source": "imagefolder", "root": str(root)})
    msg = str(info.value)
    for name in ("cat/cut.jpg", "dog/empty.png", "dog/notes.jpg"):
        assert name in msg
    assert "whole.jpg" not in msg and "3 file(s)" in msg


def test_imagefolder_with_one_class_is_refused_before_any_training(tmp_path):
    _write_imagefolder(tmp_path / "imgs", classes=("cat",))
    with pytest.raises(DataError, match="at least two"):
        load_source({"source": "imagefolder", "root": str(tmp_path / "imgs")})


def test_split_sizes_trust_a_prepared_file_only_of_the_same_configuration(tmp_path):
    """Two profiles share data/prepared/<dataset>.pt: a file another configuration made (e.g. the smoke
    profile's 32-image CIFAR) must not stand for this one's counts before the first job."""
    from vitcompress.data import prepare, split_sizes

    path = tmp_path / "digits.pt"
    small = {"source": "digits", "limit": 40}
    prepare(small, path)
    from vitcompress.data import PreparedData

    assert split_sizes(small, 0, path) == PreparedData(path).meta["counts"]  # its own file: read from it
    full = split_sizes({"source": "digits"}, 0, path)
    assert full == split_sizes({"source": "digits"}, 0, None) and full["train"] > 40  # not the other's 40


def test_the_configuration_reference_lists_every_sources_keys_as_generated():
    from pathlib import Path

    from vitcompress.data import SOURCES
    from vitcompress.settings import markdown_keys

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    section = doc.split("<!-- sources: generated by `vitcompress sources --keys` -->\n", 1)[1].split("<!-- /sources -->")[0]
    assert section == markdown_keys(SOURCES, "source"), "docs/configuration.md is stale: paste `vitcompress sources --keys`"


def test_a_key_another_source_takes_is_refused_by_name():
    from vitcompress.data import get_source
    from vitcompress.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown key 'datasets.c10.samples' for source 'cifar10'; allowed: .*val_size"):
        get_source("cifar10").settings({"source": "cifar10", "samples": [1, 1, 1]}, "datasets.c10")
    with pytest.raises(ConfigError, match=r"datasets.mine needs `root`"):
        get_source("imagefolder").settings({"source": "imagefolder"}, "datasets.mine")


def test_a_new_source_is_one_registered_class(tmp_path):
    """A source registered from outside the package (here: in the test) is a data set's `source` like a built-in:
    its keys checked before any job, its data prepared and read by the loaders, its sizes known beforehand."""
    from dataclasses import dataclass

    from vitcompress.config import validate_raw
    from vitcompress.data import SOURCES, DataSource, register_source, split_sizes
    from vitcompress.data.base import SourceSettings
    from vitcompress.errors import ConfigError
    from vitcompress.settings import setting

    @dataclass(frozen=True, kw_only=True)
    class StripesSettings(SourceSettings):
        images: int = setting(60, low=6, help="images per split")

    @register_source
    class Stripes(DataSource):
        name = "stripes_test"
        Settings = StripesSettings
        shape = (2, 1, [4, 4])

        def load(self, s, seed, groups=None):
            rng = np.random.default_rng(seed)
            y = np.arange(s.images) % 2
            x = np.zeros((s.images, 1, 4, 4), dtype=np.uint8)
            x[y == 1, :, :, ::2] = 255  # class 1: vertical stripes
            x += rng.integers(0, 20, x.shape, dtype=np.uint8)
            return {k: (x, y.astype(np.int64)) for k in ("train", "val", "test")}, ["plain", "striped"]

        def split_sizes(self, s, seed):
            return {k: s.images for k in ("train", "val", "test")}

    try:
        cfg = {"source": "stripes_test", "images": 12}
        meta = prepare(cfg, tmp_path / "s.pt")
        assert meta["classes"] == ["plain", "striped"] and meta["counts"] == {"train": 12, "val": 12, "test": 12}
        assert PreparedData(tmp_path / "s.pt").splits["test"][0].shape == (12, 1, 4, 4)
        assert split_sizes(cfg) == {"train": 12, "val": 12, "test": 12} and data_shape(cfg)["num_classes"] == 2
        raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
        raw["datasets"]["stripes"] = {"source": "stripes_test", "images": 3}
        with pytest.raises(ConfigError, match=r"datasets.stripes.images = 3 must be at least 6"):
            validate_raw(raw)
        raw["datasets"]["stripes"]["images"] = 30
        validate_raw(raw)  # the schema knows the new source and its key
    finally:
        SOURCES.pop("stripes_test", None)


@pytest.mark.parametrize("augment", [{"shift": 1}, {"shift": 2, "hflip": True}, {"hflip": True}, None])
def test_a_batch_fetched_at_once_is_the_batch_fetched_image_by_image(augment):
    """The loader fetches a batch in one call (``__getitems__``, the shift and flip applied to the whole batch);
    it draws the same random numbers, image by image in the same order, as ``__getitem__``: the same batches and
    the same generator state after them, so a model trains to the same bytes either way."""
    from vitcompress.data.prepared import _AugmentedTensors

    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (70, 3, 6, 9), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (70,), generator=g)

    class OneByOne(torch.utils.data.Dataset):  # the DataLoader's per-image fetch and default collate
        def __init__(self, ds):
            self.ds = ds

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, i):
            return self.ds[i]

    def batches(batched: bool):
        torch.manual_seed(3)
        ds = _AugmentedTensors(x, y, augment)
        loader = torch.utils.data.DataLoader(ds if batched else OneByOne(ds), batch_size=16, shuffle=True,
                                             generator=torch.Generator().manual_seed(5),
                                             collate_fn=(lambda b: b) if batched else None)
        return list(loader), torch.rand(4)

    (fast, after_fast), (slow, after_slow) = batches(True), batches(False)
    assert len(fast) == len(slow) == 5
    for (xf, yf), (xs, ys) in zip(fast, slow):
        assert xf.dtype == xs.dtype and torch.equal(xf, xs) and torch.equal(yf, ys)
    assert torch.equal(after_fast, after_slow)
    plain = torch.utils.data.DataLoader(_AugmentedTensors(x, y, None), batch_size=16, shuffle=True,
                                        generator=torch.Generator().manual_seed(5), collate_fn=lambda b: b)
    moved = not all(torch.equal(a[0], b[0]) for a, b in zip(fast, plain))
    assert moved == bool(augment)  # the augmentation moved pixels: not a comparison of two untouched copies
