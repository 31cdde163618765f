"""Data sets: one module per source, registered like methods (``source:`` in params.yaml names one), each
prepared once into one tensor file that the loaders read.

- :mod:`~vitcompress.data.digits`: scikit-learn's 8x8 digits, offline;
- :mod:`~vitcompress.data.digit_pairs`: two digits side by side, 100 classes, each split from its own digits;
- :mod:`~vitcompress.data.cifar`: CIFAR-10 / CIFAR-100 from the official files (read without running code);
- :mod:`~vitcompress.data.imagefolder`: a class-per-folder tree of your own images.

A source's keys are one frozen Settings dataclass (:mod:`~vitcompress.data.base`); the prepared file and its
readers are :mod:`~vitcompress.data.prepared`.
"""
from vitcompress.data import cifar, digit_pairs, digits, imagefolder  # noqa: F401  (importing registers)
from vitcompress.data.base import SOURCES, SPLITS, DataSource, get_source, register_source, split_indices
from vitcompress.data.prepared import (
    InputAdapter,
    PreparedData,
    calibration_images,
    config_digest,
    data_shape,
    load_source,
    prepare,
    split_sizes,
)
from vitcompress.data.safe_pickle import read_pickle_safely
from vitcompress.errors import DataError, UnsafeFileError

__all__ = ["SOURCES", "SPLITS", "DataError", "DataSource", "InputAdapter", "PreparedData", "UnsafeFileError",
           "calibration_images", "config_digest", "data_shape", "get_source", "load_source", "prepare",
           "read_pickle_safely", "register_source", "split_indices", "split_sizes"]
