"""Each method's step keys as one frozen dataclass: a key's type, default and range in one place.

A method declares ``Settings`` (a subclass of :class:`Settings`, one :func:`setting` per key); the
configuration check reads every step with :meth:`Settings.from_step` before any job, and the method's
``run()`` reads the same dataclass, so a default or range cannot differ between the two. This module
imports nothing of the project's but its errors, so every layer can declare settings.

Example::

    @dataclass(frozen=True, kw_only=True)
    class PruneSettings(Settings):
        ratio: float = setting(low=0, high=1, high_open=True, help="the fraction r of dimensions to remove")
        epochs: int = setting(0, low=0)

    PruneSettings.from_step({"ratio": 0.2}, "steps.prune_0.2")  # PruneSettings(ratio=0.2, epochs=0)
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from vitcompress.errors import ConfigError

NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
         type(None): "null"}


def _type_name(tp) -> str:
    if _is_union(tp):
        return " or ".join(_type_name(t) for t in typing.get_args(tp))
    return "a list" if typing.get_origin(tp) in (tuple, list) else NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _matches(value, tp) -> bool:
    """Whether a params.yaml value has type ``tp`` (an int is a float too; a bool is no number)."""
    if _is_union(tp):
        return any(_matches(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if typing.get_origin(tp) in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis] or [object]
        item = args[0] if len(args) == 1 else None  # tuple[x, ...] / list[x]; fixed tuples check each place
        if not isinstance(value, (list, tuple)):
            return False
        if item is None:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return all(item is object or _matches(v, item) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _coerce(value, tp):
    """The value as the dataclass holds it: an int where a float is meant as a float, a list as a tuple
    (frozen settings hold nothing mutable); through unions such as ``float | None``."""
    if _is_union(tp):
        for t in typing.get_args(tp):
            if _matches(value, t):
                return _coerce(value, t)
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(tp) in (tuple, list) and isinstance(value, list):
        return tuple(value)
    return value


def setting(default=dataclasses.MISSING, *, choices: tuple | None = None, low=None, high=None, low_open=False,
            high_open=False, help: str = "", key: str | None = None, counts: str | None = None):
    """A settings field: its default (none: the key is required), and optionally the values it may take
    (``choices``) or its range (``low``/``high``, inclusive unless ``*_open``); ``help`` is said when a
    required key is missing or a value is refused; ``key``: its params.yaml name when that is no Python
    name (``lambda``); ``counts``: the split whose images the value counts (``train``), checked against the
    data set's size before any job."""
    meta = {"choices": choices, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
            "help": help, "key": key, "counts": counts}
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """A method's step keys. Subclass with one :func:`setting` field per key; override :meth:`check` for
    conditions between keys. ``from_step`` reads a step dict (unknown keys are the method's check)."""

    @classmethod
    def keys(cls) -> dict[str, Any]:
        """params.yaml key -> its type."""
        hints = typing.get_type_hints(cls)
        return {_key(f): hints[f.name] for f in fields(cls)}

    @classmethod
    def from_step(cls, step: dict, where: str = "step") -> "Settings":
        """The settings of ``step``: each key's type and range checked (ConfigError names the key)."""
        hints, values = typing.get_type_hints(cls), {}
        for f in fields(cls):
            tp, meta, key = hints[f.name], f.metadata, _key(f)
            if key not in step:
                if f.default is dataclasses.MISSING:
                    raise ConfigError(f"params.yaml: {where} needs `{key}`" +
                                      (f": {meta['help']}." if meta.get("help") else "."))
                continue
            value = step[key]
            if not _matches(value, tp):
                raise ConfigError(f"params.yaml: {where}.{key} = {value!r} has the wrong type: use "
                                  f"{_type_name(tp)}.")
            _check_range(value, meta, f"{where}.{key}")
            values[f.name] = _coerce(value, tp)
        settings = cls(**values)
        settings.check(where)
        return settings

    @classmethod
    def of(cls, value: "Settings | dict", where: str = "step") -> "Settings":
        """``value`` as these settings: a mapping (a resolved step's, a rule's param) is read and checked here."""
        return value if isinstance(value, cls) else cls.from_step(value, where)

    def check(self, where: str) -> None:
        """Conditions between keys: raise ConfigError naming them. Default: none."""

    def counted(self) -> dict[str, tuple[int, str]]:
        """params.yaml key -> (value, split) for every key that counts images of a split."""
        return {_key(f): (getattr(self, f.name), f.metadata["counts"]) for f in fields(self)
                if f.metadata.get("counts")}

    def as_dict(self) -> dict:
        """params.yaml key -> value."""
        return {_key(f): getattr(self, f.name) for f in fields(self)}


def _key(f) -> str:
    return f.metadata.get("key") or f.name


def _check_range(value, meta, key: str) -> None:
    choices, low, high = meta.get("choices"), meta.get("low"), meta.get("high")
    hint = f" ({meta['help']})" if meta.get("help") else ""
    if choices is not None and value not in choices:
        raise ConfigError(f"params.yaml: {key} = {value!r}: use one of {', '.join(map(str, choices))}{hint}.")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    below = low is not None and (value <= low if meta.get("low_open") else value < low)
    above = high is not None and (value >= high if meta.get("high_open") else value > high)
    if below or above:
        if high is None:
            span = f"{'above' if meta.get('low_open') else 'at least'} {low:g}"
        elif low is None:
            span = f"{'below' if meta.get('high_open') else 'at most'} {high:g}"
        else:
            span = f"in {'(' if meta.get('low_open') else '['}{low:g}, {high:g}{')' if meta.get('high_open') else ']'}"
        raise ConfigError(f"params.yaml: {key} = {value!r} must be {span}{hint}.")


@dataclass(frozen=True, kw_only=True)
class NoSettings(Settings):
    """A method without keys of its own."""


def markdown_keys(methods: dict, kind: str = "method") -> str:
    """Every method's (or data source's: ``kind="source"``; or a profile section's: ``kind="section"``) keys as a
    Markdown table: key, type, default, range or choices, what it is (``vitcompress methods --keys``,
    ``vitcompress sources --keys``, ``vitcompress sections --keys``; docs/configuration.md holds their output).
    ``methods`` maps a name to a class with a ``Settings`` dataclass, or to a Settings dataclass itself."""
    lines = [f"| {kind} | key | type | default | allowed | what it is |", "|---|---|---|---|---|---|"]
    for name, cls in sorted(methods.items()):
        cls = cls if isinstance(cls, type) and issubclass(cls, Settings) else cls.Settings
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            meta = f.metadata
            d = f.default
            default = "required" if d is dataclasses.MISSING else f"`{list(d)!r}`" if isinstance(d, tuple) else f"`{d!r}`"
            if meta.get("choices"):
                allowed = ", ".join(f"`{c}`" for c in meta["choices"])
            elif meta.get("low") is not None or meta.get("high") is not None:
                lo = "" if meta.get("low") is None else f"{'>' if meta.get('low_open') else '≥'} {meta['low']:g}"
                hi = "" if meta.get("high") is None else f"{'<' if meta.get('high_open') else '≤'} {meta['high']:g}"
                allowed = ", ".join(x for x in (lo, hi) if x)
            else:
                allowed = ""
            what = meta.get("help", "").replace("|", "\\|")
            lines.append(f"| `{name}` | `{_key(f)}` | {_type_name(hints[f.name])} | {default} | {allowed} | {what} |")
    return "\n".join(lines) + "\n"
