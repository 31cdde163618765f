"""FQ-ViT's ablation (PTF and LIS on and off under one calibration) and the study's Figure 1 from it."""
from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn as nn

from vitcompress.data import calibration_images
from vitcompress.fqvit.modules import calibrate, ln_input_quantizers, quantize_model
from vitcompress.fqvit.settings import FQViTSettings

log = logging.getLogger("vitcompress")


ABLATION_VARIANTS = (  # (label, ptf, lis): the ablation of the two tricks under one calibration; without LIS the
    # probabilities get FQ-ViT's baseline, a calibrated uniform quantizer at act_bits
    ("layer-wise LayerNorm inputs, uniform attention", False, False),
    ("PTF, uniform attention", True, False),
    ("layer-wise LayerNorm inputs, LIS attention", False, True),
    ("PTF + LIS (FQ-ViT)", True, True),
)
# FQ-ViT's own figures for the same comparison (ImageNet top-1, %, the FQ-ViT repository's README table):
# full precision, its MinMax baseline at W8/A8/Attn8, and FQ-ViT at Attn 8 and at Attn 4 bits.
PUBLISHED = (("ViT-B", 84.53, 23.64, 83.31, 82.68), ("DeiT-B", 81.85, 78.02, 81.20, 80.85))


def _figure_stats(model: nn.Module, images: torch.Tensor, batch_size: int) -> dict:
    """Calibrate ``model`` and keep, from the same pass, the per-channel min/max of the last
    LayerNorm's inputs and the first layer's attention probabilities (the study's Figure 1)."""
    stats: dict = {"probs": []}
    hook = model.blocks[0].attn.prob_quant.register_forward_hook(
        lambda mod, inp, out: stats["probs"].append(inp[0].detach().flatten()[:200_000].cpu()))

    def keep(m):
        stats["ln_min"], stats["ln_max"] = ln_input_quantizers(m)[-1].channel_range()

    calibrate(model, images, batch_size, before_freeze=keep)
    hook.remove()
    stats["probs"] = torch.cat(stats["probs"])
    return stats


def plot_figure1(stats: dict, bits: int, out: str, title: str) -> None:
    """The study's Figure 1 from this model's calibration data."""
    from vitcompress.plotting import save_png, subplots

    fig, (ax1, ax2) = subplots(1, 2, figsize=(11, 4))
    channels = torch.arange(len(stats["ln_min"]))
    ax1.vlines(channels, stats["ln_min"], stats["ln_max"], color="tab:blue", linewidth=1)
    ax1.scatter(channels, stats["ln_max"], s=4, color="tab:red", label="max")
    ax1.scatter(channels, stats["ln_min"], s=4, color="tab:green", label="min")
    ax1.set(xlabel="channel", ylabel="value", title="Last LayerNorm inputs: per-channel range")
    ax1.legend()
    p = stats["probs"].clamp(min=1e-6)
    ax2.hist(p.numpy(), bins=torch.logspace(-6, 0, 80).numpy(), color="0.6")
    ax2.set(xscale="log", yscale="log", xlabel="attention probability", ylabel="count",
            title=f"First-layer attention, {bits}-bit bins")
    top = 2 ** bits - 1
    for k in range(1, top + 1):  # a uniform grid at the same bits, to show what LIS's levels buy
        ax2.axvline(k / top, color="tab:orange", linewidth=0.8, label=f"uniform {bits}-bit levels" if k == 1 else None)
    for q in range(top):
        ax2.axvline(2.0 ** -q, color="tab:purple", linestyle="--", linewidth=0.8, label="log2 levels" if q == 0 else None)
    ax2.legend(loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, out, dpi=110)


def ablation(model_fn, img_size, data_file: str, s: FQViTSettings, figure: str, dataset: str,
             device: str = "cpu", seed: int = 0, eval_batch_size: int = 256) -> dict:
    """Accuracy of the four PTF/LIS combinations under the step's calibration, plus Figure 1 (``figure``).

    ``model_fn()`` returns a fresh copy of the float model (the fq_vit step's parent), ``img_size`` its input.
    Returns {"rows": [{"variant", "ptf", "lis", "accuracy"}], "calib_images"}: the float model first; the
    tables are :func:`vitcompress.report.tables.render_fq_vit_ablation`'s."""
    from vitcompress.data import InputAdapter, PreparedData
    from vitcompress.measure import evaluate

    images = calibration_images(data_file, img_size, s.calib_images, device, seed)
    data = PreparedData(data_file)
    adapter = InputAdapter(data.meta, img_size, device)
    float_acc = evaluate(model_fn(), data.loader("test", eval_batch_size), adapter, device)["top1"]
    rows = [{"variant": "float (no quantization)", "ptf": None, "lis": None, "accuracy": float_acc}]
    stats: dict = {}
    for label, ptf, lis in ABLATION_VARIANTS:
        model = quantize_model(model_fn(), dataclasses.replace(s, ptf=ptf, lis=lis)).to(device)
        if ptf and lis:  # FQ-ViT proper: its calibration pass also gives Figure 1's data
            stats = _figure_stats(model, images, s.calib_batch_size)
        else:
            calibrate(model, images, s.calib_batch_size)
        acc = evaluate(model, data.loader("test", eval_batch_size), adapter, device)["top1"]
        rows.append({"variant": label, "ptf": ptf, "lis": lis, "accuracy": acc})
        log.info("%s fq_vit ablation: %s -> %.2f%%", dataset, label, acc)
    plot_figure1(stats, s.attn_bits, figure, f"{dataset}: FQ-ViT calibration data ({len(images)} images)")
    return {"rows": rows, "calib_images": len(images)}
