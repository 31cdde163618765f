"""``dynamic_ptq``: post-training dynamic int8 quantization of every ``nn.Linear`` (torch.ao).

Weights are stored as int8 with per-tensor scales; activations are quantized on the fly at run
time. No training, no calibration data. The artifact holds the int8 packed weights themselves, and
reloading swaps in empty ``torch.ao`` dynamic-quantized Linear layers before loading them, so the
float model is never re-quantized. torch.ao's dynamic int8 kernels run on CPU only: the row has no
GPU timing.

torch.ao's dynamic Linear inherits an output ``scale`` and ``zero_point`` from the static quantized
Linear and saves both, but never reads them: a dynamic layer's output is float. Each is a tensor of its
own in the file (a noticeable share of a small model's artifact), so the artifact leaves them out and
loading puts back the values torch.ao gives them (1.0 and 0).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.ao.nn.quantized.dynamic as nnqd
import torch.nn as nn
from torch.ao.quantization import quantize_dynamic

from vitcompress.artifacts import Artifact
from vitcompress.methods.base import Method, StepContext, Untrained, build_model, register

SPEC = {"method": "dynamic_ptq", "dtype": "qint8"}
CPU_ONLY = {"cpu_only": True}


def _linear_children(model: nn.Module):
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Linear:
                yield parent, name, child


UNUSED = {"scale": 1.0, "zero_point": 0}  # a dynamic Linear's (ignored) output quantization, as torch.ao sets it


def _drop_unused(module, state_dict, prefix, local_metadata):
    for key in UNUSED:
        state_dict.pop(prefix + key, None)


def _restore_unused(names, module, state_dict, prefix, *args):
    for name in names:
        for key, value in UNUSED.items():
            state_dict.setdefault(f"{prefix}{name}.{key}", torch.tensor(value))


def lean(model: nn.Module) -> nn.Module:
    """Make every dynamic int8 Linear of ``model`` save without, and load without needing, its unused
    output scale and zero point (in place). The loading side hooks the whole model: torch.ao's Linear
    reads the two keys before its own load hooks would run."""
    names = [name for name, module in model.named_modules() if isinstance(module, nnqd.Linear)]
    for name in names:
        model.get_submodule(name).register_state_dict_post_hook(_drop_unused)
    model.register_load_state_dict_pre_hook(partial(_restore_unused, names))
    return model


def quantize(model: nn.Module) -> nn.Module:
    """torch.ao dynamic int8 quantization of every nn.Linear, on CPU."""
    return lean(quantize_dynamic(model.cpu().eval(), {nn.Linear}, dtype=torch.qint8))


def int8_skeleton(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear by an (unfilled) dynamic int8 Linear of the same shape, in place."""
    for parent, name, lin in list(_linear_children(model)):
        setattr(parent, name, nnqd.Linear(lin.in_features, lin.out_features, bias_=lin.bias is not None,
                                          dtype=torch.qint8))
    return lean(model).eval()


@register
class DynamicPTQ(Method):
    name = "dynamic_ptq"
    family = "quantized (PyTorch)"
    exportable = False  # torch.ao int8 Linear layers: export the float model, then ort_int8_dynamic
    makes = "int8"  # from a float model, or a QAT one (its dequantized weights)

    @classmethod
    def check_model(cls, model, step):
        if not any(isinstance(m, nn.Linear) for m in model.modules()):
            raise ValueError("dynamic int8 quantizes nn.Linear layers, and this model has none")

    def run(self, ctx: StepContext) -> Artifact:
        model = quantize(build_model(ctx.parent))
        steps = ctx.parent.meta.get("steps", []) + [{"id": ctx.step["id"], "method": self.name}]
        return ctx.parent.child(model, dict(SPEC), steps=steps, **CPU_ONLY)

    @classmethod
    def restructure(cls, model, spec):
        return int8_skeleton(model.cpu())

    @classmethod
    def untrained(cls, model, step):
        return Untrained(quantize(model), dict(SPEC), dict(CPU_ONLY))
