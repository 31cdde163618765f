"""Rendering only: the metrics files here are inputs made up to exercise the templates, not results."""
import json

import numpy as np
import pandas as pd
import pytest

from vitcompress.io import write_json
from vitcompress.report.cells import CSV_COLUMNS, build_frame, published, write_jobs, write_metrics
from vitcompress.report.figures import pareto_front, place_labels, tradeoff_figure
from vitcompress.report.findings import deploy_targets, study_findings
from vitcompress.report.format import fmt, fmt_speed, tex
from vitcompress.report.tables import render_tables

FP = {"cpu": "Test CPU", "cpu_threads": 2, "gpu": None, "torch": "x", "timm": "y"}


def _cell(tmp_path, dataset, row, **over):
    rec = {"profile": "paper", "dataset": dataset, "row": row, "model": f"M {row}", "method": "m_1 & co",
           "chain": [row], "accuracy": 90.0, "top5": None, "size_mb": 3.0, "params": 1_000_000,
           "gpu_speed": None, "gpu_images_per_s": None, "gpu_latency_ms": None, "cpu_speed": 12.5,
           "cpu_images_per_s": 100.0, "cpu_latency_ms": 1.5, "cpu_iqr_s": 0.001, "batch_size": 8,
           "notes": ["no CUDA GPU here: no GPU timing."], "fingerprint": FP}
    rec.update(over)
    path = tmp_path / f"{dataset}-{row}.json"
    write_json(path, rec)
    return str(path)


def _render(tmp_path, files, profile, datasets, rows, summary=None, **kw):
    """What the workflow's `metrics` and `tables` rules write from the same cells."""
    out = {k: tmp_path / f"out.{k}" for k in ("md", "tex", "csv")}
    out["metrics"] = tmp_path / "metrics"
    write_metrics(files, profile, datasets, rows, csv=out["csv"], metrics_dir=out["metrics"], summary=summary)
    render_tables(files, profile, datasets, rows, md=out["md"], tex=out["tex"], **kw)
    return out


def test_tables_keep_row_order_print_dashes_and_published_figures(tmp_path):
    files = [_cell(tmp_path, "cifar10", "dynamic_ptq", accuracy=88.0, cpu_speed=None),
             _cell(tmp_path, "cifar10", "vanilla", accuracy=91.25),
             _cell(tmp_path, "cifar100", "vanilla", top5=99.0)]
    out = _render(tmp_path, files, "paper", ["cifar10", "cifar100"], ["vanilla", "dynamic_ptq"])
    assert sorted(p.relative_to(out["metrics"]).as_posix() for p in out["metrics"].rglob("*.json")) == \
        ["cifar10/dynamic_ptq.json", "cifar10/vanilla.json", "cifar100/vanilla.json"]  # a file a cell, no other
    md = out["md"].read_text()
    assert md.index("## CIFAR-10") < md.index("## CIFAR-100")
    c10 = md[md.index("## CIFAR-10"):md.index("## CIFAR-100")]
    assert c10.index("M vanilla") < c10.index("M dynamic_ptq")
    ref = published().set_index(["dataset", "row"])
    assert f"| 91.25 | - | {ref.loc[('cifar10', 'vanilla'), 'accuracy']:.2f} |" in c10  # the first row: no change
    dyn_line = next(line for line in c10.splitlines() if "M dynamic_ptq" in line)
    assert "| - |" in dyn_line  # no GPU and no CPU speed
    assert "Top-5" in md[md.index("## CIFAR-100"):]
    assert "no CUDA GPU here" in md
    texout = out["tex"].read_text()
    assert r"m\_1 \& co" in texout and texout.count(r"\begin{table}") == 2
    csv = pd.read_csv(out["csv"])
    assert list(csv.columns) == CSV_COLUMNS and len(csv) == 3
    assert csv.loc[csv["row"] == "dynamic_ptq", "cpu_speed"].isna().all()
    # one small file a cell, so `dvc metrics show` prints a row per cell with a few columns
    cells = sorted(p.relative_to(out["metrics"]).as_posix() for p in out["metrics"].rglob("*.json"))
    assert cells == ["cifar10/dynamic_ptq.json", "cifar10/vanilla.json", "cifar100/vanilla.json"]
    vanilla = json.loads((out["metrics"] / "cifar10/vanilla.json").read_text())
    assert vanilla["accuracy"] == 91.25 and set(vanilla) == {"accuracy", "size_mb", "compressed_mb", "cpu_speedup", "cpu_speedup_parent", "cpu_speed",
                                                              "gpu_speed"}
    assert json.loads((out["metrics"] / "cifar10/dynamic_ptq.json").read_text())["cpu_speed"] is None


def test_comparison_with_the_study_sets_each_rows_change_beside_the_studys(tmp_path):
    ref = published().set_index(["dataset", "row"])
    files = [_cell(tmp_path, ds, row, profile="demo", accuracy=acc, size_mb=size)
             for ds, row, acc, size in (("digits", "vanilla", 97.0, 1.0), ("digits", "nystrom_0.75", 96.5, 1.0),
                                        ("digits", "prune_0.1", 99.5, 0.9), ("digits", "mine", 90.0, 0.5),
                                        ("digit_pairs", "vanilla", 90.0, 2.0), ("digit_pairs", "nystrom_0.75", 89.0, 2.0),
                                        ("digit_pairs", "prune_0.1", 92.0, 1.8), ("digit_pairs", "mine", 80.0, 1.0))]
    out = _render(tmp_path, files, "demo", ["digits", "digit_pairs"], ["vanilla", "nystrom_0.75", "prune_0.1", "mine"],
                  study_rows={"nystrom_0.75": "nystrom_64"})
    md = out["md"].read_text()
    part = md[md.index("## What the demo run shows beside the study"):]
    part = part[:part.index("\n## ", 3)]
    lines = {line.split("|")[1].strip(): line for line in part.splitlines() if line.startswith("| ")}
    study = ref.loc[("cifar10", "nystrom_64"), "accuracy"] - ref.loc[("cifar10", "vanilla"), "accuracy"]
    assert "| nystrom_64 | −0.50 | −1.00 | " + f"−{abs(study):.2f} |" in lines["nystrom_0.75"]
    assert "milder here" in lines["nystrom_0.75"]  # within a point here; the study lost 7 to 19
    assert "contradicts: gains here" in lines["prune_0.1"] and "| 90.0 / 90.0 |" in lines["prune_0.1"]
    assert "not in the study" in lines["mine"] and lines["mine"].rstrip().endswith("| - |")


def _findings(tmp_path, cells, test_images=200, compressed=None):
    """``compressed``: row -> its Compressed column (default: its size)."""
    compressed = compressed or {}
    files = [_cell(tmp_path, "digits", row, profile="demo", accuracy=acc, size_mb=size, chain=chain,
                   compressed_mb=compressed.get(row, size), cpu_speedup=speedup, test_images=test_images)
             for row, chain, acc, size, speedup in cells]
    rows = [c[0] for c in cells]
    df = build_frame(files, "demo", rows)  # the frame render_tables builds
    return {f["finding"]: f for f in study_findings(df, ["digits"], rows, {"nystrom_a": "nystrom_24",
                                                                             "nystrom_b": "nystrom_64"})}


def test_findings_check_each_rows_change_size_speed_and_orders(tmp_path):
    """Cells without per-image results are judged by their point changes."""
    found = _findings(tmp_path, [
        ("vanilla", ["vit"], 97.0, 1.0, 1.0),
        ("dynamic_ptq", ["vit", "dynamic_ptq"], 95.9, 0.25, 1.3),     # 1.1 down: beyond 1 point
        ("diffq", ["vit", "diffq"], 90.0, 0.09, 1.0),                  # 9% of the size: beyond 8%
        ("deit_tiny", ["deit_tiny"], 92.0, 0.1, 2.4),                  # 5 down but only 2.4x
        ("prune_0.1", ["vit", "gates", "prune_0.1"], 95.0, 0.9, 1.0),
        ("prune_0.2", ["vit", "gates", "prune_0.2"], 95.5, 0.8, 1.1),  # 0.5 above r = 0.1: reversed
        ("nystrom_a", ["vit", "nystrom_a"], 96.0, 1.0, 0.5),
        ("nystrom_b", ["vit", "nystrom_b"], 95.0, 1.0, 0.4),           # 1 point below the smaller m: two images
    ])
    assert found["dynamic_ptq"]["verdict"] == {"digits": "contradicted"}
    assert found["dynamic_ptq"]["measured"]["digits"] == "−1.10"
    assert found["diffq"]["verdict"]["digits"] == "contradicted" and "9.0%" in found["diffq"]["measured"]["digits"]
    assert found["deit_tiny"]["verdict"]["digits"] == "contradicted" and "2.40x" in found["deit_tiny"]["measured"]["digits"]
    assert found["prune_0.1 / prune_0.2"]["verdict"]["digits"] == "contradicted"
    assert found["nystrom_a / nystrom_b"]["verdict"]["digits"] == "contradicted"
    assert found["nystrom_b"]["verdict"]["digits"] == "holds"  # the largest m: within 3 points
    assert found["no row beats the model it was made from"]["verdict"]["digits"] == "holds"
    assert "lsq" not in found  # no such row in the run: no finding


def _right(n: int, wrong: list[int]) -> str:
    """Per-image results of ``n`` test images, wrong on ``wrong``, as a cell stores them."""
    import numpy as np

    from vitcompress.measure import pack_bits

    flags = np.ones(n, dtype=bool)
    flags[wrong] = False
    return pack_bits(flags)


@pytest.mark.parametrize("better_by, verdict", [(1, "undecided"), (8, "contradicted"), (-8, "holds")])
def test_an_order_finding_is_judged_by_its_interval(tmp_path, better_by, verdict):
    """r = 0.2 above r = 0.1 by one image of 200: its interval straddles 0 (undecided); by eight (exact McNemar
    p = 0.008) the order is reversed (contradicted); eight below, the larger ratio loses more (holds)."""
    n = 200
    base_wrong = list(range(20))
    worse = base_wrong[better_by:] if better_by >= 0 else base_wrong + list(range(20, 20 - better_by))
    cells = {"vanilla": ([], 100.0), "prune_0.1": (base_wrong, 90.0),
             "prune_0.2": (worse, 100.0 * (n - len(worse)) / n)}
    files = [_cell(tmp_path, "digits", row, profile="demo", accuracy=acc, chain=["vit"] if row == "vanilla" else
                   ["vit", "gates", row], test_images=n, per_image={"n": n, "top1": _right(n, wrong), "top5": None})
             for row, (wrong, acc) in cells.items()]
    df = build_frame(files, "demo", list(cells))
    found = {f["finding"]: f for f in study_findings(df, ["digits"], list(cells))}
    order = found["prune_0.1 / prune_0.2"]
    assert order["verdict"]["digits"] == verdict, order
    assert "steps " in order["measured"]["digits"] and "(" in order["measured"]["digits"]  # the interval shown


def test_within_a_findings_bound_is_judged_by_the_interval(tmp_path):
    """1.5 points down (3 of 200 images) against a 1-point bound: its interval reaches inside and outside, so
    undecided; 12 images down lies wholly beyond the bound (contradicted); none down on 2000 images lies
    inside it (holds): equivalence needs the whole interval within the bound."""
    for n, wrong, verdict in ((200, 3, "undecided"), (200, 12, "contradicted"), (2000, 0, "holds"),
                              (200, 0, "undecided")):
        files = [_cell(tmp_path, "digits", "vanilla", profile="demo", accuracy=100.0, chain=["vit"], test_images=n,
                       per_image={"n": n, "top1": _right(n, []), "top5": None}),
                 _cell(tmp_path, "digits", "dynamic_ptq", profile="demo", accuracy=100.0 * (n - wrong) / n,
                       chain=["vit", "dynamic_ptq"], test_images=n,
                       per_image={"n": n, "top1": _right(n, list(range(wrong))), "top5": None})]
        df = build_frame(files, "demo", ["vanilla", "dynamic_ptq"])
        found = {f["finding"]: f for f in study_findings(df, ["digits"], ["vanilla", "dynamic_ptq"])}
        assert found["dynamic_ptq"]["verdict"]["digits"] == verdict, found["dynamic_ptq"]


def test_findings_over_several_seeds_are_judged_seed_by_seed_then_over_the_seeds(tmp_path):
    """Three seeds whose quantized models lose 0, 0 and 12 of 200 images: the finding is judged by the mean
    change over the seeds and an interval that carries their spread (seed by seed against the first row's
    model of the same seed), not by the first seed's model alone."""
    n = 200
    right = _right(n, [])
    lost = [_right(n, []), _right(n, []), _right(n, list(range(12)))]
    files = [_cell(tmp_path, "digits", "vanilla", profile="demo", accuracy=100.0, chain=["vit"], test_images=n,
                   per_image={"n": n, "top1": right, "top5": None},
                   per_image_by_seed=[{"n": n, "top1": right, "top5": None}] * 3, seeds=3),
             _cell(tmp_path, "digits", "dynamic_ptq", profile="demo", accuracy=100.0 - 2.0,
                   chain=["vit", "dynamic_ptq"], test_images=n, per_image={"n": n, "top1": lost[0], "top5": None}, seeds=3,
                   per_image_by_seed=[{"n": n, "top1": b, "top5": None} for b in lost])]
    df = build_frame(files, "demo", ["vanilla", "dynamic_ptq"])
    found = {f["finding"]: f for f in study_findings(df, ["digits"], ["vanilla", "dynamic_ptq"])}
    measured = found["dynamic_ptq"]["measured"]["digits"].replace("−", "-")
    assert measured.startswith("-2.00 (") and found["dynamic_ptq"]["verdict"]["digits"] == "undecided"
    lo = float(measured.split("(")[1].split(",")[0])
    seeds_half = 4.303 * float(np.std([0.0, 0.0, -6.0], ddof=1)) / 3 ** 0.5  # t(2) × sd / √3 = 8.6 points
    assert -2.0 - seeds_half - 1.5 < lo < -2.0 - seeds_half  # the seeds' arm, joined with the images' arm


@pytest.mark.parametrize("vtp_wrong, lib_wrong, verdict", [(20, 0, "holds"), (3, 0, "undecided"),
                                                            (0, 20, "contradicted")])
def test_library_pruning_is_judged_against_vtp_at_the_same_ratio(tmp_path, vtp_wrong, lib_wrong, verdict):
    """The study's open question: does torch-pruning's row beat VTP's at r = 0.2? Paired on the same 2000
    images, the parameter share beside it: 20 images better holds, 3 is undecided, 20 worse contradicts."""
    n = 2000
    cells = {"vanilla": [], "prune_0.2": list(range(100, 100 + vtp_wrong)), "sprune_0.2": list(range(lib_wrong))}
    files = [_cell(tmp_path, "digits", row, profile="demo", accuracy=100.0 * (n - len(w)) / n, test_images=n,
                   chain=["vit"] if row == "vanilla" else ["vit", row], params=900 if row == "sprune_0.2" else 1000,
                   per_image={"n": n, "top1": _right(n, w), "top5": None}) for row, w in cells.items()]
    df = build_frame(files, "demo", list(cells))
    found = {f["finding"]: f for f in study_findings(df, ["digits"], list(cells))}
    lib = next(f for name, f in found.items() if name.startswith("structured pruning"))
    assert lib["verdict"]["digits"] == verdict
    assert "sprune_0.2 − prune_0.2" in lib["measured"]["digits"] and "params 90% of VTP's" in lib["measured"]["digits"]


def test_token_merging_is_judged_against_the_pruning_row_nearest_its_speedup(tmp_path):
    """ToMe at 1.5x beside the pruning row timed nearest (1.4x, not 1.1x): 20 images better of 2000 holds. Rows
    are told by their methods, not their ids: a merging row named anything takes part, its OpenVINO deployment
    (last step: ov_int8) and the study-scoring pruning row do not."""
    n = 2000
    cells = {"vanilla": ([], 1.0, ["train"]), "prune_0.1": ([], 1.1, ["train", "prune_gates", "prune"]),
             "prune_0.2": (list(range(20)), 1.4, ["train", "prune_gates", "prune"]),
             "prune_0.2_study": (list(range(40)), 1.5, ["train", "prune_gates", "prune"]),
             "merge_r4": ([], 1.5, ["train", "tome"]), "merge_r4+ov_int8": ([], 3.0, ["train", "tome", "ov", "ov_int8"])}
    files = [_cell(tmp_path, "digits", row, profile="demo", accuracy=100.0 * (n - len(w)) / n, test_images=n,
                   chain=["vit"] if row == "vanilla" else ["vit", row], cpu_speedup=sp, chain_methods=methods,
                   per_image={"n": n, "top1": _right(n, w), "top5": None}) for row, (w, sp, methods) in cells.items()]
    df = build_frame(files, "demo", list(cells))
    found = {f["finding"]: f for f in study_findings(df, ["digits"], list(cells))}
    tome = next(f for name, f in found.items() if name.startswith("token merging"))
    assert tome["verdict"]["digits"] == "holds"
    assert tome["measured"]["digits"].startswith("merge_r4 − prune_0.2 +1.00 (") and "1.50x vs 1.40x" in \
        tome["measured"]["digits"]


def test_diffqs_size_finding_compares_compressed_with_compressed(tmp_path):
    """DiffQ's claim rests on compression: a raw file a quarter of vanilla's passes when its compressed
    bytes are 7% of vanilla's compressed ones, and a raw 5% fails when its compressed share is 9%."""
    cells = [("vanilla", ["vit"], 97.0, 1.0, 1.0), ("diffq", ["vit", "diffq"], 95.0, 0.25, 1.0)]
    ok = _findings(tmp_path, cells, compressed={"vanilla": 0.9, "diffq": 0.063})["diffq"]
    assert ok["verdict"]["digits"] == "holds" and "7.0%" in ok["measured"]["digits"] and "compressed" in ok["target"]
    cells[1] = ("diffq", ["vit", "diffq"], 95.0, 0.05, 1.0)
    bad = _findings(tmp_path, cells, compressed={"vanilla": 0.9, "diffq": 0.081})["diffq"]
    assert bad["verdict"]["digits"] == "contradicted" and "9.0%" in bad["measured"]["digits"]


@pytest.mark.parametrize("row,chain,acc,verdict", [
    ("deit_tiny", ["deit_tiny"], 98.9, "holds"),           # a student 1.9 above its teacher: allowed
    ("deit_tiny", ["deit_tiny"], 99.1, "contradicted"),    # 2.1 above
    ("lsq", ["vit", "lsq"], 98.1, "contradicted"),         # a compressed vanilla 1.1 above it
    ("deit_base+dynamic_ptq", ["deit_base", "dynamic_ptq"], 98.9, "holds"),  # 0.9 above its own source, deit_base
])
def test_no_row_may_beat_the_model_it_was_made_from(tmp_path, row, chain, acc, verdict):
    found = _findings(tmp_path, [("vanilla", ["vit"], 97.0, 1.0, 1.0), ("deit_base", ["deit_base"], 98.0, 1.0, 1.0),
                                 (row, chain, acc, 0.5, 1.0)])
    check = found["no row beats the model it was made from"]
    assert check["verdict"]["digits"] == verdict, check


def test_findings_are_rendered_in_the_tables(tmp_path):
    files = [_cell(tmp_path, "digits", "vanilla", profile="demo", chain=["vit"], accuracy=97.0),
             _cell(tmp_path, "digits", "lsq", profile="demo", chain=["vit", "lsq"], accuracy=93.0)]
    md = _render(tmp_path, files, "demo", ["digits"], ["vanilla", "lsq"])["md"].read_text()
    part = md[md.index("## The study's findings, checked on this run"):]
    line = next(x for x in part.splitlines() if x.startswith("| lsq |"))
    assert "within 3 points of vanilla" in line and "−4.00 (contradicted)" in line and line.endswith("| contradicted |")
    assert "claims (a finding on one data set): **1 hold, 1 contradicted, 0 undecided.**" in part


def test_demo_profile_has_no_published_column(tmp_path):
    out = _render(tmp_path, [_cell(tmp_path, "digits", "vanilla", profile="demo")], "demo", ["digits"], ["vanilla"])
    md = out["md"].read_text()
    assert "Published" not in md and "digits" in md


def test_formatting_helpers():
    assert fmt(None) == "-" and fmt(float("nan")) == "-" and fmt(3.14159) == "3.14"
    assert fmt_speed(0.0504) == "0.0504" and fmt_speed(1234.4) == "1234" and fmt_speed(None) == "-"
    assert tex("a_b%") == r"a\_b\%"


def test_published_figures_are_the_studys_tables():
    ref = published()
    assert len(ref) == 26 and set(ref["dataset"]) == {"cifar10", "cifar100"}
    assert ref.set_index(["dataset", "row"]).loc[("cifar10", "vanilla"), "size_mb"] == 327


def test_pareto_front_keeps_only_rows_nothing_beats_on_both_axes():
    acc = [90.0, 85.0, 80.0, 70.0, 88.0]
    speed = [10.0, 20.0, 15.0, 30.0, None]  # row 2 is slower and less accurate than row 1; row 4 unmeasured
    assert pareto_front(speed, acc, x_larger_is_better=True) == [True, True, False, True, False]
    size = [4.0, 1.0, 1.0, 0.5, 2.0]  # smaller is better: row 2 ties row 1 on size and is less accurate
    assert pareto_front(size, acc, x_larger_is_better=False) == [True, True, False, True, True]
    assert pareto_front([1.0, 1.0], [50.0, 50.0], True) == [True, True]  # equal points do not beat each other


def test_tradeoff_figure_is_written_and_leaves_unmeasured_rows_out(tmp_path):
    files = [_cell(tmp_path, "digits", "vanilla", cpu_speedup=1.0),
             _cell(tmp_path, "digits", "fq_vit", cpu_speed=None, cpu_speedup=None),
             _cell(tmp_path, "digits", "lsq", cpu_speed=14.0, cpu_speedup=1.1, size_mb=0.5, accuracy=89.0)]
    out = tmp_path / "figures" / "tradeoff_digits.png"
    tradeoff_figure(files, out, "digits")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(out.parent.glob("*.tmp*"))


def test_job_resources_from_snakemake_benchmarks(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    bench = []
    for chain, secs, rss in (("vit", 30.5, 900.0), ("vit+lsq", 10.0, 1200.5)):
        f = tmp_path / "logs/demo/digits" / chain / "step.resources.tsv"
        f.parent.mkdir(parents=True)
        f.write_text(header + f"{secs}\t0:00:30\t{rss}\t1\t1\t1\t0\t0\t90\t29\n")
        bench.append(str(f))
    write_jobs(bench, str(tmp_path / "jobs.csv"))
    out = _render(tmp_path, [_cell(tmp_path, "digits", "vanilla")], "demo", ["digits"], ["vanilla"],
                  jobs_csv=str(tmp_path / "jobs.csv"))
    jobs = pd.read_csv(tmp_path / "jobs.csv")
    assert list(jobs["chain"]) == ["vit", "vit+lsq"] and list(jobs["max_rss_mb"]) == [900.0, 1200.5]
    md = out["md"].read_text()
    assert "2 training/compression jobs took 40 s" in md and "1200 MB (vit+lsq on digits)" in md
    assert "[jobs.csv](jobs.csv)" in md


def _bench_record(row, speedup, size, flags, timm="vit_base_patch16_224", ci=0.1):
    """A bench record whose speed-up has the interval ``speedup`` ± ``ci`` (None: no interval)."""
    lo, hi = (None, None) if ci is None else (speedup - ci, speedup + ci)
    return {"row": row, "timm": timm, "cpu_speedup": speedup, "cpu_speedup_lo": lo, "cpu_speedup_hi": hi,
            "size_mb": size, "fingerprint": {"cpu_flags": flags}}


@pytest.mark.parametrize("flags, target, verdict", [
    (["avx2", "avx512f", "avx512_vnni"], ">= 3x (CPU with avx512_vnni)", "contradicted"),
    (["avx2"], ">= 2x (CPU with avx2)", "holds"),
])
def test_deployment_targets_follow_the_cpu_instruction_sets(flags, target, verdict):
    records = [_bench_record("vanilla", 1.0, 327.0, flags), _bench_record("ort_fp32", 0.9, 327.5, flags, ci=0.05),
               _bench_record("ort_int8_static", 2.5, 84.0, flags)]
    out = {(t["row"], t["what"]): t for t in deploy_targets(records, ["train", "onnx", "ort_int8_static"])}
    speed = out[("ort_int8_static", "CPU speed-up over PyTorch fp32")]
    assert speed["target"] == target and speed["verdict"] == verdict and speed["measured"] == "2.50x (2.40–2.60)"
    assert out[("ort_fp32", "CPU speed-up over PyTorch fp32")]["verdict"] == "contradicted"  # (0.85, 0.95) < 1.0x
    size = out[("ort_int8_static", "size, % of the first row")]
    assert size["verdict"] == ("holds" if 84.0 / 327.0 <= 0.26 else "contradicted") and size["measured"] == "25.7%"
    assert ("vanilla", "CPU speed-up over PyTorch fp32") not in out


def test_a_speed_target_is_judged_on_its_interval():
    """Holds only when the whole interval clears the target; a point above it with an interval across it, or a
    speed-up with no interval, is undecided."""
    flags = ["avx2"]

    def verdict(speedup, ci):
        records = [_bench_record("vanilla", 1.0, 327.0, flags), _bench_record("ort_int8_static", speedup, 84.0, flags, ci=ci)]
        return {t["what"]: t for t in deploy_targets(records, ["train", "ort_int8_static"])}["CPU speed-up over PyTorch fp32"]

    assert verdict(2.1, 0.05)["verdict"] == "holds"
    assert verdict(2.1, 0.2)["verdict"] == "undecided"  # 2.1 >= 2, but (1.9, 2.3) straddles it
    assert verdict(1.9, 0.2)["verdict"] == "undecided"
    assert verdict(1.8, 0.1)["verdict"] == "contradicted"
    no_interval = verdict(2.5, None)
    assert no_interval["verdict"] == "undecided" and no_interval["measured"] == "2.50x (no interval)"
    untimed = verdict(float("nan"), None)  # counted with the undecided, so the counts add up to the table
    assert untimed["verdict"] == "undecided" and untimed["measured"] is None


def test_openvino_targets_compare_rows_of_the_same_run():
    """OpenVINO int8 of the first row's model over ORT static int8 (ratio of their speed-ups, on the widest
    interval the two rows' intervals allow), and the best pruned or distilled chain through OpenVINO int8 over
    PyTorch fp32, on a VNNI CPU."""
    flags = ["avx2", "avx512_vnni"]
    rows = [("vanilla", 1.0, 327.0, ["vit"], "train"), ("ort_int8_static", 3.5, 84.0, ["vit", "onnx", "s8"], "ort_int8_static"),
            ("ov_int8", 4.5, 86.0, ["vit", "ov", "q"], "ov_int8"),
            ("deit_tiny+ov_int8", 14.0, 6.0, ["deit_tiny", "ov", "q"], "ov_int8"),
            ("prune+ov_int8", 5.5, 60.0, ["vit", "gates", "prune_0.2", "ov", "q"], "ov_int8")]
    methods = {"vit": "train", "deit_tiny": "distill", "gates": "prune_gates", "prune_0.2": "prune", "ov": "ov",
               "onnx": "onnx", "s8": "ort_int8_static", "q": "ov_int8"}
    records = [{**_bench_record(r, sp, size, flags), "chain": chain, "chain_methods": methods}
               for r, sp, size, chain, _ in rows]
    out = {(t["row"], t["what"]): t for t in deploy_targets(records, [m for *_, m in rows])}
    over = out[("ov_int8", "CPU speed over ort_int8_static (same run)")]
    # 4.5/3.5 = 1.29; the interval runs from 4.4/3.6 = 1.22 to 4.6/3.4 = 1.35, above 1.2
    assert over["measured"] == "1.29x (1.22–1.35)" and over["verdict"] == "holds"
    assert out[("ov_int8", "CPU speed-up over PyTorch fp32")]["verdict"] == "holds"  # (4.4, 4.6) >= 4.3
    past = out[("deit_tiny+ov_int8", "CPU speed-up over PyTorch fp32, pruned or distilled + OpenVINO int8")]
    assert past["measured"] == "14.00x (13.90–14.10)" and past["verdict"] == "holds" and "avx512_vnni" in past["target"]
    assert out[("ov_int8", "size, % of the first row")]["verdict"] == "contradicted"  # 26.3% > 26%
    records[2].update(cpu_speedup=3.9, cpu_speedup_lo=3.8, cpu_speedup_hi=4.0)
    out = {(t["row"], t["what"]): t for t in deploy_targets(records, [m for *_, m in rows])}
    assert out[("ov_int8", "CPU speed over ort_int8_static (same run)")]["verdict"] == "contradicted"  # (1.06, 1.18)
    records[2].update(cpu_speedup=4.3, cpu_speedup_lo=3.8, cpu_speedup_hi=5.1)  # the interval crosses both targets
    out = {(t["row"], t["what"]): t for t in deploy_targets(records, [m for *_, m in rows])}
    assert out[("ov_int8", "CPU speed over ort_int8_static (same run)")]["verdict"] == "undecided"
    assert out[("ov_int8", "CPU speed-up over PyTorch fp32")]["verdict"] == "undecided"


def test_deployment_targets_are_for_vit_b_only():
    records = [_bench_record("vanilla", 1.0, 1.0, ["avx2"], timm="vit_small_patch16_224"),
               _bench_record("ort_int8_static", 1.4, 0.3, ["avx2"], timm="vit_small_patch16_224")]
    assert deploy_targets(records, ["train", "ort_int8_static"]) == []


def test_crowded_points_get_labels_that_do_not_overlap():
    """The trade-off figures' labels: twelve points in one cluster, every label readable on its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Annotation, Text

    fig, ax = plt.subplots(figsize=(5, 4))
    pts = [(1.0 + 0.01 * i, 96.0 + 0.05 * (i % 3), str(i + 1)) for i in range(12)] + [(3.0, 50.0, "13")]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts])
    ax.set_xlim(0.5, 4)
    ax.set_ylim(40, 100)
    place_labels(ax, pts)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(a, renderer) for a in ax.get_children() if isinstance(a, Annotation)]  # text only
    assert len(boxes) == 13
    overlaps = [(i, j) for i in range(13) for j in range(i + 1, 13) if boxes[i].overlaps(boxes[j])]
    assert not overlaps
    plt.close(fig)


def test_the_tradeoff_figure_draws_every_row_with_its_intervals(tmp_path):
    files = [_cell(tmp_path, "digits", r, profile="demo", accuracy=a, cpu_speedup=s, size_mb=m, chain=["vit"],
                   delta_first={"delta": a - 97, "lo": a - 98, "hi": a - 96, "distinguishable": True},
                   cpu_speedup_ci=[s * 0.95, s * 1.05])
             for r, a, s, m in (("vanilla", 97.0, 1.0, 1.0), ("dynamic_ptq", 96.5, 1.6, 0.3), ("lsq", 96.0, 1.0, 0.15))]
    tradeoff_figure(files, tmp_path / "t.png", "t", {"vanilla": "train", "dynamic_ptq": "dynamic_ptq", "lsq": "lsq"})
    assert (tmp_path / "t.png").stat().st_size > 20_000


def test_jobs_running_at_once_in_threads_keep_their_own_logs_and_figures(tmp_path):
    """Snakemake runs the cheap jobs (cells, tables, figures) side by side in threads of its own process: each
    job's log holds its own records alone, and two figures drawn at once are both whole."""
    import logging
    import threading

    from PIL import Image

    from vitcompress.joblog import logging_to
    from vitcompress.plotting import save_png, subplots

    start = threading.Barrier(2)
    level = logging.getLogger().level

    def one_job(name):
        with logging_to(tmp_path / f"{name}.log"):
            start.wait()
            for i in range(50):
                logging.getLogger("vitcompress.test").info("%s record %d", name, i)
            fig, ax = subplots(figsize=(3, 2))
            ax.plot(range(10), label=name)
            ax.set_title(name)
            save_png(fig, tmp_path / f"{name}.png")

    threads = [threading.Thread(target=one_job, args=(n,)) for n in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, other in (("first", "second"), ("second", "first")):
        text = (tmp_path / f"{name}.log").read_text()
        assert text.count(f"{name} record") == 50 and f"{other} record" not in text
        assert Image.open(tmp_path / f"{name}.png").size == (330, 220)  # 3 x 2 inches at 110 dpi
    assert logging.getLogger().level == level  # restored after the last job, not by the first to finish


def test_the_hardware_table_names_the_row_to_ship_on_each_machine(tmp_path):
    """Per machine and data set: the fastest row that runs the first row's own model in another runtime, leaving
    out one whose int8 accuracy moved on that machine, and never another model however fast."""
    from vitcompress.report.tables import render_hardware

    rows = [("vanilla", ["vit"]), ("ort_int8_static", ["vit", "onnx", "int8_static"]), ("ov_int8", ["vit", "ov", "ov_int8"]),
            ("deit_tiny+ov_int8", ["deit_tiny", "ov", "ov_int8"])]
    step_methods = {"vit": "train", "onnx": "onnx", "int8_static": "ort_int8_static", "ov": "ov", "ov_int8": "ov_int8",
                    "deit_tiny": "distill"}
    avx2 = {"cpu": "EPYC", "cpu_flags": ["avx2"], "int8_flags": ["avx2"], "machine": "x86_64", "cpu_threads": 2}
    vnni = {"cpu": "Xeon", "cpu_flags": ["avx2", "avx512f", "avx512_vnni"], "int8_flags": ["avx2", "avx512f", "avx512_vnni"],
            "machine": "x86_64", "cpu_threads": 4}
    # (machine, fingerprint, {row: (speed-up, accuracy there)}); accuracy where made: 95 for every row
    timings = [("avx2-box", avx2, {"vanilla": (1.0, None), "ort_int8_static": (1.8, 94.8), "ov_int8": (0.8, 95.0),
                                   "deit_tiny+ov_int8": (9.0, 94.0)}),
               ("vnni-box", vnni, {"vanilla": (1.0, None), "ort_int8_static": (2.1, 95.0), "ov_int8": (4.3, 80.0),
                                   "deit_tiny+ov_int8": (28.0, 94.0)})]
    files, cells = [], []
    for machine, fp, by_row in timings:
        for (row, steps) in rows:
            speedup, acc = by_row[row]
            f = tmp_path / "results/p/digits" / "+".join(steps) / "speed" / f"{machine}.json"
            write_json(f, {"fingerprint": fp, "cpu": {"vs_baseline": speedup, "vs_baseline_ci": [speedup - 0.1, speedup + 0.1]},
                           **({"accuracy": {"top1": acc}} if acc is not None else {})})
            files.append(str(f))
    for row, _ in rows:
        cells.append(str(tmp_path / f"cells/{row}.json"))
        write_json(cells[-1], {"dataset": "digits", "row": row, "model": row.upper(), "accuracy": 95.0})
    out = {k: tmp_path / f"hardware.{k}" for k in ("md", "csv", "tex")}
    render_hardware(files, "p", ["digits"], [{"id": r, "model": r, "chain": "+".join(s), "steps": s} for r, s in rows],
                    cells=cells, step_methods=step_methods, **{k: str(v) for k, v in out.items()})
    md = out["md"].read_text()
    # the AVX2 box: ORT int8 (OpenVINO int8 is slower there; the DeiT chain is another model)
    assert "| avx2-box | AVX2 only (no VNNI) | ort_int8_static (1.80× (1.70–1.90)) |" in md
    # the VNNI box: OpenVINO int8 is faster but its accuracy moved there (80 against 95), so ORT int8
    assert "| vnni-box | AVX-512 VNNI | ort_int8_static (2.10× (2.00–2.20)) |" in md
    held = [f for f in files if "vnni-box" in f and "+ov+ov_int8" in f and "deit" not in f]
    write_json(held[0], {"fingerprint": vnni, "cpu": {"vs_baseline": 4.3, "vs_baseline_ci": [4.2, 4.4]},
                         "accuracy": {"top1": 94.9}})
    render_hardware(files, "p", ["digits"], [{"id": r, "model": r, "chain": "+".join(s), "steps": s} for r, s in rows],
                    cells=cells, step_methods=step_methods, **{k: str(v) for k, v in out.items()})
    assert "| vnni-box | AVX-512 VNNI | ov_int8 (4.30× (4.20–4.40)) |" in out["md"].read_text()
    # where no deployment beats the first row itself, the first row is the one to ship
    slow = [f for f in files if "avx2-box" in f and "int8_static" in f]
    write_json(slow[0], {"fingerprint": avx2, "cpu": {"vs_baseline": 0.9, "vs_baseline_ci": [0.8, 1.0]},
                         "accuracy": {"top1": 95.0}})
    render_hardware(files, "p", ["digits"], [{"id": r, "model": r, "chain": "+".join(s), "steps": s} for r, s in rows],
                    cells=cells, step_methods=step_methods, **{k: str(v) for k, v in out.items()})
    assert "| avx2-box | AVX2 only (no VNNI) | vanilla (1.00× (0.90–1.10)) |" in out["md"].read_text()
    write_json(slow[0], {"fingerprint": avx2, "cpu": {"vs_baseline": 1.0, "vs_baseline_ci": [0.9, 1.1]},
                         "accuracy": {"top1": 95.0}})  # as fast, not faster: still the first row
    render_hardware(files, "p", ["digits"], [{"id": r, "model": r, "chain": "+".join(s), "steps": s} for r, s in rows],
                    cells=cells, step_methods=step_methods, **{k: str(v) for k, v in out.items()})
    assert "| avx2-box | AVX2 only (no VNNI) | vanilla (1.00× (0.90–1.10)) |" in out["md"].read_text()
