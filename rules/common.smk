# Shared by the workflow's files: the validated profile, paths, devices, the hardware fingerprint and the small input
# functions the rules call; the work itself is the library's (vitcompress.workflow.job runs it in a worker).
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from snakemake.exceptions import WorkflowError

from vitcompress.config import CHAIN_SEP, VARIANTS, ConfigError, resolve, split_chain, variant_step
from vitcompress.errors import DeviceError
from vitcompress.preflight import preflight
from vitcompress.report.cells import write_jobs, write_metrics
from vitcompress.workflow import (bench_spec, fq_vit_ablation, job, job_priority, measure_speed, resolve_device,
                                  row_metrics, run_step, slots_for)

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

from vitcompress.data import prepare
from vitcompress.measure import available_cpus, fingerprint
from vitcompress.methods import get_method
from vitcompress.runtimes import RUNTIMES, get_runtime, versions

PROFILE = P.name
RESULTS = f"results/{PROFILE}"
LOGS = f"logs/{PROFILE}"
DATA = "data/prepared/{dataset}.pt"
CONDA_ENV = "../envs/vitcompress.yaml"  # relative to rules/: `snakemake --sdm conda` (script: rules only)
# Training seeds: the profile's `seed` makes results/<profile>/<dataset>/<chain>/; with `seeds: N` (or --config
# seeds=N) every chain is also made under seed + 1, ... in results/<profile>/<dataset>@seed<k>/<chain>/, each
# seed's prefixes shared by its own chains. The `{seed}` wildcard is "" or "@seed<k>".
SEEDS = P.seeds


def seed_tag(seed):
    """The `{seed}` wildcard's value for a training seed: "" for the profile's own, "@seed<k>" for the others."""
    return "" if seed == P.seed else f"@seed{seed}"


def seed_of(wildcards):
    """The training seed of a step job, from its `{seed}` wildcard."""
    tag = getattr(wildcards, "seed", "")
    return int(tag[len("@seed"):]) if tag else P.seed

# Jobs that can use the GPU ask for the `gpu` resource only when they will really run on one,
# so `--resources gpu=1` serialises GPU work without serialising CPU-only runs.
GPU_JOB = 1 if DEVICE == "cuda" else 0


def _workflow_cores():
    # Commands that run no job (--unlock, --report, --lint, --list-rules) need not give --cores.
    try:
        return workflow.cores
    except WorkflowError:
        return available_cpus()


# Timing jobs claim all of the workflow's cores, so each runs alone. Training and compression jobs run
# `train.threads` PyTorch threads (default: all cores) and claim their share of the CPUs in slots.
ALL_CORES = max(1, _workflow_cores())
STEP_THREADS = min(ALL_CORES, int(P.raw["train"].get("threads") or ALL_CORES))
STEP_SLOTS = slots_for(STEP_THREADS, ALL_CORES)
# What speed depends on. It is a param of the timing rules only: a new machine re-times, never re-trains.
FINGERPRINT = fingerprint(P.measure["cpu_threads"], P.measure.get("gpu", True), versions())
# Timings are kept per machine label, side by side: another machine (or configuration) adds its own.
MACHINE = FINGERPRINT["label"]
SPEED = f"{RESULTS}/{{dataset}}/{{chain}}/speed/{MACHINE}.json"


def step_runtime(step_id):
    """The runtime whose artifact a step makes: "pytorch" (model.pt), "onnxruntime" (model.onnx), ..."""
    return get_method(P.steps[step_id]["method"]).runtime


def model_path(dataset, chain, seed=""):
    """The artifact of a chain (under the training seed whose wildcard value is ``seed``): the first of its
    runtime's files."""
    return f"{RESULTS}/{dataset}{seed}/{chain}/{get_runtime(step_runtime(split_chain(chain)[-1])).files[0]}"


def int8_data(wildcards):
    """The prepared data set of a chain whose last step makes an int8 model: its timing job measures the row's
    accuracy again with this machine's integer kernels. None for other chains (their accuracy does not move)."""
    method = get_method(P.steps[split_chain(wildcards.chain)[-1]]["method"])
    return DATA.format(dataset=wildcards.dataset) if method.makes == "int8" else []


def parent_model(wildcards):
    """The artifact a chain's last step started from; none for a root chain."""
    steps = split_chain(wildcards.chain)
    return [] if len(steps) == 1 else model_path(wildcards.dataset, CHAIN_SEP.join(steps[:-1]))


def step_outputs(runtime):
    """What a step job of ``runtime`` writes: its artifact's files (``model`` the first), its accuracy, and the
    job's wall time and peak memory."""
    chain = f"{RESULTS}/{{dataset}}{{seed}}/{{prefix}}+{{step}}"
    files = RUNTIMES[runtime].files
    return dict(model=f"{chain}/{files[0]}", **{f"file{i}": f"{chain}/{f}" for i, f in enumerate(files[1:], 1)},
                accuracy=f"{chain}/accuracy.json",
                resources=f"{LOGS}/{{dataset}}{{seed}}/{{prefix}}+{{step}}/step.resources.tsv")


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
        inputs["parent"] = model_path(wildcards.dataset, CHAIN_SEP.join(steps[:-1]), wildcards.seed)
    step = P.step_cfg(steps[-1], wildcards.dataset)
    for name, other in get_method(step["method"]).step_inputs(step, P).items():  # e.g. a teacher: same seed
        inputs[f"extra_{name}"] = model_path(wildcards.dataset, other, wildcards.seed)
    return inputs


def step_kwargs(input, output, params, wildcards):
    """The arguments of vitcompress.workflow.run_step for a step job."""
    return dict(step=params.step, dataset=wildcards.dataset, data_file=input.data, out=output.model,
                accuracy_out=output.accuracy, eval_batch_size=params.eval_batch_size, device=params.device,
                seed=params.seed, threads=params.threads, parent=input.get("parent"),
                extra={k[len("extra_"):]: v for k, v in input.items() if k.startswith("extra_")})


def step_priority(wildcards):
    return job_priority(P.step_cfg(wildcards.step, wildcards.dataset))


def step_params(wildcards):
    return P.step_cfg(wildcards.step, wildcards.dataset)


def parent_chain(chain):
    """The chain without its last step: whose artifact that step started from."""
    return CHAIN_SEP.join(split_chain(chain)[:-1])


def row_chain(wildcards):
    return CHAIN_SEP.join(P.row(wildcards.row)["chain"])


def parent_accuracy(wildcards):
    """The accuracy JSON of the model a row was made from (its chain minus the last step); none for a root row."""
    chain = P.row(wildcards.row)["chain"]
    return [] if len(chain) == 1 else f"{RESULTS}/{wildcards.dataset}/{CHAIN_SEP.join(chain[:-1])}/accuracy.json"


def other_seeds(wildcards):
    """A row's accuracy under the profile's other training seeds (none with one seed), with the first row's and
    the row's parent's under the same seeds: its mean and seed-inclusive intervals."""
    chain = P.row(wildcards.row)["chain"]
    tags = [seed_tag(s) for s in SEEDS[1:]]

    def acc(c):
        return [f"{RESULTS}/{wildcards.dataset}{t}/{c}/accuracy.json" for t in tags]

    return dict(seed_accuracy=acc(row_chain(wildcards)), seed_baseline=acc(BASELINE_CHAIN),
                seed_parent=[] if len(chain) == 1 else acc(CHAIN_SEP.join(chain[:-1])))


def row_kwargs(input, output, params, wildcards):
    """The arguments of vitcompress.workflow.row_metrics for a row's cell."""
    return dict(row=params.row, dataset=wildcards.dataset, accuracy=input.accuracy, speed_json=input.speed,
                out=output[0], profile=params.profile, settings=params.settings, baseline_accuracy=input.baseline,
                parent_accuracy=input.parent or None, seed_accuracy=list(input.seed_accuracy),
                seed_baseline=list(input.seed_baseline), seed_parent=list(input.seed_parent), methods=params.methods)


def row_file(dataset, row):
    return f"{RESULTS}/{dataset}/rows/{row}.json"


def bench_params(wildcards):
    return bench_spec(P, wildcards.row)


# The params every step rule (train, compress, deploy_<runtime>) gives its job.
STEP_PARAMS = dict(step=step_params, device=config.get("device", "auto"), seed=seed_of,
                   eval_batch_size=P.measure["eval_batch_size"], threads=STEP_THREADS)

# The first row is the baseline (the study's vanilla ViT): every timing job times it call by call
# beside its own model, for a side-by-side speed-up.
BASELINE_CHAIN = CHAIN_SEP.join(P.rows[0]["chain"])
ROW_FILES = [row_file(d, r["id"]) for d in P.datasets for r in P.rows]
METRICS_CSV = "reports/metrics.csv"
METRICS_DIR = "reports/metrics"  # one file a cell: `dvc metrics show` prints a row each
SUMMARY_FILE = "reports/summary.json"  # per data set: the first row's accuracy, each row's change and speed-up
JOBS_FILE = "reports/jobs.csv"
TABLE_FILES = ["reports/tables.md", "reports/tables.tex"]
# Wall time and peak memory (max RSS) of every training/compression job, as its worker measured them.
STEP_RESOURCES = [f"{LOGS}/{d}{seed_tag(s)}/{c}/step.resources.tsv" for s in SEEDS for d in P.datasets
                  for c in P.chains()]
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


def speed_files(wildcards=None):
    """Every timing of every cell: this machine's (to be made) and any other machine's already present
    (from a DVC cache or a copied results folder), for the side-by-side hardware report."""
    from glob import glob

    out = []
    for d in P.datasets:
        for r in P.rows:
            chain = CHAIN_SEP.join(r["chain"])
            mine = SPEED.format(dataset=d, chain=chain)
            out += [mine] + sorted(f for f in glob(SPEED.format(dataset=d, chain=chain).replace(MACHINE, "*"))
                                   if f != mine)
    return out


HARDWARE_FILES = ["reports/hardware.md", "reports/hardware.csv", "reports/hardware.tex"]


def get_final_output():
    """Everything the default target builds: the tables, the metrics, the figures, the timings of every
    machine side by side, and the attention scaling benchmark's table when the profile has one."""
    return (TABLE_FILES + [METRICS_CSV, METRICS_DIR, SUMMARY_FILE, JOBS_FILE] + FIGURES + HARDWARE_FILES
            + (["reports/attention_scaling.csv"] if "scaling" in P.raw else []))
