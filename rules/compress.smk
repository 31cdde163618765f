# Later steps of a chain: a compression method applied to the artifact of the chain's prefix.
# `results/<profile>/<dataset>/a+b/model.pt` is step b run on `.../a/model.pt`, so every row that
# shares a prefix reuses its artifact (trained once).


rule compress:
    input:
        unpack(step_inputs),
    output:
        model=f"{RESULTS}/{{dataset}}/{{prefix}}+{{step}}/model.pt",
        accuracy=f"{RESULTS}/{{dataset}}/{{prefix}}+{{step}}/accuracy.json",
    params:
        step=step_params,
        device=config.get("device", "auto"),
        seed=P.seed,
        eval_batch_size=P.measure["eval_batch_size"],
        threads=STEP_THREADS,
    log:
        f"{LOGS}/{{dataset}}/{{prefix}}+{{step}}/step.log",
    benchmark:
        f"{LOGS}/{{dataset}}/{{prefix}}+{{step}}/step.benchmark.tsv"
    threads: STEP_SLOTS
    resources:
        gpu=GPU_JOB,
    conda:
        CONDA_ENV
    script:
        "../scripts/run_step.py"
