# Root steps: build a model with timm and train it (the first step of every chain).


rule train:
    input:
        unpack(step_inputs),
    output:
        f"{RESULTS}/{{dataset}}/{{step}}/model.pt",
    params:
        step=step_params,
        device=config.get("device", "auto"),
        seed=P.seed,
    log:
        f"{LOGS}/{{dataset}}/{{step}}/step.log",
    threads: ALL_CORES
    resources:
        gpu=GPU_JOB,
    conda:
        CONDA_ENV
    script:
        "../scripts/run_step.py"
