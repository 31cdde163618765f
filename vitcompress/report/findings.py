"""What a run says about the study's claims: each claim of ``reference/study_claims.yaml`` judged per data
set by its 95% interval (holds / contradicted / undecided), the run's changes beside the study's own, and the
deployment targets of the architecture benchmark.

    >>> within({"lo": -0.4, "hi": 0.9}, 1.0)
    'holds'
    >>> at_least(2.1, 2.9, 2.5)
    'undecided'
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pandas as pd

from vitcompress.io import load_yaml
from vitcompress.report.cells import published, reference_text
from vitcompress.report.format import fmt, fmt_interval, missing

HOLDS, CONTRADICTED, UNDECIDED = "holds", "contradicted", "undecided"
STUDY_DATASETS = ("cifar10", "cifar100")
STUDY_BASELINE = "vanilla"


@dataclass(frozen=True)
class Claims:
    """``reference/study_claims.yaml``, read once (its comments say what each entry claims)."""

    findings: dict
    ordered: tuple
    row_margin: float
    student_margin: float
    deploy_loss: float
    library_vs_vtp: tuple
    tokens: tuple
    weights: tuple
    machine_drift: float
    deploy_targets: dict


@lru_cache(maxsize=1)
def claims() -> Claims:
    raw = load_yaml(reference_text("study_claims.yaml"))
    return Claims(findings=raw["findings"], ordered=tuple(raw["ordered"]), row_margin=float(raw["margins"]["row"]),
                  student_margin=float(raw["margins"]["student"]), deploy_loss=float(raw["deploy_loss"]),
                  library_vs_vtp=tuple(tuple(p) for p in raw["library_vs_vtp"]),
                  tokens=tuple(raw["tokens_vs_weights"]["tokens"]), weights=tuple(raw["tokens_vs_weights"]["weights"]),
                  machine_drift=float(raw["machine_drift"]), deploy_targets=raw["deploy_targets"])


# -- verdicts ------------------------------------------------------------------------------------------------
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


def findings_summary(findings: list[dict]) -> dict:
    """How many claims (finding x data set) hold, are contradicted, are undecided."""
    verdicts = [v for f in findings for v in f["verdict"].values()]
    return {"claims": len(verdicts), **{v: verdicts.count(v) for v in (HOLDS, CONTRADICTED, UNDECIDED)}}


# -- the run beside the study ----------------------------------------------------------------------------------
def _direction(delta: float) -> str:
    """What a change in accuracy says at a glance: more than a point down or up, or within a point."""
    return "loses" if delta < -1 else "gains" if delta > 1 else "holds"


COMPARISONS = {  # (this run's direction, the study's) -> how they compare
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
            if mine and base and not missing(mine["accuracy"]) and not missing(base["accuracy"]):
                demo[ds] = {"delta": mine["accuracy"] - base["accuracy"],
                            "size_pct": 100.0 * mine["size_mb"] / base["size_mb"]}
        sid = study_rows.get(row, row)
        study = {}
        for ds in STUDY_DATASETS:
            if (ds, sid) in ref.index and (ds, STUDY_BASELINE) in ref.index:
                size = ref.loc[(ds, sid), "size_mb"]
                study[ds] = {"delta": ref.loc[(ds, sid), "accuracy"] - ref.loc[(ds, STUDY_BASELINE), "accuracy"],
                             "size_pct": None if missing(size) else 100.0 * size / ref.loc[(ds, STUDY_BASELINE), "size_mb"]}
        verdict = None
        if demo and study:
            mine = _direction(sum(d["delta"] for d in demo.values()) / len(demo))
            theirs = _direction(sum(d["delta"] for d in study.values()) / len(study))
            verdict = COMPARISONS[(mine, theirs)]
        out.append({"row": row, "study_row": sid if study else None, "demo": demo, "study": study,
                    "verdict": verdict})
    return out


# -- the findings ----------------------------------------------------------------------------------------------
class _Cells:
    """The run's cells by (data set, row), and the paired accuracy change between two of them."""

    def __init__(self, df: pd.DataFrame):
        self.cell = {(str(r["dataset"]), str(r["row"])): r for r in df.to_dict("records")}

    def get(self, ds, row):
        return self.cell.get((ds, row))

    def acc(self, ds, row):
        c = self.cell.get((ds, row))
        return None if c is None or missing(c["accuracy"]) else c["accuracy"]

    def last_method(self, ds, row):
        methods = (self.cell.get((ds, row)) or {}).get("chain_methods")
        return methods[-1] if isinstance(methods, list) and methods else None

    def change(self, ds, row, other) -> dict:
        """row minus other on ds: the paired delta and its interval (lo = hi = delta without per-image data)."""
        from vitcompress.measure import accuracy_change, accuracy_change_over_seeds

        c, o = self.cell[(ds, row)], self.cell[(ds, other)]
        mine, theirs = c.get("per_image_by_seed"), o.get("per_image_by_seed")
        if isinstance(mine, list) and isinstance(theirs, list) and len(mine) == len(theirs) > 1:
            paired = accuracy_change_over_seeds([{"per_image": p, "groups": c.get("groups")} for p in mine],
                                                [{"per_image": p} for p in theirs])  # seed by seed, then over
            if paired is not None:
                return paired
        several = any(not missing(x.get("seeds")) and int(x["seeds"]) > 1 for x in (c, o))
        paired = None if several else accuracy_change(c, o)  # means without per-seed pairs: no interval
        if paired is not None:
            return paired
        d = c["accuracy"] - o["accuracy"]
        return {"delta": d, "lo": d, "hi": d, "distinguishable": d != 0}


def study_findings(df: pd.DataFrame, datasets: list[str], rows: list[str], study_rows: dict | None = None) -> list[dict]:
    """Each claim of :func:`claims` that the run's rows can show, per data set.

    Each claim gets one of three verdicts from the 95% interval of its paired change
    (:func:`vitcompress.stats.paired_delta`) or speed-up: **holds** when the interval lies inside the claim's
    bound (an equivalence: "within X points") or beyond it in the claimed direction ("at least 2.5x"),
    **contradicted** when it lies wholly on the wrong side, **undecided** when it straddles the bound. Cells
    without per-image results or timing intervals are judged by their point values. Each entry: {"finding",
    "target", "measured": {ds: text}, "verdict": {ds: verdict}, "overall"}."""
    c = claims()
    study_rows = study_rows or {}
    by_study = {}
    for r in rows:  # the first row standing for a study row is judged by its finding (a variant may follow it)
        by_study.setdefault(study_rows.get(r, r), r)
    cells = _Cells(df)
    first = rows[0] if rows else None
    out = []

    def add(finding, target, check):
        measured, verdict = {}, {}
        for ds in datasets:
            result = check(ds)
            if result is not None:
                measured[ds], verdict[ds] = result
        if measured:
            out.append({"finding": finding, "target": target, "measured": measured, "verdict": verdict,
                        "overall": combine(verdict.values())})

    for sid, spec in c.findings.items():
        row = by_study.get(sid)
        if row is not None and row != first:
            add(row, _finding_target(spec, first), lambda ds, row=row, spec=spec: _judge_finding(cells, ds, row, first, spec))
    for group in c.ordered:
        members = [by_study[s] for s in group["rows"] if s in by_study]
        if len(members) >= 2:
            rising = group["accuracy"] == "rises"
            add(" / ".join(members), "accuracy rises with m (each step's interval at or above 0)" if rising else
                "the larger ratio loses at least as much (each step's interval at or below 0)",
                lambda ds, members=members, rising=rising: _judge_order(cells, ds, members, rising))
    add("no row beats the model it was made from",
        f"by more than {c.row_margin:g} point (a distilled student its teacher by {c.student_margin:g})",
        lambda ds: _beats_source(cells, ds, rows, c))
    add(f"no deployment step loses more than {c.deploy_loss:g} points against the model it deploys",
        "every ONNX Runtime / OpenVINO row's change vs its parent", lambda ds: _deploys(cells, ds, rows, c))
    add("structured pruning with a learned group importance (torch-pruning) beats VTP's gates",
        "at the same ratio r, each change's interval above 0", lambda ds: _library_vs_gates(cells, ds, c))
    add("token merging (ToMe) keeps at least the accuracy of weight pruning at the same CPU speed-up",
        "each ToMe row against the pruning row nearest its speed-up: change's interval at or above 0",
        lambda ds: _tokens_vs_weights(cells, ds, rows, c))
    return out


def _finding_target(spec: dict, first: str) -> str:
    target = f"within {spec['within']:g} point{'s' if spec['within'] != 1 else ''} of {first}"
    if "size_pct" in spec:
        target += f", <= {spec['size_pct']:g}% of its size" + (" (both compressed)" if spec.get("size") else "")
    if "speedup" in spec:
        target += f", >= {spec['speedup']:g}x its CPU speed"
    return target


def _judge_finding(cells: _Cells, ds: str, row: str, first: str, spec: dict):
    if cells.acc(ds, row) is None or cells.acc(ds, first) is None:
        return None
    c, b = cells.get(ds, row), cells.get(ds, first)
    d = cells.change(ds, row, first)
    parts, verdicts = [fmt_interval(d)], [within(d, spec["within"])]
    if "size_pct" in spec:
        col = spec.get("size", "size_mb")
        if missing(c.get(col)) or missing(b.get(col)):
            return None
        pct = 100.0 * c[col] / b[col]
        parts.append(f"{pct:.1f}%")
        verdicts.append(HOLDS if pct <= spec["size_pct"] else CONTRADICTED)  # a size is measured exactly
    if "speedup" in spec:
        sp = c.get("cpu_speedup")
        if missing(sp):
            parts.append("no speed")
            verdicts.append(UNDECIDED)
        else:
            lo, hi = c.get("cpu_speedup_lo"), c.get("cpu_speedup_hi")
            lo, hi = (sp, sp) if missing(lo) or missing(hi) else (lo, hi)
            parts.append(f"{sp:.2f}x" + ("" if lo == hi else f" ({lo:.2f}-{hi:.2f})"))
            verdicts.append(at_least(lo, hi, spec["speedup"]))
    return ", ".join(parts), combine(verdicts)


def _judge_order(cells: _Cells, ds: str, members: list[str], rising: bool):
    accs = [cells.acc(ds, r) for r in members]
    if any(a is None for a in accs):
        return None
    steps = [cells.change(ds, b, a) for a, b in zip(members, members[1:])]  # each member minus the one before
    verdict = combine(at_least(d["lo"], d["hi"], 0.0) if rising else at_most(d["lo"], d["hi"], 0.0) for d in steps)
    if verdict == HOLDS and any(d["lo"] == d["hi"] == 0 for d in steps):
        verdict = UNDECIDED  # equal point values with no interval: no order shown
    return " / ".join(f"{a:.2f}" for a in accs) + "; steps " + ", ".join(fmt_interval(d) for d in steps), verdict


def _beats_source(cells: _Cells, ds: str, rows: list[str], c: Claims):
    """No row above the model it was made from: its chain's first step's row (the first row for a root row
    such as a distilled student, which may beat it by the student margin)."""
    first = rows[0]
    changes = []
    for row in rows[1:]:
        cell = cells.get(ds, row)
        if cell is None or missing(cell["accuracy"]) or not cell.get("chain"):
            continue
        root = next((r for r in rows if (cells.get(ds, r) or {}).get("chain") == cell["chain"][:1]), None)
        source, margin = (first, c.student_margin) if root in (None, row) else (root, c.row_margin)
        if cells.acc(ds, source) is None or source == row:
            continue
        changes.append((row, source, margin, cells.change(ds, row, source)))
    if not changes:
        return None
    verdict = combine(at_most(d["lo"], d["hi"], margin) for _, _, margin, d in changes)
    # the row that decides: the one furthest above its margin (lower end if contradicted, else upper end)
    end = "lo" if verdict == CONTRADICTED else "hi"
    row, source, margin, d = max(changes, key=lambda x: x[3][end] - x[2])
    return f"highest: {row} {fmt_interval(d)} over {source}", verdict


def _deploys(cells: _Cells, ds: str, rows: list[str], c: Claims):
    """Every deployment step (a conversion or a runtime's int8) against the model it deploys."""
    changes = []
    for row in rows:
        cell = cells.get(ds, row)
        if cell is None or missing(cell.get("delta_parent")) or str(cell.get("runtime", "PyTorch")).startswith("PyTorch"):
            continue
        d = {"delta": cell["delta_parent"], "lo": cell.get("delta_parent_lo"), "hi": cell.get("delta_parent_hi")}
        if missing(d["lo"]) or missing(d["hi"]):
            d["lo"] = d["hi"] = d["delta"]
        changes.append((row, d))
    if not changes:
        return None
    verdict = combine(at_least(d["lo"], d["hi"], -c.deploy_loss) for _, d in changes)
    end = "hi" if verdict == CONTRADICTED else "lo"  # the row that decides
    row, d = min(changes, key=lambda rd: rd[1][end])
    return f"lowest: {row} {fmt_interval(d)} vs its parent", verdict


def _library_vs_gates(cells: _Cells, ds: str, c: Claims):
    """The study's proposed remedy against its method: structured pruning through the library (a learned
    group importance) beside VTP's gates at the same ratio r, paired on the test images."""
    pairs = [(lib, vtp) for lib, vtp in c.library_vs_vtp if cells.get(ds, lib) and cells.get(ds, vtp)]
    if not pairs:
        return None
    changes = [(lib, vtp, cells.change(ds, lib, vtp)) for lib, vtp in pairs]
    verdict = combine(at_least(d["lo"], d["hi"], 0.0) for _, _, d in changes)

    def params(row):
        return cells.get(ds, row).get("params")

    return "; ".join(f"{lib} − {vtp} {fmt_interval(d)}, params {fmt(params(lib) / params(vtp) * 100, 0)}% of VTP's"
                     if not missing(params(lib)) and not missing(params(vtp)) and params(vtp) else
                     f"{lib} − {vtp} {fmt_interval(d)}" for lib, vtp, d in changes), verdict


def _tokens_vs_weights(cells: _Cells, ds: str, rows: list[str], c: Claims):
    """The study's other question: token merging against weight pruning at (nearly) the same CPU speed-up:
    each token-merging row beside the weight-pruning row whose speed-up
    over the first row is nearest its own."""
    def single(r, methods):  # the method's own row, not a deployment of it (whose last step is the runtime's)
        return cells.get(ds, r) is not None and cells.last_method(ds, r) in methods and not r.endswith("_study")

    tokens = [r for r in rows if single(r, c.tokens) and not missing(cells.get(ds, r).get("cpu_speedup"))]
    pruned = [r for r in rows if single(r, c.weights) and not missing(cells.get(ds, r).get("cpu_speedup"))]
    if not tokens or not pruned:
        return None
    pairs = []
    for t in tokens:
        sp = cells.get(ds, t)["cpu_speedup"]
        p = min(pruned, key=lambda r: abs(cells.get(ds, r)["cpu_speedup"] - sp))
        pairs.append((t, p, cells.change(ds, t, p)))
    verdict = combine(at_least(d["lo"], d["hi"], 0.0) for _, _, d in pairs)
    return "; ".join(f"{t} − {p} {fmt_interval(d)} at {cells.get(ds, t)['cpu_speedup']:.2f}x vs "
                     f"{cells.get(ds, p)['cpu_speedup']:.2f}x" for t, p, d in pairs), verdict


# -- deployment targets (the architecture benchmark) ------------------------------------------------------------
def _isa(flags: set, by_isa: dict) -> str | None:
    return next((f for f in ("avx512_vnni", "avx2", "any") if f in by_isa and (f == "any" or f in flags)), None)


def _interval(record: dict, key: str = "cpu_speedup") -> tuple[float, float] | None:
    """A row's speed-up interval (its timing job's, over the call pairs), None where it has none."""
    lo, hi = record.get(f"{key}_lo"), record.get(f"{key}_hi")
    return None if missing(lo) or missing(hi) else (float(lo), float(hi))


def _at_least(ci: tuple[float, float] | None, target: float) -> str:
    """The verdict on "at least ``target``": by the interval; a speed-up without one is undecided."""
    return UNDECIDED if ci is None else at_least(ci[0], ci[1], target)


def _measured(got: float, ci: tuple[float, float] | None) -> str:
    return f"{got:.2f}x" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else " (no interval)")


def _speed_target(record: dict, what: str, by_isa: dict, flags: set) -> dict | None:
    """A speed-up target of ``by_isa`` (by instruction set) judged on ``record``'s interval; None where none
    applies."""
    isa = _isa(flags, by_isa)
    if isa is None:
        return None
    got, ci = record.get("cpu_speedup"), _interval(record)
    return {"row": record["row"], "what": what,
            "target": f">= {by_isa[isa]:g}x" + (f" (CPU with {isa})" if isa != "any" else ""),
            "measured": None if missing(got) else _measured(got, ci),
            "verdict": UNDECIDED if missing(got) else _at_least(ci, by_isa[isa])}  # not timed: nothing decides it


def deploy_targets(records: list[dict], methods: list[str]) -> list[dict]:
    """Each applicable target of the claims' ``deploy_targets``, judged on this machine's measurements: a speed
    target holds when the speed-up's interval lies at or above it, is contradicted when it lies below, and is
    undecided when it straddles it (or has no interval); a size target is exact (one file)."""
    targets = claims().deploy_targets
    if not records or records[0]["timm"] != targets["arch"]:
        return []
    base_size = records[0]["size_mb"]
    out = []
    for r, method in zip(records, methods):
        target = targets["methods"].get(method, {})
        speed = _speed_target(r, "CPU speed-up over PyTorch fp32", target.get("speedup", {}),
                              set(r["fingerprint"].get("cpu_flags") or []))
        if speed is not None:
            out.append(speed)
        if "size_pct" in target:
            pct = 100.0 * r["size_mb"] / base_size
            out.append({"row": r["row"], "what": "size, % of the first row", "target": f"<= {target['size_pct']:g}%",
                        "measured": f"{pct:.1f}%", "verdict": HOLDS if pct <= target["size_pct"] else CONTRADICTED})
    return out + _cross_row_targets(records, methods, targets)


def _cross_row_targets(records: list[dict], methods: list[str], targets: dict) -> list[dict]:
    """The targets that compare rows of one run: OpenVINO int8 of the first row's model over ORT static int8
    of it (the ratio of their speed-ups; its interval is the range of ratios the two rows' intervals allow, which
    holds the true ratio whenever both hold theirs: at least 90% for two 95% intervals, each covering only its own
    timing job), and the best shrunk (pruned or distilled) chain through OpenVINO int8 over PyTorch fp32 (by the
    CPU's instruction sets)."""
    from vitcompress.methods import METHODS

    out = []
    root = records[0].get("chain", [])
    chains = [(r, m, r.get("chain") or []) for r, m in zip(records, methods)]
    own = [r for r, m, ch in chains if m == "ov_int8" and ch[:len(root)] == root and len(ch) == len(root) + 2]
    ort = [r for r, m, ch in chains if m == "ort_int8_static" and ch[:len(root)] == root and len(ch) == len(root) + 2]
    ratio_target = targets["ov_over_ort"]
    if own and ort and not missing(own[0].get("cpu_speedup")) and not missing(ort[0].get("cpu_speedup")):
        ratio = own[0]["cpu_speedup"] / ort[0]["cpu_speedup"]
        a, b = _interval(own[0]), _interval(ort[0])
        ci = (a[0] / b[1], a[1] / b[0]) if a and b and b[0] > 0 else None
        out.append({"row": own[0]["row"], "what": f"CPU speed over {ort[0]['row']} (same run)",
                    "target": f">= {ratio_target:g}x", "measured": _measured(ratio, ci),
                    "verdict": _at_least(ci, ratio_target)})
    flags = set(records[0]["fingerprint"].get("cpu_flags") or []) if records else set()
    past_peer = targets["chain_past_peer"]
    isa = next((f for f in past_peer if f in flags), None)

    def shrinks(r):
        return any(getattr(METHODS.get(m), "shrinks", False) for m in (r.get("chain_methods") or {}).values())

    best_own = to_ship(records)
    own = best_own and _speed_target(best_own, "CPU speed-up over PyTorch fp32, the fastest deployment of the first "
                                     "row's own model", targets.get("own_model_best", {}), flags)
    if own:
        out.append(own)
    past = [r for r, m, _ in chains if m == "ov_int8" and not missing(r.get("cpu_speedup")) and shrinks(r)]
    if isa and past:
        best = max(past, key=lambda r: r["cpu_speedup"])
        past_target = _speed_target(best, "CPU speed-up over PyTorch fp32, pruned or distilled + OpenVINO int8",
                                    {isa: past_peer[isa]}, flags)
        if past_target is not None:
            out.append(past_target)
    return out


def same_model_deployment(record: dict, root: list[str]) -> bool:
    """Whether a row runs the first row's own model in another runtime: its chain is the first row's (``root``)
    followed only by steps of another runtime (a conversion, a runtime's int8), none that changes the model."""
    from vitcompress.methods import METHODS

    chain, methods = record.get("chain") or [], record.get("chain_methods") or {}
    rest = chain[len(root):]
    return (chain[:len(root)] == root and bool(rest)
            and all(s in methods and getattr(METHODS.get(methods[s]), "runtime", "pytorch") != "pytorch" for s in rest))


def to_ship(records: list[dict]) -> dict | None:
    """The fastest deployment of the first row's own model on this CPU: among rows that run it in another runtime
    (:func:`same_model_deployment`: a ToMe, pruned or distilled chain is another model), the highest CPU speed-up."""
    root = records[0].get("chain") if records else None
    if not root:
        return None
    runtime_rows = [r for r in records if same_model_deployment(r, root) and not missing(r["cpu_speedup"])]
    return max(runtime_rows, key=lambda r: r["cpu_speedup"], default=None)


def fastest_other_model(records: list[dict]) -> dict | None:
    """The fastest other row on this CPU: one that changes the first row's model (distilled, pruned, merged
    tokens, ...) or compresses it in PyTorch, with any runtime; faster than :func:`to_ship`'s row only at its own
    accuracy cost. Rows whose steps' methods are not recorded are left out (they cannot be told apart)."""
    root = records[0].get("chain") if records else None
    if not root:
        return None
    other = [r for r in records[1:] if r.get("chain") and r["chain"] != root
             and set(r["chain"]) <= set(r.get("chain_methods") or {})
             and not same_model_deployment(r, root) and not missing(r["cpu_speedup"])]
    return max(other, key=lambda r: r["cpu_speedup"], default=None)
