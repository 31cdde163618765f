"""Measurement, one module for every row: accuracy, CPU/GPU speed, size, hardware fingerprint.

Speed protocol (CPU and GPU alike): a fixed thread count, ``warmup`` untimed forward passes, then
``rounds`` rounds of ``repeats`` timed ones. The reported time is the median of the fastest round
("best of rounds", as ``timeit`` does): a shared or virtual machine's stalls slow whole stretches of
calls, and a later round that missed them measures the model rather than the neighbours. The spread
(min, max, inter-quartile range) is over every timed call, and each round's median is kept.
Given a baseline model, the model's and the baseline's batch calls alternate, and the speed-up over
the baseline is the median ratio of neighbouring calls (see :func:`speed`).
"iterations per second" (the study's unit) is 1 / that time for one forward pass at the profile's
batch size; images/s multiplies it by the batch size; latency is the same at batch size 1.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

from vitcompress.io import package_version

MB = 2 ** 20  # the study's "MB" matches MiB: ViT-B/16 with a 10-class head is 327 MiB


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def effective_threads(requested: int) -> int:
    """Threads a timing really uses: more than the CPUs available would only time oversubscription."""
    return max(1, min(int(requested), available_cpus()))


@torch.inference_mode()
def evaluate(model: nn.Module, loader, adapter, device: str = "cpu", per_image: bool = False) -> dict:
    """Top-1 (and top-5 when there are more than 10 classes) accuracy in percent; ``per_image``: also
    which test images were right (``correct1``, ``correct5``: bool arrays in the loader's order)."""
    model.eval().to(device)
    hits1, hits5 = [], []
    num_classes = None
    for x, y in loader:
        logits = model(adapter(x))
        y = y.to(logits.device)
        num_classes = logits.shape[-1]
        hits1.append((logits.argmax(-1) == y).cpu())
        if num_classes > 10:
            hits5.append((logits.topk(5, dim=-1).indices == y[:, None]).any(-1).cpu())
    c1 = torch.cat(hits1) if hits1 else torch.zeros(0, dtype=torch.bool)
    total = len(c1)
    out = {"top1": 100.0 * c1.sum().item() / max(1, total), "n": total}
    if hits5:
        c5 = torch.cat(hits5)
        out["top5"] = 100.0 * c5.sum().item() / max(1, total)
    if per_image:
        out["correct1"] = c1.numpy()
        out["correct5"] = torch.cat(hits5).numpy() if hits5 else None
    return out


def pack_bits(flags) -> str:
    """Per-image booleans as compact text (bit-packed, base64): a CIFAR test split is 1.7 KB."""
    import base64

    import numpy as np

    return base64.b64encode(np.packbits(np.asarray(flags, dtype=bool)).tobytes()).decode("ascii")


def unpack_bits(text: str, n: int):
    import base64

    import numpy as np

    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


def _right(record: dict):
    """A record's per-image top-1 correctness (bool array), or None when it kept none."""
    p = record.get("per_image")
    return None if not isinstance(p, dict) or not p.get("top1") else unpack_bits(p["top1"], p["n"])


def _groups(record: dict):
    """The source parts each test image is made of (digit pairs), or None for independent images."""
    import numpy as np

    groups = record.get("groups")
    return np.asarray(groups) if isinstance(groups, (list, tuple)) and groups else None


def accuracy_change(mine: dict, other: dict) -> dict | None:
    """``mine``'s top-1 change against ``other``'s (two accuracy or metrics JSONs) on the same test images,
    with its 95% interval (:func:`vitcompress.stats.paired_delta`; digit pairs resample their source
    digits); None when either holds no per-image results."""
    from vitcompress.stats import paired_delta

    a, b = _right(mine), _right(other)
    if a is None or b is None or len(a) != len(b):
        return None
    return paired_delta(a, b, _groups(mine))


def accuracy_change_over_seeds(mine: list[dict], other: list[dict] | None) -> dict | None:
    """The change of ``mine`` against ``other`` (the same seeds' records, in one order), seed by seed, then over
    the seeds (:func:`vitcompress.stats.across_seeds`); one seed: that seed's change as it is. None when
    ``other`` is None or any seed kept no per-image results."""
    from vitcompress.stats import across_seeds

    if other is None or len(mine) != len(other):
        return None
    changes = [accuracy_change(a, b) for a, b in zip(mine, other)]
    if any(c is None for c in changes):
        return None
    return changes[0] if len(changes) == 1 else across_seeds(changes)


def accuracy_with_interval(record: dict) -> dict | None:
    """Top-1 accuracy of an accuracy JSON with its 95% interval over the test images
    (:func:`vitcompress.stats.accuracy_interval`): {"value", "lo", "hi", "method"}; None without per-image results."""
    from vitcompress.stats import accuracy_interval

    right = _right(record)
    return None if right is None else accuracy_interval(right, _groups(record))


def spread(times: list[float]) -> dict:
    """Median, min, max and interquartile range of ``times`` (seconds)."""
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "iqr_s": q[2] - q[0]}


@torch.inference_mode()
def time_alternating(fns, cuda: bool, warmup: int, repeats: int) -> list[list[float]]:
    """Seconds of each of ``repeats`` calls of every function in ``fns``, called in turn after ``warmup``
    untimed rounds, CUDA synchronised: call i of each is milliseconds from call i of the others, so their
    ratios see the same machine. The order rotates every repeat (a b c, b c a, c a b, ...), so no function
    always runs first, or always right after the same other one (caches, clocks, allocator state)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        turn = list(zip(fns, times))
        turn = turn[r % len(turn):] + turn[:r % len(turn)]
        for fn, out in turn:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            out.append(time.perf_counter() - t0)
    return times


def time_calls(fn, cuda: bool, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    return time_alternating([fn], cuda, warmup, repeats)[0]


def time_forward(model: nn.Module, example: torch.Tensor, warmup: int, repeats: int) -> list[float]:
    return time_calls(lambda: model(example), example.is_cuda, warmup, repeats)


def best_of_rounds(rounds_times: list[list[float]]) -> dict:
    """Spread over all calls, each round's median, and ``best_s``: the fastest round's median."""
    medians = [statistics.median(t) for t in rounds_times]
    out = spread([t for times in rounds_times for t in times])
    out.update(round_medians_s=medians, best_s=min(medians))
    return out


LATENCY_REPEATS = 10  # batch-1 latency is a plain median (no interval): more repeats than this buy nothing


def speed(model: nn.Module, input_shape, batch_size: int, device: str = "cpu", threads: int | None = None,
          warmup: int = 3, repeats: int = 10, rounds: int = 1, seed: int = 0,
          baseline: nn.Module | None = None, parent: nn.Module | None = None) -> dict:
    """Throughput at ``batch_size`` and batch-1 latency of ``model`` on synthetic inputs.

    With a ``baseline`` model (same input), the batch timings alternate model and baseline call by
    call, and ``vs_baseline`` is the median over all pairs of baseline time / model time: a speed-up
    measured side by side, which a machine whose speed drifts (between jobs, or within a second on a
    shared VM) cannot skew the way it skews two it/s figures taken apart. A ``parent`` (the model this
    one was made from) joins the same alternation (model, baseline, parent, model, ...) for
    ``vs_parent``, the step's own gain; a parent that is the baseline object is not timed twice."""
    if threads:
        torch.set_num_threads(effective_threads(threads))
    if rounds < 1:
        raise ValueError(f"rounds = {rounds}: time at least one round")
    model.eval().to(device)
    g = torch.Generator().manual_seed(seed)
    out = {"device": device, "batch_size": int(batch_size), "warmup": int(warmup), "repeats": int(repeats),
           "rounds": int(rounds), "threads": torch.get_num_threads()}
    example = torch.randn(batch_size, *input_shape, generator=g).to(device)
    others = {"baseline": baseline, "parent": None if parent is baseline else parent}
    others = {k: m.eval().to(device) for k, m in others.items() if m is not None}
    batch_rounds, single_rounds = [], []
    other_rounds: dict[str, list] = {k: [] for k in others}
    cuda = example.is_cuda
    for _ in range(rounds):  # batch and batch-1 alternate, so a stall cannot hit only one of them
        if not others:
            batch_rounds.append(time_forward(model, example, warmup, repeats))
        else:
            times = time_alternating([lambda: model(example)] + [lambda m=m: m(example) for m in others.values()],
                                     cuda, warmup, repeats)
            batch_rounds.append(times[0])
            for k, t in zip(others, times[1:]):
                other_rounds[k].append(t)
        single_rounds.append(time_forward(model, example[:1], warmup, min(repeats, LATENCY_REPEATS)))
    batch, single = best_of_rounds(batch_rounds), best_of_rounds(single_rounds)
    from vitcompress.stats import median_interval

    for k, rounds_times in other_rounds.items():
        ratios = [b / m for mine, theirs in zip(batch_rounds, rounds_times) for m, b in zip(mine, theirs)]
        key = "vs_baseline" if k == "baseline" else "vs_parent"
        ratio_spread = spread(ratios)
        out.update({key: ratio_spread["median_s"], f"{key}_iqr": ratio_spread["iqr_s"],
                    f"{key}_ci": list(median_interval(ratios)), f"{key}_pairs": len(ratios),
                    f"{k}_it_per_s": 1.0 / best_of_rounds(rounds_times)["best_s"]})
    if parent is not None and parent is baseline:
        out.update(vs_parent=out["vs_baseline"], vs_parent_iqr=out["vs_baseline_iqr"],
                   vs_parent_ci=out["vs_baseline_ci"], parent_it_per_s=out["baseline_it_per_s"])
    out.update({
        "it_per_s": 1.0 / batch["best_s"],
        "images_per_s": batch_size / batch["best_s"],
        "latency_ms": 1000.0 * single["best_s"],
        "batch": batch,
        "batch1": single,
    })
    return out


def status_kb(field: str) -> int | None:
    """A kB field of ``/proc/self/status`` (VmRSS, VmHWM: the peak resident memory); None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (VmHWM) to its current one; False where the OS cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def file_size_mb(path: str | Path) -> float:
    return Path(path).stat().st_size / MB


COMPRESS_LEVEL = 9  # zlib level of the Compressed column: the level diffq's compressed_model_size uses


def storage_sizes(paths) -> dict:
    """The Size column's one storage form for every row, and the compressed one beside it (MB), of an
    artifact's files (``paths``: one path, or every file of it, e.g. an OpenVINO IR's .xml and .bin):

    ``size_mb``: the deployable artifact's raw bytes (a PyTorch artifact stored compressed counts as its
    uncompressed payload; other runtimes' files as they are); ``compressed_mb``: those same bytes through
    zlib at level 9, for every row alike, so a method whose claim rests on compression shows it there."""
    import zlib

    from vitcompress.artifacts import Artifact

    if isinstance(paths, (str, Path)):
        paths = [paths]
    raw = b"".join(Artifact.payload(p) if Path(p).suffix == ".pt" else Path(p).read_bytes() for p in paths)
    return {"size_mb": len(raw) / MB, "compressed_mb": len(zlib.compress(raw, COMPRESS_LEVEL)) / MB}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ISA_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "neon",
             "asimd")


def cpu_flags() -> list[str]:
    """The instruction-set extensions int8 and float speed depend on, as the kernel reports them
    (x86: avx2, avx512f, avx512_vnni, amx; ARM: neon/asimd); empty where /proc/cpuinfo is not there."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("flags", "features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    return []


# What each oneDNN ISA cap (ONEDNN_MAX_CPU_ISA, which OpenVINO's CPU plugin honours) leaves to int8 kernels of
# the /proc/cpuinfo flags we track. oneDNN's ISAs are bit sets, not one ladder: its avx512_core* levels do not
# include AVX-VNNI (avx2_vnni), so a cap at AVX512_CORE on a CPU with AVX-VNNI uses no VNNI at all.
_AVX512 = ("avx2", "avx512f")
_AMX = _AVX512 + ("avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
ONEDNN_CAPS = {
    "sse41": (), "avx": (), "avx2": ("avx2",), "avx2_vnni": ("avx2", "avx_vnni"), "avx2_vnni_2": ("avx2", "avx_vnni"),
    "avx512_core": _AVX512, "avx512_core_vnni": _AVX512 + ("avx512_vnni",),
    "avx512_core_bf16": _AVX512 + ("avx512_vnni", "avx512_bf16"),
    "avx10_1_512": _AVX512 + ("avx512_vnni", "avx512_bf16"), "avx512_core_fp16": _AVX512 + ("avx512_vnni", "avx512_bf16"),
    "avx512_core_amx": _AMX, "avx10_1_512_amx": _AMX, "avx512_core_amx_fp16": _AMX, "avx10_1_512_amx_fp16": _AMX,
}


def isa_cap() -> str | None:
    """The oneDNN ISA cap set for this process (``ONEDNN_MAX_CPU_ISA``, lower case), or None."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().lower()
    return cap or None


def int8_flags(flags: list[str] | None = None, cap: str | None = None) -> list[str]:
    """The instruction sets oneDNN-based int8 kernels (OpenVINO's CPU plugin) may use here: the CPU's flags
    less those above an ``ONEDNN_MAX_CPU_ISA`` cap (this process's, or ``cap``), so ``ONEDNN_MAX_CPU_ISA=AVX2``
    on an AVX-512 VNNI CPU reads as an AVX2-only one (the emulation the tests and docs use)."""
    flags = cpu_flags() if flags is None else list(flags)
    cap = isa_cap() if cap is None else cap.strip().lower()
    if cap is None or cap not in ONEDNN_CAPS:  # oneDNN ignores a value it does not know ("all": no cap)
        return flags
    tracked = {f for caps in ONEDNN_CAPS.values() for f in caps}
    return [f for f in flags if f not in tracked or f in ONEDNN_CAPS[cap]]


def non_vnni_cap(flags: list[str] | None = None) -> str:
    """The ``ONEDNN_MAX_CPU_ISA`` value that runs an x86 CPU's int8 kernels as one without VNNI would: its
    AVX-512 level (``AVX512_CORE``, the Skylake-SP class) where it has AVX-512, else ``AVX2``. Both sum u8×s8
    products through saturating 16-bit intermediates. On a Xeon with AMX and on a Zen 4 EPYC, OpenVINO 2026.4.1 dies
    (SIGSEGV) under ``AVX2`` for attention of head size 12, f32 included, and runs under ``AVX512_CORE``, which gave
    on the Xeon the int8 results of a real AVX2-only CPU (docs/upstream/ov_isa_cap_crash.py)."""
    flags = cpu_flags() if flags is None else flags
    return "AVX512_CORE" if "avx512f" in flags else "AVX2"


def has_vnni(flags: list[str], machine: str) -> bool | None:
    """Whether int8 dot products accumulate without 16-bit saturation: x86 with VNNI (AVX-512 VNNI, AVX-VNNI,
    AMX) True, x86 without False; None off x86 (ARM's kernels do not saturate)."""
    if machine.lower() not in X86:
        return None
    return any(f in flags for f in VNNI)


def fingerprint(cpu_threads: int, gpu: bool = True, versions: dict | None = None) -> dict:
    """What speed depends on. Accuracy and checkpoints do not, so only timings re-run when it changes.
    ``versions``: the runtimes' packages and versions (:func:`vitcompress.runtimes.versions`)."""
    gpu_name = None
    if gpu and torch.cuda.is_available():
        gpu_name = torch.cuda.get_device_name(0)
    fp = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "int8_flags": int8_flags(),  # those oneDNN's int8 kernels may use (less an ONEDNN_MAX_CPU_ISA cap)
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_threads": effective_threads(cpu_threads),
        "gpu": gpu_name,
        "torch": torch.__version__,
        "timm": package_version("timm"),
        **(versions or {}),
        "python": platform.python_version(),
        # what the ORT int8 steps choose here (their accuracy depends on it): see reduce_range_for
        "ort_reduce_range": reduce_range_for(cpu_flags(), platform.machine())[0],
        # what the OpenVINO int8 steps choose here (ov_int8_recipe): weights' bits and the attention's
        **{f"ov_{k}": v for k, v in ov_int8_recipe(int8_flags(), platform.machine()).items() if k != "reason"},
        # kernels restricted by hand (e.g. ATEN_CPU_CAPABILITY=avx2) time another machine class
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"),
        "onednn_max_cpu_isa": isa_cap(),
    }
    # VITCOMPRESS_MACHINE names a machine in reports (e.g. "jetson-orin-nano"); by default the label is
    # derived from what speed depends on, so another configuration of the same host is another machine
    fp["label"] = slug(os.environ.get("VITCOMPRESS_MACHINE") or machine_label(fp))
    return fp


def slug(text: str) -> str:
    """``text`` as a file-name-safe label (letters, digits, ``.``, ``_``, ``-``)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-")[:80] or "machine"


def machine_label(fp: dict) -> str:
    """A default machine label from a fingerprint: the CPU, its threads, the GPU and any kernel
    restriction, e.g. ``AMD-EPYC-1t`` or ``Intel-Xeon-4t-NVIDIA-H200``."""
    parts = [" ".join(str(fp.get("cpu") or fp.get("machine") or "cpu").split()[:3]), f"{fp.get('cpu_threads')}t"]
    if fp.get("gpu"):
        parts.append(str(fp["gpu"]))
    if fp.get("aten_cpu_capability"):
        parts.append(fp["aten_cpu_capability"])
    if fp.get("onednn_max_cpu_isa"):
        parts.append(f"onednn-{fp['onednn_max_cpu_isa']}")
    return "-".join(parts)


X86 = ("x86_64", "amd64", "i386", "i686")
VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")


def reduce_range_for(flags: list[str], machine: str) -> tuple[bool, str]:
    """Whether ONNX Runtime's int8 weights should use 7 bits (``reduce_range``) on this CPU, and why.

    On x86 without VNNI, ORT's u8×s8 kernels multiply with VPMADDUBSW, which adds two u8·s8 products into
    a saturating int16: with full 8-bit weights the sum can clip. VNNI (AVX-512 VNNI, AVX-VNNI, AMX)
    accumulates in int32 and ARM's kernels do not saturate, so there full 8 bits are safe."""
    if machine.lower() not in X86:
        return False, f"{machine}: no u8s8 saturation"
    have = [f for f in VNNI if f in flags]
    if have:
        return False, f"x86 with {have[0]}: int32 accumulation"
    return True, "x86 without VNNI: u8s8 int16 saturation"


def cpu_class(flags: list[str], machine: str) -> str:
    """The machine class int8 speed and accuracy depend on: ``AMX``, ``AVX-512 VNNI``, ``AVX-VNNI``,
    ``AVX2 only (no VNNI)``, ``ARM`` or the machine's name (``flags``: e.g. :func:`int8_flags`)."""
    if machine.lower() not in X86:
        return "ARM" if machine.lower() in ("aarch64", "arm64") else machine
    for flag, name in (("amx_int8", "AMX"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI")):
        if flag in flags:
            return name
    return "AVX2 only (no VNNI)" if "avx2" in flags else "x86 without AVX2"


def ov_int8_recipe(flags: list[str], machine: str) -> dict:
    """What NNCF should quantize for OpenVINO's CPU plugin on this CPU class (``auto`` in ``ov_int8``).

    Without VNNI, the plugin's int8 kernels multiply u8 by s8 with VPMADDUBSW, which adds two products into
    a saturating int16. Two places clip: the weight layers (fixed by 7-bit weights, NNCF's
    ``overflow_fix: enable``), and the attention's q·kᵀ, where NNCF (``model_type=TRANSFORMER``) quantizes
    both inputs, both activations: no 7-bit weight can help there, so the attention stays float. With VNNI
    (int32 accumulation) and off x86 (no such kernels) both stay as NNCF sets them by default: its overflow fix
    on the first layer only, full 8 bits elsewhere, int8 q·kᵀ.
    ``flags``: :func:`int8_flags` (the CPU's, less an ``ONEDNN_MAX_CPU_ISA`` cap)."""
    vnni = has_vnni(flags, machine)
    if vnni is False:
        return {"overflow_fix": "enable", "attention": "float", "reason": "x86 without VNNI: u8s8 int16 saturation"}
    why = f"{machine}: no u8s8 saturation" if vnni is None else \
        f"x86 with {next(f for f in VNNI if f in flags)}: int32 accumulation"
    return {"overflow_fix": "first_layer", "attention": "int8", "reason": why}


@torch.inference_mode()
def agreement(reference: nn.Module, candidate: nn.Module, batches, adapter) -> dict:
    """How often two models' top-1 predictions agree over ``batches`` of (uint8 images, labels), with each
    one's accuracy and the largest logit difference (``candidate`` runs on the CPU)."""
    same = right_ref = right_cand = total = 0
    max_diff = 0.0
    for x, y in batches:
        inputs = adapter(x)
        a = reference(inputs).float().cpu()
        b = candidate(inputs.cpu()).float()
        same += (a.argmax(-1) == b.argmax(-1)).sum().item()
        right_ref += (a.argmax(-1) == y).sum().item()
        right_cand += (b.argmax(-1) == y).sum().item()
        max_diff = max(max_diff, (a - b).abs().max().item())
        total += len(y)
    n = max(1, total)
    return {"images": total, "agreement": same / n, "reference_top1": 100 * right_ref / n,
            "top1": 100 * right_cand / n, "max_abs_logit_diff": max_diff}


def speed_columns(speed: dict | None, prefix: str) -> dict:
    """One device's timing (a timing JSON's ``cpu`` or ``gpu`` entry) as the columns every table uses:
    ``<prefix>_speed`` (it/s), ``_images_per_s``, ``_latency_ms``, ``_speedup`` over the first row and
    ``_speedup_parent`` over the row's parent, each speed-up with ``_ci``. All None where it was not timed."""
    s = speed or {}
    return {f"{prefix}_speed": s.get("it_per_s"), f"{prefix}_images_per_s": s.get("images_per_s"),
            f"{prefix}_latency_ms": s.get("latency_ms"), f"{prefix}_speedup": s.get("vs_baseline"),
            f"{prefix}_speedup_ci": s.get("vs_baseline_ci"), f"{prefix}_speedup_parent": s.get("vs_parent"),
            f"{prefix}_speedup_parent_ci": s.get("vs_parent_ci")}
