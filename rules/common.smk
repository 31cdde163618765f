# Shared by the workflow's files: the set-up (one call: vitcompress.pipeline.setup, the checked profile, device,
# thread slots, fingerprint, paths and output lists, as W) and the small input functions the rules call; the work
# itself is the library's (vitcompress.workflow.job runs it in a worker).
from snakemake.exceptions import WorkflowError

from vitcompress.config import CHAIN_SEP, TRAINING_VARIANTS, ConfigError, split_chain, variant_step
from vitcompress.data import prepare
from vitcompress.errors import DeviceError
from vitcompress.methods import get_method
from vitcompress.pipeline import row_kwargs, setup, step_kwargs
from vitcompress.pruning.gates import histogram_from_artifact
from vitcompress.report.cells import write_jobs, write_metrics
from vitcompress.report.figures import tradeoff_figure
from vitcompress.report.tables import render_bench, render_hardware, render_tables
from vitcompress.runtimes import RUNTIMES
from vitcompress.scaling import run as run_scaling
from vitcompress.workflow import (bench_row, bench_spec, fq_vit_ablation, job, job_priority, measure_speed,
                                  row_metrics, run_step, slots_for)
from vitcompress.workflow.scheduler import single_reevaluation_timer

single_reevaluation_timer()  # Snakemake's scheduler otherwise wakes once a second per finished job

try:
    W = setup(config, workflow)
except (ConfigError, DeviceError) as _err:
    raise WorkflowError(str(_err)) from None
P = W.profile


def seed_of(wildcards):
    """The training seed of a step job, from its `{seed}` wildcard ("" or "@seed<k>")."""
    tag = getattr(wildcards, "seed", "")
    return int(tag[len("@seed"):]) if tag else P.seed


def int8_data(wildcards):
    """The prepared data set of a chain whose last step makes an int8 model: its timing job measures the row's
    accuracy again with this machine's integer kernels. None for other chains (their accuracy does not move)."""
    method = get_method(P.steps[split_chain(wildcards.chain)[-1]]["method"])
    return W.data.format(dataset=wildcards.dataset) if method.makes == "int8" else []


def parent_chain(chain):
    """The chain without its last step: whose artifact that step started from."""
    return CHAIN_SEP.join(split_chain(chain)[:-1])


def parent_model(wildcards):
    """The artifact a chain's last step started from; none for a root chain."""
    return [] if CHAIN_SEP not in wildcards.chain else W.model_path(wildcards.dataset, parent_chain(wildcards.chain))


def step_inputs(wildcards):
    """Inputs of the step that ends a chain: the data, the previous step's artifact, declared extras."""
    prefix = getattr(wildcards, "prefix", None)
    steps = (split_chain(prefix) if prefix else []) + [wildcards.step]
    inputs = {"data": W.data.format(dataset=wildcards.dataset)}
    if len(steps) > 1:
        inputs["parent"] = W.model_path(wildcards.dataset, CHAIN_SEP.join(steps[:-1]), wildcards.seed)
    step = P.step_cfg(steps[-1], wildcards.dataset)
    for name, other in get_method(step["method"]).step_inputs(step, P).items():  # e.g. a teacher: same seed
        inputs[f"extra_{name}"] = W.model_path(wildcards.dataset, other, wildcards.seed)
    return inputs


def step_params(wildcards):
    return P.step_cfg(wildcards.step, wildcards.dataset)


# The params every job that runs a step gives it (train, compress, deploy_<runtime>, the ablation, the variants).
STEP_PARAMS = dict(step=step_params, device=config.get("device", "auto"), seed=seed_of,
                   eval_batch_size=P.measure.eval_batch_size, threads=W.step_threads)


def step_priority(wildcards):
    return job_priority(P.step_cfg(wildcards.step, wildcards.dataset))


def row_chain(wildcards):
    return CHAIN_SEP.join(P.row(wildcards.row)["chain"])


def parent_accuracy(wildcards):
    """The accuracy JSON of the model a row was made from (its chain minus the last step); none for a root row."""
    chain = P.row(wildcards.row)["chain"]
    return [] if len(chain) == 1 else f"{W.results}/{wildcards.dataset}/{CHAIN_SEP.join(chain[:-1])}/accuracy.json"


def other_seeds(wildcards):
    """A row's accuracy under the profile's other training seeds (none with one seed), with the first row's and
    the row's parent's under the same seeds: its mean and seed-inclusive intervals."""
    chain = P.row(wildcards.row)["chain"]
    tags = [W.seed_tag(s) for s in W.seeds[1:]]

    def acc(c):
        return [f"{W.results}/{wildcards.dataset}{t}/{c}/accuracy.json" for t in tags]

    return dict(seed_accuracy=acc(row_chain(wildcards)), seed_baseline=acc(W.baseline_chain),
                seed_parent=[] if len(chain) == 1 else acc(CHAIN_SEP.join(chain[:-1])))


def bench_params(wildcards):
    return bench_spec(P, wildcards.row)


def speed_files(wildcards=None):
    return W.speed_files()


def get_final_output():
    return W.final_output()
