"""Long-lived worker processes that run the workflow's jobs, and what each job cost.

A new Python per job would import torch, timm and torchvision before any work, for each of a run's
many jobs. Snakemake runs a ``run:`` job in a thread of its own process; :func:`in_worker` hands the work
to a worker process that stays up between jobs (started on first use, one per job running at once), so
only the first job of each worker pays that start-up. A worker holds no state from one job to the next that a job relies on: each job seeds,
sets its threads and loads its inputs itself.

One executor per worker: a worker killed mid-job (out of memory, or by hand) fails that job alone, and
the next job starts a fresh worker.
"""
from __future__ import annotations

import contextlib
import gc
import multiprocessing
import queue
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

from vitcompress.io import atomic_path
from vitcompress.measure import reset_peak_rss, status_kb

_IDLE: dict[str, queue.SimpleQueue] = {}


def in_worker(pool: str, fn, *args, retire: bool = False, **kwargs):
    """``fn(*args, **kwargs)`` in an idle worker of ``pool`` (a new one if none is idle); its result.
    ``fn`` must be importable (a module-level function): the worker is spawned, not forked. ``retire``: the
    worker is not reused after this call (a job that changes its process for good, e.g. glibc's allocator
    settings, must not leave that to the next job of the pool)."""
    idle = _IDLE.setdefault(pool, queue.SimpleQueue())
    try:
        executor = idle.get_nowait()
    except queue.Empty:
        executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    reuse = not retire
    try:
        return executor.submit(fn, *args, **kwargs).result()
    except BrokenProcessPool:
        reuse = False  # the worker died: never reuse it
        executor.shutdown(wait=False, cancel_futures=True)
        raise RuntimeError(f"the {pool} worker process died mid-job (killed, or out of memory); "
                           f"see the job's log, then run the workflow again") from None
    finally:
        if reuse:
            idle.put(executor)
        else:
            executor.shutdown(wait=False)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (since the last reset, where the OS allows one)."""
    peak = status_kb("VmHWM")
    return (peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0


def release_memory() -> None:
    """Hand the memory a finished job freed back to the OS (glibc keeps it for reuse otherwise: an idle
    worker after a ViT-B job still held 4 GB). Linux/glibc only; elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


#: Resident size (MB) above which a process collects reference cycles after a job, before handing freed memory
#: back: a collection walks every live object (~0.2 s with torch and NNCF loaded, the interpreter held), so a
#: small process (the demo's workers, Snakemake's own) only trims; a ViT-B job's worker is far above it.
COLLECT_ABOVE_MB = 2048


def _cuda_in_use() -> bool:
    """Whether this process has used CUDA: cycles may hold GPU memory its resident size does not show."""
    return torch.cuda.is_initialized()


def release_after_job() -> bool:
    """Free what the finished job left: reference cycles (a full ``gc.collect``) when this process is above
    :data:`COLLECT_ABOVE_MB` or has used CUDA, then glibc's free lists. Whether it collected."""
    rss = status_kb("VmRSS")
    collect = rss is None or rss / 1024.0 > COLLECT_ABOVE_MB or _cuda_in_use()
    if collect:
        gc.collect()
    release_memory()
    return collect


@contextlib.contextmanager
def job_resources(out: str | Path | None):
    """Write the wall seconds and peak memory (MB) of the enclosed job to ``out``, a TSV with Snakemake
    benchmark's ``s`` and ``max_rss`` columns, once it succeeds."""
    reset_peak_rss()
    start = time.perf_counter()
    try:
        yield
    finally:
        release_after_job()
    if out:
        with atomic_path(out) as tmp:
            tmp.write_text(f"s\tmax_rss\n{time.perf_counter() - start:.4f}\t{peak_rss_mb():.2f}\n")
