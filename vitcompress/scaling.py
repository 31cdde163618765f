"""How attention cost grows with sequence length: exact softmax attention vs Nyström, per landmark count.

This is what low-rank attention exists for, and what a table of 197-token ViTs hides. For each
sequence length n, one attention computation of one layer (q, k, v given; ViT-B's 12 heads of 64
by default) is timed with the project's protocol (warm-up, repeats, median) and its peak memory
measured:

- ``exact``: softmax(QKᵀ/√d)·V written out (the n×n matrix is materialised), as in the study;
- ``exact_sdpa``: PyTorch's fused scaled_dot_product_attention (what timm runs), O(n²) time but
  not O(n²) memory on recent kernels;
- ``nystrom``: the Nyström approximation with m landmarks.

Peak memory on CPU is the process's peak resident set above its level before the call (Linux
``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs``); on CUDA it is
``torch.cuda.max_memory_allocated``. Elsewhere it is left empty.
"""
from __future__ import annotations

import gc
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from vitcompress.attention import exact_attention, nystrom_attention
from vitcompress.io import atomic_path
from vitcompress.measure import MB, effective_threads, reset_peak_rss, spread, status_kb, time_calls
from vitcompress.sections import MeasureSettings, ScalingSettings


def fix_mmap_threshold(nbytes: int = 1 << 16) -> bool:
    """Make glibc serve every block of ``nbytes`` or more with mmap and return it on free.

    By default glibc raises its mmap threshold after large frees and then keeps freed blocks in the
    heap, where a later allocation reuses them without growing the resident set: peak readings would
    then miss them. A fixed threshold turns that adaptation off (Linux/glibc only; else a no-op).
    """
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, int(nbytes)))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


@torch.inference_mode()
def peak_memory_mb(fn, device: str) -> float | None:
    """Peak memory one call of ``fn`` adds on ``device``, in MB (None where it cannot be read)."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / MB
    if not reset_peak_rss():
        return None
    base = status_kb("VmRSS")
    fn()
    peak = status_kb("VmHWM")
    return None if base is None or peak is None else max(0.0, (peak - base) * 1024 / MB)


def attention_scaling(seq_lens, landmarks, embed_dim: int = 768, num_heads: int = 12, pinv_iterations: int = 6,
                      device: str = "cpu", warmup: int = 1, repeats: int = 5, threads: int | None = None,
                      seed: int = 0, progress: bool = True) -> pd.DataFrame:
    from tqdm.auto import tqdm

    if threads:
        torch.set_num_threads(effective_threads(threads))
    if device == "cpu":
        fix_mmap_threshold()
    head_dim = embed_dim // num_heads
    variants = [("exact", None), ("exact_sdpa", None)] + [("nystrom", int(m)) for m in landmarks]
    rows = []
    todo = [(n, v) for n in seq_lens for v in variants if v[1] is None or v[1] <= n]
    g = torch.Generator().manual_seed(seed)
    for n, (name, m) in tqdm(todo, desc=f"attention scaling ({device})", disable=not progress):
        q, k, v = torch.randn(3, 1, num_heads, int(n), head_dim, generator=g).to(device).unbind(0)
        if name == "exact":
            def fn():
                return exact_attention(q, k, v)
        elif name == "exact_sdpa":
            def fn():
                return F.scaled_dot_product_attention(q, k, v)
        else:
            def fn(m=m):
                return nystrom_attention(q, k, v, m, pinv_iterations)
        timing = spread(time_calls(fn, device.startswith("cuda"), warmup, repeats))
        rows.append({
            "device": device, "method": name, "landmarks": m, "seq_len": int(n),
            "median_ms": 1000 * timing["median_s"], "iqr_ms": 1000 * timing["iqr_s"],
            "min_ms": 1000 * timing["min_s"], "peak_mem_mb": peak_memory_mb(fn, device),
            "embed_dim": embed_dim, "num_heads": num_heads, "threads": torch.get_num_threads(),
        })
    return pd.DataFrame(rows)


def plot_scaling(df: pd.DataFrame, out: str | Path) -> None:
    from vitcompress.plotting import save_png, subplots


    fig, axes = subplots(1, 2, figsize=(11, 4.2))
    for (device, name, m), sub in df.groupby(["device", "method", df["landmarks"].fillna(0)], sort=False):
        label = f"{name} m={int(m)}" if name == "nystrom" else name
        label += f" ({device})" if df["device"].nunique() > 1 else ""
        axes[0].plot(sub["seq_len"], sub["median_ms"], marker="o", label=label)
        if sub["peak_mem_mb"].notna().any():
            axes[1].plot(sub["seq_len"], sub["peak_mem_mb"], marker="o", label=label)
    for ax, ylabel in zip(axes, ("time per call (ms, median)", "peak memory (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length n")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("One attention layer: exact vs Nyström (measured)")
    fig.tight_layout()
    save_png(fig, out, dpi=120)


def run(cfg: ScalingSettings | dict, csv: str, png: str, measure: MeasureSettings | dict, fp: dict) -> pd.DataFrame:
    """The workflow's `attention_scaling` target: CPU always, CUDA too when available."""
    cfg, measure = ScalingSettings.of(cfg, "scaling"), MeasureSettings.of(measure, "measure")
    devices = ["cpu"] + (["cuda"] if measure.gpu and torch.cuda.is_available() else [])
    frames = [
        attention_scaling(list(cfg.seq_lens), list(cfg.landmarks), cfg.embed_dim, cfg.num_heads, cfg.pinv_iterations,
                          device, cfg.warmup, cfg.repeats, threads=measure.cpu_threads)
        for device in devices
    ]
    df = pd.concat(frames, ignore_index=True)
    df["machine"] = fp.get("label")
    df["cpu"] = fp.get("cpu")
    with atomic_path(csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    plot_scaling(df, png)
    return df
