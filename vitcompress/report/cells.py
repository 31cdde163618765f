"""The run's cells as data: every (data set, row) metrics JSON read into one frame, its columns for
metrics.csv, the study's published figures beside them, the per-cell files `dvc metrics show` prints, the
summary `dvc exp show` compares, and the step jobs' wall time and memory. Nothing here computes a
measurement: every number comes from a metrics file.
"""
from __future__ import annotations

from importlib import resources
from io import StringIO
from pathlib import Path

import pandas as pd

from vitcompress.io import atomic_path, read_json, write_json
from vitcompress.report.format import missing

CSV_COLUMNS = [
    "dataset", "row", "model", "method", "runtime", "accuracy", "accuracy_lo", "accuracy_hi", "seeds",
    "accuracy_sd_seeds", "top5", "gpu_speed", "gpu_images_per_s", "gpu_latency_ms",
    "delta_first", "delta_first_lo", "delta_first_hi", "delta_first_distinguishable",
    "delta_parent", "delta_parent_lo", "delta_parent_hi", "delta_parent_distinguishable",
    "cpu_speed", "cpu_images_per_s", "cpu_latency_ms", "cpu_speedup", "cpu_speedup_lo", "cpu_speedup_hi",
    "gpu_speedup", "gpu_speedup_lo", "gpu_speedup_hi",
    "cpu_speedup_parent", "cpu_speedup_parent_lo", "cpu_speedup_parent_hi",
    "gpu_speedup_parent", "gpu_speedup_parent_lo", "gpu_speedup_parent_hi", "size_mb", "compressed_mb", "params",
    "diffq_true_size_mb", "diffq_compressed_mb", "train_epochs", "batch_size",
    "published_accuracy", "published_size_mb",
]
DVC_METRICS = ("accuracy", "size_mb", "compressed_mb", "cpu_speedup", "cpu_speedup_parent", "cpu_speed",
               "gpu_speed")  # a column each in `dvc metrics show`
JOB_COLUMNS = ["dataset", "seed", "chain", "wall_s", "max_rss_mb"]


def reference_text(name: str) -> str:
    """A file of ``vitcompress/reference/`` (the study's tables and claims), from the installed package."""
    return resources.files("vitcompress").joinpath(f"reference/{name}").read_text()


def published() -> pd.DataFrame:
    """The study's Tables 1-2 (figures copied from the paper) keyed by dataset and row id."""
    return pd.read_csv(StringIO(reference_text("study_tables.csv")))


def flat(record: dict) -> dict:
    """A cell's JSON with its intervals as columns: ``delta_first`` -> delta_first, _lo, _hi,
    _distinguishable; ``cpu_speedup_ci`` -> cpu_speedup_lo, _hi, and the same for the speed-ups over the
    row's parent (missing: None)."""
    out = dict(record)
    for key in ("delta_first", "delta_parent"):
        d = out.pop(key, None) or {}
        out.update({key: d.get("delta"), f"{key}_lo": d.get("lo"), f"{key}_hi": d.get("hi"),
                    f"{key}_distinguishable": d.get("distinguishable")})
    out["accuracy_lo"], out["accuracy_hi"] = out.pop("accuracy_ci", None) or (None, None)
    for key in ("cpu_speedup", "gpu_speedup", "cpu_speedup_parent", "gpu_speedup_parent"):
        ci = out.pop(f"{key}_ci", None) or (None, None)
        out[f"{key}_lo"], out[f"{key}_hi"] = ci
    return out


def collect(files: list[str]) -> pd.DataFrame:
    return pd.DataFrame([flat(read_json(f)) for f in files])


def build_frame(files: list[str], profile: str, rows: list[str]) -> pd.DataFrame:
    """Every cell in the tables' order (data sets as listed, rows in the profile's order), with the study's
    published accuracy and size beside the paper profile's cells."""
    df = collect(files)
    df["row"] = pd.Categorical(df["row"], categories=rows, ordered=True)
    if profile == "paper":
        ref = published().rename(columns={"accuracy": "published_accuracy", "size_mb": "published_size_mb"})
        df = df.merge(ref[["dataset", "row", "published_accuracy", "published_size_mb"]].astype({"row": str}),
                      on=["dataset", "row"], how="left") if len(df) else df
        df["row"] = pd.Categorical(df["row"], categories=rows, ordered=True)
    else:
        df["published_accuracy"] = None
        df["published_size_mb"] = None
    df["dataset"] = pd.Categorical(df["dataset"], categories=list(dict.fromkeys(df["dataset"])), ordered=True)
    return df.sort_values(["dataset", "row"])


def csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The frame as metrics.csv holds it: plain strings for data set and row, every column of
    :data:`CSV_COLUMNS` (None where no cell has it)."""
    out = df.assign(row=df["row"].astype(str), dataset=df["dataset"].astype(str))
    for col in CSV_COLUMNS:
        if col not in out:
            out[col] = None
    return out


def write_metrics(files: list[str], profile: str, datasets: list[str], rows: list[str], csv: str, metrics_dir: str,
                  summary: str | None = None) -> None:
    """From the cells' JSONs (``files``): metrics.csv (one line per cell), one DVC metrics file per cell,
    ``<metrics_dir>/<dataset>/<row>.json`` (the workflow declares the folder its output, so no other run's file
    stays in it), and the summary (:func:`summary_metrics`)."""
    out = csv_frame(build_frame(files, profile, rows))
    with atomic_path(csv) as tmp:
        out[CSV_COLUMNS].to_csv(tmp, index=False, float_format="%.6g")
    for r in out.to_dict("records"):  # one file a cell: `dvc metrics show` prints a row for each
        write_json(Path(metrics_dir) / r["dataset"] / f"{r['row']}.json",
                   {k: (None if missing(r[k]) else r[k]) for k in DVC_METRICS}, seal_it=False)  # DVC reads it
    if summary:
        write_json(summary, summary_metrics(out, datasets, rows), seal_it=False)


def summary_metrics(flat_df: pd.DataFrame, datasets: list[str], rows: list[str]) -> dict:
    """The few numbers an experiment is compared by, per data set: the first row's accuracy, and each other
    row's accuracy change against it (points) and CPU speed-up over it, rounded as the tables print them.
    ``dvc exp show`` flattens it to ``<dataset>.<first row>_accuracy``, ``<dataset>.delta.<row>``,
    ``<dataset>.speedup.<row>``; ``--only-changed`` leaves the columns a sweep moved."""
    def num(v, digits):
        return None if missing(v) else round(float(v), digits)

    cell = {(r["dataset"], r["row"]): r for r in flat_df.to_dict("records")}
    out = {}
    for ds in datasets:
        first = cell.get((ds, rows[0]), {})
        out[ds] = {f"{rows[0]}_accuracy": num(first.get("accuracy"), 2),
                   "delta": {r: num(cell.get((ds, r), {}).get("delta_first"), 2) for r in rows[1:]},
                   "speedup": {r: num(cell.get((ds, r), {}).get("cpu_speedup"), 2) for r in rows[1:]}}
    return out


def read_job_resources(files: list[str]) -> pd.DataFrame:
    """One line per step job from its resources file (``<logs>/<profile>/<dataset>[@seed<k>]/<chain>/step.resources.tsv``):
    wall seconds and peak memory (max RSS, MB)."""
    records = []
    for f in files:
        bench = pd.read_csv(f, sep="\t")
        parts = Path(f).parts
        dataset, _, seed = parts[-3].partition("@seed")  # <dataset>@seed<k>: the chain under another seed
        records.append({"dataset": dataset, "seed": int(seed) if seed else None, "chain": parts[-2],
                        "wall_s": float(bench["s"].iloc[-1]),
                        "max_rss_mb": pd.to_numeric(bench["max_rss"], errors="coerce").iloc[-1]})
    return pd.DataFrame(records, columns=JOB_COLUMNS)


def write_jobs(files: list[str], out: str) -> pd.DataFrame:
    """jobs.csv: :func:`read_job_resources` of every step job."""
    jobs = read_job_resources(files)
    with atomic_path(out) as tmp:
        jobs.to_csv(tmp, index=False, float_format="%.6g")
    return jobs
