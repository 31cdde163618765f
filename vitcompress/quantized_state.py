"""diffq's quantized state as an artifact stores it: written from a quantizer, read back into a model.

The only change to diffq's format: the quantizer class is stored by name (``"LSQ"``,
``"DiffQuantizer"``) instead of as a pickled class, so the file loads with
``torch.load(weights_only=True)`` like every other artifact and never runs code. Also which tensors a
quantizer takes (``min_size``, ``exclude``). The QAT methods (:mod:`vitcompress.methods.qat`) write the
state; :func:`vitcompress.methods.build_model` reads it.
"""
from __future__ import annotations

from fnmatch import fnmatch

import torch
import torch.nn as nn
from diffq import LSQ, DiffQuantizer
from diffq.base import BaseQuantizer

QUANTIZERS: dict[str, type[BaseQuantizer]] = {"LSQ": LSQ, "DiffQuantizer": DiffQuantizer}


def export_state(quantizer: BaseQuantizer, packed: bool = True) -> dict:
    """diffq's quantized state (bit-packed or not), on CPU, with the quantizer class stored by name."""
    state = quantizer.get_quantized_state(packed=packed)
    name = type(quantizer).__name__
    if QUANTIZERS.get(name) is not type(quantizer):
        raise TypeError(f"unsupported quantizer {name}")
    state["meta"] = {**state["meta"], "klass": name}
    return _to_cpu(state)


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def restore(model: nn.Module, state: dict) -> nn.Module:
    """Load a state written by :func:`export_state` into ``model`` (in place) and detach the quantizer."""
    meta = state["meta"]
    klass = QUANTIZERS.get(meta.get("klass"))
    if klass is None:
        raise ValueError(f"unknown quantizer {meta.get('klass')!r} (known: {', '.join(QUANTIZERS)})")
    quantizer = klass(model, **meta["init_kwargs"])
    quantizer.restore_quantized_state(state)
    quantizer.detach()
    return model


def quantized_params(model: nn.Module, min_size: float, exclude: list[str]) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the parameters a diffq quantizer with these settings would quantize (as diffq
    picks them: above ``min_size`` MB, not matching an ``exclude`` pattern, a shared one once)."""
    min_params = min_size * 2 ** 20 // 4
    return [(name, param) for name, param in model.named_parameters()
            if param.numel() > min_params and not any(fnmatch(name, p) or fnmatch(name.rsplit(".", 1)[-1], p)
                                                      for p in exclude)]


def constant_params(model: nn.Module, min_size: float, exclude: list[str]) -> list[tuple[str, nn.Parameter]]:
    """The parameters to be quantized that hold one value throughout (a zero-initialised bias): LSQ's step
    size (from the mean |w|) and DiffQ's min-max range are then 0, and the levels NaN."""
    return [(name, p) for name, p in quantized_params(model, min_size, exclude)
            if p.numel() and bool((p == p.flatten()[0]).all())]
