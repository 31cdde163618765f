"""The workflow's set-up in one call: what every rule file reads, computed once and frozen.

``rules/common.smk`` does ``W = setup(config, workflow)``: the profile checked and resolved (schema, chains,
every model built on shapes, the files a run needs: a mistake in the last row stops the run before the first
job), the device, the scheduler's thread slots, this machine's timing fingerprint and label, the paths and
every output list the default target and the reports need. ``common.smk`` itself keeps only the small input
functions the rules call and ``get_final_output()``.

    >>> W = setup({"profile": "demo", **params}, workflow)     # in common.smk  # doctest: +SKIP
    >>> W.results, W.speed                                        # doctest: +SKIP
    ('results/demo', 'results/demo/{dataset}/{chain}/speed/AMD-EPYC-2t.json')
"""
from __future__ import annotations

from dataclasses import dataclass
from glob import glob

from vitcompress.config import CHAIN_SEP, ConfigError, Profile, resolve, split_chain
from vitcompress.errors import DeviceError


@dataclass(frozen=True)
class Workflow:
    """Everything the rule files read (names as the rules use them)."""

    profile: Profile
    device: str            # "cpu" or "cuda": where step jobs run
    submit_only: bool      # a cluster executor's submitting process (the device is checked where jobs run)
    all_cores: int         # the workflow's --cores: a timing job claims them all, so it runs alone
    step_threads: int      # PyTorch threads of a training or compression job (`train.threads`)
    step_slots: int        # the scheduler slots such a job claims: its share of the CPUs
    fingerprint: dict      # what speed depends on; a param of the timing rules only
    config: dict           # Snakemake's config (the command line's `--config` included)

    # -- paths --------------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def results(self) -> str:
        return f"results/{self.name}"

    @property
    def logs(self) -> str:
        return f"logs/{self.name}"

    data = "data/prepared/{dataset}.pt"
    conda_env = "../envs/vitcompress.yaml"  # relative to rules/: `snakemake --sdm conda` (script: rules only)
    metrics_csv = "reports/metrics.csv"
    metrics_dir = "reports/metrics"  # one file a cell: `dvc metrics show` prints a row each
    summary_file = "reports/summary.json"  # per data set: the first row's accuracy, each row's change and speed-up
    jobs_file = "reports/jobs.csv"
    table_files = ("reports/tables.md", "reports/tables.tex")
    hardware_files = ("reports/hardware.md", "reports/hardware.csv", "reports/hardware.tex")
    scaling_figure = "reports/figures/attention_scaling.png"

    @property
    def machine(self) -> str:
        """This machine's label: timings are kept per machine, side by side."""
        return self.fingerprint["label"]

    @property
    def speed(self) -> str:
        return f"{self.results}/{{dataset}}/{{chain}}/speed/{self.machine}.json"

    @property
    def gpu_job(self) -> int:
        """The `gpu` resource a GPU-capable job asks for: 1 only when it will run on one, so `--resources gpu=1`
        serialises GPU work without serialising CPU-only runs."""
        return 1 if self.device == "cuda" else 0

    # -- seeds ----------------------------------------------------------------------------------------------
    @property
    def seeds(self) -> list[int]:
        return self.profile.seeds

    def seed_tag(self, seed: int) -> str:
        """The `{seed}` wildcard's value for a training seed: "" for the profile's own, "@seed<k>" for the others
        (whose artifacts live in results/<profile>/<dataset>@seed<k>/<chain>/)."""
        return "" if seed == self.profile.seed else f"@seed{seed}"

    # -- artifacts and step jobs ----------------------------------------------------------------------------
    def step_runtime(self, step_id: str) -> str:
        """The runtime whose artifact a step makes: "pytorch" (model.pt), "onnxruntime" (model.onnx), ..."""
        from vitcompress.methods import get_method

        return get_method(self.profile.steps[step_id]["method"]).runtime

    def model_path(self, dataset: str, chain: str, seed: str = "") -> str:
        """The artifact of a chain (under the training seed whose wildcard value is ``seed``): the first of its
        runtime's files."""
        from vitcompress.runtimes import get_runtime

        files = get_runtime(self.step_runtime(split_chain(chain)[-1])).files
        return f"{self.results}/{dataset}{seed}/{chain}/{files[0]}"

    def step_outputs(self, runtime: str) -> dict:
        """What a step job of ``runtime`` writes: its artifact's files (``model`` the first), its accuracy, and the
        job's wall time and peak memory."""
        from vitcompress.runtimes import RUNTIMES

        chain = f"{self.results}/{{dataset}}{{seed}}/{{prefix}}+{{step}}"
        files = RUNTIMES[runtime].files
        return dict(model=f"{chain}/{files[0]}", **{f"file{i}": f"{chain}/{f}" for i, f in enumerate(files[1:], 1)},
                    accuracy=f"{chain}/accuracy.json",
                    resources=f"{self.logs}/{{dataset}}{{seed}}/{{prefix}}+{{step}}/step.resources.tsv")

    def step_alternation(self, runtime: str) -> str:
        """A regex of the profile's step ids whose artifacts ``runtime`` runs (one rule makes each kind)."""
        import re

        ids = [re.escape(s) for s in self.profile.steps if self.step_runtime(s) == runtime]
        return "|".join(ids) if ids else "(?!)"  # (?!) matches nothing

    # -- what the rows and reports need ---------------------------------------------------------------------
    @property
    def baseline_chain(self) -> str:
        """The first row's chain: every timing job times it call by call beside its own model."""
        return CHAIN_SEP.join(self.profile.rows[0]["chain"])

    @property
    def root_step(self) -> str:
        """The first row's root step (the training check retrains it)."""
        return self.profile.rows[0]["chain"][0]

    def row_file(self, dataset: str, row: str) -> str:
        return f"{self.results}/{dataset}/rows/{row}.json"

    @property
    def row_files(self) -> list[str]:
        return [self.row_file(d, r["id"]) for d in self.profile.datasets for r in self.profile.rows]

    @property
    def step_resources(self) -> list[str]:
        """Wall time and peak memory of every training/compression job, as its worker measured them."""
        return [f"{self.logs}/{d}{self.seed_tag(s)}/{c}/step.resources.tsv" for s in self.seeds
                for d in self.profile.datasets for c in self.profile.chains()]

    def chains_ending_in(self, method: str) -> list[str]:
        return [c for c in self.profile.chains() if self.profile.steps[split_chain(c)[-1]]["method"] == method]

    @property
    def figures(self) -> list[str]:
        """The trade-off figures, the study's Figure 3 per gate-training chain, FQ-ViT's ablation and Figure 1 per
        fq_vit chain, the attention scaling figure when the profile has the benchmark."""
        ds = self.profile.datasets
        out = [f"reports/figures/tradeoff_{d}.png" for d in ds]
        out += [f"reports/figures/prune_importance_{d}_{c}.png" for d in ds for c in self.chains_ending_in("prune_gates")]
        fq = self.chains_ending_in("fq_vit")
        out += [f"reports/figures/fq_vit_{d}_{c}.png" for d in ds for c in fq]
        out += [f"reports/fq_vit_ablation_{d}_{c}.md" for d in ds for c in fq]
        return out + ([self.scaling_figure] if self.has_scaling else [])

    @property
    def has_scaling(self) -> bool:
        return self.profile.scaling is not None

    def speed_files(self) -> list[str]:
        """Every timing of every cell: this machine's (to be made) and any other machine's already present (from a
        DVC cache or a copied results folder), for the side-by-side hardware report."""
        out = []
        for d in self.profile.datasets:
            for r in self.profile.rows:
                mine = self.speed.format(dataset=d, chain=CHAIN_SEP.join(r["chain"]))
                out += [mine] + sorted(f for f in glob(mine.replace(self.machine, "*")) if f != mine)
        return out

    def final_output(self) -> list[str]:
        """Everything the default target builds: the tables, the metrics, the figures, the timings of every
        machine side by side, and the attention scaling benchmark's table when the profile has one."""
        return (list(self.table_files) + [self.metrics_csv, self.metrics_dir, self.summary_file, self.jobs_file]
                + self.figures + list(self.hardware_files)
                + (["reports/attention_scaling.csv"] if self.has_scaling else []))


def setup(config: dict, workflow=None, cache_dir: str | None = ".snakemake/vitcompress") -> Workflow:
    """The workflow's context from Snakemake's ``config`` (params.yaml and ``--config``) and ``workflow`` (its
    ``--cores``): checked and resolved once, in one order (schema and chains, device, then every model on shapes
    and the files a run needs). Raises ConfigError or DeviceError with the key and the fix."""
    from vitcompress.measure import available_cpus, fingerprint
    from vitcompress.preflight import preflight
    from vitcompress.runtimes import versions
    from vitcompress.workflow import resolve_device, slots_for

    submit_only = bool(config.get("submit_only", False))
    profile = resolve(config)
    device = resolve_device(config.get("device", "auto"), check_visible=not submit_only)
    preflight(profile, cache_dir=cache_dir)
    try:  # commands that run no job (--unlock, --report, --lint, --list-rules) need not give --cores
        cores = max(1, int(workflow.cores)) if workflow is not None else available_cpus()
    except Exception:  # noqa: BLE001 (Snakemake raises its own error for an unset --cores)
        cores = available_cpus()
    threads = min(cores, profile.train.threads or cores)
    return Workflow(profile=profile, device=device, submit_only=submit_only, all_cores=cores, step_threads=threads,
                    step_slots=slots_for(threads, cores),
                    fingerprint=fingerprint(profile.measure.cpu_threads, profile.measure.gpu,
                                            versions()),
                    config=dict(config))


def step_kwargs(input, output, params, wildcards) -> dict:
    """The arguments of :func:`vitcompress.workflow.run_step` for a step job (Snakemake's objects)."""
    return dict(step=params.step, dataset=wildcards.dataset, data_file=input.data, out=output.model,
                accuracy_out=output.accuracy, eval_batch_size=params.eval_batch_size, device=params.device,
                seed=params.seed, threads=params.threads, parent=input.get("parent"),
                extra={k[len("extra_"):]: v for k, v in input.items() if k.startswith("extra_")})


def row_kwargs(input, output, params, wildcards) -> dict:
    """The arguments of :func:`vitcompress.workflow.row_metrics` for a row's cell (Snakemake's objects)."""
    return dict(row=params.row, dataset=wildcards.dataset, accuracy=input.accuracy, speed_json=input.speed,
                out=output[0], profile=params.profile, settings=params.settings, baseline_accuracy=input.baseline,
                parent_accuracy=input.parent or None, seed_accuracy=list(input.seed_accuracy),
                seed_baseline=list(input.seed_baseline), seed_parent=list(input.seed_parent), methods=params.methods)


__all__ = ["ConfigError", "DeviceError", "Workflow", "row_kwargs", "setup", "step_kwargs"]
