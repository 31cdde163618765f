"""What each workflow rule does, as plain functions (scripts/ only forwards Snakemake's arguments).

Outputs are written atomically, so a killed job leaves nothing a later run would take as complete.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

from vitcompress.artifacts import Artifact, buffers_only
from vitcompress.config import row_labels
from vitcompress.data import InputAdapter, PreparedData
from vitcompress.errors import DeviceError
from vitcompress.io import read_json, write_json
from vitcompress.measure import (
    accuracy_change_over_seeds,
    accuracy_with_interval,
    effective_threads,
    evaluate,
    file_size_mb,
    pack_bits,
    speed,
    speed_columns,
    storage_sizes,
)
from vitcompress.methods import StepContext, build_model, get_method
from vitcompress.models import count_params
from vitcompress.runtimes import artifact_files, describe, get_runtime, load_artifact
from vitcompress.stats import across_seeds
from vitcompress.train import seed_everything
from vitcompress.workers import in_worker, job_resources

log = logging.getLogger("vitcompress")


def use_threads(threads: int) -> int:
    """Give PyTorch ``threads`` threads, but never more than this process may run on."""
    n = effective_threads(threads)
    torch.set_num_threads(n)
    return n


def resolve_device(requested: str = "auto", check_visible: bool = True) -> str:
    """``auto`` is the GPU when one is visible. ``check_visible=False`` is for a process that only
    submits jobs to other machines: ``cuda`` is then taken as asked and checked where the job runs."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and check_visible and not torch.cuda.is_available():
        raise DeviceError(
            "device = 'cuda' in params.yaml, but no CUDA GPU is visible here; "
            "set `device: auto` (uses the GPU when there is one) or `device: cpu`."
        )
    if requested not in ("cpu", "cuda"):
        raise DeviceError(f"device = {requested!r}: use auto, cpu or cuda.")
    return requested


@contextlib.contextmanager
def logging_to(path: str | Path | None):
    """Send the library's log records to ``path`` (and stderr) for the duration of a job."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.INFO)
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    try:
        yield
    except Exception:
        log.exception("job failed")
        raise
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(old_level)


def _logged_job(log_path: str | None, resources: str | None, fn, kwargs: dict) -> None:
    """``fn(**kwargs)`` with the job's log, and its wall time and peak memory written to ``resources``
    (a TSV with Snakemake benchmark's ``s`` and ``max_rss`` columns) if given."""
    with logging_to(log_path), job_resources(resources):
        fn(**kwargs)


def job(fn, log: str | None = None, resources: str | None = None, pool: str | None = "steps", **kwargs) -> None:
    """What every ``run:`` rule calls: ``fn(**kwargs)`` (a module-level function of the library) in a
    long-lived worker process of ``pool`` (:mod:`vitcompress.workers`: no Python start-up per job), with
    its log and, if asked, its wall time and peak memory. ``pool=None`` runs it in this process (cheap
    jobs: merging two JSON files). Timing jobs have their own pool ("timing"): timed in Snakemake's
    process, a model competes with the scheduler's threads for the interpreter."""
    if pool is None:
        _logged_job(log, resources, fn, kwargs)
    else:
        in_worker(pool, _logged_job, log, resources, fn, kwargs)


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


def slots_for(threads: int, all_cores: int) -> int:
    """Scheduler slots a job of ``threads`` PyTorch threads claims out of ``all_cores`` (`--cores`): its share
    of the machine's CPUs, so no more jobs run side by side than the CPUs carry."""
    from vitcompress.measure import available_cpus

    return min(all_cores, max(threads, -(-all_cores * threads // available_cpus())))


def bench_spec(profile, row_id: str) -> dict:
    """A row's architecture benchmark inputs: its chain's resolved steps and root architecture, and the
    baseline row's (the profile's first, timed beside it), built for the profile's first data set."""
    from vitcompress.data import describe
    from vitcompress.models import arch_for

    meta = describe(profile.dataset_cfg(profile.datasets[0]))

    def spec(row):
        steps = [profile.step_cfg(s) for s in row["chain"]]
        root = steps[0]
        return steps, arch_for(root["model_cfg"], meta, root["image_size"], root["image_scale"])

    steps, arch = spec(profile.row(row_id))
    base_steps, base_arch = spec(profile.rows[0])
    return {"chain_steps": steps, "arch": arch, "baseline_steps": base_steps, "baseline_arch": base_arch}


def job_priority(step: dict) -> float:
    """A step job's place among ready jobs (Snakemake's `priority`, higher first): its epochs of training,
    whether it trains from scratch (`train.epochs`) or fine-tunes (its own `epochs`, e.g. QAT), in
    thousandths; 0 for one-shot steps. Longer work first: the job that would finish last starts as soon as a
    CPU frees up, not behind shorter ones."""
    method = get_method(step["method"])
    if method.is_root:
        epochs = step["train"].get("epochs", 0)
    else:
        s = method.settings(step)
        epochs = getattr(s, "epochs", None) or getattr(s, "finetune_epochs", 0)
    return int(epochs or 0) / 1000


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


def _input_shape(arch: dict) -> list[int]:
    return [int(arch["kwargs"]["in_chans"]), *map(int, arch["kwargs"]["img_size"])]


def measure_model(model, artifact_meta: dict, input_shape, measure: dict, fp: dict,
                  baseline: nn.Module | None = None, is_baseline: bool = False,
                  parent: nn.Module | None = None, parent_cpu_only: bool = False) -> dict:
    """CPU timings always; GPU timings only when CUDA is there and the model can run on it.
    With a ``baseline`` model, each timing also gives the speed-up over it, timed side by side;
    ``is_baseline``: the model is the baseline, whose speed-up is 1 by definition (not timed twice).
    ``parent``: the model this one was made from (the baseline object itself when it is), timed in the
    same alternation for the speed-up of the chain's last step alone (on the CPU only when
    ``parent_cpu_only``)."""
    common = dict(warmup=int(measure["warmup"]), repeats=int(measure["repeats"]),
                  rounds=int(measure.get("rounds", 1)))
    out = {"fingerprint": fp, "notes": []}
    if artifact_meta.get("simulated"):
        out.update(cpu=None, gpu=None)
        out["notes"].append("simulated (fake-quantized) model: timing the simulation would not show int8 speed.")
        return out
    out["cpu"] = speed(model, input_shape, int(measure["batch_size"]), "cpu",
                       threads=int(measure["cpu_threads"]), baseline=baseline, parent=parent, **common)
    gpu_ok = measure.get("gpu", True) and torch.cuda.is_available()
    if gpu_ok and not artifact_meta.get("cpu_only"):
        gpu_parent = None if parent_cpu_only else parent
        out["gpu"] = speed(model, input_shape, int(measure["batch_size"]), "cuda", baseline=baseline,
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


def measure_speed(artifact: str, out: str, measure: dict, fp: dict, baseline: str | None = None,
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
        use_threads(int(measure["cpu_threads"]))
        accuracy = machine_accuracy(art, model, data_file, int(measure.get("eval_batch_size", 256)))
    is_baseline = baseline is not None and Path(baseline).resolve() == Path(artifact).resolve()
    ref = build_model(load_artifact(baseline)) if baseline is not None and not is_baseline else None
    par, par_art = None, None
    if parent:
        par_art = load_artifact(parent)
        par = ref if baseline is not None and Path(parent).resolve() == Path(baseline).resolve() else \
            build_model(par_art)
    result = measure_model(model, art.meta, _input_shape(art.arch), measure, fp, baseline=ref, is_baseline=is_baseline,
                           parent=par, parent_cpu_only=bool(par_art is not None and par_art.meta.get("cpu_only")))
    if accuracy is not None:
        result["accuracy"] = accuracy
    write_json(out, result)


def row_metrics(row: dict, dataset: str, accuracy: str, speed_json: str, out: str, profile: str,
                settings: dict | None = None, baseline_accuracy: str | None = None,
                parent_accuracy: str | None = None, seed_accuracy: list[str] = (), seed_baseline: list[str] = (),
                seed_parent: list[str] = (), methods: list[str] | None = None) -> None:
    """The metrics JSON of one (dataset, row) cell. ``settings``: the row's step settings from params.yaml,
    for its labels' ``{name}`` fields; the values the artifact resolved (on this data set) win.
    ``baseline_accuracy`` / ``parent_accuracy``: the first row's and the row's parent's (its chain minus
    the last step) accuracy JSONs, for the paired intervals of the accuracy changes against them.
    ``seed_accuracy`` / ``seed_baseline`` / ``seed_parent``: the same three under the profile's other training
    seeds, in one order: the cell's accuracy and changes are then the means over seeds, with intervals that
    cover the seeds' spread too (``seeds`` says how many); speed and size stay the first seed's model's.
    ``methods``: the method of each step of the row's chain (the reports' families and findings)."""
    acc, spd = read_json(accuracy), read_json(speed_json)
    cpu, gpu = spd.get("cpu"), spd.get("gpu")
    labels = row_labels(row, settings or {}, acc.get("settings"))
    base = read_json(baseline_accuracy) if baseline_accuracy else None
    parent = read_json(parent_accuracy) if parent_accuracy else None
    accs = [acc] + [read_json(f) for f in seed_accuracy]
    if len(seed_baseline) != len(seed_accuracy) or (parent and len(seed_parent) != len(seed_accuracy)):
        raise ValueError(f"row {row['id']!r}: every other seed needs its own first-row and parent accuracy "
                         f"({len(seed_accuracy)} seeds, {len(seed_baseline)} first-row, "
                         f"{len(seed_parent)} parent files)")
    bases = None if base is None else [base] + [read_json(f) for f in seed_baseline]
    parents = None if parent is None else [parent] + [read_json(f) for f in seed_parent]
    intervals = [accuracy_with_interval(a) for a in accs]
    accuracy_ci = None if any(i is None for i in intervals) else across_seeds(intervals, "value")
    mean_accuracy = sum(float(a["accuracy"]) for a in accs) / len(accs)
    write_json(out, {
        "profile": profile,
        "dataset": dataset,
        "row": row["id"],
        **labels,
        "chain": row["chain"],
        "chain_methods": list(methods or []),  # each step's method: the reports' families and findings
        "runtime": acc.get("runtime", "PyTorch"),
        "accuracy": mean_accuracy,  # over the training seeds (one: that model's)
        "seeds": len(accs),
        "accuracy_ci": None if accuracy_ci is None else [accuracy_ci["lo"], accuracy_ci["hi"]],
        "accuracy_by_seed": [float(a["accuracy"]) for a in accs],
        "accuracy_sd_seeds": None if accuracy_ci is None else accuracy_ci["sd"],
        "top5": acc.get("top5"),
        "test_images": acc.get("test_images"),
        "size_mb": acc["size_mb"],
        "compressed_mb": acc.get("compressed_mb"),
        "diffq_true_size_mb": acc.get("diffq_true_size_mb"),
        "diffq_compressed_mb": acc.get("diffq_compressed_mb"),
        "params": acc["params"],
        "train_epochs": acc.get("train_epochs"),
        **speed_columns(gpu, "gpu"),
        **speed_columns(cpu, "cpu"),  # with the speed-up over the parent: the last step's own gain
        "cpu_iqr_s": cpu["batch"]["iqr_s"] if cpu else None,
        "delta_first": None if base is None or baseline_accuracy == accuracy else
        accuracy_change_over_seeds(accs, bases),
        "delta_parent": accuracy_change_over_seeds(accs, parents),
        "per_image": acc.get("per_image"),
        "per_image_by_seed": [a.get("per_image") for a in accs] if len(accs) > 1 else None,
        "groups": acc.get("groups"),
        "batch_size": (cpu or gpu or {}).get("batch_size"),
        "notes": [f"{labels['model']}: {n}" for n in (acc.get("notes") or []) + spd.get("row_notes", [])]
        + spd.get("notes", []),
        "fingerprint": spd["fingerprint"],
    })


def build_untrained(chain_steps: list[dict], arch: dict) -> Artifact:
    """A row's deployable PyTorch artifact with random weights: each step's structural change, no data.
    (Steps that make ONNX artifacts follow in :func:`_deployed`.)"""
    from vitcompress.models import create

    model = create(arch)
    art = Artifact(arch=arch, state_dict={}, transforms=[], meta={})
    for step in chain_steps:
        change = get_method(step["method"]).untrained(model, step)
        model = change.model
        if change.spec:
            art.transforms.append(change.spec)
        art.meta.update(change.meta or {})
        art.quantized = change.quantized  # only the last step's counts
    # a quantized state holds the parameters itself: keep the buffers only
    art.state_dict = model.state_dict() if art.quantized is None else buffers_only(model)
    return art


@contextlib.contextmanager
def _deployed(chain_steps: list[dict], arch: dict):
    """A row's untrained artifact, the model a deployment would load from it, and its size on disk, for
    the duration of the block. Steps of another runtime (ONNX export, ORT quantization) each start from
    the saved file of the one before, as in the workflow."""
    torch_steps = [s for s in chain_steps if get_method(s["method"]).runtime == "pytorch"]
    with tempfile.TemporaryDirectory(prefix="vitcompress-bench-") as tmp:
        path = Path(tmp) / "model.pt"
        build_untrained(torch_steps, arch).save(path)
        for i, step in enumerate(chain_steps[len(torch_steps):]):
            method = get_method(step["method"])
            child = method.untrained_deploy(load_artifact(path), step)
            path = Path(tmp) / f"step{i}" / get_runtime(method.runtime).files[0]
            child.save(path)
        art = load_artifact(path)
        yield art, build_model(art), storage_sizes(artifact_files(path))


def bench_row(chain_steps: list[dict], arch: dict, measure: dict, fp: dict, out: str,
              baseline_steps: list[dict] | None = None, baseline_arch: dict | None = None) -> None:
    """Build a row's architecture (random weights, no data, no training), then size and time it.

    ``baseline_steps``/``baseline_arch``: the baseline row's chain and architecture (the profile's
    first row), built the same way and timed call by call beside this one for a side-by-side
    speed-up, as the cells' timings are; the baseline row itself is not timed twice. The chain minus
    its last step (the row's parent) joins the alternation for the last step's own speed-up."""
    baseline_arch = baseline_arch or arch
    is_baseline = (baseline_steps is not None and baseline_arch == arch
                   and [s["id"] for s in baseline_steps] == [s["id"] for s in chain_steps])
    timed_beside = baseline_steps is not None and not is_baseline
    parent_steps = chain_steps[:-1]
    parent_is_baseline = (timed_beside and baseline_arch == arch
                          and [s["id"] for s in baseline_steps] == [s["id"] for s in parent_steps])
    with contextlib.ExitStack() as stack:
        art, model, size = stack.enter_context(_deployed(chain_steps, arch))
        ref = stack.enter_context(_deployed(baseline_steps, baseline_arch))[1] if timed_beside else None
        par = None
        if parent_steps:
            par = ref if parent_is_baseline else stack.enter_context(_deployed(parent_steps, arch))[1]
        result = measure_model(model, art.meta, _input_shape(arch), measure, fp, baseline=ref,
                               is_baseline=is_baseline, parent=par,
                               parent_cpu_only=bool(parent_steps) and get_method(parent_steps[-1]["method"]).runtime
                               != "pytorch")
        result.update(**size, params=count_params(model), arch=arch, chain=[s["id"] for s in chain_steps],
                      chain_methods={s["id"]: s["method"] for s in chain_steps},
                      runtime=describe(art.meta), settings=art.settings())
    write_json(out, result)
