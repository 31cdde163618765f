"""How a rule's work runs: in a long-lived worker (or Snakemake's own process), with its log, threads,
device, and the scheduler's slots and priorities.
"""
from __future__ import annotations

import torch

from vitcompress.errors import DeviceError
from vitcompress.joblog import logging_to  # noqa: F401  (re-exported: scripts import it from vitcompress.joblog)
from vitcompress.measure import effective_threads
from vitcompress.methods import get_method
from vitcompress.workers import in_worker, job_resources


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


def _logged_job(log_path: str | None, resources: str | None, fn, kwargs: dict) -> None:
    """``fn(**kwargs)`` with the job's log, and its wall time and peak memory written to ``resources``
    (a TSV with Snakemake benchmark's ``s`` and ``max_rss`` columns) if given."""
    with logging_to(log_path), job_resources(resources):
        fn(**kwargs)


def job(fn, log: str | None = None, resources: str | None = None, pool: str | None = "steps",
        retire_worker: bool = False, **kwargs) -> None:
    """What every ``run:`` rule calls: ``fn(**kwargs)`` (a module-level function of the library) in a
    long-lived worker process of ``pool`` (:mod:`vitcompress.workers`: no Python start-up per job), with
    its log and, if asked, its wall time and peak memory. ``pool=None`` runs it in this process (cheap
    jobs: merging two JSON files). Timing jobs have their own pool ("timing"): timed in Snakemake's
    process, a model competes with the scheduler's threads for the interpreter. ``retire_worker``: the worker
    is not reused (the job changes its process for good)."""
    if pool is None:
        _logged_job(log, resources, fn, kwargs)
    else:
        in_worker(pool, _logged_job, log, resources, fn, kwargs, retire=retire_worker)


def slots_for(threads: int, all_cores: int) -> int:
    """Scheduler slots a job of ``threads`` PyTorch threads claims out of ``all_cores`` (`--cores`): its share
    of the machine's CPUs, so no more jobs run side by side than the CPUs carry."""
    from vitcompress.measure import available_cpus

    return min(all_cores, max(threads, -(-all_cores * threads // available_cpus())))


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
