# Measurement: accuracy and size (hardware-independent), speed (re-runs when the fingerprint changes),
# and the architecture-only benchmark `bench_arch`.


rule evaluate:
    input:
        model=MODEL,
        data=DATA,
    output:
        RESULTS + "/{dataset}/{chain}/accuracy.json",
    params:
        eval_batch_size=P.measure["eval_batch_size"],
        device=config.get("device", "auto"),
    log:
        LOGS + "/{dataset}/{chain}/evaluate.log",
    threads: ALL_CORES
    resources:
        gpu=GPU_JOB,
    script:
        "../scripts/evaluate.py"


rule measure_speed:
    input:
        model=MODEL,
    output:
        RESULTS + "/{dataset}/{chain}/speed.json",
    params:
        measure=P.measure,
        fingerprint=FINGERPRINT,
    log:
        LOGS + "/{dataset}/{chain}/speed.log",
    threads: ALL_CORES
    resources:
        gpu=GPU_JOB,
    script:
        "../scripts/measure_speed.py"


rule row_metrics:
    input:
        accuracy=lambda wc: f"{RESULTS}/{wc.dataset}/{row_chain(wc)}/accuracy.json",
        speed=lambda wc: f"{RESULTS}/{wc.dataset}/{row_chain(wc)}/speed.json",
    output:
        RESULTS + "/{dataset}/rows/{row}.json",
    params:
        row=lambda wc: P.row(wc.row),
        profile=PROFILE,
    log:
        LOGS + "/{dataset}/rows/{row}.log",
    localrule: True
    script:
        "../scripts/row_metrics.py"


def bench_params(wildcards):
    from vitcompress.data import describe
    from vitcompress.models import arch_for

    chain = P.row(wildcards.row)["chain"]
    steps = [P.step_cfg(s) for s in chain]
    root = steps[0]
    meta = describe(P.dataset_cfg(P.datasets[0]))
    return {"chain_steps": steps, "arch": arch_for(root["model_cfg"], meta, root["image_size"], root["image_scale"])}


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
        profile=PROFILE,
    log:
        f"logs/bench/{PROFILE}/bench_arch.log",
    localrule: True
    script:
        "../scripts/bench_arch.py"
