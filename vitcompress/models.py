"""Every model comes from ``timm.create_model``; this module only decides its arguments."""
from __future__ import annotations

import logging
from pathlib import Path

import torch.nn as nn

log = logging.getLogger(__name__)


class PretrainedUnavailable(RuntimeError):
    """Pretrained weights were asked for but can be neither downloaded nor read from a local file."""


def input_size(image_size, data_meta: dict, scale: int = 1) -> list[int]:
    """[H, W] the model sees: the data set's own size ("native") times ``scale``, or a square ``image_size``."""
    if image_size in (None, "native"):
        return [int(s) * int(scale) for s in data_meta["size"]]
    return [int(image_size), int(image_size)]


def arch_for(model_cfg: dict, data_meta: dict, image_size="native", image_scale: int = 1) -> dict:
    """The full, JSON-able description of an architecture: enough to rebuild it with no other input."""
    kwargs = dict(model_cfg.get("kwargs") or {})
    kwargs.update(
        num_classes=int(data_meta["num_classes"]),
        in_chans=int(data_meta["channels"]),
        img_size=input_size(image_size, data_meta, image_scale),
    )
    return {"timm": model_cfg["timm"], "kwargs": kwargs}


def create(arch: dict, pretrained: bool = False, pretrained_file: str | None = None) -> nn.Module:
    import timm  # here, not at the top: the workflow imports this package to plan jobs, timm costs ~3 s

    name, kwargs = arch["timm"], dict(arch["kwargs"])
    if "img_size" in kwargs and isinstance(kwargs["img_size"], list):
        kwargs["img_size"] = tuple(kwargs["img_size"])
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    if pretrained_file:
        path = Path(pretrained_file)
        if not path.exists():
            raise PretrainedUnavailable(
                f"pretrained_file = {pretrained_file!r} does not exist; point it at a weights file for {name} "
                f"(a state dict saved with torch.save or a .safetensors file)."
            )
        log.info("loading pretrained %s weights from %s", name, path)
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:  # no network, no hub, no such tag: all end the same way for the user
        raise PretrainedUnavailable(
            f"could not download pretrained weights for {name} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            f"Offline? Set `pretrained_file` for this model in params.yaml to a local weights file, "
            f"or set `pretrained: false`."
        ) from None


def count_params(model: nn.Module) -> int:
    """Parameters of the model, counting the packed int8 weights of torch.ao quantized layers and the
    stored integer weights of simulated-quantization layers (fq_vit's ``weight_q`` buffers) too."""
    total = sum(p.numel() for p in model.parameters())
    total += sum(b.numel() for name, b in model.named_buffers() if name.endswith("weight_q"))
    for m in model.modules():
        if hasattr(m, "_packed_params") and callable(getattr(m, "weight", None)):
            total += m.weight().numel()
            bias = m.bias() if callable(getattr(m, "bias", None)) else None
            total += 0 if bias is None else bias.numel()
    return total


class ReplacedAttention(nn.Module):
    """Base of modules that stand in for a timm ViT block's ``Attention`` (Nyström, fake-quantized).

    It adopts the original's submodules, so the state-dict keys and the trained weights stay the
    same; subclasses write only what happens between the qkv projection and the output projection.
    """

    label = "this attention replacement"

    def __init__(self, attn: nn.Module):
        super().__init__()
        if getattr(attn, "gate", None) is not None:
            raise ValueError(f"gated attention is not supported by {self.label}")
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        self.attn_dim, self.scale = attn.attn_dim, attn.scale
        self.qkv, self.q_norm, self.k_norm = attn.qkv, attn.q_norm, attn.k_norm
        self.attn_drop, self.norm, self.proj, self.proj_drop = attn.attn_drop, attn.norm, attn.proj, attn.proj_drop

    def check_mask(self, attn_mask, is_causal: bool) -> None:
        if attn_mask is not None or is_causal:
            raise ValueError(f"{self.label} does not support attention masks")

    def split_heads(self, qkv, B: int, N: int):
        """(B, N, 3·dim) qkv output -> q, k, v of shape (B, heads, N, head_dim), q/k-normalised."""
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self.q_norm(q), self.k_norm(k), v

    def merge_heads(self, x, B: int, N: int):
        """(B, heads, N, head_dim) attention output -> the block's output projection."""
        return self.proj_drop(self.proj(self.norm(x.transpose(1, 2).reshape(B, N, self.attn_dim))))

