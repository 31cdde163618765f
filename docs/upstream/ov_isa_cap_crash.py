"""Reproduction for OpenVINO: which ``ONEDNN_MAX_CPU_ISA`` caps the CPU plugin survives on a CPU with more.

oneDNN documents ``ONEDNN_MAX_CPU_ISA`` as the way to run the kernels of an older CPU on a newer one, and
OpenVINO's CPU plugin honours it (the kernels it picks change). On an Intel Xeon with AVX-512 VNNI and AMX,
OpenVINO 2026.4.1 with ``ONEDNN_MAX_CPU_ISA=AVX2`` ended with SIGSEGV inside ``CompiledModel.infer`` for a small
DeiT (timm's ``deit_tiny_distilled_patch16_224`` at width 24, 2 heads: 18 tokens of head size 12) while a
small ViT (16 tokens of head size 16) ran. This script runs each model, as an f32 IR and, where NNCF is
installed, as NNCF's int8 IR, under each cap in a process of its own, and prints per cap the exit status
and the largest difference from PyTorch's logits:

    python docs/upstream/ov_isa_cap_crash.py [--caps AVX2,AVX512_CORE,...] [--threads 4]

Needs torch, timm and openvino (nncf for the int8 rows). An exit status below 0 is the signal that ended the
process (-11: SIGSEGV). Expected: every cap runs every model, and the f32 rows agree with PyTorch to float
rounding. On a CPU without a cap's instruction sets the cap changes nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CAPS = ("ALL", "AVX512_CORE_AMX", "AVX512_CORE_VNNI", "AVX512_CORE", "AVX2_VNNI", "AVX2")
# (name, timm model, kwargs): the two shapes seen, and one varied at a time (head size; the two tokens)
MODELS = (
    ("deit_w24_h2", "deit_tiny_distilled_patch16_224", {"embed_dim": 24, "num_heads": 2, "depth": 3}),
    ("vit_w64_h4", "vit_small_patch16_224", {"embed_dim": 64, "num_heads": 4, "depth": 4, "global_pool": "avg",
                                             "class_token": False}),
    ("deit_w32_h2", "deit_tiny_distilled_patch16_224", {"embed_dim": 32, "num_heads": 2, "depth": 3}),
    ("vit_w24_h2", "vit_small_patch16_224", {"embed_dim": 24, "num_heads": 2, "depth": 3, "global_pool": "avg",
                                             "class_token": False}),
)
COMMON = {"patch_size": 4, "img_size": 16, "in_chans": 1, "num_classes": 10}
BATCH = 8


def build(work: Path) -> list[tuple[str, str]]:
    """Each model exported to an f32 IR (and an NNCF int8 IR), with PyTorch's logits beside it."""
    import numpy as np
    import timm
    import torch

    sys.modules["openvino_telemetry"] = None  # OpenVINO's no-op stub: no usage data leaves the machine
    import openvino as ov

    torch.manual_seed(0)
    x = torch.randn(BATCH, 1, 16, 16)
    irs = []
    for name, arch, kwargs in MODELS:
        model = timm.create_model(arch, pretrained=False, **COMMON, **kwargs).eval()
        with torch.inference_mode():
            np.save(work / f"{name}.logits.npy", model(x).numpy())
        ov_model = ov.convert_model(model, example_input=x)
        ov.save_model(ov_model, work / f"{name}.f32.xml")
        irs.append((name, "f32"))
        try:
            import nncf
        except ImportError:
            continue
        calib = nncf.Dataset([torch.randn(BATCH, 1, 16, 16).numpy() for _ in range(4)])
        int8 = nncf.quantize(ov_model, calib, model_type=nncf.ModelType.TRANSFORMER, subset_size=32)
        ov.save_model(int8, work / f"{name}.int8.xml")
        irs.append((name, "int8"))
    np.save(work / "x.npy", x.numpy())
    return irs


def child(xml: str, x: str, threads: int) -> None:
    """In its own process, the cap already in the environment: compile, infer, print the logits' file."""
    import numpy as np

    sys.modules["openvino_telemetry"] = None
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
    out = compiled(np.load(x))[0]
    np.save(xml + ".out.npy", out)


def run_one(work: Path, name: str, kind: str, cap: str, threads: int) -> dict:
    import numpy as np

    env = {**os.environ}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if cap != "ALL":
        env["ONEDNN_MAX_CPU_ISA"] = cap
    xml = work / cap / f"{name}.{kind}.xml"
    xml.parent.mkdir(exist_ok=True)
    for suffix in (".xml", ".bin"):
        (xml.parent / f"{name}.{kind}{suffix}").write_bytes((work / f"{name}.{kind}{suffix}").read_bytes())
    proc = subprocess.run([sys.executable, __file__, "--child", str(xml), str(work / "x.npy"), str(threads)],
                          env=env, capture_output=True, text=True, timeout=300)
    row = {"model": name, "ir": kind, "cap": cap, "exit": proc.returncode}
    if proc.returncode == 0:
        got, want = np.load(str(xml) + ".out.npy"), np.load(work / f"{name}.logits.npy")
        row["max_abs_diff"] = float(np.abs(got - want).max())
        row["same_top1"] = float((got.argmax(-1) == want.argmax(-1)).mean())
    else:
        row["stderr"] = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else []
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--caps", default=",".join(CAPS))
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 4) // 4))
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        irs = build(work)
        import openvino as ov

        print("OpenVINO", ov.__version__, "| CPU:", ov.Core().get_property("CPU", "FULL_DEVICE_NAME"), flush=True)
        jobs = [(n, k, c) for c in a.caps.split(",") for n, k in irs]
        with ThreadPoolExecutor(a.jobs) as pool:
            rows = list(pool.map(lambda j: run_one(work, *j, a.threads), jobs))
    for r in rows:
        what = (f"max |diff| {r['max_abs_diff']:.2e}, top-1 agreement {r['same_top1']:.0%}" if r["exit"] == 0
                else f"exit {r['exit']} {' '.join(r['stderr'])}")
        print(f"{r['cap']:17s} {r['model']:12s} {r['ir']:5s} {what}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
