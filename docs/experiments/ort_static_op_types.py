"""Does quantizing fewer operator types make ORT's static int8 ViT-B/16 faster on this CPU?

ORT's static quantizer puts Q/DQ pairs around every operator type it knows (Add, Mul, LayerNormalization, ...),
not only the matrix products. This quantizes the same ViT-B/16 (random weights, batch 8) three ways, as the
project's `ort_int8_static` does otherwise (QDQ, per-channel 7-bit weights, min-max on 16 random images, softmax
and the head float): every operator type, MatMul and Conv only, MatMul, Conv and Add; prints the Q/DQ counts and
each one's speed-up over PyTorch eager fp32 on 2 threads, calls alternated, order rotated every round.

    python docs/experiments/ort_static_op_types.py 8     # 8 rounds (about 5 minutes on 2 cores)
"""
import collections
import statistics
import sys
import tempfile

import onnx
import timm
import torch
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
from onnxruntime.quantization import quantize_static as ort_quantize_static

from vitcompress.measure import time_alternating
from vitcompress.runtimes.onnxruntime import INPUT, OrtModule, _Batches, export

VARIANTS = {"every type": None, "MatMul, Conv": ["MatMul", "Conv"], "MatMul, Conv, Add": ["MatMul", "Conv", "Add"]}


def quantize(f32: str, out: str, calib: torch.Tensor, ops) -> None:
    floats = [n.name for n in onnx.load(f32).graph.node if n.op_type in ("Gemm", "Softmax")]
    ort_quantize_static(
        f32, out, _Batches(calib, 8, INPUT), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=floats, extra_options={"CalibStridedMinMax": 1, "OpTypesToExcludeOutputQuantization": ["MatMul"]},
        **({} if ops is None else {"op_types_to_quantize": ops}))
    counts = collections.Counter(n.op_type for n in onnx.load(out).graph.node)
    print(f"{out.rsplit('/', 1)[1]}: {counts['QuantizeLinear']} QuantizeLinear, {counts['DequantizeLinear']} DequantizeLinear")


def main(rounds: int) -> None:
    torch.set_num_threads(2)
    model = timm.create_model("vit_base_patch16_224", num_classes=10).eval()
    x = torch.randn(8, 3, 224, 224)
    tmp = tempfile.mkdtemp()
    f32 = f"{tmp}/f32.onnx"
    onnx.save(export(model, x), f32)
    calib = torch.randn(16, 3, 224, 224)
    models = {"PyTorch fp32": model}
    for i, (name, ops) in enumerate(VARIANTS.items()):
        path = f"{tmp}/variant{i}.onnx"
        quantize(f32, path, calib, ops)
        models[name] = OrtModule(path)  # the session the project's rows are timed with
    names = list(models)
    # calls alternated, the order rotated every round (the project's own timing loop)
    times = dict(zip(names, time_alternating([lambda m=m: m(x) for m in models.values()], False, 1, rounds)))
    for k in names:
        ratios = [b / t for b, t in zip(times["PyTorch fp32"], times[k])]
        print(f"{k:18s} {statistics.median(times[k]) * 1000:6.0f} ms  speed-up {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
