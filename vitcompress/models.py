"""Every model comes from ``timm.create_model``; this module only decides its arguments."""
from __future__ import annotations

import logging
from pathlib import Path

import torch.nn as nn

from vitcompress.errors import PretrainedMismatch, PretrainedUnavailable  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


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


def check_tiling(arch: dict) -> None:
    """A patch size that does not tile the input is an error: timm's patch embedding would silently drop
    the last rows and columns of every image."""
    kw = arch["kwargs"]
    patch = kw.get("patch_size")
    if patch is None or "img_size" not in kw:
        return
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    h, w = kw["img_size"]
    if h % ph or w % pw:
        raise ValueError(
            f"patch_size = {patch} does not tile the {h}x{w} input (the last {h % ph} row(s) and {w % pw} "
            f"column(s) of every image would be dropped); choose a patch size that divides {h} and {w}, "
            f"or change image_size / image_scale.")


def _file_state_dict(path: Path, mmap: bool = False) -> dict:
    """The tensors of a weights file, without running code: safetensors, or torch.save'd with
    ``weights_only``; a checkpoint that wraps them (``state_dict``/``model``) is unwrapped."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        try:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError:  # mmap needs torch.save's zip format; an older file is read whole
                if not mmap:
                    raise
                sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise PretrainedMismatch(f"pretrained_file = {str(path)!r} cannot be read as a weights file without "
                                     f"running code ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}).") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise PretrainedMismatch(f"pretrained_file = {str(path)!r} is not a state dict (a mapping of names to tensors).")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def load_pretrained_file(model: nn.Module, name: str, path: str | Path) -> dict:
    """Load a local weights file into ``model``: every tensor but the classifier head must be there
    (timm's own adaptations apply, e.g. a position embedding resized to another input); a head of
    another class count is left new. Returns what loaded: {"matched", "expected", "new_head"}.
    On a model built on the meta device this only checks the file (memory-mapped, so cheaply)."""
    import sys

    path = Path(path)
    on_meta = any(p.is_meta for p in model.parameters())
    sd = _file_state_dict(path, mmap=on_meta)
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            sd = filter_fn(sd, model)
        except Exception:  # not the layout the filter knows: the key check below says what is wrong
            pass
    own = model.state_dict()
    heads = model.pretrained_cfg.get("classifier") or "head"
    heads = (heads,) if isinstance(heads, str) else tuple(heads)

    def is_head(key: str) -> bool:
        return any(key == h or key.startswith(h + ".") for h in heads)

    body = [k for k in own if not is_head(k)]
    matched = [k for k in body if k in sd and sd[k].shape == own[k].shape]
    if len(matched) < len(body):
        missing = [k for k in body if k not in sd]
        wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in body if k in sd and k not in matched]
        detail = (f"missing e.g. {', '.join(missing[:3])}" if missing else "") + \
                 ("; " if missing and wrong else "") + (f"wrong shape: {', '.join(wrong[:3])}" if wrong else "")
        raise PretrainedMismatch(
            f"pretrained_file = {str(path)!r}: only {len(matched)} of the {len(body)} tensors of {name} "
            f"(its classifier head aside) are in the file ({detail}). It holds another model's weights: point "
            f"pretrained_file at a {name} checkpoint in timm's format, or set `pretrained: false`.")
    head_keys = [k for k in own if is_head(k)]
    keep_head = all(k in sd and sd[k].shape == own[k].shape for k in head_keys)
    load = {k: sd[k] for k in matched + (head_keys if keep_head else [])}
    if on_meta:
        return {"matched": len(matched), "expected": len(body), "new_head": not keep_head}
    model.load_state_dict(load, strict=False)
    log.info("pretrained %s: %d of %d tensors from %s (%s head)", name, len(load), len(own), path,
             "pretrained" if keep_head else "new")
    return {"matched": len(matched), "expected": len(body), "new_head": not keep_head}


def create(arch: dict, pretrained: bool = False, pretrained_file: str | None = None) -> nn.Module:
    import timm  # here, not at the top: the workflow imports this package to plan jobs, timm costs ~3 s

    check_tiling(arch)
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
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_pretrained_file(model, name, path)
        return model
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
    if callable(getattr(model, "num_params", None)):  # another runtime's model (vitcompress.runtimes: OrtModule, OvModule)
        return int(model.num_params())
    total = sum(p.numel() for p in model.parameters())
    total += sum(b.numel() for name, b in model.named_buffers() if name.endswith("weight_q"))
    for m in model.modules():
        if hasattr(m, "_packed_params") and callable(getattr(m, "weight", None)):
            total += m.weight().numel()
            bias = m.bias() if callable(getattr(m, "bias", None)) else None
            total += 0 if bias is None else bias.numel()
    return total


def vit_blocks(model: nn.Module, needs: str) -> list:
    """The transformer blocks of a timm ViT whose attention has a fused ``qkv`` projection and whose
    MLP has ``fc1``/``fc2``: what attention replacements, pruning and FQ-ViT work on. ``needs``: who asks."""
    blocks = list(getattr(model, "blocks", []) or [])
    if not blocks:
        raise ValueError(f"{needs} needs a ViT with transformer `blocks`; {type(model).__name__} has none")
    for i, b in enumerate(blocks):
        attn, mlp = getattr(b, "attn", None), getattr(b, "mlp", None)
        if not isinstance(getattr(attn, "qkv", None), nn.Linear):
            raise ValueError(f"{needs} needs timm's plain ViT attention (a fused qkv Linear); block {i} has "
                             f"{type(attn).__name__}")
        if getattr(attn, "gate", None) is not None:
            raise ValueError(f"{needs} does not support gated attention (block {i})")
        if not (isinstance(getattr(mlp, "fc1", None), nn.Linear) and isinstance(getattr(mlp, "fc2", None), nn.Linear)):
            raise ValueError(f"{needs} needs timm's plain MLP (fc1, fc2); block {i} has {type(mlp).__name__}")
    return blocks


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

