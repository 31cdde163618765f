"""Every table the workflow writes, each through its Jinja template (``vitcompress/templates/``): the study's
tables (Markdown and LaTeX), the architecture benchmark, the machines side by side, the training check and
the FQ-ViT ablation. The numbers come from metrics files; the words and layout from the templates.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from vitcompress.io import atomic_path, read_json
from vitcompress.report.cells import build_frame, flat, published
from vitcompress.report.findings import (
    CONTRADICTED,
    HOLDS,
    STUDY_DATASETS,
    UNDECIDED,
    claims,
    deploy_targets,
    fastest_other_model,
    findings_summary,
    study_comparison,
    study_findings,
    to_ship,
)
from vitcompress.report.format import dataset_title, fmt_change, fmt_delta, fmt_ratio_ci, missing, render


def _write_csv(frame: pd.DataFrame, out: str) -> None:
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def _relative(path: str, to_dir: Path) -> str:
    p = Path(path).resolve()
    return p.relative_to(to_dir).as_posix() if p.is_relative_to(to_dir) else str(path)


def render_tables(files: list[str], profile: str, datasets: list[str], rows: list[str], md: str, tex: str,
                  figures: list[str] = (), jobs_csv: str | None = None, study_rows: dict | None = None,
                  templates: str | Path | None = None) -> None:
    """The study's tables, one per data set, with the run beside the study and its findings. ``figures``: the
    run's figures and side tables, linked by path (they need not exist yet); ``jobs_csv``: the step jobs' wall
    time and memory (:func:`vitcompress.report.cells.write_jobs`) for the resources paragraph; ``study_rows``:
    row id -> the study's row id it stands for (default: the same id)."""
    df = build_frame(files, profile, rows)
    jobs = pd.read_csv(jobs_csv) if jobs_csv else None
    resources = None
    if jobs is not None and len(jobs):
        peak = jobs.loc[jobs["max_rss_mb"].idxmax()].to_dict() if jobs["max_rss_mb"].notna().any() else None
        resources = {"jobs": len(jobs), "total_s": float(jobs["wall_s"].sum()), "peak": peak,
                     "csv": Path(jobs_csv).name}
    md_dir = Path(md).resolve().parent
    links = [{"path": _relative(f, md_dir), "name": Path(f).stem.replace("_", " ")} for f in figures]
    tables = []
    for ds in datasets:
        records = df[df["dataset"] == ds].sort_values("row").to_dict("records")
        notes = sorted({n for r in records for n in (r.get("notes") or [])})
        notes += [f"{r['model']}: diffq's own figures, true_model_size {r['diffq_true_size_mb']:.3f} MB (the learned "
                  f"bits, packed exactly) and compressed_model_size {r['diffq_compressed_mb']:.3f} MB (zlib of one "
                  f"byte per level)." for r in records
                  if not missing(r.get("diffq_true_size_mb")) and not missing(r.get("diffq_compressed_mb"))]
        tables.append({"dataset": ds, "title": dataset_title(ds), "rows": records,
                       "has_top5": any(not missing(r.get("top5")) for r in records),
                       "baseline": records[0]["model"] if records else None,
                       "batch_size": records[0].get("batch_size") if records else None,
                       "fingerprint": records[0]["fingerprint"] if records else {}, "notes": notes})
    counts = pd.to_numeric(df["seeds"], errors="coerce") if "seeds" in df else pd.Series(dtype=float)
    findings = study_findings(df, datasets, rows, study_rows)
    ctx = {"profile": profile, "tables": tables, "seeds": int(counts.max()) if counts.notna().any() else 1,
           "published": profile == "paper", "figures": links, "resources": resources,
           "comparison": study_comparison(df, datasets, rows, study_rows), "findings": findings,
           "findings_summary": findings_summary(findings),
           "datasets": [{"id": ds, "title": dataset_title(ds)} for ds in datasets],
           "study_datasets": [{"id": ds, "title": dataset_title(ds)} for ds in STUDY_DATASETS],
           "first_row": tables[0]["baseline"] if tables else None}
    render("tables.md.j2", md, templates, **ctx)
    render("tables.tex.j2", tex, templates, **ctx)


def render_bench(files: list[str], rows: list[dict], profile: str, csv: str, md: str,
                 templates: str | Path | None = None, settings: list[dict] | None = None,
                 methods: list[str] | None = None) -> None:
    """The architecture benchmark: one line per row, random weights, no training. ``settings``: each
    row's step settings (for ``{name}`` fields in its labels; what the artifact resolved wins);
    ``methods``: each row's last step's method (for the deployment targets)."""
    from vitcompress.config import row_labels
    from vitcompress.measure import cpu_class, speed_columns

    records = []
    ref = published()
    for i, (row, f) in enumerate(zip(rows, files)):
        r = read_json(f)
        pub = ref[(ref["row"] == row["id"])]["size_mb"].dropna()
        cpu, gpu = flat(speed_columns(r.get("cpu"), "cpu")), speed_columns(r.get("gpu"), "gpu")
        records.append({
            "row": row["id"], **row_labels(row, settings[i] if settings else {}, r.get("settings")),
            "runtime": r.get("runtime", "PyTorch"), "timm": r["arch"]["timm"],
            "input": "x".join(map(str, r["arch"]["kwargs"]["img_size"])),
            "size_mb": r["size_mb"], "compressed_mb": r.get("compressed_mb"), "params": r["params"],
            "published_size_mb": float(pub.iloc[0]) if profile == "paper" and len(pub) else None,
            **{k: cpu[k] for k in ("cpu_speed", "cpu_images_per_s", "cpu_latency_ms", "cpu_speedup", "cpu_speedup_lo",
                                   "cpu_speedup_hi", "cpu_speedup_parent", "cpu_speedup_parent_lo", "cpu_speedup_parent_hi")},
            "chain": r.get("chain") or row["chain"], "chain_methods": r.get("chain_methods") or {},
            "gpu_speed": gpu["gpu_speed"], "gpu_speedup": gpu["gpu_speedup"],
            "batch_size": (r.get("cpu") or r.get("gpu") or {}).get("batch_size"),
            "fingerprint": r["fingerprint"], "notes": r.get("notes", []),
        })
    _write_csv(pd.DataFrame(records).drop(columns=["fingerprint", "notes", "chain_methods"]), csv)
    fp = records[0]["fingerprint"] if records else {}
    targets = deploy_targets(records, methods or [])
    render("bench_arch.md.j2", md, templates, profile=profile, rows=records, ship=to_ship(records),
           other=fastest_other_model(records),
           cpu_class=cpu_class(fp.get("int8_flags", fp.get("cpu_flags") or []), fp.get("machine") or ""),
           targets=targets, verdicts={v: sum(t["verdict"] == v for t in targets) for v in (HOLDS, CONTRADICTED, UNDECIDED)},
           baseline=records[0]["model"] if records else "-",
           fingerprint=fp)


def describe_machine(fp: dict) -> str:
    """A timing fingerprint in one line: CPU, threads, instruction sets, GPU, kernel caps and the int8 recipe."""
    flags = ", ".join(fp.get("cpu_flags") or []) or "none reported"
    extra = f"; kernels: {fp['aten_cpu_capability']}" if fp.get("aten_cpu_capability") else ""
    if fp.get("onednn_max_cpu_isa"):
        extra += f"; ONEDNN_MAX_CPU_ISA={fp['onednn_max_cpu_isa']} (int8 kernels: {', '.join(fp.get('int8_flags') or [])})"
    if fp.get("ov_attention"):
        extra += f"; OpenVINO int8 recipe: overflow fix {fp.get('ov_overflow_fix')}, attention {fp['ov_attention']}"
    return (f"{fp.get('cpu')} ({fp.get('cpu_threads')} thread{'s' if fp.get('cpu_threads') != 1 else ''}); "
            f"instruction sets: {flags}; GPU: {fp.get('gpu') or 'none'}{extra}")


def render_hardware(files: list[str], profile: str, datasets: list[str], rows: list[dict], md: str, csv: str,
                    tex: str, cells: list[str] = (), templates: str | Path | None = None,
                    step_methods: dict | None = None) -> None:
    """Every row's CPU speed-up (and its interval) on every machine whose timings are present, side by side:
    ``files`` are timing JSONs at ``.../<dataset>/<chain>/speed/<machine>.json``; ``rows``: each row's id,
    model label, chain id and (``steps``) its step ids; ``cells``: the rows' metrics JSONs, whose labels are
    resolved per data set; ``step_methods``: each step's method, for naming per machine the row to ship (the
    fastest deployment of the first row's own model whose accuracy was not seen to move there). Each machine's CPU,
    instruction sets, threads and GPU head its column."""
    from vitcompress.measure import cpu_class, speed_columns

    drift = claims().machine_drift
    cell_records = [read_json(c) for c in cells]
    labels = {(c["dataset"], c["row"]): c.get("model") for c in cell_records}
    # the timed model is the first training seed's: its own accuracy where it was made, not the seeds' mean
    made = {(c["dataset"], c["row"]): (c.get("accuracy_by_seed") or [c.get("accuracy")])[0] for c in cell_records}
    timings, machines = {}, {}
    for f in files:
        path = Path(f)
        dataset, chain, machine = path.parents[2].name, path.parents[1].name, path.stem
        spd = read_json(f)
        machines.setdefault(machine, spd.get("fingerprint", {}))
        cpu = flat(speed_columns(spd.get("cpu"), "cpu"))
        timings[(dataset, chain, machine)] = {**{k: cpu[k] for k in ("cpu_speedup", "cpu_speedup_lo", "cpu_speedup_hi",
                                                                     "cpu_speed")},
                                              "accuracy": (spd.get("accuracy") or {}).get("top1")}
    names = sorted(machines)
    table = []
    for ds in datasets:
        for row in rows:
            line = {"dataset": ds, "row": row["id"], "model": labels.get((ds, row["id"])) or row["model"],
                    "accuracy": made.get((ds, row["id"]))}
            for m in names:
                line.update({f"{m}:{k}": v for k, v in timings.get((ds, row["chain"], m), {}).items()})
            table.append(line)
    _write_csv(pd.DataFrame(table), csv)

    def moved(acc, where_made):
        """An int8 row's accuracy on this machine beyond the drift bound from the run's own (None: not re-measured)."""
        return not missing(acc) and not missing(where_made) and abs(acc - where_made) > drift

    def cell(line, m):
        ratio = fmt_ratio_ci({k: line.get(f"{m}:{k}") for k in ("cpu_speedup", "cpu_speedup_lo", "cpu_speedup_hi")})
        acc = line.get(f"{m}:accuracy")
        if missing(acc):
            return ratio
        return f"{ratio}; {acc:.2f}%" + (" (!)" if moved(acc, line.get("accuracy")) else "")

    def ship(ds, m):
        """The first row's model as machine ``m`` runs it fastest in another runtime, its accuracy held there (the
        first row itself where no such row is faster)."""
        if not step_methods or not rows or not rows[0].get("steps"):
            return None
        records = []
        for row in rows:
            t = timings.get((ds, row["chain"], m))
            if t is None or moved(t.get("accuracy"), made.get((ds, row["id"]))):
                continue
            records.append({**t, "row": row["id"], "model": labels.get((ds, row["id"])) or row["model"],
                            "chain": list(row.get("steps") or []),
                            "chain_methods": {s: step_methods.get(s) for s in row.get("steps") or []}})
        if not records or records[0]["row"] != rows[0]["id"]:
            return None
        best = to_ship(records)
        first = records[0]["cpu_speedup"]
        if best is None or not missing(first) and best["cpu_speedup"] <= first:
            best = records[0]  # no deployment is faster than the first row itself
        return {"row": best["row"], "model": best["model"], "speedup": fmt_ratio_ci(best)}

    ctx = {"profile": profile, "drift": f"{drift:g}",
           "machines": [{"name": m, "description": describe_machine(machines[m]),
                         "class": cpu_class(machines[m].get("int8_flags", machines[m].get("cpu_flags") or []),
                                            machines[m].get("machine") or ""),
                         "ship": {ds: ship(ds, m) for ds in datasets}} for m in names],
           "tables": [{"dataset": ds, "lines": [{"row": x["row"], "model": x["model"],
                                                 "cells": [cell(x, m) for m in names]}
                                                for x in table if x["dataset"] == ds]} for ds in datasets]}
    render("hardware.md.j2", md, templates, **ctx)
    render("hardware.tex.j2", tex, templates, **ctx)


def render_training_check(base: list[str], variants: list[str], datasets: list[str], step: str, profile: str,
                          fp: dict, md: str, csv: str, reference: str | Path | None = None, seed: int = 0,
                          templates: str | Path | None = None) -> None:
    """The first row's training beside its variants (``config.TRAINING_VARIANTS``): accuracy and its change, and against
    the committed reference run (:func:`vitcompress.report.reference.against_reference`) when it is of this
    profile and step. ``base``: one accuracy.json per data set; ``variants``: per data set, one per variant, in
    that order; ``reference``: default the committed one."""
    from vitcompress.config import TRAINING_VARIANTS
    from vitcompress.report.reference import TRAINING_REFERENCE, against_reference

    reference = TRAINING_REFERENCE if reference is None else reference
    names = list(TRAINING_VARIANTS)
    records = []
    for i, ds in enumerate(datasets):
        ref = read_json(base[i])
        records.append({"dataset": ds, "variant": "as configured", "accuracy": ref["accuracy"],
                        "delta": 0.0, "train_epochs": ref.get("train_epochs")})
        for j, name in enumerate(names):
            acc = read_json(variants[i * len(names) + j])
            records.append({"dataset": ds, "variant": TRAINING_VARIANTS[name]["label"], "accuracy": acc["accuracy"],
                            "delta": acc["accuracy"] - ref["accuracy"], "train_epochs": acc.get("train_epochs")})
    frame = pd.DataFrame(records)
    ref = read_json(reference) if reference and Path(reference).exists() else None
    ctx_ref: dict = {"state": "none"}
    if ref and ref.get("profile") == profile and ref.get("step") == step:
        if ref["seeds"][0] != seed:
            ctx_ref = {"state": "other seed", "seed": ref["seeds"][0]}
        else:
            ctx_ref = {"state": "compared", "command": ref.get("command"), "fp": ref.get("fingerprint") or {},
                       "seeds": ref["seeds"], "lines": []}
            for i, ds in enumerate(datasets):
                if ds not in ref["datasets"]:
                    continue
                mine = read_json(base[i])
                r = against_reference(mine, ref["datasets"][ds])
                ch = r["change"]
                change = fmt_change({"delta_first": ch.get("delta"), "delta_first_lo": ch.get("lo"),
                                     "delta_first_hi": ch.get("hi"), "delta_first_distinguishable":
                                     ch.get("distinguishable")}) if ch else fmt_delta(r["accuracy"] - r["reference"])
                reading = ("the reference seeds agree exactly: no spread to judge by" if r["within"] is None else
                           f"within the seeds' spread (±{r['half_width']:.2f}): not distinguishable from a retraining"
                           if r["within"] else f"beyond the seeds' spread (±{r['half_width']:.2f}): more than a retraining")
                ctx_ref["lines"].append({**r, "dataset": ds, "change": change, "reading": reading})
                frame.loc[len(frame)] = {"dataset": ds, "variant": "reference run (same seed)", "accuracy": r["reference"],
                                         "delta": r["reference"] - mine["accuracy"],
                                         "train_epochs": ref["datasets"][ds].get("train_epochs")}
    _write_csv(frame, csv)
    render("training_check.md.j2", md, templates, profile=profile, step=step, fp=fp, records=records,
           reference=ctx_ref, seed=seed)


def render_fq_vit_ablation(result: dict, s, dataset: str, csv: str, md: str,
                           templates: str | Path | None = None) -> None:
    """FQ-ViT's ablation (:func:`vitcompress.fqvit.ablation.ablation`'s result, ``s`` the step's settings) as a
    CSV and a Markdown table beside FQ-ViT's own published figures."""
    from vitcompress.fqvit.ablation import PUBLISHED

    rows = result["rows"]
    float_acc = rows[0]["accuracy"]
    _write_csv(pd.DataFrame(rows, columns=["variant", "ptf", "lis", "accuracy"]), csv)
    shown = [{**r, "change": None if r["ptf"] is None else r["accuracy"] - float_acc} for r in rows]
    render("fq_vit_ablation.md.j2", md, templates, dataset=dataset, s=s, calib_images=result["calib_images"],
           rows=shown, published=PUBLISHED)
