"""How much faster can int8 be than float on this CPU? ViT-B/16's four GEMMs, kernel against kernel.

A whole-model int8 speed-up is bounded by what its matrix products gain. This times, for the GEMM shapes of
ViT-B/16 at batch 8 (1576 token rows: qkv 768->2304, proj 768->768, fc1 768->3072, fc2 3072->768), PyTorch's
float32 matmul (what eager fp32 runs) against ONNX Runtime's integer GEMM (MatMulInteger: u8 activations,
s8 weights, int32 sums, the kernel under its static and dynamic int8), each on the same threads, calls
alternated; prints each shape's GFLOP/s (or GOP/s) and the FLOP-weighted ratio, the int8 ceiling for the
GEMM share of the model.

    python docs/experiments/int8_gemm_limit.py              # 2 threads, 30 alternated rounds (about a minute)
    python docs/experiments/int8_gemm_limit.py --threads 4

Without VNNI, u8 x s8 products are summed in 16 bits (VPMADDUBSW) then 32 (VPMADDWD): about twice the float
FMA rate at best; with VNNI one instruction does both (about four times).
"""
import argparse
import statistics
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from vitcompress.measure import time_alternating

ROWS = 8 * 197  # batch 8 x 197 tokens
SHAPES = {"qkv": (768, 2304), "proj": (768, 768), "fc1": (768, 3072), "fc2": (3072, 768)}


def int8_session(k: int, n: int, threads: int):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.integers(-64, 64, (k, n), dtype=np.int8), "w")  # 7-bit, as reduce_range
    a_zp = numpy_helper.from_array(np.array(128, np.uint8), "a_zp")
    node = helper.make_node("MatMulInteger", ["x", "w", "a_zp"], ["y"])
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("x", TensorProto.UINT8, [ROWS, k])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [ROWS, n])], [w, a_zp])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # IR 8: any ORT since 1.13
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    with tempfile.NamedTemporaryFile(suffix=".onnx") as f:
        onnx.save(model, f.name)
        return ort.InferenceSession(f.name, opts, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    flops_f, flops_i, total = 0.0, 0.0, 0.0
    print(f"{'GEMM':6} {'fp32 GFLOP/s':>13} {'int8 GOP/s':>11} {'ratio':>6}")
    for name, (k, n) in SHAPES.items():
        x = torch.randn(ROWS, k)
        w = torch.randn(k, n)
        xq = np.random.default_rng(1).integers(0, 256, (ROWS, k), dtype=np.uint8)
        sess = int8_session(k, n, args.threads)
        fns = [lambda: torch.matmul(x, w), lambda: sess.run(None, {"x": xq})]
        times = time_alternating(fns, False, 3, args.rounds)  # alternated, order rotated (the project's loop)
        ops = 2.0 * ROWS * k * n
        tf, ti = statistics.median(times[0]), statistics.median(times[1])
        print(f"{name:6} {ops / tf / 1e9:13.1f} {ops / ti / 1e9:11.1f} {tf / ti:6.2f}")
        flops_f, flops_i, total = flops_f + tf, flops_i + ti, total + ops
    print(f"{'all':6} {total / flops_f / 1e9:13.1f} {total / flops_i / 1e9:11.1f} {flops_f / flops_i:6.2f}"
          "   (time-weighted over one block's four GEMMs)")


if __name__ == "__main__":
    main()
