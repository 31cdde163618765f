"""Every error the library raises on purpose, in one module that imports nothing of the project's, so
``config``, ``data``, ``models`` and ``methods`` can raise each other's errors without importing each other.

Each message names the bad value (a dotted params.yaml key, a file) and what to do about it.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """params.yaml is wrong; the message says where and how to fix it."""


class NotInProfile(ConfigError, KeyError):
    """A target names a data set, row or step that the running profile does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(RuntimeError):
    """A data set cannot be prepared; the message says which files to provide."""


class UnsafeFileError(DataError):
    """A data file asks to run code when read (a pickle naming a callable outside the allowed types)."""


class DeviceError(RuntimeError):
    """A device was requested that this machine does not have."""


class ArtifactError(RuntimeError):
    """An artifact file is missing, corrupt, truncated or not safe to load."""


class PretrainedUnavailable(RuntimeError):
    """Pretrained weights were asked for but can be neither downloaded nor read from a local file."""


class PretrainedMismatch(PretrainedUnavailable):
    """A pretrained weights file does not hold the weights of the model it is meant for."""


class IntegrityError(ArtifactError):
    """A file this project wrote no longer holds what it held when written (its content digest differs)."""
