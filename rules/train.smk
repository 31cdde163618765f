# Root steps: build a model with timm and train it (the first step of every chain).


rule train:
    input:
        unpack(step_inputs),
    output:
        model=f"{RESULTS}/{{dataset}}{{seed}}/{{step}}/model.pt",
        accuracy=f"{RESULTS}/{{dataset}}{{seed}}/{{step}}/accuracy.json",
        resources=f"{LOGS}/{{dataset}}{{seed}}/{{step}}/step.resources.tsv",  # wall time and peak memory
    params:
        **STEP_PARAMS,
    log:
        f"{LOGS}/{{dataset}}{{seed}}/{{step}}/step.log",
    threads: STEP_SLOTS
    priority: step_priority
    resources:
        gpu=GPU_JOB,
    run:
        job(run_step, log[0], output.resources, **step_kwargs(input, output, params, wildcards))


# `snakemake training_check`: the first row's root step trained again with one thing changed (twice the
# epochs, other threads, other CPU kernels), so the report can say whether it converged and how far the
# floating-point kernels alone move its accuracy. Not part of the default target.
ROOT_STEP = P.rows[0]["chain"][0]


rule train_variant:
    input:
        data=DATA,
    output:
        model=f"{RESULTS}/{{dataset}}/checks/{{variant}}/{{step}}/model.pt",
        accuracy=f"{RESULTS}/{{dataset}}/checks/{{variant}}/{{step}}/accuracy.json",
    params:
        step=lambda wc: variant_step(P.step_cfg(wc.step, wc.dataset), wc.variant),
        env=lambda wc: VARIANTS[wc.variant].get("env", {}),
        device=config.get("device", "auto"),
        seed=P.seed,
        eval_batch_size=P.measure["eval_batch_size"],
        threads=lambda wc: VARIANTS[wc.variant].get("threads", STEP_THREADS),
    wildcard_constraints:
        variant="|".join(VARIANTS),
    log:
        f"{LOGS}/{{dataset}}/checks/{{variant}}/{{step}}/step.log",
    threads: lambda wc: slots_for(VARIANTS[wc.variant].get("threads", STEP_THREADS), ALL_CORES)
    resources:
        gpu=GPU_JOB,
    conda:
        CONDA_ENV
    script:
        "../scripts/run_variant.py"


rule training_check:
    """Accuracy of the first row's training beside the same training with twice the epochs, 2 threads,
    and AVX2-only kernels: reports/training_check.md and .csv."""
    input:
        base=[f"{RESULTS}/{d}/{ROOT_STEP}/accuracy.json" for d in P.datasets],
        variants=[f"{RESULTS}/{d}/checks/{v}/{ROOT_STEP}/accuracy.json" for d in P.datasets for v in VARIANTS],
    output:
        md="reports/training_check.md",
        csv="reports/training_check.csv",
    params:
        datasets=P.datasets,
        step=ROOT_STEP,
        profile=PROFILE,
        fingerprint=FINGERPRINT,
        seed=P.seed,
    log:
        f"{LOGS}/training_check.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/training_check.py"


rule training_reference:
    """The first row's root step under every training seed (`--config seeds=3`), as the reference run another
    machine's training_check compares with: reports/training_reference.json (copy it to vitcompress/reference/
    to commit it)."""
    input:
        [f"{RESULTS}/{d}{seed_tag(s)}/{ROOT_STEP}/accuracy.json" for d in P.datasets for s in SEEDS],
    output:
        "reports/training_reference.json",
    params:
        datasets=P.datasets,
        seeds=SEEDS,
        step=ROOT_STEP,
        profile=PROFILE,
        fingerprint=FINGERPRINT,
    log:
        f"{LOGS}/training_reference.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/training_reference.py"
