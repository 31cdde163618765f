"""Does ONNX Runtime's transformer optimizer or quant_pre_process speed up ViT-B/16 on this CPU?

ViT-B/16 (random weights), batch 8, 2 threads: each ORT path (f32; the transformer optimizer's graph, model_type
vit; static and dynamic int8 of each; static int8 after quant_pre_process) timed call by call beside PyTorch eager
fp32, the calls' order rotated every round; prints each path's median speed-up with its min and max.

    python docs/experiments/ort_transformer_optimizer.py 8      # 8 rounds (about 10 minutes on 2 cores)
    python docs/experiments/ort_transformer_optimizer.py 8 --torchscript

With ``--torchscript`` the graph comes from the older TorchScript exporter with timm's attention unfused (explicit
q @ k.T, softmax, @ v), the form ORT's attention fusion was written for; the fused operators' counts say whether
it matched, and dynamic int8 of the optimized graph is where a fused Attention would become QAttention.
"""
import statistics
import sys
import tempfile

import onnx
import onnxruntime as ort
import timm
import torch
from onnxruntime.quantization import QuantType
from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.optimizer import optimize_model

from vitcompress.measure import time_alternating
from vitcompress.runtimes.onnxruntime import INPUT, OUTPUT, export, quantize_static


def session(path: str):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 2, 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def torchscript_onnx(model, example: torch.Tensor, path: str) -> None:
    import warnings

    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), path, dynamo=False, opset_version=17, input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = True


def main(rounds: int, torchscript: bool = False) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    x, calib = torch.randn(8, 3, 224, 224), torch.randn(64, 3, 224, 224)
    d = tempfile.mkdtemp()
    paths = {"ort_f32": f"{d}/f32.onnx", "ort_f32_opt": f"{d}/opt.onnx"}
    if torchscript:
        torchscript_onnx(model, x[:2], paths["ort_f32"])
    else:
        onnx.save(export(model, x[:2]), paths["ort_f32"])
    opt = optimize_model(paths["ort_f32"], model_type="vit", num_heads=12, hidden_size=768, opt_level=0)
    print("fused:", opt.get_fused_operator_statistics())
    opt.save_model_to_file(paths["ort_f32_opt"])
    quant_pre_process(paths["ort_f32"], f"{d}/pre.onnx")
    for name, src in (("static", "ort_f32"), ("opt_static", "ort_f32_opt")):
        paths[name] = f"{d}/{name}.onnx"
        onnx.save(quantize_static(paths[src], calib, 8, reduce_range=True), paths[name])
    paths["pre_static"] = f"{d}/pre_static.onnx"
    onnx.save(quantize_static(f"{d}/pre.onnx", calib, 8, reduce_range=True), paths["pre_static"])
    for name, src in (("dynamic", "ort_f32"), ("opt_dynamic", "ort_f32_opt")):
        paths[name] = f"{d}/{name}.onnx"
        ort_quantize_dynamic(paths[src], paths[name], weight_type=QuantType.QInt8, reduce_range=True,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # for fused operators' outputs
    feed = x.numpy()
    fns = {"torch": lambda: model(x)}
    for name, path in paths.items():
        s = session(path)
        fns[name] = lambda s=s: s.run(None, {s.get_inputs()[0].name: feed})
    names = list(fns)
    # calls alternated, the order rotated every round (the project's own timing loop)
    times = dict(zip(names, time_alternating(list(fns.values()), False, 1, rounds)))
    for k in names:
        ratios = [a / b for a, b in zip(times["torch"], times[k])]
        print(f"{k:12s} speed-up {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--torchscript"]
    main(int(args[0]) if args else 8, torchscript="--torchscript" in sys.argv)
