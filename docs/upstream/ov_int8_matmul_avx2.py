"""Minimal reproduction for OpenVINO / NNCF: int8 MatMul of two activations (an attention's q·kᵀ) gives wrong
results on x86 CPUs without VNNI, and NNCF's overflow fix cannot help because neither input is a weight.

Needs only numpy and openvino. Run it on an AVX2-only CPU, or emulate a CPU without VNNI on one with it (at
AVX-512's own level where the CPU has AVX-512: an AVX2 cap crashed OpenVINO on an AMX Xeon,
docs/upstream/ov_isa_cap_crash.py):

    ONEDNN_MAX_CPU_ISA=AVX512_CORE python docs/upstream/ov_int8_matmul_avx2.py   # AVX2 without AVX-512

It builds q·kᵀ with a FakeQuantize (256 levels, the ranges NNCF's min-max statistics would give) on each input,
as ``nncf.quantize(model_type=TRANSFORMER)`` places them, and compares the CPU plugin's result with the same
graph whose FakeQuantize nodes are written out as float operations (which the plugin runs in f32, so it is the
quantization's exact math). Expected: they agree to float rounding (the two graphs describe the same
numbers). Seen on an AVX2-only AMD EPYC (Zen 3), OpenVINO 2026.4.1: relative errors of tens of percent,
from u8×s8 products summed pairwise in saturating int16 (VPMADDUBSW); with 7-bit inputs the error vanishes.
"""
import sys

import numpy as np

sys.modules["openvino_telemetry"] = None  # OpenVINO then uses its no-op stub: no usage data leaves the machine
import openvino as ov  # noqa: E402
import openvino.opset13 as ops  # noqa: E402


def fake_quantize(x, lo, hi, levels, as_float):
    lo_c, hi_c = ops.constant(np.float32(lo)), ops.constant(np.float32(hi))
    if not as_float:
        return ops.fake_quantize(x, lo_c, hi_c, lo_c, hi_c, levels)
    steps = ops.constant(np.float32(levels - 1))
    clamped = ops.minimum(ops.maximum(x, lo_c), hi_c)
    level = ops.round(ops.divide(ops.multiply(ops.subtract(clamped, lo_c), steps), ops.subtract(hi_c, lo_c)),
                      "half_to_even")
    return ops.add(ops.multiply(ops.divide(level, steps), ops.subtract(hi_c, lo_c)), lo_c)


def attention_logits(tokens, dim, levels, as_float):
    q = ops.parameter([1, tokens, dim], np.float32, name="q")
    k = ops.parameter([1, tokens, dim], np.float32, name="k")
    # q asymmetric (NNCF's mixed preset: u8), k symmetric (i8)
    qq = fake_quantize(q, 0.0, 4.0, levels, as_float)
    kq = fake_quantize(k, -4.0, 4.0 * (levels // 2 - 1) / (levels // 2), levels, as_float)
    return ov.Model([ops.matmul(qq, kq, False, True)], [q, k], "qk")


def main(tokens=197, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.0, 4.0, (1, tokens, dim)).astype(np.float32)
    k = rng.uniform(-4.0, 4.0, (1, tokens, dim)).astype(np.float32)
    core = ov.Core()
    print("OpenVINO", ov.__version__, "| CPU:", core.get_property("CPU", "FULL_DEVICE_NAME"))
    for levels in (256, 128):
        f32 = {"INFERENCE_PRECISION_HINT": "f32"}
        got = core.compile_model(attention_logits(tokens, dim, levels, False), "CPU", f32)([q, k])[0]
        want = core.compile_model(attention_logits(tokens, dim, levels, True), "CPU", f32)([q, k])[0]
        rel = np.abs(got - want).max() / np.abs(want).max()
        print(f"{levels} levels: largest error {rel:.2%} of the largest logit "
              f"({'WRONG' if rel > 1e-3 else 'ok'})")


if __name__ == "__main__":
    main()
