# Helpers shared by every rule: the validated profile, paths, devices, and the hardware fingerprint.
import sys

sys.path.insert(0, workflow.basedir)

from snakemake.exceptions import WorkflowError

from vitcompress.config import CHAIN_SEP, VARIANTS, ConfigError, resolve, split_chain, variant_step
from vitcompress.errors import DeviceError
from vitcompress.preflight import preflight
from vitcompress.workflow import job_priority, resolve_device

# With a cluster executor (profiles/slurm sets `submit_only`) this process only submits jobs: the GPU a
# job asks for is on the node that runs it, and every job checks its device when it starts.
SUBMIT_ONLY = bool(config.get("submit_only", False))

try:
    P = resolve(config)
    DEVICE = resolve_device(config.get("device", "auto"), check_visible=not SUBMIT_ONLY)
    # Every model of every row built (shapes only), each method's conditions, the files a run needs:
    # a mistake in the last row stops the run now, not after hours of earlier jobs.
    preflight(P, cache_dir=".snakemake/vitcompress")
except (ConfigError, DeviceError) as _err:
    raise WorkflowError(str(_err)) from None

from vitcompress.measure import available_cpus, fingerprint
from vitcompress.methods import get_method

PROFILE = P.name
RESULTS = f"results/{PROFILE}"
LOGS = f"logs/{PROFILE}"
DATA = "data/prepared/{dataset}.pt"
CONDA_ENV = "../envs/vitcompress.yaml"  # relative to rules/: `snakemake --sdm conda`
MODEL = f"{RESULTS}/{{dataset}}/{{chain}}/model.pt"  # a PyTorch artifact; ONNX Runtime's are model.onnx

# Jobs that can use the GPU ask for the `gpu` resource only when they will really run on one,
# so `--resources gpu=1` serialises GPU work without serialising CPU-only runs.
GPU_JOB = 1 if DEVICE == "cuda" else 0
# Timing jobs claim all of the workflow's cores, so the scheduler runs each one alone: timings beside
# another job are noise. Training/compression jobs run `train.threads` PyTorch threads (default: all
# cores) and claim enough scheduler slots that no more of them run at once than the CPUs can carry
# (--cores 4 on 2 CPUs with 1 thread each: 2 slots, so 2 jobs side by side). The demo sets 1 thread:
# its models are tiny, and two 1-thread jobs side by side did 1.35x the work of one 2-thread job while
# overlapping each job's ~5 s of Python start-up (measured on 2 CPUs).
def _workflow_cores():
    # Commands that run no job (--unlock, --report, --lint, --list-rules) need not give --cores.
    try:
        return workflow.cores
    except WorkflowError:
        return available_cpus()


ALL_CORES = max(1, _workflow_cores())
STEP_THREADS = min(ALL_CORES, int(P.raw["train"].get("threads") or ALL_CORES))


def slots_for(threads):
    """Scheduler slots a job of ``threads`` PyTorch threads claims: its share of the CPUs in `--cores`."""
    return min(ALL_CORES, max(threads, -(-ALL_CORES * threads // available_cpus())))


STEP_SLOTS = slots_for(STEP_THREADS)
# What speed depends on. It is a param of the timing rules only: a new machine re-times, never re-trains.
FINGERPRINT = fingerprint(P.measure["cpu_threads"], P.measure.get("gpu", True))

wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    chain="[A-Za-z0-9_.+-]+",
    step="[A-Za-z0-9_.-]+",
    prefix="[A-Za-z0-9_.+-]+",
    row="[A-Za-z0-9_.+-]+",


def step_runtime(step_id):
    """The runtime whose artifact a step makes: "pytorch" (model.pt) or "onnxruntime" (model.onnx)."""
    return get_method(P.steps[step_id]["method"]).runtime


def model_path(dataset, chain):
    suffix = ".onnx" if step_runtime(split_chain(chain)[-1]) == "onnxruntime" else ".pt"
    return f"{RESULTS}/{dataset}/{chain}/model{suffix}"


def step_alternation(runtime):
    """A regex of the profile's step ids whose artifacts ``runtime`` runs (one rule makes each kind)."""
    import re

    ids = [re.escape(s) for s in P.steps if step_runtime(s) == runtime]
    return "|".join(ids) if ids else "(?!)"  # (?!) matches nothing


def step_inputs(wildcards):
    """Inputs of the step that ends a chain: the data, the previous step's artifact, declared extras."""
    prefix = getattr(wildcards, "prefix", None)
    steps = (split_chain(prefix) if prefix else []) + [wildcards.step]
    inputs = {"data": DATA.format(dataset=wildcards.dataset)}
    if len(steps) > 1:
        inputs["parent"] = model_path(wildcards.dataset, CHAIN_SEP.join(steps[:-1]))
    step = P.step_cfg(steps[-1], wildcards.dataset)
    for name, other in get_method(step["method"]).step_inputs(step, P).items():
        inputs[f"extra_{name}"] = model_path(wildcards.dataset, other)
    return inputs


def step_job(input, output, params, wildcards, log):
    """The `run:` of every step rule (train, compress, deploy): the step in a long-lived worker process
    (vitcompress.workers: no Python start-up per job), its log, wall time and peak memory recorded."""
    from vitcompress.workflow import run_step_in_worker

    run_step_in_worker(
        log=log[0], resources=output.resources, step=params.step, dataset=wildcards.dataset, data_file=input.data,
        out=output.model, accuracy_out=output.accuracy, eval_batch_size=params.eval_batch_size,
        device=params.device, seed=params.seed, threads=params.threads, parent=input.get("parent"),
        extra={k[len("extra_"):]: v for k, v in input.items() if k.startswith("extra_")},
    )


def step_priority(wildcards):
    return job_priority(P.step_cfg(wildcards.step, wildcards.dataset))


def step_params(wildcards):
    return P.step_cfg(wildcards.step, wildcards.dataset)


def parent_chain(chain):
    """The chain without its last step: whose artifact that step started from."""
    return CHAIN_SEP.join(split_chain(chain)[:-1])


def row_chain(wildcards):
    return CHAIN_SEP.join(P.row(wildcards.row)["chain"])


def row_file(dataset, row):
    return f"{RESULTS}/{dataset}/rows/{row}.json"


def bench_params(wildcards):
    from vitcompress.data import describe
    from vitcompress.models import arch_for

    meta = describe(P.dataset_cfg(P.datasets[0]))

    def spec(row):
        steps = [P.step_cfg(s) for s in row["chain"]]
        root = steps[0]
        return steps, arch_for(root["model_cfg"], meta, root["image_size"], root["image_scale"])

    steps, arch = spec(P.row(wildcards.row))
    base_steps, base_arch = spec(P.rows[0])  # the baseline, timed beside each row
    return {"chain_steps": steps, "arch": arch, "baseline_steps": base_steps, "baseline_arch": base_arch}


# The first row is the baseline (the study's vanilla ViT): every timing job times it call by call
# beside its own model, for a side-by-side speed-up.
BASELINE_CHAIN = CHAIN_SEP.join(P.rows[0]["chain"])
ROW_FILES = [row_file(d, r["id"]) for d in P.datasets for r in P.rows]
METRICS_DIR = "reports/metrics"  # one file a cell: `dvc metrics show` prints a row each
METRIC_FILES = [f"{METRICS_DIR}/{d}/{r['id']}.json" for d in P.datasets for r in P.rows]
REPORT_FILES = ["reports/tables.md", "reports/tables.tex", "reports/metrics.csv", METRIC_FILES,
                "reports/jobs.csv"]
# Wall time and peak memory (max RSS) of every training/compression job, as its worker measured them.
STEP_RESOURCES = [f"{LOGS}/{d}/{c}/step.resources.tsv" for d in P.datasets for c in P.chains()]
# Figures: the study's Figure 3 (importance histogram) for every gate-training chain and data set.
GATE_CHAINS = [c for c in P.chains() if P.steps[split_chain(c)[-1]]["method"] == "prune_gates"]
PRUNE_FIGURES = [f"reports/figures/prune_importance_{d}_{c}.png" for d in P.datasets for c in GATE_CHAINS]
# FQ-ViT: for every chain ending in an fq_vit step, its ablation (PTF/LIS on/off) and Figure 1.
FQ_CHAINS = [c for c in P.chains() if P.steps[split_chain(c)[-1]]["method"] == "fq_vit"]
FQ_ABLATIONS = [f"reports/fq_vit_ablation_{d}_{c}.md" for d in P.datasets for c in FQ_CHAINS]
FQ_FIGURES = [f"reports/figures/fq_vit_{d}_{c}.png" for d in P.datasets for c in FQ_CHAINS]
SCALING_FIGURE = "reports/figures/attention_scaling.png"
TRADEOFF_FIGURES = [f"reports/figures/tradeoff_{d}.png" for d in P.datasets]
FIGURES = TRADEOFF_FIGURES + PRUNE_FIGURES + FQ_FIGURES + FQ_ABLATIONS + ([SCALING_FIGURE] if "scaling" in P.raw else [])
# Extra outputs the default target builds when the profile asks for them.
EXTRA_TARGETS = ["reports/attention_scaling.csv"] if "scaling" in P.raw else []
