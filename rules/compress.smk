# Later steps of a chain: a compression method applied to the artifact of the chain's prefix.
# `results/<profile>/<dataset>/a+b/model.pt` is step b run on `.../a/model.pt`, so every row that
# shares a prefix reuses its artifact (trained once).


rule compress:
    input:
        unpack(step_inputs),
    output:
        model=f"{RESULTS}/{{dataset}}/{{prefix}}+{{step}}/model.pt",
        accuracy=f"{RESULTS}/{{dataset}}/{{prefix}}+{{step}}/accuracy.json",
        resources=f"{LOGS}/{{dataset}}/{{prefix}}+{{step}}/step.resources.tsv",  # wall time and peak memory
    params:
        step=step_params,
        device=config.get("device", "auto"),
        seed=P.seed,
        eval_batch_size=P.measure["eval_batch_size"],
        threads=STEP_THREADS,
    log:
        f"{LOGS}/{{dataset}}/{{prefix}}+{{step}}/step.log",
    threads: STEP_SLOTS
    resources:
        gpu=GPU_JOB,
    run:
        # In a long-lived worker process (vitcompress.workers): no Python start-up per job.
        from vitcompress.workflow import run_step_in_worker

        run_step_in_worker(
            log=log[0], resources=output.resources, step=params.step, dataset=wildcards.dataset, data_file=input.data,
            out=output.model, accuracy_out=output.accuracy, eval_batch_size=params.eval_batch_size,
            device=params.device, seed=params.seed, threads=params.threads, parent=input.get("parent"),
            extra={k[len("extra_"):]: v for k, v in input.items() if k.startswith("extra_")},
        )
