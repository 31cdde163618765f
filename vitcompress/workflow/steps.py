"""A step job: run one step of a chain on its parent's artifact, save it, evaluate it (accuracy, size and
parameters: nothing that depends on the hardware); and the FQ-ViT ablation of an fq_vit step's parent.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from vitcompress.artifacts import Artifact
from vitcompress.data import InputAdapter, PreparedData
from vitcompress.io import write_json
from vitcompress.measure import evaluate, file_size_mb, pack_bits, storage_sizes
from vitcompress.methods import StepContext, build_model, get_method
from vitcompress.models import count_params
from vitcompress.runtimes import artifact_files, describe, load_artifact
from vitcompress.train import seed_everything
from vitcompress.workflow.jobs import resolve_device, use_threads

log = logging.getLogger("vitcompress")


def run_step(step: dict, dataset: str, data_file: str, out: str, device: str = "auto", seed: int = 0,
             threads: int = 1, parent: str | None = None, extra: dict | None = None,
             accuracy_out: str | None = None, eval_batch_size: int = 256) -> None:
    """Run one step of a chain, save its artifact to ``out`` and, if asked, evaluate it."""
    use_threads(threads)
    ctx = StepContext(
        step=step, dataset=dataset, data_file=Path(data_file), device=resolve_device(device), seed=seed,
        threads=threads, parent=load_artifact(parent) if parent else None,
        extra={k: load_artifact(v) for k, v in (extra or {}).items()},
    )
    method = get_method(step["method"])()
    log.info("%s: step %s (method %s) on %s", dataset, step["id"], method.name, ctx.device)
    seed_everything(seed, ctx.device)  # before any model is built: weight init draws from the RNG too
    artifact = method.execute(ctx)
    artifact.save(out)
    log.info("wrote %s (%.2f MB)", out, file_size_mb(out))
    if accuracy_out:
        evaluate_artifact(out, data_file, accuracy_out, eval_batch_size, device=device, threads=threads)


def evaluate_artifact(artifact: str, data_file: str, out: str, eval_batch_size: int = 256,
                      device: str = "auto", threads: int = 1) -> None:
    """Accuracy on the test split, size on disk and parameter count: nothing here depends on the hardware."""
    use_threads(threads)
    dev = resolve_device(device)
    art = load_artifact(artifact)
    model = build_model(art)
    if art.meta.get("cpu_only"):
        dev = "cpu"
    data = PreparedData(data_file)
    adapter = InputAdapter(data.meta, art.arch["kwargs"]["img_size"], dev)
    last = (art.meta.get("steps") or [{}])[-1]
    started = time.perf_counter()
    acc = evaluate(model, data.loader("test", eval_batch_size), adapter, dev, per_image=True)
    took = time.perf_counter() - started
    log.info("evaluated %d test images in %.2f s (%.2f ms an image, batches of %d, %s)", acc["n"], took,
             1000 * took / max(1, acc["n"]), eval_batch_size, dev)
    write_json(out, {
        "accuracy": acc["top1"],
        "top5": acc.get("top5"),
        "test_images": acc["n"],
        **storage_sizes(artifact_files(artifact)),
        "params": count_params(model),
        "num_classes": data.num_classes,
        "input_size": list(art.arch["kwargs"]["img_size"]),
        "in_chans": art.arch["kwargs"]["in_chans"],
        "cpu_only": bool(art.meta.get("cpu_only", False)),
        "eval_device": dev,
        "runtime": describe(art.meta),
        "settings": art.settings(),
        "train_epochs": art.train_epochs(),
        # diffq's own figures for its row: true_model_size (the learned bits, exactly) and
        # compressed_model_size (zlib of one byte per level)
        "diffq_true_size_mb": last.get("diffq_size_estimate_mb"),
        "diffq_compressed_mb": last.get("diffq_compressed_mb"),
        # which test images it got right (the paired intervals of every accuracy change), and the parts
        # the test images share (digit pairs' source digits), which those intervals resample
        "per_image": {"n": acc["n"], "top1": pack_bits(acc["correct1"]),
                      "top5": None if acc["correct5"] is None else pack_bits(acc["correct5"])},
        "groups": data.groups["test"].tolist() if "test" in data.groups else None,
        "notes": artifact_notes(art.meta),
    })


def artifact_notes(meta: dict) -> list[str]:
    """What a table should say under a cell about how its artifact was made (accuracy control's float layers;
    an int8 model kept although it lost more than its max_gap against its simulation on too few images to tell)."""
    notes = []
    check = meta.get("deploy_check") or {}
    if check.get("flagged"):
        notes.append(f"the deployed int8 model lost {check['gap']:.2f} points against its "
                     f"{'float simulation' if check['reference'] == 'simulation' else 'parent'} on {check['images']} "
                     f"{check['split']} images (max_gap {check['max_gap']:g}), on too few images to tell a kernel's "
                     f"error from chance (exact McNemar p = {check['p_value']:.2g}): kept, flagged.")
    ac = meta.get("accuracy_control")
    if ac:
        ops, layers = ac.get("reverted_operations") or [], ac["float_layers"]
        total = (meta.get("ov_quantization") or {}).get("weight_layers", "?")
        if ops:
            of = f" of {ac['quantized_operations']}" if ac.get("quantized_operations") else ""
            what = f"reverted {len(ops)}{of} quantized operations to float ({', '.join(ops)})"
        else:
            what = "reverted no operation (the fully quantized IR met the bound)"
        notes.append(f"NNCF's accuracy control {what}; {len(layers)} of {total} weight layers are in float; "
                     f"validation top-1 {ac['float_top1']:.2f}% (float IR) -> {ac['int8_top1']:.2f}% (int8), bound "
                     f"{ac['max_drop']:g} points on the validation split.")
    return notes


def fq_vit_ablation(threads: int, device: str, parent: str, step: dict, dataset: str, csv: str, md: str,
                    figure: str, **kwargs) -> None:
    """FQ-ViT's PTF/LIS ablation (:func:`vitcompress.fqvit.ablation.ablation`) of an fq_vit step's parent, its
    Figure 1, and its tables (:func:`vitcompress.report.tables.render_fq_vit_ablation`)."""
    from vitcompress.fqvit.ablation import ablation
    from vitcompress.report.tables import render_fq_vit_ablation

    use_threads(threads)
    art = Artifact.load(parent)
    s = get_method("fq_vit").settings(step)
    result = ablation(lambda: build_model(art), art.arch["kwargs"]["img_size"], s=s, device=resolve_device(device),
                      figure=figure, dataset=dataset, **kwargs)
    render_fq_vit_ablation(result, s, dataset, csv=csv, md=md)
