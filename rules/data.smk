# Data sets, prepared once into data/prepared/{dataset}.pt (uint8 images + labels per split).


rule prepare_data:
    output:
        W.data,
    params:
        cfg=lambda wc: P.dataset_cfg(wc.dataset),
        seed=P.seed,
    log:
        "logs/data/{dataset}.log",
    threads: 1
    run:
        # in a long-lived worker (vitcompress.workers): it then starts the first training job warm
        job(prepare, log[0], cfg=params.cfg, out=output[0], seed=params.seed)


rule data:
    """Every data set of the profile (the DVC `data` stage runs this target)."""
    input:
        expand(W.data, dataset=P.datasets),
    localrule: True
