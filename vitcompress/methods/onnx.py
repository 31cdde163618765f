"""``onnx``: export the chain's PyTorch model to ONNX, run it in ONNX Runtime, and prove it is the same model.

The export (torch.export-based, dynamic batch) ends a PyTorch chain: vanilla, DeiT, pruned, Nyström and
the QAT rows (their dequantized float weights) all export; torch.ao's int8 layers (``dynamic_ptq``) and
FQ-ViT's simulated quantization do not, and the configuration says so before any job runs. The step then
predicts the whole test split with both PyTorch and ONNX Runtime and refuses the export when they agree on
fewer than ``min_agreement`` of the images (default 99.5%): a graph that computes something else must not
reach a device or the table. The artifact is the ``.onnx`` file itself; its accuracy cell is measured by
ONNX Runtime (the step's evaluation runs the file), its speed by ONNX Runtime beside PyTorch's vanilla.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from vitcompress.methods.base import Method, StepContext, build_model, register
from vitcompress.runtime import RUNTIME, OnnxArtifact, OrtModule, export, onnx_child
from vitcompress.settings import Settings, setting

log = logging.getLogger("vitcompress")

VERIFY_BATCH = 64


def _exported(parent, model: torch.nn.Module, step: dict, example: torch.Tensor) -> OnnxArtifact:
    return onnx_child(parent, export(model, example), {"method": OnnxExport.name}, step)


@torch.inference_mode()
def agreement(reference: torch.nn.Module, candidate: torch.nn.Module, batches, adapter) -> dict:
    """How often two models' top-1 predictions agree over ``batches`` of (uint8 images, labels), with each
    one's accuracy and the largest logit difference."""
    same = right_ref = right_cand = total = 0
    max_diff = 0.0
    for x, y in batches:
        inputs = adapter(x)
        a = reference(inputs).float().cpu()
        b = candidate(inputs.cpu()).float()
        same += (a.argmax(-1) == b.argmax(-1)).sum().item()
        right_ref += (a.argmax(-1) == y).sum().item()
        right_cand += (b.argmax(-1) == y).sum().item()
        max_diff = max(max_diff, (a - b).abs().max().item())
        total += len(y)
    n = max(1, total)
    return {"images": total, "agreement": same / n, "reference_top1": 100 * right_ref / n,
            "top1": 100 * right_cand / n, "max_abs_logit_diff": max_diff}


@dataclass(frozen=True, kw_only=True)
class OnnxSettings(Settings):
    min_agreement: float = setting(0.995, low=0, low_open=True, high=1,
                                   help="the share of test images whose top-1 ONNX Runtime and PyTorch must agree on")


@register
class OnnxExport(Method):
    name = "onnx"
    Settings = OnnxSettings
    runtime = RUNTIME

    def run(self, ctx: StepContext) -> OnnxArtifact:
        from vitcompress.data import InputAdapter, PreparedData

        parent, step = ctx.parent, ctx.step
        s = self.settings(step)
        data = PreparedData(ctx.data_file)
        adapter = InputAdapter(data.meta, parent.arch["kwargs"]["img_size"], ctx.device)
        model = build_model(parent)
        art = _exported(parent, model, step, adapter(data.splits["test"][0][:2]).cpu())
        with tempfile.TemporaryDirectory() as tmp:  # run the graph as a device would: from its file
            path = Path(tmp) / "model.onnx"
            art.save(path)
            check = agreement(model.to(ctx.device), OrtModule(path).eval(), data.loader("test", VERIFY_BATCH),
                              adapter)
        art.path = None
        log.info("%s: ONNX Runtime agrees with PyTorch on %.2f%% of %d test images (top-1 %.2f%% vs %.2f%%, "
                 "largest logit difference %.2g)", ctx.dataset, 100 * check["agreement"], check["images"],
                 check["top1"], check["reference_top1"], check["max_abs_logit_diff"])
        if check["agreement"] < s.min_agreement:
            raise ValueError(
                f"{ctx.dataset}: the ONNX export of step {step['id']!r} predicts differently from PyTorch on "
                f"{100 * (1 - check['agreement']):.2f}% of {check['images']} test images (allowed: "
                f"{100 * (1 - s.min_agreement):.2f}%); the exported graph does not compute the "
                f"model. Nothing was written; report the architecture, or lower min_agreement to accept it.")
        art.meta["export_check"] = check
        return art

    @classmethod
    def untrained_deploy(cls, parent, step: dict) -> OnnxArtifact:
        """The export of an untrained (random-weight) artifact, for architecture benchmarks."""
        kwargs = parent.arch["kwargs"]
        example = torch.randn(2, int(kwargs["in_chans"]), *map(int, kwargs["img_size"]),
                              generator=torch.Generator().manual_seed(0))
        return _exported(parent, build_model(parent), step, example)
