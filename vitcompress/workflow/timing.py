"""A timing job: a row's model timed call by call beside the first row's and its parent's on this machine,
an int8 row's accuracy measured again with this machine's kernels, and the notes a timing adds to a row.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

from vitcompress.data import InputAdapter, PreparedData
from vitcompress.io import write_json
from vitcompress.measure import evaluate, pack_bits, speed
from vitcompress.methods import build_model, get_method
from vitcompress.runtimes import get_runtime, load_artifact
from vitcompress.sections import MeasureSettings
from vitcompress.workflow.jobs import use_threads

log = logging.getLogger("vitcompress")


def input_shape_of(arch: dict) -> list[int]:
    return [int(arch["kwargs"]["in_chans"]), *map(int, arch["kwargs"]["img_size"])]


def measure_model(model, artifact_meta: dict, input_shape, measure: MeasureSettings | dict, fp: dict,
                  baseline: nn.Module | None = None, is_baseline: bool = False,
                  parent: nn.Module | None = None, parent_cpu_only: bool = False) -> dict:
    """CPU timings always; GPU timings only when CUDA is there and the model can run on it.
    With a ``baseline`` model, each timing also gives the speed-up over it, timed side by side;
    ``is_baseline``: the model is the baseline, whose speed-up is 1 by definition (not timed twice).
    ``parent``: the model this one was made from (the baseline object itself when it is), timed in the
    same alternation for the speed-up of the chain's last step alone (on the CPU only when
    ``parent_cpu_only``)."""
    measure = MeasureSettings.of(measure, "measure")
    common = dict(warmup=measure.warmup, repeats=measure.repeats, rounds=measure.rounds)
    out = {"fingerprint": fp, "notes": []}
    if artifact_meta.get("simulated"):
        out.update(cpu=None, gpu=None)
        out["notes"].append("simulated (fake-quantized) model: timing the simulation would not show int8 speed.")
        return out
    out["cpu"] = speed(model, input_shape, measure.batch_size, "cpu",
                       threads=measure.cpu_threads, baseline=baseline, parent=parent, **common)
    gpu_ok = measure.gpu and torch.cuda.is_available()
    if gpu_ok and not artifact_meta.get("cpu_only"):
        gpu_parent = None if parent_cpu_only else parent
        out["gpu"] = speed(model, input_shape, measure.batch_size, "cuda", baseline=baseline,
                           parent=gpu_parent, **common)
    else:
        out["gpu"] = None
        if artifact_meta.get("runtime", "pytorch") != "pytorch":
            rt = get_runtime(artifact_meta["runtime"])
            out["notes"].append(f"{rt.label} rows run on {rt.cpu_backend} only: no GPU timing.")
        elif artifact_meta.get("cpu_only"):
            out["notes"].append("CPU-only model: no GPU timing.")
        elif not gpu_ok:
            out["notes"].append("no CUDA GPU here: no GPU timing.")
    for dev in ("cpu", "gpu"):
        if is_baseline and out[dev]:
            out[dev]["vs_baseline"] = 1.0
    out["row_notes"] = slower_int8_note(artifact_meta, out["cpu"], fp)  # about this row: the table names it
    return out


def machine_dependent(meta: dict) -> bool:
    """Whether an artifact's accuracy can depend on the CPU that runs it: its last step makes an int8 model
    (integer kernels differ by instruction set, e.g. 16-bit saturation without VNNI)."""
    last = (meta.get("steps") or [{}])[-1].get("method")
    return last is not None and get_method(last).makes == "int8"


SLOWER_INT8 = ("int8 is slower than its float parent on this CPU: without VNNI, u8×s8 products are summed through "
               "16-bit intermediates (VPMADDUBSW + VPMADDWD), about the float FMA rate, and the quantize / "
               "dequantize steps around each layer cost more than the narrower arithmetic saves.")


def slower_int8_note(meta: dict, cpu: dict | None, fp: dict) -> list[str]:
    """The table note for an int8 row timed slower than its float parent on an x86 CPU without VNNI."""
    from vitcompress.measure import has_vnni

    ci = (cpu or {}).get("vs_parent_ci") or [None, None]
    slower = ci[1] is not None and ci[1] < 1 or ci[1] is None and (cpu or {}).get("vs_parent", 1) < 1
    if not cpu or not machine_dependent(meta) or not slower:
        return []
    flags = fp.get("int8_flags", fp.get("cpu_flags") or [])
    return [SLOWER_INT8] if has_vnni(flags, fp.get("machine") or "") is False else []


def machine_accuracy(art, model, data_file: str, eval_batch_size: int) -> dict:
    """An int8 artifact's test top-1 as this machine's kernels compute it (no retraining), for the
    per-machine table: ``{"top1", "n", "per_image"}``."""
    data = PreparedData(data_file)
    adapter = InputAdapter(data.meta, art.arch["kwargs"]["img_size"], "cpu")
    acc = evaluate(model, data.loader("test", eval_batch_size), adapter, "cpu", per_image=True)
    return {"top1": acc["top1"], "n": acc["n"], "per_image": pack_bits(acc["correct1"])}


def measure_speed(artifact: str, out: str, measure: MeasureSettings | dict, fp: dict, baseline: str | None = None,
                  parent: str | None = None, data_file: str | None = None) -> None:
    """Time one artifact. ``fp`` is the workflow's hardware fingerprint: a changed one re-runs only this.

    ``baseline``: the artifact of the profile's baseline row (its first), timed call by call beside
    this one for a side-by-side speed-up (not timed when it is this artifact: its speed-up is 1).
    ``parent``: the artifact this one was made from (its chain minus the last step), timed in the same
    alternation for the last step's own speed-up (none for a root chain). ``data_file``: the prepared data
    set, on whose test split an int8 artifact's accuracy is measured again with this machine's kernels."""
    art = load_artifact(artifact)
    model = build_model(art)
    accuracy = None
    if data_file and machine_dependent(art.meta):
        measure = MeasureSettings.of(measure, "measure")
        use_threads(measure.cpu_threads)
        accuracy = machine_accuracy(art, model, data_file, measure.eval_batch_size)
    is_baseline = baseline is not None and Path(baseline).resolve() == Path(artifact).resolve()
    ref = build_model(load_artifact(baseline)) if baseline is not None and not is_baseline else None
    par, par_art = None, None
    if parent:
        par_art = load_artifact(parent)
        par = ref if baseline is not None and Path(parent).resolve() == Path(baseline).resolve() else \
            build_model(par_art)
    result = measure_model(model, art.meta, input_shape_of(art.arch), measure, fp, baseline=ref, is_baseline=is_baseline,
                           parent=par, parent_cpu_only=bool(par_art is not None and par_art.meta.get("cpu_only")))
    if accuracy is not None:
        result["accuracy"] = accuracy
    write_json(out, result)
