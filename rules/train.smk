# Root steps: build a model with timm and train it (the first step of every chain).


rule train:
    input:
        unpack(step_inputs),
    output:
        model=f"{RESULTS}/{{dataset}}/{{step}}/model.pt",
        accuracy=f"{RESULTS}/{{dataset}}/{{step}}/accuracy.json",
    params:
        step=step_params,
        device=config.get("device", "auto"),
        seed=P.seed,
        eval_batch_size=P.measure["eval_batch_size"],
        threads=STEP_THREADS,
    log:
        f"{LOGS}/{{dataset}}/{{step}}/step.log",
    benchmark:
        f"{LOGS}/{{dataset}}/{{step}}/step.benchmark.tsv"
    threads: STEP_SLOTS
    priority: 10  # root steps head the longest paths (vit -> deit teachers, every compression)
    resources:
        gpu=GPU_JOB,
    conda:
        CONDA_ENV
    script:
        "../scripts/run_step.py"
