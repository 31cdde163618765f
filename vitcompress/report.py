"""The study's tables from the per-cell metrics JSONs: Markdown and LaTeX through Jinja templates,
plus metrics.csv (one line per cell), one small metrics file per cell under ``reports/metrics/`` (so
`dvc metrics show` and `dvc metrics diff` print a row per cell) and the run's deltas beside the study's.

Missing cells print "-". Nothing here computes a number: every figure comes from a metrics file.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from vitcompress.config import row_labels
from vitcompress.io import atomic_path, read_json, write_json

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
DEFAULT_TEMPLATES = Path(__file__).resolve().parent / "templates"  # package data: an installed vitcompress renders
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


def fmt_change(r: dict, key: str = "delta_first") -> str:
    """A paired accuracy change with its 95% interval, ``−0.74 (−1.85, +0.37)``, and † when the interval
    contains 0 (not distinguishable); "-" where there is none (the first row, a root row's parent)."""
    if _missing(r.get(key)):
        return "-"
    text = f"{fmt_delta(r[key])} ({fmt_delta(r[key + '_lo'])}, {fmt_delta(r[key + '_hi'])})"
    return text if r.get(key + "_distinguishable") else text + " †"


def fmt_ratio_ci(r: dict, key: str = "cpu_speedup") -> str:
    """A speed-up with its interval: ``1.29× (1.25–1.33)``."""
    if _missing(r.get(key)):
        return "-"
    if _missing(r.get(key + "_lo")):
        return fmt_ratio(r[key])
    return f"{r[key]:.2f}× ({r[key + '_lo']:.2f}–{r[key + '_hi']:.2f})"


def fmt_delta(v, digits: int = 2) -> str:
    """A signed change: +1.20, −0.40 (a real minus sign), 0.00."""
    if _missing(v):
        return "-"
    text = f"{abs(v):.{digits}f}"
    return text if float(text) == 0 else ("+" if v > 0 else "−") + text


def tex(s) -> str:
    return "".join(TEX_ESCAPES.get(c, c) for c in str(s))


def _flat(record: dict) -> dict:
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
    return pd.DataFrame([_flat(read_json(f)) for f in files])


def _env(templates: Path) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(fmt=fmt, speed=fmt_speed, ratio=fmt_ratio, tex=tex, delta=fmt_delta, change=fmt_change,
                       ratio_ci=fmt_ratio_ci, combine=combine)
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
    """One line per job from its resources file (``<logs>/<profile>/<dataset>[@seed<k>]/<chain>/step.resources.tsv``):
    wall seconds and peak memory (max RSS, MB)."""
    records = []
    for f in benchmarks:
        bench = pd.read_csv(f, sep="\t")
        parts = Path(f).parts
        dataset, _, seed = parts[-3].partition("@seed")  # <dataset>@seed<k>: the chain under another seed
        records.append({"dataset": dataset, "seed": int(seed) if seed else None, "chain": parts[-2],
                        "wall_s": float(bench["s"].iloc[-1]),
                        "max_rss_mb": pd.to_numeric(bench["max_rss"], errors="coerce").iloc[-1]})
    return pd.DataFrame(records, columns=["dataset", "seed", "chain", "wall_s", "max_rss_mb"])


DVC_METRICS = ("accuracy", "size_mb", "compressed_mb", "cpu_speedup", "cpu_speedup_parent", "cpu_speed", "gpu_speed")  # a column each in `dvc metrics show`
STUDY_DATASETS = ("cifar10", "cifar100")
STUDY_BASELINE = "vanilla"


def _direction(delta: float) -> str:
    """What a change in accuracy says at a glance: more than a point down or up, or within a point."""
    return "loses" if delta < -1 else "gains" if delta > 1 else "holds"


VERDICTS = {  # (this run's direction, the study's) -> how they compare
    ("loses", "loses"): "agrees: both lose", ("holds", "holds"): "agrees: both hold",
    ("gains", "gains"): "agrees: both gain", ("holds", "loses"): "milder here",
    ("loses", "holds"): "harsher here", ("gains", "loses"): "contradicts: gains here",
    ("gains", "holds"): "gains here, holds in the study", ("loses", "gains"): "contradicts: loses here",
    ("holds", "gains"): "holds here, gains in the study",
}


def study_comparison(df: pd.DataFrame, datasets: list[str], rows: list[str], study_rows: dict | None = None) -> list[dict]:
    """Each row's accuracy change against the first row on every data set of the run, beside the study's
    change against its vanilla ViT on CIFAR-10 and CIFAR-100 (its Tables 1-2), and sizes as a share of the
    first row / the study's vanilla. ``study_rows``: row id -> the study's row id (default: the same id);
    a row the study did not run has no study figures. Direction: "loses"/"gains" beyond 1 point, else "holds"."""
    ref = published().set_index(["dataset", "row"])
    study_rows = study_rows or {}
    cell = {(str(r["dataset"]), str(r["row"])): r for r in df.to_dict("records")}
    out = []
    for row in rows[1:]:
        demo = {}
        for ds in datasets:
            mine, base = cell.get((ds, row)), cell.get((ds, rows[0]))
            if mine and base and not _missing(mine["accuracy"]) and not _missing(base["accuracy"]):
                demo[ds] = {"delta": mine["accuracy"] - base["accuracy"],
                            "size_pct": 100.0 * mine["size_mb"] / base["size_mb"]}
        sid = study_rows.get(row, row)
        study = {}
        for ds in STUDY_DATASETS:
            if (ds, sid) in ref.index and (ds, STUDY_BASELINE) in ref.index:
                size = ref.loc[(ds, sid), "size_mb"]
                study[ds] = {"delta": ref.loc[(ds, sid), "accuracy"] - ref.loc[(ds, STUDY_BASELINE), "accuracy"],
                             "size_pct": None if _missing(size) else 100.0 * size / ref.loc[(ds, STUDY_BASELINE), "size_mb"]}
        verdict = None
        if demo and study:
            mine = _direction(sum(d["delta"] for d in demo.values()) / len(demo))
            theirs = _direction(sum(d["delta"] for d in study.values()) / len(study))
            verdict = VERDICTS[(mine, theirs)]
        out.append({"row": row, "study_row": sid if study else None, "demo": demo, "study": study,
                    "verdict": verdict})
    return out


# The study's findings (its Tables 1-2, sections 4.1-4.2) as checks on a run, by the study row a row stands
# for: its accuracy change against its chain's uncompressed model within ``within`` points, its size at most
# ``size_pct`` % of the first row's (in the ``size`` column: DiffQ's claim rests on compression, so its size is
# compared compressed with compressed), its CPU speed-up at least ``speedup``.
FINDINGS = {
    "dynamic_ptq": {"within": 1.0}, "fq_vit": {"within": 2.0}, "lsq": {"within": 3.0},
    "diffq": {"within": 8.0, "size_pct": 8.0, "size": "compressed_mb"}, "deit_base": {"within": 2.0},
    "deit_tiny": {"within": 8.0, "speedup": 2.5}, "prune_0.1": {"within": 5.0}, "prune_0.2": {"within": 5.0},
    "nystrom_64": {"within": 3.0},
}
TOME_PREFIX, PRUNE_PREFIXES = "tome_", ("prune_", "sprune_")  # ToMe rows; weight-pruning rows (VTP, library)
LIBRARY_VS_VTP = (("sprune_0.1", "prune_0.1"), ("sprune_0.2", "prune_0.2"))  # (torch-pruning row, VTP row), same r
ORDERED = (("prune_0.1", "prune_0.2"), ("nystrom_24", "nystrom_32", "nystrom_64"))  # larger compression later
STUDENT_MARGIN, ROW_MARGIN = 2.0, 1.0  # how far a distilled student / any other row may score above its source
MACHINE_DRIFT = 1.0  # points an int8 row's accuracy on another machine may differ before hardware.md marks it
DEPLOY_LOSS = 2.0  # top-1 points a deployment step (conversion, runtime int8) may lose against the model it deploys


HOLDS, CONTRADICTED, UNDECIDED = "holds", "contradicted", "undecided"


def within(d: dict, bound: float) -> str:
    """An equivalence claim, |change| <= ``bound``: holds when the whole interval lies inside [-bound, bound],
    contradicted when it lies wholly outside, else undecided."""
    if d["lo"] >= -bound - 1e-9 and d["hi"] <= bound + 1e-9:
        return HOLDS
    return CONTRADICTED if d["hi"] < -bound - 1e-9 or d["lo"] > bound + 1e-9 else UNDECIDED


def at_least(lo: float, hi: float, target: float) -> str:
    """A claim "at least ``target``" on an interval [lo, hi]: holds above it, contradicted below it."""
    return HOLDS if lo >= target - 1e-9 else CONTRADICTED if hi < target - 1e-9 else UNDECIDED


def at_most(lo: float, hi: float, target: float) -> str:
    """A claim "at most ``target``" on an interval [lo, hi]."""
    return HOLDS if hi <= target + 1e-9 else CONTRADICTED if lo > target + 1e-9 else UNDECIDED


def combine(verdicts) -> str:
    """Claims that must all hold: contradicted if one is, holds if all do, else undecided."""
    verdicts = list(verdicts)
    return CONTRADICTED if CONTRADICTED in verdicts else HOLDS if all(v == HOLDS for v in verdicts) else UNDECIDED


def study_findings(df: pd.DataFrame, datasets: list[str], rows: list[str], study_rows: dict | None = None) -> list[dict]:
    """Each finding of :data:`FINDINGS` and :data:`ORDERED` that the run's rows can show, per data set, whether
    no row beats the model it was made from (its chain's first step's row; the first row for a root row such
    as a distilled student, which may beat it by ``STUDENT_MARGIN``; others by ``ROW_MARGIN``), and whether
    no deployment step loses more than ``DEPLOY_LOSS`` points against the model it deploys.

    Each claim gets one of three verdicts from the 95% interval of its paired change
    (:func:`vitcompress.stats.paired_delta`) or speed-up: **holds** when the interval lies inside the claim's
    bound (an equivalence: "within X points") or beyond it in the claimed direction ("at least 2.5x"),
    **contradicted** when it lies wholly on the wrong side, **undecided** when it straddles the bound. Cells
    without per-image results or timing intervals are judged by their point values. Each entry: {"finding",
    "target", "measured": {ds: text}, "verdict": {ds: verdict}}."""
    study_rows = study_rows or {}
    by_study = {}
    for r in rows:  # the first row standing for a study row is judged by its finding (a variant may follow it)
        by_study.setdefault(study_rows.get(r, r), r)
    cell = {(str(r["dataset"]), str(r["row"])): r for r in df.to_dict("records")}
    out = []

    def add(finding, target, check):
        measured, verdict = {}, {}
        for ds in datasets:
            result = check(ds)
            if result is not None:
                measured[ds], verdict[ds] = result
        if measured:
            out.append({"finding": finding, "target": target, "measured": measured, "verdict": verdict})

    def acc(ds, row):
        c = cell.get((ds, row))
        return None if c is None or _missing(c["accuracy"]) else c["accuracy"]

    def change(ds, row, other) -> dict:
        """row minus other on ds: the paired delta and its interval (lo = hi = delta without per-image data)."""
        from vitcompress.measure import accuracy_change, accuracy_change_over_seeds

        c, o = cell[(ds, row)], cell[(ds, other)]
        mine, theirs = c.get("per_image_by_seed"), o.get("per_image_by_seed")
        if isinstance(mine, list) and isinstance(theirs, list) and len(mine) == len(theirs) > 1:
            paired = accuracy_change_over_seeds([{"per_image": p, "groups": c.get("groups")} for p in mine],
                                                [{"per_image": p} for p in theirs])  # seed by seed, then over
            if paired is not None:
                return paired
        if any(not _missing(x.get("seeds")) and int(x["seeds"]) > 1 for x in (c, o)):  # means, no per-seed pairs:
            d = c["accuracy"] - o["accuracy"]  # the difference of the means the table shows, without an interval
            return {"delta": d, "lo": d, "hi": d, "distinguishable": d != 0}
        paired = accuracy_change(c, o)
        if paired is not None:
            return paired
        d = c["accuracy"] - o["accuracy"]
        return {"delta": d, "lo": d, "hi": d, "distinguishable": d != 0}

    def interval(d: dict) -> str:
        return fmt_delta(d["delta"]) + ("" if d["lo"] == d["hi"] else f" ({fmt_delta(d['lo'])}, {fmt_delta(d['hi'])})")

    first = rows[0] if rows else None
    for sid, spec in FINDINGS.items():
        row = by_study.get(sid)
        if row is None or row == first:
            continue

        def check(ds, row=row, spec=spec):
            mine, base = acc(ds, row), acc(ds, first)
            if mine is None or base is None:
                return None
            c, b = cell[(ds, row)], cell[(ds, first)]
            d = change(ds, row, first)
            parts, verdicts = [interval(d)], [within(d, spec["within"])]
            if "size_pct" in spec:
                col = spec.get("size", "size_mb")
                if _missing(c.get(col)) or _missing(b.get(col)):
                    return None
                pct = 100.0 * c[col] / b[col]
                parts.append(f"{pct:.1f}%")
                verdicts.append(HOLDS if pct <= spec["size_pct"] else CONTRADICTED)  # a size is measured exactly
            if "speedup" in spec:
                sp = c.get("cpu_speedup")
                if _missing(sp):
                    parts.append("no speed")
                    verdicts.append(UNDECIDED)
                else:
                    lo, hi = c.get("cpu_speedup_lo"), c.get("cpu_speedup_hi")
                    lo, hi = (sp, sp) if _missing(lo) or _missing(hi) else (lo, hi)
                    parts.append(f"{sp:.2f}x" + ("" if lo == hi else f" ({lo:.2f}-{hi:.2f})"))
                    verdicts.append(at_least(lo, hi, spec["speedup"]))
            return ", ".join(parts), combine(verdicts)

        target = f"within {spec['within']:g} point{'s' if spec['within'] != 1 else ''} of {first}"
        if "size_pct" in spec:
            target += f", <= {spec['size_pct']:g}% of its size" + (" (both compressed)" if spec.get("size") else "")
        if "speedup" in spec:
            target += f", >= {spec['speedup']:g}x its CPU speed"
        add(row, target, check)

    for group in ORDERED:
        members = [by_study[s] for s in group if s in by_study]
        if len(members) < 2:
            continue
        rising = group[0].startswith("nystrom")  # more landmarks: closer to exact attention

        def check(ds, members=members, rising=rising):
            accs = [acc(ds, r) for r in members]
            if any(a is None for a in accs):
                return None
            steps = [change(ds, b, a) for a, b in zip(members, members[1:])]  # each member minus the one before
            verdict = combine(at_least(d["lo"], d["hi"], 0.0) if rising else at_most(d["lo"], d["hi"], 0.0)
                              for d in steps)
            if verdict == HOLDS and any(d["lo"] == d["hi"] == 0 for d in steps):
                verdict = UNDECIDED  # equal point values with no interval: no order shown
            return " / ".join(f"{a:.2f}" for a in accs) + "; steps " + ", ".join(interval(d) for d in steps), verdict

        add(" / ".join(members), "accuracy rises with m (each step's interval at or above 0)" if rising else
            "the larger ratio loses at least as much (each step's interval at or below 0)", check)

    def beats_source(ds):
        changes = []
        for row in rows[1:]:
            c = cell.get((ds, row))
            if c is None or _missing(c["accuracy"]) or not c.get("chain"):
                continue
            root = next((r for r in rows if (cell.get((ds, r)) or {}).get("chain") == c["chain"][:1]), None)
            source, margin = (first, STUDENT_MARGIN) if root in (None, row) else (root, ROW_MARGIN)
            if acc(ds, source) is None or source == row:
                continue
            changes.append((row, source, margin, change(ds, row, source)))
        if not changes:
            return None
        verdict = combine(at_most(d["lo"], d["hi"], margin) for _, _, margin, d in changes)
        # the row that decides: the one furthest above its margin (lower end if contradicted, else upper end)
        end = "lo" if verdict == CONTRADICTED else "hi"
        row, source, margin, d = max(changes, key=lambda x: x[3][end] - x[2])
        return f"highest: {row} {interval(d)} over {source}", verdict

    add("no row beats the model it was made from", f"by more than {ROW_MARGIN:g} point "
        f"(a distilled student its teacher by {STUDENT_MARGIN:g})", beats_source)

    def deploys(ds):
        """Every deployment step (a conversion or a runtime's int8) against the model it deploys."""
        changes = []
        for row in rows:
            c = cell.get((ds, row))
            if c is None or _missing(c.get("delta_parent")) or str(c.get("runtime", "PyTorch")).startswith("PyTorch"):
                continue
            d = {"delta": c["delta_parent"], "lo": c.get("delta_parent_lo"), "hi": c.get("delta_parent_hi")}
            if _missing(d["lo"]) or _missing(d["hi"]):
                d["lo"] = d["hi"] = d["delta"]
            changes.append((row, d))
        if not changes:
            return None
        verdict = combine(at_least(d["lo"], d["hi"], -DEPLOY_LOSS) for _, d in changes)
        end = "hi" if verdict == CONTRADICTED else "lo"  # the row that decides
        row, d = min(changes, key=lambda rd: rd[1][end])
        return f"lowest: {row} {interval(d)} vs its parent", verdict

    add(f"no deployment step loses more than {DEPLOY_LOSS:g} points against the model it deploys",
        "every ONNX Runtime / OpenVINO row's change vs its parent", deploys)

    def library_vs_gates(ds):
        """The study's proposed remedy against its method: structured pruning through the library (a learned
        group importance) beside VTP's gates at the same ratio r, paired on the test images."""
        pairs = [(lib, vtp) for lib, vtp in LIBRARY_VS_VTP if (ds, lib) in cell and (ds, vtp) in cell]
        if not pairs:
            return None
        changes = [(lib, vtp, change(ds, lib, vtp)) for lib, vtp in pairs]
        verdict = combine(at_least(d["lo"], d["hi"], 0.0) for _, _, d in changes)

        def params(row):
            return cell[(ds, row)].get("params")

        return "; ".join(f"{lib} − {vtp} {interval(d)}, params {fmt(params(lib) / params(vtp) * 100, 0)}% of VTP's"
                         if not _missing(params(lib)) and not _missing(params(vtp)) and params(vtp) else
                         f"{lib} − {vtp} {interval(d)}" for lib, vtp, d in changes), verdict

    add("structured pruning with a learned group importance (torch-pruning) beats VTP's gates",
        "at the same ratio r, each change's interval above 0", library_vs_gates)

    def tokens_vs_weights(ds):
        """The study's other question: token merging against weight pruning at (nearly) the same CPU speed-up:
        each ToMe row beside the pruning row whose speed-up over the first row is nearest its own."""
        tome = [r for r in rows if r.startswith(TOME_PREFIX) and (ds, r) in cell and "+" not in r]
        pruned = [r for r in rows if r.startswith(PRUNE_PREFIXES) and (ds, r) in cell and "+" not in r
                  and not r.endswith("_study") and not _missing(cell[(ds, r)].get("cpu_speedup"))]
        pairs = []
        for t in tome:
            sp = cell[(ds, t)].get("cpu_speedup")
            if _missing(sp) or not pruned:
                continue
            p = min(pruned, key=lambda r: abs(cell[(ds, r)]["cpu_speedup"] - sp))
            pairs.append((t, p, change(ds, t, p)))
        if not pairs:
            return None
        verdict = combine(at_least(d["lo"], d["hi"], 0.0) for _, _, d in pairs)
        return "; ".join(f"{t} − {p} {interval(d)} at {cell[(ds, t)]['cpu_speedup']:.2f}x vs "
                         f"{cell[(ds, p)]['cpu_speedup']:.2f}x" for t, p, d in pairs), verdict

    add("token merging (ToMe) keeps at least the accuracy of weight pruning at the same CPU speed-up",
        "each ToMe row against the pruning row nearest its speed-up: change's interval at or above 0",
        tokens_vs_weights)
    return out


def findings_summary(findings: list[dict]) -> dict:
    """How many claims (finding x data set) hold, are contradicted, are undecided."""
    verdicts = [v for f in findings for v in f["verdict"].values()]
    return {"claims": len(verdicts), **{v: verdicts.count(v) for v in (HOLDS, CONTRADICTED, UNDECIDED)}}


def render_tables(files: list[str], profile: str, datasets: list[str], rows: list[str], md: str, tex: str,
                  csv: str, metrics_dir: str, templates: str | Path | None = None, figures: list[str] = (),
                  benchmarks: list[str] = (), jobs_csv: str | None = None, study_rows: dict | None = None,
                  summary: str | None = None) -> None:
    """``metrics_dir``: one ``<dataset>/<row>.json`` per cell (the DVC metrics). ``study_rows``: row id ->
    the study's row id it stands for, for the comparison with the study (default: the same id).
    ``summary``: the compact metrics file :func:`summary_metrics` writes (what ``dvc exp show`` compares)."""
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
        notes += [f"{r['model']}: diffq's own figures, true_model_size {r['diffq_true_size_mb']:.3f} MB (the learned "
                  f"bits, packed exactly) and compressed_model_size {r['diffq_compressed_mb']:.3f} MB (zlib of one "
                  f"byte per level)." for r in records
                  if not _missing(r.get("diffq_true_size_mb")) and not _missing(r.get("diffq_compressed_mb"))]
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
    counts = pd.to_numeric(df["seeds"], errors="coerce") if "seeds" in df else pd.Series(dtype=float)
    seeds = int(counts.max()) if counts.notna().any() else 1
    ctx = {"profile": profile, "tables": tables, "seeds": seeds, "published": profile == "paper", "figures": links,
           "resources": resources_ctx, "comparison": study_comparison(df, datasets, rows, study_rows),
           "findings": (findings := study_findings(df, datasets, rows, study_rows)),
           "findings_summary": findings_summary(findings),
           "datasets": [{"id": ds, "title": DATASET_TITLES.get(ds, ds)} for ds in datasets],
           "study_datasets": [{"id": ds, "title": DATASET_TITLES[ds]} for ds in STUDY_DATASETS],
           "first_row": tables[0]["baseline"] if tables else None}
    for out, name in ((md, "tables.md.j2"), (tex, "tables.tex.j2")):
        with atomic_path(out) as tmp:
            tmp.write_text(env.get_template(name).render(**ctx))
    flat = df.assign(row=df["row"].astype(str), dataset=df["dataset"].astype(str))
    for col in CSV_COLUMNS:
        if col not in flat:
            flat[col] = None
    with atomic_path(csv) as tmp:
        flat[CSV_COLUMNS].to_csv(tmp, index=False, float_format="%.6g")
    cells = {Path(metrics_dir) / r["dataset"] / f"{r['row']}.json": r for r in flat.to_dict("records")}
    for stale in set(Path(metrics_dir).glob("*/*.json")) - set(cells):  # another profile's or an old row's
        stale.unlink()
    for path, r in cells.items():  # one file a cell: `dvc metrics show` prints a row for each
        write_json(path, {k: (None if _missing(r[k]) else r[k]) for k in DVC_METRICS}, seal_it=False)  # DVC reads it
    if summary:
        write_json(summary, summary_metrics(flat, datasets, rows), seal_it=False)


def summary_metrics(flat: pd.DataFrame, datasets: list[str], rows: list[str]) -> dict:
    """The few numbers an experiment is compared by, per data set: the first row's accuracy, and each other
    row's accuracy change against it (points) and CPU speed-up over it, rounded as the tables print them.
    ``dvc exp show`` flattens it to ``<dataset>.<first row>_accuracy``, ``<dataset>.delta.<row>``,
    ``<dataset>.speedup.<row>``; ``--only-changed`` leaves the columns a sweep moved."""
    def num(v, digits):
        return None if _missing(v) else round(float(v), digits)

    cell = {(r["dataset"], r["row"]): r for r in flat.to_dict("records")}
    out = {}
    for ds in datasets:
        first = cell.get((ds, rows[0]), {})
        out[ds] = {f"{rows[0]}_accuracy": num(first.get("accuracy"), 2),
                   "delta": {r: num(cell.get((ds, r), {}).get("delta_first"), 2) for r in rows[1:]},
                   "speedup": {r: num(cell.get((ds, r), {}).get("cpu_speedup"), 2) for r in rows[1:]}}
    return out


# Deployment targets for ViT-B/16 (the study's architecture), by the method of a row's last step: the
# speed-up over PyTorch fp32 vanilla (by the best instruction set the CPU has) and the size as a share of
# vanilla's. They describe the full-size model; tiny models spend their time in per-op overheads instead.
DEPLOY_TARGETS = {
    "onnx": {"speedup": {"": 1.0}},
    "ort_int8_static": {"speedup": {"avx512_vnni": 3.0, "avx2": 2.0}, "size_pct": 26.0},
    "ort_int8_dynamic": {"size_pct": 26.0},
    "ov_int8": {"speedup": {"avx512_vnni": 4.3}, "size_pct": 26.0},
    "ov_int8_accuracy_control": {"size_pct": 26.0},
}
# Targets across rows: OpenVINO int8 of the first row's model against ORT static int8 of it, timed in the same
# run; and a chain past the peer: a pruned or distilled model through OpenVINO int8, against PyTorch fp32.
OV_OVER_ORT = 1.2
CHAIN_PAST_PEER = {"avx512_vnni": 5.0}
SHRINKING = ("prune", "structured_prune", "distill")  # methods whose model is smaller than the first row's
TARGET_ARCH = "vit_base_patch16_224"


def deploy_targets(records: list[dict], methods: list[str]) -> list[dict]:
    """Each applicable target of :data:`DEPLOY_TARGETS`, met or not on this machine's measurements."""
    if not records or records[0]["timm"] != TARGET_ARCH:
        return []
    base_size = records[0]["size_mb"]
    out = []
    for r, method in zip(records, methods):
        target = DEPLOY_TARGETS.get(method, {})
        flags = set(r["fingerprint"].get("cpu_flags") or [])
        by_isa = target.get("speedup", {})
        isa = next((f for f in ("avx512_vnni", "avx2", "") if f in by_isa and (not f or f in flags)), None)
        if isa is not None:
            got = r.get("cpu_speedup")
            out.append({"row": r["row"], "what": "CPU speed-up over PyTorch fp32",
                        "target": f">= {by_isa[isa]:g}x" + (f" (CPU with {isa})" if isa else ""),
                        "measured": None if _missing(got) else f"{got:.2f}x",
                        "met": None if _missing(got) else bool(got >= by_isa[isa])})
        if "size_pct" in target:
            pct = 100.0 * r["size_mb"] / base_size
            out.append({"row": r["row"], "what": "size, % of the first row", "target": f"<= {target['size_pct']:g}%",
                        "measured": f"{pct:.1f}%", "met": bool(pct <= target["size_pct"])})
    return out + _cross_row_targets(records, methods)


def _cross_row_targets(records: list[dict], methods: list[str]) -> list[dict]:
    """The targets that compare rows of one run: OpenVINO int8 of the first row's model over ORT static int8
    of it (the ratio of their speed-ups, timed in the same run), and the best pruned or distilled chain
    through OpenVINO int8 over PyTorch fp32 (by the CPU's instruction sets)."""
    out = []
    root = records[0].get("chain", [])
    chains = [(r, m, r.get("chain") or []) for r, m in zip(records, methods)]
    own = [r for r, m, c in chains if m == "ov_int8" and c[:len(root)] == root and len(c) == len(root) + 2]
    ort = [r for r, m, c in chains if m == "ort_int8_static" and c[:len(root)] == root and len(c) == len(root) + 2]
    if own and ort and not _missing(own[0].get("cpu_speedup")) and not _missing(ort[0].get("cpu_speedup")):
        ratio = own[0]["cpu_speedup"] / ort[0]["cpu_speedup"]
        out.append({"row": own[0]["row"], "what": f"CPU speed over {ort[0]['row']} (same run)",
                    "target": f">= {OV_OVER_ORT:g}x", "measured": f"{ratio:.2f}x", "met": bool(ratio >= OV_OVER_ORT)})
    flags = set(records[0]["fingerprint"].get("cpu_flags") or []) if records else set()
    isa = next((f for f in CHAIN_PAST_PEER if f in flags), None)
    past = [r for r, m, c in chains if m == "ov_int8" and not _missing(r.get("cpu_speedup"))
            and any(r.get("chain_methods", {}).get(s) in SHRINKING for s in c)]
    if isa and past:
        best = max(past, key=lambda r: r["cpu_speedup"])
        out.append({"row": best["row"], "what": "CPU speed-up over PyTorch fp32, pruned or distilled + OpenVINO int8",
                    "target": f">= {CHAIN_PAST_PEER[isa]:g}x (CPU with {isa})", "measured": f"{best['cpu_speedup']:.2f}x",
                    "met": bool(best["cpu_speedup"] >= CHAIN_PAST_PEER[isa])})
    return out


def to_ship(records: list[dict]) -> dict | None:
    """The fastest deployment of the first row's own model on this CPU: among rows whose chain starts with the
    first row's and ends in another runtime (a conversion or a runtime's int8), the highest CPU speed-up."""
    if not records:
        return None
    root = records[0]["chain"][:1]
    runtime_rows = [r for r in records if r["chain"][:1] == root and not str(r["runtime"]).startswith("PyTorch")
                    and not _missing(r["cpu_speedup"])]
    return max(runtime_rows, key=lambda r: r["cpu_speedup"], default=None)


def render_bench(files: list[str], rows: list[dict], profile: str, csv: str, md: str,
                 templates: str | Path | None = None, settings: list[dict] | None = None,
                 methods: list[str] | None = None) -> None:
    """The architecture benchmark: one line per row, random weights, no training. ``settings``: each
    row's step settings (for ``{name}`` fields in its labels; what the artifact resolved wins);
    ``methods``: each row's last step's method (for the deployment targets)."""
    records = []
    ref = published()
    for i, (row, f) in enumerate(zip(rows, files)):
        r = read_json(f)
        pub = ref[(ref["row"] == row["id"])]["size_mb"].dropna()
        records.append({
            "row": row["id"], **row_labels(row, settings[i] if settings else {}, r.get("settings")),
            "runtime": r.get("runtime", "PyTorch"), "timm": r["arch"]["timm"], "input": "x".join(map(str, r["arch"]["kwargs"]["img_size"])),
            "size_mb": r["size_mb"], "compressed_mb": r.get("compressed_mb"), "params": r["params"],
            "published_size_mb": float(pub.iloc[0]) if profile == "paper" and len(pub) else None,
            "cpu_speed": (r.get("cpu") or {}).get("it_per_s"),
            "cpu_images_per_s": (r.get("cpu") or {}).get("images_per_s"),
            "cpu_latency_ms": (r.get("cpu") or {}).get("latency_ms"),
            "cpu_speedup": (r.get("cpu") or {}).get("vs_baseline"),
            "cpu_speedup_parent": (r.get("cpu") or {}).get("vs_parent"),
            "chain": r.get("chain") or row["chain"], "chain_methods": r.get("chain_methods") or {},
            "gpu_speed": (r.get("gpu") or {}).get("it_per_s"),
            "gpu_speedup": (r.get("gpu") or {}).get("vs_baseline"),
            "batch_size": (r.get("cpu") or r.get("gpu") or {}).get("batch_size"),
            "fingerprint": r["fingerprint"],
            "notes": r.get("notes", []),
        })
    with atomic_path(csv) as tmp:
        pd.DataFrame(records).drop(columns=["fingerprint", "notes", "chain_methods"]).to_csv(tmp, index=False,
                                                                                       float_format="%.6g")
    from vitcompress.measure import cpu_class

    fp = records[0]["fingerprint"] if records else {}
    env = _env(Path(templates) if templates else DEFAULT_TEMPLATES)
    with atomic_path(md) as tmp:
        tmp.write_text(env.get_template("bench_arch.md.j2").render(profile=profile, rows=records, ship=to_ship(records),
                                                                   cpu_class=cpu_class(fp.get("int8_flags",
                                                                                              fp.get("cpu_flags") or []),
                                                                                       fp.get("machine") or ""),
                                                                   targets=deploy_targets(records, methods or []),
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


def render_hardware(files: list[str], profile: str, datasets: list[str], rows: list[dict], md: str, csv: str,
                    latex: str, cells: list[str] = ()) -> None:
    """Every row's CPU speed-up (and its interval) on every machine whose timings are present, side by side:
    ``files`` are timing JSONs at ``.../<dataset>/<chain>/speed/<machine>.json``; ``rows``: each row's id,
    model label and chain id; ``cells``: the rows' metrics JSONs, whose labels are resolved per data set.
    Each machine's CPU, instruction sets, threads and GPU head its column."""
    cell_records = [read_json(c) for c in cells]
    labels = {(c["dataset"], c["row"]): c.get("model") for c in cell_records}
    # the timed model is the first training seed's: its own accuracy where it was made, not the seeds' mean
    table_accuracy = {(c["dataset"], c["row"]): (c.get("accuracy_by_seed") or [c.get("accuracy")])[0]
                      for c in cell_records}
    records, machines = [], {}
    for f in files:
        path = Path(f)
        dataset, chain, machine = path.parents[2].name, path.parents[1].name, path.stem
        spd = read_json(f)
        machines.setdefault(machine, spd.get("fingerprint", {}))
        cpu = spd.get("cpu") or {}
        ci = cpu.get("vs_baseline_ci") or (None, None)
        records.append({"dataset": dataset, "chain": chain, "machine": machine, "cpu_speedup": cpu.get("vs_baseline"),
                        "cpu_speedup_lo": ci[0], "cpu_speedup_hi": ci[1], "cpu_speed": cpu.get("it_per_s"),
                        "accuracy": (spd.get("accuracy") or {}).get("top1")})
    by_key = {(r["dataset"], r["chain"], r["machine"]): r for r in records}
    names = sorted(machines)
    table = []
    for ds in datasets:
        for row in rows:
            line = {"dataset": ds, "row": row["id"], "model": labels.get((ds, row["id"])) or row["model"],
                    "accuracy": table_accuracy.get((ds, row["id"]))}
            for m in names:
                r = by_key.get((ds, row["chain"], m), {})
                line.update({f"{m}:cpu_speedup": r.get("cpu_speedup"), f"{m}:cpu_speedup_lo": r.get("cpu_speedup_lo"),
                             f"{m}:cpu_speedup_hi": r.get("cpu_speedup_hi"), f"{m}:cpu_speed": r.get("cpu_speed"),
                             f"{m}:accuracy": r.get("accuracy")})
            table.append(line)
    with atomic_path(csv) as tmp:
        pd.DataFrame(table).to_csv(tmp, index=False, float_format="%.6g")

    def cell(line, m):
        ratio = fmt_ratio_ci({k: line.get(f"{m}:{k}") for k in ("cpu_speedup", "cpu_speedup_lo", "cpu_speedup_hi")})
        acc, made = line.get(f"{m}:accuracy"), line.get("accuracy")
        if _missing(acc):
            return ratio
        moved = not _missing(made) and abs(acc - made) > MACHINE_DRIFT
        return f"{ratio}; {acc:.2f}%" + (" (!)" if moved else "")

    def describe(fp: dict) -> str:
        flags = ", ".join(fp.get("cpu_flags") or []) or "none reported"
        extra = f"; kernels: {fp['aten_cpu_capability']}" if fp.get("aten_cpu_capability") else ""
        if fp.get("onednn_max_cpu_isa"):
            int8 = ", ".join(fp.get("int8_flags") or [])
            extra += f"; ONEDNN_MAX_CPU_ISA={fp['onednn_max_cpu_isa']} (int8 kernels: {int8})"
        if fp.get("ov_attention"):
            extra += f"; OpenVINO int8 recipe: overflow fix {fp.get('ov_overflow_fix')}, attention {fp['ov_attention']}"
        return (f"{fp.get('cpu')} ({fp.get('cpu_threads')} thread{'s' if fp.get('cpu_threads') != 1 else ''}); "
                f"instruction sets: {flags}; GPU: {fp.get('gpu') or 'none'}{extra}")

    lines = [f"# Speed-ups across machines — profile `{profile}`", "",
             "Each row's CPU speed-up against the first row, timed call by call beside it on the same machine, with "
             "the interval of the median ratio (block medians, within the timing job). After it, for int8 rows, the test top-1 measured "
             "again on that machine (no retraining): integer kernels differ by instruction set, so their accuracy "
             f"can too; (!) marks one more than {MACHINE_DRIFT:g} point from the same model's accuracy where it was made "
             "(`tables.md`; with several training seeds, the first seed's, whose model is the one timed). Other rows' accuracy and every row's size are the machine-independent cells of "
             "`tables.md`. "
             "Generated by the workflow (`snakemake`) from "
             f"`results/{profile}/<dataset>/<chain>/speed/<machine>.json`; set `VITCOMPRESS_MACHINE` to name a machine.",
             "", "Machines:", ""]
    lines += [f"- **{m}**: {describe(machines[m])}" for m in names]
    tex_lines = ["% vitcompress speed-ups across machines, profile " + tex(profile) + " -- generated by the workflow."]
    for ds in datasets:
        lines += ["", f"## {DATASET_TITLES.get(ds, ds)}", "", "| Row | Model | " + " | ".join(names) + " |",
                  "|---|---|" + "---:|" * len(names)]
        tex_lines += [r"\begin{table}[ht]", r"\centering", rf"\caption{{CPU speed-up vs the first row per machine, "
                      rf"{tex(DATASET_TITLES.get(ds, ds))}.}}", r"\begin{tabular}{ll" + "r" * len(names) + "}", r"\hline",
                      "Row & Model & " + " & ".join(tex(m) for m in names) + r" \\", r"\hline"]
        for line in (x for x in table if x["dataset"] == ds):
            lines.append(f"| {line['row']} | {line['model']} | " + " | ".join(cell(line, m) for m in names) + " |")
            tex_lines.append(f"{tex(line['row'])} & {tex(line['model'])} & " +
                             " & ".join(tex(cell(line, m)).replace("×", r"$\times$") for m in names) + r" \\")
        tex_lines += [r"\hline", r"\end{tabular}", r"\end{table}"]
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_path(latex) as tmp:
        tmp.write_text("\n".join(tex_lines) + "\n")


FAMILIES = (  # (method of a row's last step, family label, marker): method families told apart
    (("train",), "trained", "o"), (("dynamic_ptq", "fq_vit", "lsq", "diffq"), "quantized (PyTorch)", "s"),
    (("distill",), "distilled", "^"), (("prune", "prune_gates"), "pruned (VTP)", "D"),
    (("structured_prune",), "pruned (torch-pruning)", "d"), (("tome",), "token merging", "p"), (("nystrom",), "low-rank", "v"),
    (("onnx", "ort_int8_static", "ort_int8_dynamic"), "ONNX Runtime", "P"),
    (("ov", "ov_int8", "ov_int8_accuracy_control"), "OpenVINO", "*"),
)


def _family(cell: dict, methods: dict) -> tuple[str, str, int]:
    method = methods.get(cell["row"])
    for i, (names, label, marker) in enumerate(FAMILIES):
        if method in names:
            return label, marker, i
    return "other", "X", len(FAMILIES)


def _place_labels(ax, points: list[tuple[float, float, str]], fontsize: float = 7) -> None:
    """Label each point where its text overlaps no other label and no point: the nearest free place on
    rings of growing radius around it (a leader line when it had to move away), in display pixels."""
    fig = ax.figure
    fig.canvas.draw()  # the axes' final scales, so data -> pixel is exact
    dpi = fig.dpi
    h = fontsize * dpi / 72 * 1.15
    marks = [ax.transData.transform((x, y)) for x, y, _ in points]
    placed: list[tuple[float, float, float, float]] = []

    def free(box) -> bool:
        x0, y0, x1, y1 = box
        if any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in placed):
            return False
        return not any(x0 - 5 < mx < x1 + 5 and y0 - 5 < my < y1 + 5 for mx, my in marks)

    order = sorted(range(len(points)), key=lambda i: -marks[i][1])
    for i in order:
        (px, py), text = marks[i], points[i][2]
        w = 0.62 * h * len(text) + 2
        chosen = None
        for radius in (7, 14, 22, 32, 44, 58):
            for angle in range(45, 405, 30):
                dx, dy = radius * np.cos(np.radians(angle)), radius * np.sin(np.radians(angle))
                box = (px + dx - w / 2, py + dy - h / 2, px + dx + w / 2, py + dy + h / 2)
                if free(box):
                    chosen = (dx, dy, box, radius)
                    break
            if chosen:
                break
        if chosen is None:  # crowded beyond every ring: on top of its point, as before
            chosen = (7, 7, (px, py, px + w, py + h), 7)
        dx, dy, box, radius = chosen
        placed.append(box)
        ax.annotate(text, points[i][:2], xytext=(dx * 72 / dpi, dy * 72 / dpi), textcoords="offset points",
                    fontsize=fontsize, ha="center", va="center", color="0.15", zorder=4,
                    arrowprops=None if radius <= 7 else {"arrowstyle": "-", "color": "0.55", "lw": 0.5})


def tradeoff_figure(files: list[str], out: str | Path, title: str, methods: dict | None = None) -> None:
    """Accuracy against CPU speed-up and against size for one data set's rows, the Pareto front marked:
    the rows worth shipping are on it; every row off it is beaten on both axes by one that is. Each point is
    numbered (the key lists the rows), its family shown by colour and marker, and drawn with the 95%
    intervals of its accuracy change (vertical) and of its speed-up (horizontal). ``methods``: row id ->
    the method of its last step (for the families)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker
    from matplotlib.lines import Line2D

    cells = [_flat(read_json(f)) for f in files]
    methods = methods or {}
    fig, axes = plt.subplots(1, len(TRADEOFFS), figsize=(13, 5.6))
    for ax, (key, label, larger) in zip(axes, TRADEOFFS):
        xs = [c.get(key) for c in cells]
        ys = [c.get("accuracy") for c in cells]
        front = pareto_front(xs, ys, larger)
        shown = [i for i, x in enumerate(xs) if not _missing(x)]
        for i in shown:
            c = cells[i]
            fam, marker, k = _family(c, methods)
            yerr = None if _missing(c.get("delta_first_lo")) else \
                [[c["delta_first"] - c["delta_first_lo"]], [c["delta_first_hi"] - c["delta_first"]]]
            xerr = None if key != "cpu_speedup" or _missing(c.get("cpu_speedup_lo")) else \
                [[xs[i] - c["cpu_speedup_lo"]], [c["cpu_speedup_hi"] - xs[i]]]
            ax.errorbar(xs[i], ys[i], yerr=yerr, xerr=xerr, fmt=marker, color=f"C{k}", ecolor=f"C{k}", alpha=0.9,
                        markersize=7, markeredgecolor="C3" if front[i] else "none", markeredgewidth=1.5,
                        elinewidth=0.8, capsize=2, zorder=3)
        _place_labels(ax, [(xs[i], ys[i], str(i + 1)) for i in shown])
        on = sorted((xs[i], ys[i]) for i in shown if front[i])
        if on:
            ax.plot([p[0] for p in on], [p[1] for p in on], "--", color="C3", alpha=0.6)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 accuracy (%)")
        left_out = [str(i + 1) for i, x in enumerate(xs) if _missing(x)]
        if left_out:
            ax.set_title(f"not plotted (not measured): {', '.join(left_out)}", fontsize=8)
    used = sorted({_family(c, methods)[2] for c in cells})
    handles = [Line2D([], [], marker=(FAMILIES[k][2] if k < len(FAMILIES) else "X"), color=f"C{k}", linestyle="",
                      label=FAMILIES[k][1] if k < len(FAMILIES) else "other") for k in used]
    handles.append(Line2D([], [], color="C3", linestyle="--", label="Pareto front (outlined points)"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.95))
    key_text = "   ".join(f"{i + 1} {c['row']}" for i, c in enumerate(cells))
    fig.text(0.5, 0.01, key_text, ha="center", va="bottom", fontsize=7, wrap=True)
    fig.suptitle(title + " (error bars: 95% intervals)")
    fig.tight_layout(rect=(0, 0.07, 1, 0.92))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


TRAINING_REFERENCE = Path(__file__).resolve().parent / "reference" / "training_reference.json"


def write_training_reference(accuracies: list[str], seeds: list[int], datasets: list[str], step: str, profile: str,
                             fp: dict, out: str) -> None:
    """The first row's training under several seeds on this machine, as a reference another machine's training
    check compares with (``snakemake training_reference --config seeds=3``; copy the file to
    ``vitcompress/reference/`` to commit it). ``accuracies``: per data set, one accuracy.json per seed."""
    if len(seeds) < 2:
        raise ValueError("a training reference needs the seeds' spread: run it with --config seeds=3 (or more)")
    record = {"profile": profile, "step": step, "seeds": list(seeds),
              "command": f"snakemake training_reference --config profile={profile} seeds={len(seeds)}",
              "fingerprint": {k: fp.get(k) for k in ("cpu", "cpu_flags", "cpu_threads", "torch", "timm", "label")},
              "datasets": {}}
    for i, ds in enumerate(datasets):
        accs = [read_json(f) for f in accuracies[i * len(seeds):(i + 1) * len(seeds)]]
        record["datasets"][ds] = {"accuracy_by_seed": [float(a["accuracy"]) for a in accs],
                                  "train_epochs": accs[0].get("train_epochs"),
                                  "test_images": accs[0].get("test_images"),
                                  "per_image": accs[0].get("per_image")}  # groups: the retrained model's own
    write_json(out, record)


def against_reference(accuracy: dict, reference: dict, level: float = 0.95) -> dict:
    """This machine's first-row training (an accuracy.json, the profile's seed) against the reference run's
    (one data set of :func:`write_training_reference`): the change from the reference's model of the same seed
    (paired on the test images when both kept them) and the range one more trained model falls in with
    probability ``level`` by the reference's seeds alone, mean ± t·sd·√(1 + 1/S): a retraining on another machine
    rounds differently, which training amplifies like another seed. {"accuracy", "reference", "change",
    "expected_lo", "expected_hi", "within"}."""
    from scipy.stats import t as student_t

    from vitcompress.measure import accuracy_change

    by_seed = np.asarray(reference["accuracy_by_seed"], dtype=float)
    s = len(by_seed)
    sd = float(by_seed.std(ddof=1))
    half = float(student_t.ppf(0.5 + level / 2, s - 1)) * sd * math.sqrt(1 + 1 / s)
    lo, hi = max(0.0, float(by_seed.mean()) - half), min(100.0, float(by_seed.mean()) + half)
    mine = float(accuracy["accuracy"])
    return {"accuracy": mine, "reference": float(by_seed[0]), "change": accuracy_change(accuracy, reference),
            "expected_lo": lo, "expected_hi": hi, "half_width": half, "seeds": s,
            "within": None if sd == 0 else lo <= mine <= hi}  # seeds that agree exactly give no spread to judge by


def render_training_check(base: list[str], variants: list[str], datasets: list[str], step: str, profile: str,
                          fp: dict, md: str, csv: str, reference: str | Path | None = TRAINING_REFERENCE,
                          seed: int = 0) -> None:
    """The first row's training beside its variants (``config.VARIANTS``): accuracy and its change, and against
    the committed reference run (:func:`against_reference`) when it is of this profile and step.
    ``base``: one accuracy.json per data set; ``variants``: per data set, one per variant, in that order."""
    from vitcompress.config import VARIANTS

    names = list(VARIANTS)
    records = []
    for i, ds in enumerate(datasets):
        ref = read_json(base[i])
        records.append({"dataset": ds, "variant": "as configured", "accuracy": ref["accuracy"],
                        "delta": 0.0, "train_epochs": ref.get("train_epochs")})
        for j, name in enumerate(names):
            acc = read_json(variants[i * len(names) + j])
            records.append({"dataset": ds, "variant": VARIANTS[name]["label"], "accuracy": acc["accuracy"],
                            "delta": acc["accuracy"] - ref["accuracy"], "train_epochs": acc.get("train_epochs")})
    frame = pd.DataFrame(records)
    with atomic_path(csv) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    lines = [f"# Training check — profile `{profile}`, step `{step}`", "",
             "The first row's training as configured, and again with one thing changed, same code and seed. "
             "Twice the epochs shows whether the configured training had converged; 2 threads and AVX2-only "
             "kernels show how far floating-point kernels alone move the accuracy (another CPU does the same).",
             "", f"CPU: {fp.get('cpu')}; instruction sets: {', '.join(fp.get('cpu_flags') or []) or 'none reported'}; "
             f"torch {fp.get('torch')}.", "",
             "| Data set | Training | Epochs | Test accuracy (%) | Change (points) |", "|---|---|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {DATASET_TITLES.get(r['dataset'], r['dataset'])} | {r['variant']} | {fmt(r['train_epochs'], 0)} "
                     f"| {fmt(r['accuracy'])} | {fmt_delta(r['delta'])} |")
    lines += ["", "## Against the reference run", ""]
    ref = read_json(reference) if reference and Path(reference).exists() else None
    if ref and ref.get("profile") == profile and ref.get("step") == step and ref["seeds"][0] != seed:
        lines.append(f"The committed reference run's first seed is {ref['seeds'][0]}, this run's {seed}: its models "
                     f"are not this training's; run with --config seed={ref['seeds'][0]} to compare.")
    elif not ref or ref.get("profile") != profile or ref.get("step") != step:
        lines.append(f"No reference run of profile `{profile}`, step `{step}` is committed "
                     f"(`vitcompress/reference/training_reference.json`); make one with `snakemake training_reference "
                     f"--config profile={profile} seeds=3` and copy `reports/training_reference.json` there.")
    else:
        rfp = ref.get("fingerprint") or {}
        lines += [f"The reference: `{ref.get('command')}` on {rfp.get('cpu')} (instruction sets: "
                  f"{', '.join(rfp.get('cpu_flags') or []) or 'none reported'}; torch {rfp.get('torch')}), seeds "
                  f"{', '.join(map(str, ref['seeds']))}. Expected range: where one more trained model falls with 95% "
                  "probability by the reference seeds' spread alone (mean ± t·sd·√(1 + 1/S)); another machine's float "
                  "kernels move a training about as far as another seed does, so a result inside it is noise. "
                  "Change: against the reference's model of the same seed, paired on the test images (95% interval).",
                  "", "| Data set | This machine (%) | Reference, same seed (%) | Change (points, 95% CI) "
                  "| Expected range (%) | Reading |", "|---|---:|---:|---:|---:|---|"]
        for i, ds in enumerate(datasets):
            if ds not in ref["datasets"]:
                continue
            r = against_reference(read_json(base[i]), ref["datasets"][ds])
            change = fmt_change({"delta_first": (r["change"] or {}).get("delta"),
                                 "delta_first_lo": (r["change"] or {}).get("lo"),
                                 "delta_first_hi": (r["change"] or {}).get("hi"),
                                 "delta_first_distinguishable": (r["change"] or {}).get("distinguishable")}) \
                if r["change"] else \
                fmt_delta(r["accuracy"] - r["reference"])
            reading = ("the reference seeds agree exactly: no spread to judge by" if r["within"] is None else
                       f"within the seeds' spread (±{r['half_width']:.2f}): not distinguishable from a retraining"
                       if r["within"] else f"beyond the seeds' spread (±{r['half_width']:.2f}): more than a retraining")
            lines.append(f"| {DATASET_TITLES.get(ds, ds)} | {fmt(r['accuracy'])} | {fmt(r['reference'])} | {change} "
                         f"| {fmt(r['expected_lo'])}–{fmt(r['expected_hi'])} | {reading} |")
            frame.loc[len(frame)] = {"dataset": ds, "variant": "reference run (same seed)", "accuracy": r["reference"],
                                     "delta": r["reference"] - read_json(base[i])["accuracy"],
                                     "train_epochs": ref["datasets"][ds].get("train_epochs")}
        with atomic_path(csv) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
