# Root steps: build a model with timm and train it (the first step of every chain).


rule train:
    input:
        unpack(step_inputs),
    output:
        model=f"{W.results}/{{dataset}}{{seed}}/{{step}}/model.pt",
        accuracy=f"{W.results}/{{dataset}}{{seed}}/{{step}}/accuracy.json",
        resources=f"{W.logs}/{{dataset}}{{seed}}/{{step}}/step.resources.tsv",  # wall time and peak memory
    params:
        **STEP_PARAMS,
    log:
        f"{W.logs}/{{dataset}}{{seed}}/{{step}}/step.log",
    threads: W.step_slots
    priority: step_priority
    resources:
        gpu=W.gpu_job,
    run:
        job(run_step, log[0], output.resources, **step_kwargs(input, output, params, wildcards))


# `snakemake training_check`: the first row's root step trained again with one thing changed (twice the
# epochs, other threads, other CPU kernels), so the report can say whether it converged and how far the
# floating-point kernels alone move its accuracy. Not part of the default target.


rule train_variant:
    input:
        data=W.data,
    output:
        model=f"{W.results}/{{dataset}}/checks/{{variant}}/{{step}}/model.pt",
        accuracy=f"{W.results}/{{dataset}}/checks/{{variant}}/{{step}}/accuracy.json",
    params:
        **dict(STEP_PARAMS, step=lambda wc: variant_step(P.step_cfg(wc.step, wc.dataset), wc.variant),
               threads=lambda wc: TRAINING_VARIANTS[wc.variant].get("threads", W.step_threads)),
        env=lambda wc: TRAINING_VARIANTS[wc.variant].get("env", {}),
    wildcard_constraints:
        variant="|".join(TRAINING_VARIANTS),
    log:
        f"{W.logs}/{{dataset}}/checks/{{variant}}/{{step}}/step.log",
    threads: lambda wc: slots_for(TRAINING_VARIANTS[wc.variant].get("threads", W.step_threads), W.all_cores)
    resources:
        gpu=W.gpu_job,
    conda:
        W.conda_env
    script:
        "../scripts/run_variant.py"


rule training_check:
    """Accuracy of the first row's training beside the same training with twice the epochs, 2 threads,
    and AVX2-only kernels: reports/training_check.md and .csv."""
    input:
        base=[f"{W.results}/{d}/{W.root_step}/accuracy.json" for d in P.datasets],
        variants=[f"{W.results}/{d}/checks/{v}/{W.root_step}/accuracy.json" for d in P.datasets for v in TRAINING_VARIANTS],
    output:
        md="reports/training_check.md",
        csv="reports/training_check.csv",
    params:
        datasets=P.datasets,
        step=W.root_step,
        profile=W.name,
        fingerprint=W.fingerprint,
        seed=P.seed,
    log:
        f"{W.logs}/training_check.log",
    localrule: True
    conda:
        W.conda_env
    script:
        "../scripts/training_check.py"


rule training_reference:
    """The first row's root step under every training seed (`--config seeds=3`), as the reference run another
    machine's training_check compares with: reports/training_reference.json (copy it to vitcompress/reference/
    to commit it)."""
    input:
        [f"{W.results}/{d}{W.seed_tag(s)}/{W.root_step}/accuracy.json" for d in P.datasets for s in W.seeds],
    output:
        "reports/training_reference.json",
    params:
        datasets=P.datasets,
        seeds=W.seeds,
        step=W.root_step,
        profile=W.name,
        fingerprint=W.fingerprint,
    log:
        f"{W.logs}/training_reference.log",
    localrule: True
    conda:
        W.conda_env
    script:
        "../scripts/training_reference.py"
