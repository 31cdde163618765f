# The study's tables, one per data set, from every (dataset, row) metrics JSON.


rule report:
    input:
        rows=ROW_FILES,
        figures=FIGURES,
        benchmarks=STEP_RESOURCES,
    output:
        md=report(REPORT_FILES[0], caption="captions/tables.rst", category="Tables"),
        tex=REPORT_FILES[1],
        csv=report(REPORT_FILES[2], caption="captions/metrics.rst", category="Tables"),
        metrics=REPORT_FILES[3],
        jobs=report(REPORT_FILES[4], caption="captions/jobs.rst", category="Tables"),
        summary=SUMMARY_FILE,  # what `dvc exp show` compares experiments by
    params:
        profile=PROFILE,
        datasets=P.datasets,
        rows=[r["id"] for r in P.rows],
        study_rows={r["id"]: r["study_row"] for r in P.rows if "study_row" in r},
        metrics_dir=lambda wc, output: str(Path(output.metrics[0]).parents[1]),  # reports/metrics
    log:
        f"{LOGS}/report.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/report.py"


rule tradeoff_figure:
    """Accuracy against CPU speed-up and against size, one figure per data set, Pareto front marked."""
    input:
        lambda wc: [row_file(wc.dataset, r["id"]) for r in P.rows],
    output:
        report("reports/figures/tradeoff_{dataset}.png", caption="captions/tradeoff.rst",
               category="Trade-offs", subcategory="{dataset}"),
    params:
        profile=PROFILE,
        methods={r["id"]: P.steps[r["chain"][-1]]["method"] for r in P.rows},  # the points' families
    log:
        f"{LOGS}/{{dataset}}/tradeoff_figure.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/tradeoff_figure.py"


rule prune_figure:
    """The study's Figure 3: parameters against importance score, from a gate-training artifact."""
    input:
        f"{RESULTS}/{{dataset}}/{{chain}}/model.pt",
    output:
        report("reports/figures/prune_importance_{dataset}_{chain}.png", caption="captions/prune.rst",
               category="Pruning", subcategory="{dataset}"),
    log:
        f"{LOGS}/{{dataset}}/{{chain}}/prune_figure.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/prune_figure.py"


rule fq_vit_ablation:
    """FQ-ViT's two tricks on and off under one calibration, and the study's Figure 1, per data set."""
    input:
        model=lambda wc: f"{RESULTS}/{wc.dataset}/{parent_chain(wc.chain)}/model.pt",
        data=DATA,
    output:
        md="reports/fq_vit_ablation_{dataset}_{chain}.md",
        csv=report("reports/fq_vit_ablation_{dataset}_{chain}.csv", caption="captions/fq_vit_ablation.rst",
                   category="FQ-ViT", subcategory="{dataset}"),
        figure=report("reports/figures/fq_vit_{dataset}_{chain}.png", caption="captions/fq_vit.rst",
                      category="FQ-ViT", subcategory="{dataset}"),
    params:
        step=lambda wc: P.step_cfg(split_chain(wc.chain)[-1], wc.dataset),
        device=config.get("device", "auto"),
        seed=P.seed,
        eval_batch_size=P.measure["eval_batch_size"],
        threads=STEP_THREADS,
    log:
        f"{LOGS}/{{dataset}}/{{chain}}/fq_vit_ablation.log",
    threads: STEP_SLOTS
    resources:
        gpu=GPU_JOB,
    run:
        job(fq_vit_ablation, log[0], threads=params.threads, device=params.device, parent=input.model,
            data_file=input.data, step=params.step, csv=output.csv, md=output.md, figure=output.figure,
            dataset=wildcards.dataset, seed=params.seed, eval_batch_size=params.eval_batch_size)


rule hardware:
    """Every row's speed-up, with its interval, on every machine whose timings are present."""
    input:
        speed=speed_files,
        cells=ROW_FILES,  # the rows' labels, resolved per data set
    output:
        md=report(HARDWARE_FILES[0], caption="captions/hardware.rst", category="Tables"),
        csv=HARDWARE_FILES[1],
        tex=HARDWARE_FILES[2],
    params:
        profile=PROFILE,
        datasets=P.datasets,
        rows=[{"id": r["id"], "model": r["model"], "chain": CHAIN_SEP.join(r["chain"])} for r in P.rows],
    log:
        f"{LOGS}/hardware.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/hardware.py"
