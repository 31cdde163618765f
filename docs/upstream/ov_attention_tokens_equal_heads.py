"""Minimal reproduction for OpenVINO: a ViT attention (qkv Linear, reshape, permute, scaled dot-product
attention, transpose back, reshape) compiled by the CPU plugin for a static input shape gives wrong results
when the number of tokens equals the number of heads; the same IR with a dynamic batch dimension is right.

Needs only torch and openvino (any x86 CPU):

    python docs/upstream/ov_attention_tokens_equal_heads.py

Every compile asks for f32 (INFERENCE_PRECISION_HINT): on a CPU with AVX512_BF16 or AMX the plugin's default is
bf16, whose rounding (about 2e-3 here) would hide the defect behind a larger error on every line.

Expected: every line's error is float rounding (about 1e-7). Seen with OpenVINO 2026.4.1 on AMD EPYCs (Zen 3, AVX2;
Zen 4, AVX-512 with VNNI and BF16): errors of 0.1 or more for static shapes when tokens == heads (4 = 4, 12 = 12),
rounding otherwise, and rounding for every dynamic-batch compile. Writing the attention by hand (softmax(q·kᵀ)·v) fails the same way.
It showed in vitcompress as ToMe on a 4-head ViT: merging brings a block to 4 tokens. Exit status 1 while the
defect is there, 0 once it is fixed.
"""
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F

sys.modules["openvino_telemetry"] = None  # OpenVINO then uses its no-op stub: no usage data leaves the machine
import openvino as ov  # noqa: E402


class Attention(torch.nn.Module):
    """timm's ViT attention, as written in its Attention module."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))


def errors(heads: int, tokens: int, batch: int = 8) -> tuple[float, float]:
    """Largest absolute difference from PyTorch: (dynamic batch, static shape)."""
    torch.manual_seed(0)
    x = torch.randn(batch, tokens, 16 * heads)
    model = Attention(16 * heads, heads).eval()
    with torch.no_grad():
        want = model(x).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ir = ov.convert_model(model, example_input=x[:2], input=[ov.PartialShape([-1, tokens, 16 * heads])])
    out = []
    for static in (False, True):
        m = ir.clone()
        if static:
            m.reshape({m.inputs[0]: ov.PartialShape(list(x.shape))})
        got = ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x.numpy())[0]
        out.append(float(np.abs(got - want).max()))
    return out[0], out[1]


def main() -> int:
    print(f"OpenVINO {ov.get_version()}")
    wrong = False
    for heads, tokens in ((4, 4), (4, 5), (12, 12), (12, 13)):
        dynamic, static = errors(heads, tokens)
        bad = max(dynamic, static) > 1e-4
        wrong |= bad
        print(f"heads={heads:2d} tokens={tokens:2d}: max error dynamic batch {dynamic:.1e}, static shape {static:.1e}"
              + ("   <- wrong" if bad else ""))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
