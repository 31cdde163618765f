# The run's outputs from every (dataset, row) metrics JSON: tables, metrics, figures, machines side by side.
# Each renders in Snakemake's own process (pool=None: files to read, no model to run), in a thread of its own.


rule jobs:
    """Wall time and peak memory of every training and compression job, as its worker measured them."""
    input:
        W.step_resources,
    output:
        report(W.jobs_file, caption="captions/jobs.rst", category="Tables"),
    log:
        f"{W.logs}/jobs.log",
    localrule: True
    run:
        job(write_jobs, log[0], pool=None, files=list(input), out=output[0])


rule metrics:
    """metrics.csv (a line per cell), one DVC metrics file per cell (`dvc metrics show`), and the summary
    `dvc exp show` compares experiments by."""
    input:
        W.row_files,
    output:
        csv=report(W.metrics_csv, caption="captions/metrics.rst", category="Tables"),
        cells=directory(W.metrics_dir),  # the folder is the output: no other run's cell stays in it
        summary=W.summary_file,
    params:
        profile=W.name,
        datasets=P.datasets,
        rows=[r["id"] for r in P.rows],
    log:
        f"{W.logs}/metrics.log",
    localrule: True
    run:
        job(write_metrics, log[0], pool=None, files=list(input), profile=params.profile, datasets=params.datasets,
            rows=params.rows, csv=output.csv, metrics_dir=output.cells, summary=output.summary)


rule tables:
    """The study's tables, one per data set (Markdown, LaTeX), the run beside the study, its findings. The
    figures are linked by path: the tables do not wait for them."""
    input:
        rows=W.row_files,
        jobs=W.jobs_file,
    output:
        md=report(W.table_files[0], caption="captions/tables.rst", category="Tables"),
        tex=W.table_files[1],
    params:
        profile=W.name,
        datasets=P.datasets,
        rows=[r["id"] for r in P.rows],
        study_rows={r["id"]: r["study_row"] for r in P.rows if "study_row" in r},
        figures=W.figures,
    log:
        f"{W.logs}/tables.log",
    localrule: True
    run:
        job(render_tables, log[0], pool=None, files=list(input.rows), profile=params.profile,
            datasets=params.datasets, rows=params.rows, md=output.md, tex=output.tex, figures=params.figures,
            jobs_csv=input.jobs, study_rows=params.study_rows)


rule tradeoff_figure:
    """Accuracy against CPU speed-up and against size, one figure per data set, Pareto front marked."""
    input:
        lambda wc: [W.row_file(wc.dataset, r["id"]) for r in P.rows],
    output:
        report("reports/figures/tradeoff_{dataset}.png", caption="captions/tradeoff.rst",
               category="Trade-offs", subcategory="{dataset}"),
    params:
        profile=W.name,
        methods={r["id"]: P.steps[r["chain"][-1]]["method"] for r in P.rows},  # the points' families
    log:
        f"{W.logs}/{{dataset}}/tradeoff_figure.log",
    localrule: True
    run:
        job(tradeoff_figure, log[0], pool=None, files=list(input), out=output[0],
            title=f"Trade-offs: {wildcards.dataset} ({params.profile} profile)", methods=params.methods)


rule prune_figure:
    """The study's Figure 3: parameters against importance score, from a gate-training artifact."""
    input:
        f"{W.results}/{{dataset}}/{{chain}}/model.pt",
    output:
        report("reports/figures/prune_importance_{dataset}_{chain}.png", caption="captions/prune.rst",
               category="Pruning", subcategory="{dataset}"),
    log:
        f"{W.logs}/{{dataset}}/{{chain}}/prune_figure.log",
    localrule: True
    run:
        job(histogram_from_artifact, log[0], pool=None, artifact=input[0], out=output[0],
            title=f"Importance of prunable dimensions: {wildcards.dataset} ({wildcards.chain})")


rule hardware:
    """Every row's speed-up, with its interval, on every machine whose timings are present."""
    input:
        speed=speed_files,
        cells=W.row_files,  # the rows' labels, resolved per data set
    output:
        md=report(W.hardware_files[0], caption="captions/hardware.rst", category="Tables"),
        csv=W.hardware_files[1],
        tex=W.hardware_files[2],
    params:
        profile=W.name,
        datasets=P.datasets,
        rows=[{"id": r["id"], "model": r["model"], "chain": CHAIN_SEP.join(r["chain"]), "steps": list(r["chain"])}
              for r in P.rows],
        step_methods={s: cfg["method"] for s, cfg in P.steps.items()},
    log:
        f"{W.logs}/hardware.log",
    localrule: True
    run:
        job(render_hardware, log[0], pool=None, files=list(input.speed), cells=list(input.cells), **params, **output)
