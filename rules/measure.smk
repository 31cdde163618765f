# Measurement: speed (re-runs when the fingerprint changes), the cells' metrics, the architecture-only
# benchmark `bench_arch`. Accuracy and size are measured by the step job itself (hardware-independent).


rule measure_speed:
    input:
        model=lambda wc: W.model_path(wc.dataset, wc.chain),
        baseline=lambda wc: W.model_path(wc.dataset, W.baseline_chain),
        parent=parent_model,  # the model the chain's last step started from: its own speed-up
        data=int8_data,  # an int8 row's accuracy, again with this machine's kernels (other rows: none)
    output:
        W.speed,
    params:
        measure=P.measure.as_dict(),
        fingerprint=W.fingerprint,
    log:
        f"{W.logs}/{{dataset}}/{{chain}}/speed.log",
    threads: W.all_cores
    resources:
        gpu=W.gpu_job,
    run:
        # one long-lived timing worker times every cell, away from the scheduler's threads
        job(measure_speed, log[0], pool="timing", artifact=input.model, out=output[0], measure=params.measure,
            fp=params.fingerprint, baseline=input.baseline, parent=input.parent or None, data_file=input.data or None)


rule row_metrics:
    input:
        unpack(other_seeds),  # seed_accuracy, seed_baseline, seed_parent: the other training seeds' (`seeds`)
        accuracy=lambda wc: f"{W.results}/{wc.dataset}/{row_chain(wc)}/accuracy.json",
        speed=lambda wc: W.speed.format(dataset=wc.dataset, chain=row_chain(wc)),
        baseline=lambda wc: f"{W.results}/{wc.dataset}/{W.baseline_chain}/accuracy.json",  # the paired changes'
        parent=parent_accuracy,  # their other side; none for a root row
    output:
        f"{W.results}/{{dataset}}/rows/{{row}}.json",
    params:
        row=lambda wc: P.row(wc.row),
        settings=lambda wc: P.row_settings(wc.row),
        methods=lambda wc: [P.steps[s]["method"] for s in P.row(wc.row)["chain"]],
        profile=W.name,
    log:
        f"{W.logs}/{{dataset}}/rows/{{row}}.log",
    localrule: True
    run:
        # in the scheduler's process (pool=None): merging two JSON files needs no Python of its own
        job(row_metrics, log[0], pool=None, **row_kwargs(input, output, params, wildcards))


rule bench_row:
    output:
        f"results/bench/{W.name}/{{row}}.json",
    params:
        spec=bench_params,
        measure=P.measure.as_dict(),
        fingerprint=W.fingerprint,
    log:
        f"logs/bench/{W.name}/{{row}}.log",
    threads: W.all_cores
    resources:
        gpu=W.gpu_job,
    run:
        # in the timing worker, as measure_speed: a script would start a Python (torch, timm) for every row
        spec = params.spec
        job(bench_row, log[0], pool="timing", chain_steps=spec["chain_steps"], arch=spec["arch"],
            measure=params.measure, fp=params.fingerprint, out=output[0], baseline_steps=spec["baseline_steps"],
            baseline_arch=spec["baseline_arch"])


rule bench_arch:
    input:
        [f"results/bench/{W.name}/{r['id']}.json" for r in P.rows],
    output:
        csv="reports/bench_arch.csv",
        md="reports/bench_arch.md",
    params:
        rows=P.rows,
        settings=[P.row_settings(r["id"]) for r in P.rows],
        methods=[P.steps[r["chain"][-1]]["method"] for r in P.rows],
        profile=W.name,
    log:
        f"logs/bench/{W.name}/bench_arch.log",
    localrule: True
    run:
        job(render_bench, log[0], pool=None, files=list(input), rows=params.rows, profile=params.profile,
            csv=output.csv, md=output.md, settings=params.settings, methods=params.methods)


rule attention_scaling:
    """Time and peak memory of one attention layer, exact vs Nystrom, over sequence lengths."""
    output:
        csv="reports/attention_scaling.csv",
        png=report("reports/figures/attention_scaling.png", caption="captions/scaling.rst",
                   category="Low-rank attention"),
    params:
        cfg=P.scaling.as_dict() if P.scaling else {},
        measure=P.measure.as_dict(),
        fingerprint=W.fingerprint,
    log:
        f"{W.logs}/attention_scaling.log",
    # It needs no data and claims every core: first in line it would hold the whole run back by its length;
    # last, it runs among the timing jobs, which run one at a time anyway.
    priority: -1
    threads: W.all_cores
    resources:
        gpu=W.gpu_job,
    run:
        # in the timing worker, as measure_speed (a script would start a Python, torch, for this job alone); it fixes
        # glibc's mmap threshold for its peak-memory readings, for the life of the process: the worker then retires
        job(run_scaling, log[0], pool="timing", retire_worker=True, cfg=params.cfg, csv=output.csv, png=output.png,
            measure=params.measure, fp=params.fingerprint)


rule fq_vit_ablation:
    """FQ-ViT's two tricks on and off under one calibration, and the study's Figure 1, per data set."""
    input:
        model=lambda wc: f"{W.results}/{wc.dataset}/{parent_chain(wc.chain)}/model.pt",
        data=W.data,
    output:
        md="reports/fq_vit_ablation_{dataset}_{chain}.md",
        csv=report("reports/fq_vit_ablation_{dataset}_{chain}.csv", caption="captions/fq_vit_ablation.rst",
                   category="FQ-ViT", subcategory="{dataset}"),
        figure=report("reports/figures/fq_vit_{dataset}_{chain}.png", caption="captions/fq_vit.rst",
                      category="FQ-ViT", subcategory="{dataset}"),
    params:
        **dict(STEP_PARAMS, step=lambda wc: P.step_cfg(split_chain(wc.chain)[-1], wc.dataset)),
    log:
        f"{W.logs}/{{dataset}}/{{chain}}/fq_vit_ablation.log",
    threads: W.step_slots
    resources:
        gpu=W.gpu_job,
    run:
        job(fq_vit_ablation, log[0], threads=params.threads, device=params.device, parent=input.model,
            data_file=input.data, step=params.step, csv=output.csv, md=output.md, figure=output.figure,
            dataset=wildcards.dataset, seed=params.seed, eval_batch_size=params.eval_batch_size)
