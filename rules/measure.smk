# Measurement: speed (re-runs when the fingerprint changes), the cells' metrics, the architecture-only
# benchmark `bench_arch`. Accuracy and size are measured by the step job itself (hardware-independent).


rule measure_speed:
    input:
        model=lambda wc: model_path(wc.dataset, wc.chain),
        baseline=lambda wc: model_path(wc.dataset, BASELINE_CHAIN),
        parent=parent_model,  # the model the chain's last step started from: its own speed-up
        data=int8_data,  # an int8 row's accuracy, again with this machine's kernels (other rows: none)
    output:
        SPEED,
    params:
        measure=P.measure,
        fingerprint=FINGERPRINT,
    log:
        f"{LOGS}/{{dataset}}/{{chain}}/speed.log",
    threads: ALL_CORES
    resources:
        gpu=GPU_JOB,
    run:
        # one long-lived timing worker times every cell, away from the scheduler's threads
        job(measure_speed, log[0], pool="timing", artifact=input.model, out=output[0], measure=params.measure,
            fp=params.fingerprint, baseline=input.baseline, parent=input.parent or None, data_file=input.data or None)


rule row_metrics:
    input:
        unpack(other_seeds),  # seed_accuracy, seed_baseline, seed_parent: the other training seeds' (`seeds`)
        accuracy=lambda wc: f"{RESULTS}/{wc.dataset}/{row_chain(wc)}/accuracy.json",
        speed=lambda wc: SPEED.format(dataset=wc.dataset, chain=row_chain(wc)),
        baseline=lambda wc: f"{RESULTS}/{wc.dataset}/{BASELINE_CHAIN}/accuracy.json",  # the paired changes'
        parent=parent_accuracy,  # their other side; none for a root row
    output:
        f"{RESULTS}/{{dataset}}/rows/{{row}}.json",
    params:
        row=lambda wc: P.row(wc.row),
        settings=lambda wc: P.row_settings(wc.row),
        profile=PROFILE,
    log:
        f"{LOGS}/{{dataset}}/rows/{{row}}.log",
    localrule: True
    run:
        # in the scheduler's process (pool=None): merging two JSON files needs no Python of its own
        job(row_metrics, log[0], pool=None, **row_kwargs(input, output, params, wildcards))


rule bench_row:
    output:
        f"results/bench/{PROFILE}/{{row}}.json",
    params:
        spec=bench_params,
        measure=P.measure,
        fingerprint=FINGERPRINT,
    log:
        f"logs/bench/{PROFILE}/{{row}}.log",
    threads: ALL_CORES
    resources:
        gpu=GPU_JOB,
    conda:
        CONDA_ENV
    script:
        "../scripts/bench_row.py"


rule bench_arch:
    input:
        [f"results/bench/{PROFILE}/{r['id']}.json" for r in P.rows],
    output:
        csv="reports/bench_arch.csv",
        md="reports/bench_arch.md",
    params:
        rows=P.rows,
        settings=[P.row_settings(r["id"]) for r in P.rows],
        methods=[P.steps[r["chain"][-1]]["method"] for r in P.rows],
        profile=PROFILE,
    log:
        f"logs/bench/{PROFILE}/bench_arch.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/bench_arch.py"


rule attention_scaling:
    """Time and peak memory of one attention layer, exact vs Nystrom, over sequence lengths."""
    output:
        csv="reports/attention_scaling.csv",
        png=report("reports/figures/attention_scaling.png", caption="captions/scaling.rst",
                   category="Low-rank attention"),
    params:
        cfg=P.raw.get("scaling", {}),
        measure=P.measure,
        fingerprint=FINGERPRINT,
    log:
        f"{LOGS}/attention_scaling.log",
    # It needs no data and claims every core: first in line it would hold the whole run back by its length;
    # last, it runs among the timing jobs, which run one at a time anyway.
    priority: -1
    threads: ALL_CORES
    resources:
        gpu=GPU_JOB,
    conda:
        CONDA_ENV
    script:
        "../scripts/attention_scaling.py"
