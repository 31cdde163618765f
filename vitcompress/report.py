"""The study's tables from the per-cell metrics JSONs: Markdown and LaTeX through Jinja templates,
plus metrics.csv (one line per cell) and metrics.json (for `dvc metrics show`).

Missing cells print "-". Nothing here computes a number: every figure comes from a metrics file.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import jinja2
import pandas as pd

from vitcompress.artifacts import atomic_path, read_json, write_json
from vitcompress.config import row_labels

CSV_COLUMNS = [
    "dataset", "row", "model", "method", "accuracy", "top5", "gpu_speed", "gpu_images_per_s", "gpu_latency_ms",
    "cpu_speed", "cpu_images_per_s", "cpu_latency_ms", "cpu_speedup", "gpu_speedup", "size_mb", "params",
    "train_epochs", "batch_size",
    "published_accuracy", "published_size_mb",
]
DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "reports" / "templates"
TEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
               "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "digits": "digits (scikit-learn)",
                  "digit_pairs": "digit pairs (100 classes)"}


def published() -> pd.DataFrame:
    """The study's Tables 1-2 (figures copied from the paper) keyed by dataset and row id."""
    text = resources.files("vitcompress").joinpath("reference/study_tables.csv").read_text()
    from io import StringIO

    return pd.read_csv(StringIO(text))


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v, digits: int = 2) -> str:
    return "-" if _missing(v) else f"{v:.{digits}f}"


def fmt_ratio(v) -> str:
    return "-" if _missing(v) else f"{v:.2f}×"


def fmt_speed(v) -> str:
    """Speeds span 0.05 (ViT-B on CPU) to thousands (tiny models): keep three significant digits."""
    if _missing(v):
        return "-"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def tex(s) -> str:
    return "".join(TEX_ESCAPES.get(c, c) for c in str(s))


def collect(files: list[str]) -> pd.DataFrame:
    return pd.DataFrame([read_json(f) for f in files])


def _env(templates: Path) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(fmt=fmt, speed=fmt_speed, ratio=fmt_ratio, tex=tex)
    return env


def build_frame(files: list[str], profile: str, rows: list[str]) -> pd.DataFrame:
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


def job_resources(benchmarks: list[str]) -> pd.DataFrame:
    """One line per job from Snakemake benchmark files (``<logs>/<profile>/<dataset>/<chain>/step.benchmark.tsv``):
    wall seconds and peak memory (max RSS, MB)."""
    records = []
    for f in benchmarks:
        bench = pd.read_csv(f, sep="\t")
        parts = Path(f).parts
        records.append({"dataset": parts[-3], "chain": parts[-2], "wall_s": float(bench["s"].iloc[-1]),
                        "max_rss_mb": pd.to_numeric(bench["max_rss"], errors="coerce").iloc[-1]})
    return pd.DataFrame(records, columns=["dataset", "chain", "wall_s", "max_rss_mb"])


def render_tables(files: list[str], profile: str, datasets: list[str], rows: list[str], md: str, tex: str,
                  csv: str, json_out: str, templates: str | Path | None = None, figures: list[str] = (),
                  benchmarks: list[str] = (), jobs_csv: str | None = None) -> None:
    df = build_frame(files, profile, rows)
    jobs = job_resources(list(benchmarks))
    if jobs_csv:
        with atomic_path(jobs_csv) as tmp:
            jobs.to_csv(tmp, index=False, float_format="%.6g")
    peak = jobs.loc[jobs["max_rss_mb"].idxmax()].to_dict() if jobs["max_rss_mb"].notna().any() else None
    resources_ctx = {"jobs": len(jobs), "total_s": float(jobs["wall_s"].sum()), "peak": peak,
                     "csv": Path(jobs_csv).name if jobs_csv else None} if len(jobs) else None
    md_dir = Path(md).resolve().parent
    links = [{"path": Path(f).resolve().relative_to(md_dir).as_posix() if Path(f).resolve().is_relative_to(md_dir)
              else str(f), "name": Path(f).stem.replace("_", " ")} for f in figures]
    tables = []
    for ds in datasets:
        sub = df[df["dataset"] == ds].sort_values("row")
        records = sub.to_dict("records")
        fp = records[0]["fingerprint"] if records else {}
        notes = sorted({n for r in records for n in (r.get("notes") or [])})
        tables.append({
            "dataset": ds,
            "title": DATASET_TITLES.get(ds, ds),
            "rows": records,
            "has_top5": any(not _missing(r.get("top5")) for r in records),
            "baseline": records[0]["model"] if records else None,
            "batch_size": records[0].get("batch_size") if records else None,
            "fingerprint": fp,
            "notes": notes,
        })
    env = _env(Path(templates) if templates else DEFAULT_TEMPLATES)
    ctx = {"profile": profile, "tables": tables, "published": profile == "paper", "figures": links,
           "resources": resources_ctx}
    for out, name in ((md, "tables.md.j2"), (tex, "tables.tex.j2")):
        with atomic_path(out) as tmp:
            tmp.write_text(env.get_template(name).render(**ctx))
    flat = df.assign(row=df["row"].astype(str), dataset=df["dataset"].astype(str))
    for col in CSV_COLUMNS:
        if col not in flat:
            flat[col] = None
    with atomic_path(csv) as tmp:
        flat[CSV_COLUMNS].to_csv(tmp, index=False, float_format="%.6g")
    nested: dict = {}
    for r in flat.to_dict("records"):
        nested.setdefault(r["dataset"], {})[r["row"]] = {
            k: (None if _missing(r[k]) else r[k])
            for k in ("accuracy", "top5", "gpu_speed", "cpu_speed", "cpu_images_per_s", "cpu_latency_ms", "cpu_speedup",
                      "size_mb", "params")
        }
    write_json(json_out, nested)


def render_bench(files: list[str], rows: list[dict], profile: str, csv: str, md: str,
                 templates: str | Path | None = None, settings: list[dict] | None = None) -> None:
    """The architecture benchmark: one line per row, random weights, no training. ``settings``: each
    row's step settings (for ``{name}`` fields in its labels; what the artifact resolved wins)."""
    records = []
    ref = published()
    for i, (row, f) in enumerate(zip(rows, files)):
        r = read_json(f)
        pub = ref[(ref["row"] == row["id"])]["size_mb"].dropna()
        records.append({
            "row": row["id"], **row_labels(row, settings[i] if settings else {}, r.get("settings")),
            "timm": r["arch"]["timm"], "input": "x".join(map(str, r["arch"]["kwargs"]["img_size"])),
            "size_mb": r["size_mb"], "params": r["params"],
            "published_size_mb": float(pub.iloc[0]) if profile == "paper" and len(pub) else None,
            "cpu_speed": (r.get("cpu") or {}).get("it_per_s"),
            "cpu_images_per_s": (r.get("cpu") or {}).get("images_per_s"),
            "cpu_latency_ms": (r.get("cpu") or {}).get("latency_ms"),
            "cpu_speedup": (r.get("cpu") or {}).get("vs_baseline"),
            "gpu_speed": (r.get("gpu") or {}).get("it_per_s"),
            "gpu_speedup": (r.get("gpu") or {}).get("vs_baseline"),
            "batch_size": (r.get("cpu") or r.get("gpu") or {}).get("batch_size"),
            "fingerprint": r["fingerprint"],
            "notes": r.get("notes", []),
        })
    with atomic_path(csv) as tmp:
        pd.DataFrame(records).drop(columns=["fingerprint", "notes"]).to_csv(tmp, index=False, float_format="%.6g")
    env = _env(Path(templates) if templates else DEFAULT_TEMPLATES)
    with atomic_path(md) as tmp:
        tmp.write_text(env.get_template("bench_arch.md.j2").render(profile=profile, rows=records,
                                                                   baseline=records[0]["model"] if records else "-",
                                                                   fingerprint=records[0]["fingerprint"] if records else {}))


def pareto_front(xs, ys, x_larger_is_better: bool) -> list[bool]:
    """Which points no other point beats: accuracy (``ys``) at least as high and ``xs`` at least as good,
    one of the two strictly better. Missing values are never on the front."""
    pts = [(x, y) for x, y in zip(xs, ys)]
    sign = 1.0 if x_larger_is_better else -1.0

    def beats(a, b):
        return (sign * a[0] >= sign * b[0] and a[1] >= b[1]) and (sign * a[0] > sign * b[0] or a[1] > b[1])

    ok = [not (_missing(x) or _missing(y)) for x, y in pts]
    return [ok[i] and not any(ok[j] and beats(pts[j], pts[i]) for j in range(len(pts)) if j != i)
            for i in range(len(pts))]


TRADEOFFS = (("cpu_speedup", "CPU speed-up vs the first row, timed side by side (x, higher is better)", True),
             ("size_mb", "size (MB, lower is better)", False))


def tradeoff_figure(files: list[str], out: str | Path, title: str) -> None:
    """Accuracy against CPU speed-up and against size for one data set's rows, the Pareto front marked:
    the rows worth shipping are on it; every row off it is beaten on both axes by one that is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    cells = [read_json(f) for f in files]
    fig, axes = plt.subplots(1, len(TRADEOFFS), figsize=(12, 4.8))
    for ax, (key, label, larger) in zip(axes, TRADEOFFS):
        xs = [c.get(key) for c in cells]
        ys = [c.get("accuracy") for c in cells]
        front = pareto_front(xs, ys, larger)
        shown = [i for i, x in enumerate(xs) if not _missing(x)]
        ax.scatter([xs[i] for i in shown], [ys[i] for i in shown], c=["C3" if front[i] else "C0" for i in shown],
                   zorder=3)
        for i in shown:
            ax.annotate(cells[i]["row"], (xs[i], ys[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        on = sorted((xs[i], ys[i]) for i in shown if front[i])
        if on:
            ax.plot([p[0] for p in on], [p[1] for p in on], "--", color="C3", alpha=0.6, label="Pareto front")
            ax.legend(loc="best")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 accuracy (%)")
        left_out = [cells[i]["row"] for i, x in enumerate(xs) if _missing(x)]
        if left_out:
            ax.set_title(f"not plotted (not measured): {', '.join(left_out)}", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
