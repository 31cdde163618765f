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
    log:
        f"{LOGS}/{{dataset}}/{{step}}/step.log",
    threads: STEP_THREADS
    resources:
        gpu=GPU_JOB,
    conda:
        CONDA_ENV
    script:
        "../scripts/run_step.py"
