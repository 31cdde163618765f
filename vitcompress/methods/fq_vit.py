"""``fq_vit``: fully quantized ViT after training (Lin et al., 2022, "FQ-ViT"), as a simulation.

What is quantized (fake-quantized: values are rounded to the integer grid, arithmetic stays float):

* weights of every Linear and the patch-embedding Conv2d: ``weight_bits`` (8) bits, per output channel,
  min-max, stored as uint8 levels plus a scale and zero point per channel (the artifact is that);
* activations: the input of every Linear/Conv2d, q, k and v, and the attention scores, at
  ``act_bits`` (8) bits, one scale per tensor, from an observer calibrated on ``calib_images``
  training images: ``minmax``, ``ema``, ``percentile`` or ``omse`` (clipping that minimises the
  quantization error on the calibration data);
* LayerNorm inputs with the **Power-of-Two Factor** (PTF): one layer-wise scale s and zero point, and
  per channel c a factor 2^αc, αc ∈ {0..K}, chosen to minimise that channel's quantization error, so
  the few channels with a huge range (study Figure 1, left) do not crush the others;
* attention probabilities with **Log-Int-Softmax** (LIS): a log2 quantizer at ``attn_bits`` (4) bits,
  p ≈ 2^-q, which keeps resolution near 0 where almost all attention values lie (Figure 1, right).

Turning ``ptf``/``lis`` off gives the plain baseline (layer-wise min-max LayerNorm inputs, uniform
attention bits): :func:`ablation` evaluates all four combinations under one calibration. The softmax
itself is computed in float before its output is quantized (FQ-ViT's integer exp polynomial is not
simulated), and nothing runs int8 kernels, so the row has no speed: timing the simulation would
measure nothing a device would see.
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitcompress.artifacts import Artifact
from vitcompress.data import calibration_images
from vitcompress.errors import ConfigError
from vitcompress.methods.base import Method, StepContext, register
from vitcompress.models import ReplacedAttention, vit_blocks

log = logging.getLogger("vitcompress")

OBSERVERS = ("minmax", "ema", "percentile", "omse")
DEFAULTS = {"weight_bits": 8, "act_bits": 8, "attn_bits": 4, "observer": "minmax", "calib_images": 1000,
            "calib_batch_size": 100, "ptf": True, "lis": True, "ptf_k": 3, "percentile": 99.99, "ema": 0.9}
SAMPLE_ROWS = 2048  # rows of each observed tensor kept for percentile/OMSE/PTF, per observer


def fake_quant(x: torch.Tensor, scale, zero_point, bits: int) -> torch.Tensor:
    """Asymmetric uniform quantize-dequantize onto levels 0..2^bits-1."""
    q = torch.clamp(torch.round(x / scale) + zero_point, 0, 2 ** bits - 1)
    return (q - zero_point) * scale


def uniform_qparams(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point covering [lo, hi] (widened to include 0) with 2^bits levels."""
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = torch.clamp((hi - lo) / (2 ** bits - 1), min=1e-8)
    zero_point = torch.clamp(torch.round(-lo / scale), 0, 2 ** bits - 1)
    return scale, zero_point


def log2_quant(p: torch.Tensor, bits: int) -> torch.Tensor:
    """LIS: p in [0, 1] -> 2^-q with q = round(-log2 p) in 0..2^bits-2; the last level stands for 0."""
    top = 2 ** bits - 1
    q = torch.clamp(torch.round(-torch.log2(p.clamp(min=1e-30))), 0, top)
    return torch.where(q >= top, torch.zeros_like(p), torch.exp2(-q))


class ActQuant(nn.Module):
    """Observes a tensor during calibration, then fake-quantizes it with one layer-wise scale.

    ``channels`` > 0 makes it a PTF quantizer over the last dimension (LayerNorm inputs).
    """

    def __init__(self, bits: int = 8, observer: str = "minmax", channels: int = 0, ptf_k: int = 3,
                 percentile: float = 99.99, ema: float = 0.9):
        super().__init__()
        self.bits, self.observer, self.ptf_k = int(bits), observer, int(ptf_k)
        self.percentile, self.ema_decay = float(percentile), float(ema)
        self.mode = "float"  # float | calibrate | quant
        n = max(1, int(channels))
        self.register_buffer("scale", torch.ones(n if channels else 1))
        self.register_buffer("zero_point", torch.zeros(1))
        self.channels = int(channels)
        self._reset_stats()

    def _reset_stats(self):
        self.stats: dict = {"min": None, "max": None, "ema_min": None, "ema_max": None, "rows": [], "seen": 0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "calibrate":
            self.observe(x.detach())
            return x
        if self.mode == "quant":
            return fake_quant(x, self.scale, self.zero_point, self.bits)
        return x

    # -- calibration -----------------------------------------------------------------------------
    def observe(self, x: torch.Tensor) -> None:
        rows = x.reshape(-1, x.shape[-1]).float()
        cmin, cmax = rows.amin(dim=0), rows.amax(dim=0)  # per last-dim channel
        s = self.stats
        s["min"] = cmin if s["min"] is None else torch.minimum(s["min"], cmin)
        s["max"] = cmax if s["max"] is None else torch.maximum(s["max"], cmax)
        d = self.ema_decay
        s["ema_min"] = cmin if s["ema_min"] is None else d * s["ema_min"] + (1 - d) * cmin
        s["ema_max"] = cmax if s["ema_max"] is None else d * s["ema_max"] + (1 - d) * cmax
        if self.observer in ("percentile", "omse") or self.channels:
            g = torch.Generator().manual_seed(s["seen"])
            take = torch.randperm(rows.shape[0], generator=g)[:SAMPLE_ROWS].to(rows.device)
            s["rows"].append(rows[take].cpu())
            kept = torch.cat(s["rows"])
            if kept.shape[0] > SAMPLE_ROWS:
                keep = torch.randperm(kept.shape[0], generator=g)[:SAMPLE_ROWS]
                kept = kept[keep]
            s["rows"] = [kept]
        s["seen"] += 1

    def channel_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (last dim) min and max seen in calibration (the study's Figure 1, left)."""
        return self.stats["min"].cpu(), self.stats["max"].cpu()

    def sample(self) -> torch.Tensor:
        return torch.cat(self.stats["rows"]) if self.stats["rows"] else torch.empty(0)

    def layer_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        s, kind = self.stats, self.observer
        if kind == "minmax":
            return s["min"].min().cpu(), s["max"].max().cpu()
        if kind == "ema":
            return s["ema_min"].min().cpu(), s["ema_max"].max().cpu()
        flat = self.sample().flatten()
        if kind == "percentile":
            q = torch.tensor([1 - self.percentile / 100, self.percentile / 100])
            lo, hi = torch.quantile(flat[:2 ** 24], q)
            return lo, hi
        # omse: the clipping of the min-max range with the least quantization error on the data
        lo, hi = s["min"].min().cpu(), s["max"].max().cpu()
        best, best_err = (lo, hi), math.inf
        for ratio in torch.linspace(0.3, 1.0, 36):
            sc, zp = uniform_qparams(lo * ratio, hi * ratio, self.bits)
            err = (fake_quant(flat, sc, zp, self.bits) - flat).pow(2).mean().item()
            if err < best_err:
                best, best_err = (lo * ratio, hi * ratio), err
        return best

    def freeze(self) -> None:
        """Turn the statistics into scale(s) and zero point, then quantize from now on."""
        if self.stats["min"] is None:
            raise RuntimeError("quantizer saw no calibration data")
        lo, hi = self.layer_range()
        top_scale, zp = uniform_qparams(lo, hi, self.bits)
        if self.channels:  # PTF: per-channel 2^alpha on the layer scale s = top / 2^K
            rows = self.sample()
            base = top_scale / 2 ** self.ptf_k
            errs = torch.stack([
                (fake_quant(rows, base * 2 ** a, zp, self.bits) - rows).pow(2).sum(dim=0)
                for a in range(self.ptf_k + 1)
            ])  # (K+1, C)
            alpha = errs.argmin(dim=0)
            self.scale.copy_(base * torch.exp2(alpha.float()))
        else:
            self.scale.copy_(top_scale.reshape(1))
        self.zero_point.copy_(zp.reshape(1))
        self.mode = "quant"
        self._reset_stats()


class AttnProbQuant(nn.Module):
    """Attention probabilities: log2 (LIS) or uniform over [0, 1], ``bits`` bits. No calibration needed."""

    def __init__(self, bits: int = 4, log2: bool = True):
        super().__init__()
        self.bits, self.log2, self.mode = int(bits), bool(log2), "float"

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        if self.mode != "quant":
            return p
        if self.log2:
            return log2_quant(p, self.bits)
        return torch.round(p * (2 ** self.bits - 1)) / (2 ** self.bits - 1)


class _QWeight(nn.Module):
    """Weights stored as uint8 levels with a per-output-channel scale and zero point; input quantized."""

    def _init_weight(self, weight: torch.Tensor | None, shape, bits: int, act: ActQuant):
        self.bits, self.input_quant = int(bits), act
        self.register_buffer("weight_q", torch.zeros(shape, dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(shape[0]))
        self.register_buffer("weight_zero_point", torch.zeros(shape[0]))
        if weight is not None:
            flat = weight.detach().reshape(shape[0], -1)
            scale, zp = uniform_qparams(flat.amin(dim=1), flat.amax(dim=1), self.bits)
            view = (-1,) + (1,) * (len(shape) - 1)
            q = torch.clamp(torch.round(weight.detach() / scale.view(view)) + zp.view(view), 0, 2 ** self.bits - 1)
            self.weight_q.copy_(q.to(torch.uint8))
            self.weight_scale.copy_(scale)
            self.weight_zero_point.copy_(zp)

    def dequantized_weight(self) -> torch.Tensor:
        view = (-1,) + (1,) * (self.weight_q.dim() - 1)
        return (self.weight_q.float() - self.weight_zero_point.view(view)) * self.weight_scale.view(view)


class QLinear(_QWeight):
    def __init__(self, lin: nn.Linear, bits: int, act: ActQuant, copy_weights: bool = True):
        super().__init__()
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self._init_weight(lin.weight if copy_weights else None, tuple(lin.weight.shape), bits, act)
        self.bias = lin.bias

    def forward(self, x):
        return F.linear(self.input_quant(x), self.dequantized_weight(), self.bias)


class QConv2d(_QWeight):
    def __init__(self, conv: nn.Conv2d, bits: int, act: ActQuant, copy_weights: bool = True):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self._init_weight(conv.weight if copy_weights else None, tuple(conv.weight.shape), bits, act)
        self.bias = conv.bias

    def forward(self, x):
        return F.conv2d(self.input_quant(x), self.dequantized_weight(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


class QLayerNorm(nn.Module):
    """A LayerNorm whose input is PTF-quantized (or layer-wise when PTF is off)."""

    def __init__(self, norm: nn.LayerNorm, act: ActQuant):
        super().__init__()
        self.norm, self.input_quant = norm, act

    def forward(self, x):
        return self.norm(self.input_quant(x))


class QAttention(ReplacedAttention):
    """timm's ViT attention with quantized q, k, v, scores and probabilities."""

    label = "fq_vit attention"

    def __init__(self, attn: nn.Module, s: dict, make_act):
        super().__init__(attn)
        self.qkv_quant, self.score_quant = make_act(), make_act()
        self.prob_quant = AttnProbQuant(s["attn_bits"], log2=s["lis"])

    def forward(self, x, attn_mask=None, is_causal: bool = False):
        self.check_mask(attn_mask, is_causal)
        B, N, _ = x.shape
        q, k, v = self.split_heads(self.qkv_quant(self.qkv(x)), B, N)
        scores = self.score_quant((q * self.scale) @ k.transpose(-2, -1))
        probs = self.prob_quant(scores.softmax(dim=-1))
        return self.merge_heads(probs @ v, B, N)


def settings(step: dict) -> dict:
    return {k: step.get(k, v) for k, v in DEFAULTS.items()}


def quantize_model(model: nn.Module, s: dict, copy_weights: bool = True) -> nn.Module:
    """Swap in the simulated-quantization modules, in place (activation quantizers uncalibrated)."""
    def make_act(channels: int = 0) -> ActQuant:
        return ActQuant(s["act_bits"], s["observer"], channels, s["ptf_k"], s["percentile"], s["ema"])

    for block in model.blocks:
        block.attn = QAttention(block.attn, s, make_act)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, QLinear(child, s["weight_bits"], make_act(), copy_weights))
            elif type(child) is nn.Conv2d:
                setattr(parent, name, QConv2d(child, s["weight_bits"], make_act(), copy_weights))
            elif isinstance(child, nn.LayerNorm):
                channels = child.normalized_shape[-1] if s["ptf"] else 0
                setattr(parent, name, QLayerNorm(child, make_act(channels)))
    return model


def set_mode(model: nn.Module, mode: str) -> None:
    for m in model.modules():
        if isinstance(m, (ActQuant, AttnProbQuant)):
            m.mode = mode


def calibrate(model: nn.Module, images: torch.Tensor, batch_size: int, before_freeze=None) -> nn.Module:
    """Observe the activations on ``images`` (already adapted to the model), then freeze every quantizer.

    ``before_freeze(model)``, if given, sees the observers' statistics before they become scales."""
    set_mode(model, "calibrate")
    model.eval()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
    if before_freeze is not None:
        before_freeze(model)
    for m in model.modules():
        if isinstance(m, ActQuant):
            m.freeze()
    set_mode(model, "quant")
    return model


VARIANTS = (  # (label, ptf, lis): the ablation of the two tricks under one calibration
    ("min-max LayerNorm inputs, uniform attention", False, False),
    ("PTF, uniform attention", True, False),
    ("min-max LayerNorm inputs, LIS attention", False, True),
    ("PTF + LIS (FQ-ViT)", True, True),
)


def _figure_stats(model: nn.Module, images: torch.Tensor, batch_size: int) -> dict:
    """Calibrate ``model`` and keep, from the same pass, the per-channel min/max of the last
    LayerNorm's inputs and the first layer's attention probabilities (the study's Figure 1)."""
    stats: dict = {"probs": []}
    hook = model.blocks[0].attn.prob_quant.register_forward_hook(
        lambda mod, inp, out: stats["probs"].append(inp[0].detach().flatten()[:200_000].cpu()))

    def keep(m):
        norms = [q for q in m.modules() if isinstance(q, QLayerNorm)]
        stats["ln_min"], stats["ln_max"] = norms[-1].input_quant.channel_range()

    calibrate(model, images, batch_size, before_freeze=keep)
    hook.remove()
    stats["probs"] = torch.cat(stats["probs"])
    return stats


def plot_figure1(stats: dict, bits: int, out: str, title: str) -> None:
    """The study's Figure 1 from this model's calibration data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitcompress.artifacts import atomic_path

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
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
    for k in range(1, top + 1):
        ax2.axvline(k / top, color="tab:orange", linewidth=0.8, label="uniform levels" if k == 1 else None)
    for q in range(top):
        ax2.axvline(2.0 ** -q, color="tab:purple", linestyle="--", linewidth=0.8, label="log2 levels" if q == 0 else None)
    ax2.legend(loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def ablation(parent: str, data_file: str, step: dict, csv: str, md: str, figure: str, dataset: str,
             device: str = "cpu", seed: int = 0, eval_batch_size: int = 256) -> list[dict]:
    """Accuracy of the four PTF/LIS combinations under the step's calibration, plus Figure 1."""
    from vitcompress.artifacts import atomic_path
    from vitcompress.data import InputAdapter, PreparedData
    from vitcompress.measure import evaluate

    art = Artifact.load(parent)
    s = settings(step)
    img_size = art.arch["kwargs"]["img_size"]
    images = calibration_images(data_file, img_size, int(s["calib_images"]), device, seed)
    data = PreparedData(data_file)
    adapter = InputAdapter(data.meta, img_size, device)
    float_acc = evaluate(art.build(), data.loader("test", eval_batch_size), adapter, device)["top1"]
    rows = [{"variant": "float (no quantization)", "ptf": None, "lis": None, "accuracy": float_acc}]
    stats: dict = {}
    for label, ptf, lis in VARIANTS:
        model = quantize_model(art.build(), {**s, "ptf": ptf, "lis": lis}).to(device)
        if ptf and lis:  # FQ-ViT proper: its calibration pass also gives Figure 1's data
            stats = _figure_stats(model, images, int(s["calib_batch_size"]))
        else:
            calibrate(model, images, int(s["calib_batch_size"]))
        acc = evaluate(model, data.loader("test", eval_batch_size), adapter, device)["top1"]
        rows.append({"variant": label, "ptf": ptf, "lis": lis, "accuracy": acc})
        log.info("%s fq_vit ablation: %s -> %.2f%%", dataset, label, acc)
    plot_figure1(stats, int(s["attn_bits"]), figure, f"{dataset}: FQ-ViT calibration data ({len(images)} images)")

    header = ("variant", "ptf", "lis", "accuracy")
    with atomic_path(csv) as tmp:
        tmp.write_text(",".join(header) + "\n" + "".join(
            ",".join("" if r[h] is None else str(r[h]) for h in header) + "\n" for r in rows))
    lines = [f"# FQ-ViT ablation: {dataset}", "",
             f"W{s['weight_bits']}A{s['act_bits']}, attention {s['attn_bits']} bits, observer `{s['observer']}`, "
             f"{len(images)} calibration images; top-1 accuracy on the test split.", "",
             "| Variant | Accuracy (%) |", "|---|---:|"]
    lines += [f"| {r['variant']} | {r['accuracy']:.2f} |" for r in rows]
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return rows


def _spec(step: dict) -> dict:
    s = settings(step)
    return {"method": "fq_vit", **{k: s[k] for k in ("weight_bits", "act_bits", "attn_bits", "ptf", "lis",
                                                      "ptf_k", "observer", "percentile", "ema")}}


@register
class FQViT(Method):
    name = "fq_vit"
    exportable = False  # simulated quantization (see the module docstring)
    keys = {"weight_bits": int, "act_bits": int, "attn_bits": int, "observer": str, "calib_images": int,
            "calib_batch_size": int, "ptf": bool, "lis": bool, "ptf_k": int, "percentile": (int, float),
            "ema": (int, float)}

    @classmethod
    def check_model(cls, model, step):
        vit_blocks(model, "FQ-ViT")

    @classmethod
    def check_step(cls, step, where, profile):
        super().check_step(step, where, profile)
        s = settings(step)
        for key in ("weight_bits", "act_bits"):
            if not 2 <= s[key] <= 8:
                raise ConfigError(f"params.yaml: {where}.{key} = {s[key]!r}: use 2 to 8 bits (stored as uint8).")
        if not 1 <= s["attn_bits"] <= 8:
            raise ConfigError(f"params.yaml: {where}.attn_bits = {s['attn_bits']!r}: use 1 to 8 bits.")
        if s["observer"] not in OBSERVERS:
            raise ConfigError(f"params.yaml: {where}.observer = {s['observer']!r}: use one of {', '.join(OBSERVERS)}.")
        for key in ("calib_images", "calib_batch_size"):
            if s[key] < 1:
                raise ConfigError(f"params.yaml: {where}.{key} = {s[key]!r} must be at least 1 image.")
        if not 0 <= s["ptf_k"] <= 8:
            raise ConfigError(f"params.yaml: {where}.ptf_k = {s['ptf_k']!r}: use 0 to 8 (factors 2^0..2^K).")
        if not 50 < s["percentile"] <= 100:
            raise ConfigError(f"params.yaml: {where}.percentile = {s['percentile']!r}: use a value in (50, 100].")
        if not 0 <= s["ema"] < 1:
            raise ConfigError(f"params.yaml: {where}.ema = {s['ema']!r}: the EMA decay must be in [0, 1).")

    def run(self, ctx: StepContext) -> Artifact:
        step, parent = ctx.step, ctx.parent
        if parent.quantized is not None or parent.meta.get("cpu_only"):
            raise ValueError(f"step {step['id']!r} (fq_vit) needs a float model; put it right after a float step.")
        s = settings(step)
        img_size = parent.arch["kwargs"]["img_size"]
        images = calibration_images(ctx.data_file, img_size, int(s["calib_images"]), ctx.device, ctx.seed)
        model = quantize_model(parent.build(), s).to(ctx.device)
        calibrate(model, images, int(s["calib_batch_size"]))
        log.info("%s: calibrated on %d training images (observer %s, PTF %s, LIS %s)", step["id"], len(images),
                 s["observer"], s["ptf"], s["lis"])
        steps = parent.meta.get("steps", []) + [{"id": step["id"], "method": self.name,
                                                 "calib_images": len(images)}]
        return parent.child(model.cpu(), _spec(step), steps=steps, simulated=True)

    @classmethod
    def restructure(cls, model, spec):
        model = quantize_model(model, spec, copy_weights=False)
        set_mode(model, "quant")
        return model

    @classmethod
    def untrained(cls, model, step):
        spec = _spec(step)
        model = quantize_model(model, settings(step))
        set_mode(model, "quant")  # uncalibrated scales: fine for size, and it is never timed
        return model, spec

    @classmethod
    def untrained_meta(cls, step):
        return {"simulated": True}
