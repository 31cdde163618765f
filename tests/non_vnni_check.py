"""Run by tests/test_int8_isa.py in a process of its own, with ``ONEDNN_MAX_CPU_ISA`` set before OpenVINO
loads (``vitcompress.measure.non_vnni_cap``: a CPU with VNNI runs the kernels of one without): an untrained DeiT-shaped model, whose q·kᵀ and
8-bit weights saturate 16-bit sums there, quantized by ``ov_int8`` with the full-8-bit recipe and with the
recipe ``auto`` picks; writes what happened as JSON.

    python tests/non_vnni_check.py DIGITS_FILE WORK_DIR
"""
import json
import sys
from pathlib import Path

import torch

from vitcompress.artifacts import Artifact
from vitcompress.data import InputAdapter, PreparedData
from vitcompress.io import read_json, seal, write_json
from vitcompress.measure import int8_flags
from vitcompress.methods import StepContext, build_model, get_method
from vitcompress.models import arch_for, create
from vitcompress.runtimes import load_artifact
from vitcompress.runtimes.openvino import int8_kernels
from vitcompress.train import fit

DEIT = {"timm": "deit_tiny_distilled_patch16_224", "kwargs": {"patch_size": 4, "embed_dim": 24, "depth": 3, "num_heads": 2}}


def main(digits_file: str, work: str) -> None:
    work = Path(work)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = PreparedData(digits_file)
    arch = arch_for(DEIT, data.meta)
    model = create(arch)
    # a few epochs: an untrained model predicts nearly one class, and nothing can disagree with one class
    fit(model, data, {"epochs": 3, "batch_size": 32, "lr": 0.003, "num_workers": 0, "warmup_epochs": 0},
        InputAdapter(data.meta, arch["kwargs"]["img_size"]), seed=0, desc="non-vnni")
    model.eval()
    # the validation labels are the float model's own predictions: a deployed model that computes its
    # quantization loses exactly the images on which it disagrees with it
    payload = torch.load(digits_file, weights_only=True)
    adapter = InputAdapter(data.meta, arch["kwargs"]["img_size"])
    with torch.inference_mode():
        payload["val_y"] = model(adapter(data.splits["val"][0])).argmax(-1)
    labelled = work / "labelled.pt"
    torch.save(seal(payload), labelled)

    def ctx(step, parent):
        return StepContext(step=step, dataset="digits", data_file=labelled, device="cpu", parent=parent)

    def saved(art, path):
        art.save(path)
        return load_artifact(path)

    parent = saved(Artifact(arch, model.state_dict(), [], {"steps": [{"id": "deit", "method": "train"}]}),
                   work / "deit.pt")
    ir = saved(get_method("ov")().run(ctx({"id": "ov", "method": "ov"}, parent)), work / "ir" / "model.xml")
    out = {"int8_flags": int8_flags()}
    full8 = {"id": "ov_int8", "method": "ov_int8", "subset_size": 64, "overflow_fix": "disable", "attention": "int8",
             "max_gap": 0.5}
    try:
        get_method("ov_int8")().run(ctx(full8, ir))
        out["full8_error"] = None
    except ValueError as exc:
        out["full8_error"] = str(exc)
    # what it measured, without the bound: the same step with max_gap lifted, saved to read its kernels
    lifted = saved(get_method("ov_int8")().run(ctx({**full8, "max_gap": 100.0}, ir)), work / "full8" / "model.xml")
    out["full8_check"] = lifted.meta["deploy_check"]
    out["full8_kernels"] = int8_kernels(lifted.path, (8, *map(int, [arch["kwargs"]["in_chans"], *arch["kwargs"]["img_size"]])))
    auto = saved(get_method("ov_int8")().run(ctx({"id": "ov_int8", "method": "ov_int8", "subset_size": 64,
                                                  "max_gap": 0.5}, ir)), work / "auto" / "model.xml")
    out["auto_check"], out["auto_spec"] = auto.meta["deploy_check"], auto.transforms[-1]
    with torch.inference_mode():
        x = adapter(data.splits["val"][0][:64])
        out["auto_vs_float_agreement"] = float((build_model(auto)(x).argmax(-1) == model(x).argmax(-1)).float().mean())
    write_json(work / "result.json", out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    print(json.dumps(read_json(Path(sys.argv[2]) / "result.json"))[:200])
