"""Compression methods: one module each, one :class:`~vitcompress.methods.base.Method` subclass each."""
from vitcompress.methods import (  # noqa: F401  (importing registers)
    diffq,
    distill,
    dynamic_ptq,
    fq_vit,
    lsq,
    nystrom,
    onnx,
    ort_int8_dynamic,
    ort_int8_static,
    ov,
    ov_int8,
    ov_int8_accuracy_control,
    prune,
    prune_gates,
    structured_prune,
    tome,
    train,
)
from vitcompress.methods.base import METHODS, Method, Settings, StepContext, Untrained, build_model, register, setting

__all__ = ["METHODS", "Method", "Settings", "StepContext", "Untrained", "build_model", "get_method", "register", "setting"]


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None
