"""The Snakemake workflow itself: validation before any job, the paper DAG offline, a tiny real run."""
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from conftest import REPO, make_workflow, snakemake, tiny_profile, tool_env

from vitcompress.config import expand_profiles, resolve
from vitcompress.io import read_json
from vitcompress.methods import get_method
from vitcompress.runtimes import get_runtime
from vitcompress.workflow import build_untrained


def test_paper_profile_dry_run_lists_every_cell_offline(tmp_path, raw_params):
    wf = make_workflow(tmp_path, raw_params)
    proc = snakemake(wf, "-n", "--config", "profile=paper")
    prof = resolve(raw_params, {"profile": "paper"})
    for ds in prof.datasets:
        assert f"data/prepared/{ds}.pt" in proc.stdout
        for row in prof.rows:
            chain = prof.chain_id(row["id"])
            runtime = get_runtime(get_method(prof.steps[row["chain"][-1]]["method"]).runtime)
            for f in (*runtime.files, "accuracy.json"):  # the files a device loads
                assert f"results/paper/{ds}/{chain}/{f}" in proc.stdout
            assert f"results/paper/{ds}/{chain}/speed/" in proc.stdout  # timed per machine label
            assert f"results/paper/{ds}/rows/{row['id']}.json" in proc.stdout
    assert not (wf / "results").exists() and not (wf / "data").exists()


def test_seeds_run_every_chain_under_each_seed_and_time_only_the_first(tmp_path, raw_params):
    """`--config seeds=2`: each seed its own artifacts (prefixes shared within a seed, a distillation's
    teacher of the same seed), each row's cell made from both seeds' accuracy, timing only for the first."""
    wf = make_workflow(tmp_path, raw_params)
    proc = snakemake(wf, "-n", "--config", "seeds=2")
    prof = resolve(raw_params, {"seeds": 2})
    plan = _job_counts(proc.stdout)
    roots = [c for c in prof.chains() if "+" not in c]
    assert plan["train"] == 2 * len(roots) * len(prof.datasets)
    assert plan["measure_speed"] == len(prof.rows) * len(prof.datasets) == plan["row_metrics"]
    out = proc.stdout
    for ds in prof.datasets:
        for chain in prof.chains():
            assert f"results/demo/{ds}@seed1/{chain}/accuracy.json" in out
    student, spec = next((k, s) for k, s in prof.steps.items() if s["method"] == "distill")
    inputs = re.search(rf"input: (.*)\n\s+output: results/demo/digits@seed1/{student}/model.pt", out).group(1)
    assert f"results/demo/digits@seed1/{spec['teacher']}/model.pt" in inputs  # its own seed's teacher
    assert f"results/demo/digits/{spec['teacher']}/model.pt" not in inputs
    assert "@seed1/vit/speed/" not in out


@pytest.mark.parametrize("edit,expected", [
    (lambda r: r["profiles"]["demo"]["train"].update(epochs=-2), "profiles.demo.train.epochs = -2"),
    (lambda r: r["profiles"]["demo"].update(colour="red"), "unknown key 'profiles.demo.colour'"),
    (lambda r: r["profiles"]["demo"]["steps"]["vit"].update(method="prune_magic"),
     "profiles.demo.steps.vit.method = 'prune_magic'"),
])
def test_bad_params_stop_before_any_job(tmp_path, raw_params, edit, expected):
    raw = copy.deepcopy(raw_params)
    edit(raw)
    wf = make_workflow(tmp_path, raw)
    proc = snakemake(wf, check=False)
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr
    assert not (wf / "results").exists() and not (wf / "logs").exists()


def test_cuda_requested_without_gpu_is_a_clear_error(tmp_path, raw_params):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    wf = make_workflow(tmp_path, raw_params)
    proc = snakemake(wf, "-n", "--config", "device=cuda", check=False)
    assert proc.returncode != 0 and "no CUDA GPU is visible" in proc.stdout + proc.stderr


def test_slurm_profile_loads_and_gpu_jobs_ask_for_one_gpu(tmp_path, raw_params):
    """On a login node without a GPU: the profile submits with device=cuda; each job checks its own GPU."""
    wf = make_workflow(tmp_path, raw_params)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "-n"], cwd=wf,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs = [block for block in out.split("rule ")[1:]]
    train = [b for b in jobs if b.startswith("train:")]
    data = [b for b in jobs if b.startswith("prepare_data:")]
    assert train and all("gpu=1" in b.split("Shell command")[0] for b in train)
    assert data and not any("gpu=" in b.split("Shell command")[0] for b in data)
    assert not (wf / "results").exists()


@pytest.mark.e2e
def test_tiny_workflow_end_to_end(tmp_path, raw_params, monkeypatch):
    raw = tiny_profile(raw_params, datasets=("digits", "digit_pairs"))
    wf = make_workflow(tmp_path, raw)
    monkeypatch.setenv("VITCOMPRESS_MACHINE", "machine-a")
    snakemake(wf)

    csv = pd.read_csv(wf / "reports/metrics.csv")
    rows = [r["id"] for r in raw["profiles"]["tiny"]["rows"]]
    assert len(csv) == 2 * len(rows) and list(csv[csv["dataset"] == "digits"]["row"]) == rows  # study order
    assert csv["accuracy"].between(0, 100).all()  # a 3-step model may well score 0% on 100 classes
    timed = csv[csv["row"] != "fq_vit"]
    for col in ("cpu_speed", "cpu_images_per_s", "cpu_latency_ms", "size_mb", "params"):
        assert (timed[col] > 0).all(), col
    simulated = csv[csv["row"] == "fq_vit"]
    assert simulated["cpu_speed"].isna().all() and (simulated["size_mb"] > 0).all()  # a simulation is not timed
    assert csv["gpu_speed"].isna().all()  # no GPU here, so no GPU number
    speedup = csv.set_index(["dataset", "row"])["cpu_speedup"]
    assert (speedup.xs("vanilla", level="row") == 1.0).all()  # the baseline row, timed once
    assert (timed.set_index(["dataset", "row"])["cpu_speedup"] > 0).all() and simulated["cpu_speedup"].isna().all()
    by_row = csv[csv["dataset"] == "digits"].set_index("row")
    assert by_row.loc["dynamic_ptq", "size_mb"] < by_row.loc["vanilla", "size_mb"]
    assert by_row.loc["nystrom_0.25", "params"] == by_row.loc["vanilla", "params"]  # same weights, new attention
    # m = a quarter of the tokens: 16 on digits (upsampled 2x), 8 on digit_pairs; the label shows each data set's m
    labels = csv[csv["row"] == "nystrom_0.25"].set_index("dataset")["model"]
    assert labels["digits"] == "ViT-Nystromformer(m=4)" and labels["digit_pairs"] == "ViT-Nystromformer(m=2)"
    scaling = pd.read_csv(wf / "reports/attention_scaling.csv")
    assert set(scaling["method"]) == {"exact", "exact_sdpa", "nystrom"} and (wf / "reports/figures/attention_scaling.png").exists()
    assert by_row.loc["prune_0.2", "params"] < by_row.loc["vanilla", "params"]
    assert by_row.loc["sprune_0.2", "params"] < by_row.loc["vanilla", "params"]  # torch-pruning, physically
    assert by_row.loc["tome_1", "params"] == by_row.loc["vanilla", "params"]  # ToMe merges tokens, not weights
    assert by_row.loc["tome_1", "model"] == "ToMe (r=8)"  # keep 0.5 of 16 tokens in one block: r resolved to 8
    # epochs over the chain: the pruned row adds gate training and its fine-tune to the vanilla training
    tiny = expand_profiles(raw)["profiles"]["tiny"]
    steps = tiny["steps"]
    assert by_row.loc["vanilla", "train_epochs"] == tiny["train"]["epochs"]
    assert by_row.loc["prune_0.2", "train_epochs"] == (by_row.loc["vanilla", "train_epochs"]
                                                       + steps["gates"]["epochs"] + steps["prune_0.2"]["epochs"])
    assert by_row.loc["dynamic_ptq", "train_epochs"] == by_row.loc["vanilla", "train_epochs"]  # no training
    assert by_row.loc["lsq", "size_mb"] < by_row.loc["vanilla", "size_mb"]  # tiny: mostly file overhead
    for ds in ("digits", "digit_pairs"):
        for figure in (f"figures/prune_importance_{ds}_vit+gates.png", f"figures/fq_vit_{ds}_vit+fq_vit.png",
                       f"fq_vit_ablation_{ds}_vit+fq_vit.md", f"figures/tradeoff_{ds}.png"):
            assert (wf / "reports" / figure).exists() and f"({figure})" in (wf / "reports/tables.md").read_text()
    cell = json.loads((wf / "results/tiny/digits/rows/vanilla.json").read_text())
    model_file = wf / "results/tiny/digits/vit/model.pt"
    assert cell["size_mb"] == pytest.approx(model_file.stat().st_size / 2**20)
    assert cell["fingerprint"]["label"] == "machine-a"
    # the ONNX Runtime row: its artifact is the .onnx file a device loads, and the table names its runtime
    ort = json.loads((wf / "results/tiny/digits/rows/ort_int8_static.json").read_text())
    onnx_file = wf / "results/tiny/digits/vit+onnx+int8_static/model.onnx"
    assert ort["runtime"] == "ONNX Runtime" and cell["runtime"] == "PyTorch"
    assert ort["size_mb"] == pytest.approx(onnx_file.stat().st_size / 2**20) and ort["cpu_speedup"] > 0
    assert not (wf / "results/tiny/digits/vit+onnx+int8_static/model.pt").exists()
    assert by_row.loc["ort_int8_static", "runtime"] == "ONNX Runtime" and "| ONNX Runtime |" in (wf / "reports/tables.md").read_text()
    # the OpenVINO row: the IR's two files, its precision in the Runtime column, and each step's own speed-up:
    # int8 over the IR it quantized, timed in the same alternation as the first row
    ov = json.loads((wf / "results/tiny/digits/rows/ov_int8.json").read_text())
    ir = wf / "results/tiny/digits/vit+ov+ov_int8"
    assert ov["runtime"] == "OpenVINO, int8 + f32" and (ir / "model.xml").exists() and (ir / "model.bin").exists()
    assert ov["size_mb"] == pytest.approx(((ir / "model.xml").stat().st_size + (ir / "model.bin").stat().st_size) / 2**20)
    assert ov["cpu_speedup_parent"] > 0 and ov["cpu_speedup_parent_ci"][0] <= ov["cpu_speedup_parent"]
    assert ov["cpu_speedup_parent"] != ov["cpu_speedup"]  # over the OpenVINO f32 IR, not over the first row
    speed_json = read_json(next((wf / "results/tiny/digits/vit+ov+ov_int8/speed").glob("*.json")))
    assert speed_json["fingerprint"]["openvino"] and speed_json["fingerprint"]["nncf"]
    assert cell["cpu_speedup_parent"] is None  # a root row has no parent
    assert by_row.loc["lsq", "cpu_speedup_parent"] > 0  # over the vanilla model it fine-tuned
    md = (wf / "reports/tables.md").read_text()
    assert md.count("| Vanilla ViT |") == 2 and (wf / "reports/tables.tex").exists()
    assert all((wf / "logs/tiny" / d / "vit/step.log").stat().st_size > 0 for d in ("digits", "digit_pairs"))
    jobs = pd.read_csv(wf / "reports/jobs.csv")
    chains = resolve(raw).chains()
    assert len(jobs) == 2 * len(chains) and set(jobs["chain"]) == set(chains)
    assert (jobs["max_rss_mb"] > 0).all() and (jobs["wall_s"] > 0).all()

    html = snakemake(wf, "--report", "reports/report.html")
    page = (wf / "reports/report.html").read_text()
    assert html.returncode == 0 and "tradeoff_digits.png" in page and "metrics.csv" in page

    again = snakemake(wf, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr

    # A new machine: only timings, the cells and the reports re-run; checkpoints and accuracy are kept,
    # and the first machine's timings stay beside the new ones.
    monkeypatch.setenv("VITCOMPRESS_MACHINE", "machine-b")
    moved = _job_counts(snakemake(wf, "-n").stdout)
    assert moved["measure_speed"] == moved["row_metrics"] == len(csv) and moved["tables"] == moved["metrics"] == 1
    assert set(moved) == {"measure_speed", "attention_scaling", "row_metrics", "metrics", "tables", "tradeoff_figure",
                          "hardware", "all", "total"}  # the jobs' resources did not move: no jobs table
    first = (wf / "results/tiny/digits/vit/speed/machine-a.json").read_text()
    snakemake(wf)
    assert (wf / "results/tiny/digits/vit/speed/machine-a.json").read_text() == first  # left intact
    hardware = pd.read_csv(wf / "reports/hardware.csv")
    for m in ("machine-a", "machine-b"):
        assert hardware[f"{m}:cpu_speedup"].notna().sum() == timed.shape[0], m  # a column each, every timed cell
    assert "**machine-a**" in (wf / "reports/hardware.md").read_text() and "machine-b" in (wf / "reports/hardware.tex").read_text()
    ship = [line for line in (wf / "reports/hardware.md").read_text().splitlines() if line.startswith("| machine-")]
    assert len(ship) == 2 and all(line.count("×") >= 2 for line in ship), ship  # a row to ship a machine, each data set
    assert "Nothing to be done" in "".join(snakemake(wf, "-n").stdout)  # and a no-op re-run stays one

    bench = snakemake(wf, "bench_arch")
    table = pd.read_csv(wf / "reports/bench_arch.csv").set_index("row")
    assert list(table.index) == rows and (table["size_mb"] > 0).all() and bench.returncode == 0
    assert table.loc["dynamic_ptq", "size_mb"] < table.loc["vanilla", "size_mb"]
    assert table.loc["dynamic_ptq", "gpu_speed"] != table.loc["dynamic_ptq", "gpu_speed"]  # NaN: CPU-only
    # each row timed beside the baseline row's architecture; the baseline's own ratio is 1 by definition
    timed = table["cpu_speed"].notna()
    assert table.loc["vanilla", "cpu_speedup"] == 1.0 and timed.sum() >= len(rows) - 1
    assert (table.loc[timed, "cpu_speedup"] > 0).all() and table.loc[~timed, "cpu_speedup"].isna().all()
    assert "timed call by call beside" in (wf / "reports/bench_arch.md").read_text()
    assert table.loc["ort_int8_static", "runtime"] == "ONNX Runtime" and table.loc["vanilla", "runtime"] == "PyTorch"


def test_paper_vanilla_artifact_size_matches_the_study(raw_params, tmp_path):
    """ViT-B/16 with a CIFAR-10 head, saved as the pipeline saves it: the study's Size column says 327 MB."""
    from vitcompress.data import data_shape
    from vitcompress.measure import file_size_mb
    from vitcompress.models import arch_for

    prof = resolve(raw_params, {"profile": "paper"})
    step = prof.step_cfg("vit")
    arch = arch_for(step["model_cfg"], data_shape(prof.dataset_cfg("cifar10")), step["image_size"])
    build_untrained([step], arch).save(tmp_path / "m.pt")
    assert file_size_mb(tmp_path / "m.pt") == pytest.approx(327, rel=0.02)


def _start(wf, *args):
    return subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=wf, env=tool_env(),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_training(wf, proc, log, timeout=300):
    """Until the vanilla step has logged its first epoch (so it is mid-training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and "epoch 1/" in log.read_text():
            return
        assert proc.poll() is None, "snakemake ended before training started"
        time.sleep(0.05)
    raise AssertionError("training never started")


@pytest.mark.e2e
def test_a_job_killed_mid_training_leaves_nothing_complete_and_a_rerun_finishes(tmp_path, raw_params):
    import psutil

    raw = tiny_profile(raw_params, rows=["vanilla"])
    prof = raw["profiles"]["tiny"]
    prof["train"].update(epochs=6, max_steps=None)  # long enough to be killed in the middle
    wf = make_workflow(tmp_path, raw)
    step_outputs = [wf / "results/tiny/digits/vit" / f for f in ("model.pt", "accuracy.json")]

    log = wf / "logs/tiny/digits/vit/step.log"

    # 1. The job's own process is killed (as the OOM killer would): Snakemake sees a failed job.
    run = _start(wf)
    _wait_for_training(wf, run, log)
    # the step runs in a worker process the workflow spawned (vitcompress.workers)
    jobs = [p for p in psutil.Process(run.pid).children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
    assert jobs, "no step process found"
    for p in jobs:
        p.kill()
    assert run.wait(timeout=120) != 0
    assert not any(f.exists() for f in step_outputs)

    # 2. Snakemake itself and its jobs are killed: nothing complete is left, and its lock says what to do.
    log.unlink()  # so the wait below sees this run's training, not the last one's log
    run = _start(wf)
    _wait_for_training(wf, run, log)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert not any(f.exists() for f in step_outputs) and not (wf / "reports/tables.md").exists()
    locked = snakemake(wf, check=False)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    snakemake(wf, "--unlock")
    snakemake(wf)
    assert all(f.exists() for f in step_outputs)
    assert list(pd.read_csv(wf / "reports/metrics.csv")["row"]) == ["vanilla"]

    # 3. Killed while timing (new timing settings re-run only the timing): the old timing is gone,
    # no new one is written, and a re-run times again.
    prof["measure"].update(repeats=400)
    (wf / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    from vitcompress.measure import fingerprint

    label = fingerprint(1, gpu=False)["label"] if "VITCOMPRESS_MACHINE" not in os.environ else os.environ["VITCOMPRESS_MACHINE"]
    speed_json = next((wf / "results/tiny/digits/vit/speed").glob("*.json"), wf / f"results/tiny/digits/vit/speed/{label}.json")
    speed_log = wf / "logs/tiny/digits/vit/speed.log"
    speed_log.unlink()
    run = _start(wf)
    deadline = time.monotonic() + 300
    while not speed_log.exists() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    assert speed_log.exists() and run.poll() is None, "the timing job never started"
    time.sleep(1.0)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert not speed_json.exists() and all(f.exists() for f in step_outputs)
    snakemake(wf, "--unlock")
    snakemake(wf)
    assert read_json(speed_json)["cpu"]["repeats"] == 400


def _cli(wf, *cmd, timeout=900):
    proc = subprocess.run(list(cmd), cwd=wf, capture_output=True, text=True, env=tool_env(), timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _job_counts(out: str) -> dict:
    """Snakemake's 'Job stats' table of a dry run as {rule: count}."""
    lines = out[out.index("Job stats"):].splitlines()[3:]
    counts = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def _stamps(wf):
    return {str(p.relative_to(wf)): p.stat().st_mtime_ns for p in (wf / "results").rglob("*") if p.is_file()}


@pytest.mark.e2e
def test_dvc_repro_experiments_and_a_new_chain_reuse_what_exists(tmp_path, raw_params):
    """One workspace (a full run is the suite's dearest step, so these share it):

    1. `dvc repro` runs the workflow; a second one does nothing; `dvc metrics show` and `dvc plots show` read
       what it wrote; one row's new parameter re-runs only that row's cells in Snakemake's plan.
    2. Two experiments sweeping one setting (`dvc exp run -S`, one queued and run by `dvc queue start`): the
       first re-runs only that row's cells in DVC; `dvc exp show --json` holds each one's metrics, which differ
       where the setting acts, and the summary file is a few columns per data set.
    3. A shared training parameter would re-run everything that trains (plan only).
    4. A new chain reuses its prefix artifact (no training again), and the training check re-trains the first
       row's root step three ways beside the artifact it already has."""
    raw = tiny_profile(raw_params, rows=["vanilla", "lsq"])
    prof = raw["profiles"]["tiny"]
    prof["steps"]["lsq"]["bits"] = 4  # in the file, so `-S` can override it (the demo has it)
    wf = make_workflow(tmp_path, raw)
    shutil.copytree(REPO / "vitcompress", wf / "vitcompress", ignore=shutil.ignore_patterns("__pycache__"))  # a DVC dep
    shutil.copy(REPO / ".gitignore", wf / ".gitignore")
    _cli(wf, "git", "init", "-q")  # as in a clone: DVC refuses to write a dvc.lock that git ignores
    _cli(wf, "git", "config", "user.email", "ci@example.org")
    _cli(wf, "git", "config", "user.name", "ci")
    _cli(wf, "dvc", "init", "-q")
    _cli(wf, "dvc", "repro")
    first = _stamps(wf)
    assert (wf / "reports/tables.md").exists() and "results/tiny/digits/vit+lsq/model.pt" in first

    again = _cli(wf, "dvc", "repro")
    assert "didn't change" in again or "up to date" in again
    assert _stamps(wf) == first
    assert (wf / "dvc.lock").exists()
    assert subprocess.run(["git", "check-ignore", "-q", "results/tiny"], cwd=wf).returncode == 0
    assert subprocess.run(["git", "check-ignore", "-q", "dvc.lock"], cwd=wf).returncode == 1  # to be committed

    metrics = _cli(wf, "dvc", "metrics", "show", "--json")
    cells = json.loads(metrics)
    files = next(iter(cells.values()))["data"]
    shown = {path.rsplit("/", 1)[1][:-len(".json")]: f["data"] for path, f in files.items()
             if path.startswith("reports/metrics/digits/")}
    assert set(shown) == {"vanilla", "lsq"}
    assert all(shown[r]["accuracy"] is not None and shown[r]["size_mb"] > 0 and shown[r]["cpu_speed"] > 0
               for r in shown)
    summary = json.loads((wf / "reports/summary.json").read_text())
    assert set(summary["digits"]) == {"vanilla_accuracy", "delta", "speedup"} and set(summary["digits"]["delta"]) == {"lsq"}

    _cli(wf, "dvc", "plots", "show", "-o", "dvc_plots")
    page = (wf / "dvc_plots/index.html").read_text()
    assert "accuracy_vs_size" in page and "accuracy_vs_cpu_speedup" in page
    assert (wf / "dvc_plots/static/workspace_reports_figures_tradeoff_digits.png").exists()
    shutil.rmtree(wf / "dvc_plots")

    prof["steps"]["lsq"]["bits"] = 3
    (wf / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    plan = snakemake(wf, "-n")
    assert _job_counts(plan.stdout) == {"compress": 1, "measure_speed": 1, "jobs": 1, "metrics": 1, "tables": 1,
                                         "row_metrics": 1, "tradeoff_figure": 1, "hardware": 1, "all": 1, "total": 9}
    assert "output: results/tiny/digits/vit+lsq/model.pt" in plan.stdout
    assert "output: results/tiny/digits/vit/" not in plan.stdout

    # 2. experiments from the committed state; the first, run in the workspace, is DVC's re-run of a changed
    # row parameter: only that row's cells run again
    _cli(wf, "git", "add", "-A")
    _cli(wf, "git", "commit", "-qm", "baseline")
    _cli(wf, "dvc", "exp", "run", "-n", "bits2", "-S", "profiles.tiny.steps.lsq.bits=2")
    changed = {f for f, t in _stamps(wf).items() if first.get(f) != t}
    assert changed and all("/vit+lsq/" in f or "/rows/lsq" in f for f in changed), changed
    _cli(wf, "dvc", "exp", "run", "--queue", "-n", "bits8", "-S", "profiles.tiny.steps.lsq.bits=8")
    _cli(wf, "dvc", "queue", "start", "-j", "1")
    for _ in range(180):  # the queue runs in the background
        if "bits8" in _cli(wf, "dvc", "exp", "list", "--name-only"):
            break
        time.sleep(2)
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=wf, capture_output=True, text=True,
                                      env=tool_env(), check=True).stdout)
    exps = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = (rev.get("data") or {})
                exps[exp.get("name") or rev.get("name")] = data
    assert {"bits2", "bits8"} <= set(exps)

    def lsq(exp):
        metrics = exps[exp]["metrics"]["reports/summary.json"]["data"]["digits"]
        return metrics["delta"]["lsq"], exps[exp]["params"]["params.yaml"]["data"]["profiles"]["tiny"]["steps"]["lsq"]["bits"]

    (d2, b2), (d8, b8) = lsq("bits2"), lsq("bits8")
    assert (b2, b8) == (2, 8) and d2 is not None and d8 is not None and d2 != d8
    vanilla = {exps[e]["metrics"]["reports/summary.json"]["data"]["digits"]["vanilla_accuracy"] for e in ("bits2", "bits8")}
    assert len(vanilla) == 1  # the sweep re-ran only what the setting touches

    # 3. and 4., on the workspace as the last experiment left it
    current = yaml.safe_load((wf / "params.yaml").read_text())
    shared = copy.deepcopy(current)
    shared["profiles"]["tiny"]["train"]["lr"] = 0.001
    (wf / "params.yaml").write_text(yaml.safe_dump(shared, sort_keys=False))
    plan = _job_counts(snakemake(wf, "-n").stdout)
    assert plan["train"] == 1 and plan["compress"] == 1 and plan["measure_speed"] == 2  # all downstream of vit

    trained = wf / "results/tiny/digits/vit/model.pt"
    stamp = trained.stat().st_mtime_ns
    current["profiles"]["tiny"]["rows"].append({"id": "vit_int8", "model": "ViT int8", "method": "PTQ",
                                                "chain": ["vit", "dynamic_ptq"]})
    (wf / "params.yaml").write_text(yaml.safe_dump(current, sort_keys=False))
    plan = _job_counts(snakemake(wf, "-n").stdout)
    assert plan["compress"] == 1 and "train" not in plan and "prepare_data" not in plan
    snakemake(wf)
    assert trained.stat().st_mtime_ns == stamp  # the prefix did not run again
    assert (wf / "results/tiny/digits/vit+dynamic_ptq/model.pt").exists()
    assert list(pd.read_csv(wf / "reports/metrics.csv")["row"]) == ["vanilla", "lsq", "vit_int8"]

    snakemake(wf, "training_check")
    check = pd.read_csv(wf / "reports/training_check.csv")
    assert list(check["variant"]) == ["as configured", "twice the epochs", "2 PyTorch threads",
                                      "AVX2 kernels only (ATEN_CPU_CAPABILITY=avx2)"]
    epochs = current["profiles"]["tiny"]["train"]["epochs"]
    assert list(check["train_epochs"]) == [epochs, 2 * epochs, epochs, epochs]
    accuracy = read_json(wf / "results/tiny/digits/vit/accuracy.json")["accuracy"]
    assert check["accuracy"].iloc[0] == pytest.approx(accuracy, abs=1e-3)
    assert trained.stat().st_mtime_ns == stamp  # not trained again
    assert (check["delta"] - (check["accuracy"] - accuracy)).abs().max() < 1e-3
    assert "twice the epochs" in (wf / "reports/training_check.md").read_text()


def test_a_job_collects_reference_cycles_only_in_a_large_process(tmp_path, monkeypatch):
    """After a job: a full gc.collect (~0.2 s with torch loaded, the interpreter held) only above
    COLLECT_ABOVE_MB, where a ViT-B job's cycles can hold gigabytes; a small process (the demo's workers,
    Snakemake's own for in-process jobs) only trims. The job's resources file is written either way."""
    import gc

    from vitcompress import workers

    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or 0)
    monkeypatch.setattr(workers, "_cuda_in_use", lambda: False)
    sizes = {"small": (workers.COLLECT_ABOVE_MB - 1) * 1024, "large": (workers.COLLECT_ABOVE_MB + 1) * 1024}
    for name, kb in sizes.items():
        monkeypatch.setattr(workers, "status_kb", lambda field, kb=kb: kb if field == "VmRSS" else 1024)
        out = tmp_path / f"{name}.tsv"
        with workers.job_resources(out):
            pass
        assert out.read_text().startswith("s\tmax_rss\n")
        assert len(calls) == (0 if name == "small" else 1), name
    # a process that used CUDA collects whatever its size: cycles may hold GPU memory VmRSS does not show
    monkeypatch.setattr(workers, "_cuda_in_use", lambda: True)
    assert workers.release_after_job() is True
    # off Linux (no /proc/self/status) the size is unknown: collect, as before
    monkeypatch.setattr(workers, "_cuda_in_use", lambda: False)
    monkeypatch.setattr(workers, "status_kb", lambda field: None)
    assert workers.release_after_job() is True


def test_the_scheduler_keeps_one_reevaluation_timer_pending():
    """Snakemake starts a wake-up timer at the end of every scheduling round, pending or not, so each finished job
    adds an endless chain of rounds (docs/upstream/snakemake_reevaluation_timers.py). The workflow's patch keeps
    one pending, a daemon (it cannot hold Snakemake's exit), and the round it starts may ask for the next."""
    import threading

    from snakemake.scheduling.job_scheduler import JobScheduler

    from vitcompress.workflow.scheduler import single_reevaluation_timer

    assert single_reevaluation_timer() is True  # this Snakemake (the lock's) has the method the patch replaces
    assert single_reevaluation_timer() is True  # and patching twice is patching once

    class Scheduler:
        _schedule_reevalutation = JobScheduler._schedule_reevalutation

        def __init__(self):
            self._open_jobs = threading.Semaphore(0)

    s = Scheduler()
    for _ in range(20):  # 20 rounds in a row, as 20 finished jobs would run them
        s._schedule_reevalutation(0.2)
    timer = s._vitcompress_timer
    assert timer.daemon
    assert s._open_jobs.acquire(timeout=5)  # one wake ...
    assert not s._open_jobs.acquire(timeout=0.5)  # ... not 20
    timer.join(timeout=5)
    s._schedule_reevalutation(0.05)  # the woken round asks for the next: it is scheduled
    assert s._open_jobs.acquire(timeout=5)


def test_a_retired_worker_is_not_reused():
    """A job that changes its process for good (attention_scaling fixes glibc's mmap threshold) retires its
    worker: the pool's next job runs in a new process, while an ordinary job leaves its worker to the next."""
    from vitcompress.workers import in_worker

    pool = "test-retire"
    first = in_worker(pool, os.getpid)
    assert in_worker(pool, os.getpid) == first  # reused
    assert in_worker(pool, os.getpid, retire=True) == first  # runs in the idle worker, which then retires
    assert in_worker(pool, os.getpid) != first
