# The run's outputs from every (dataset, row) metrics JSON: tables, metrics, figures, machines side by side.


rule jobs:
    """Wall time and peak memory of every training and compression job, as its worker measured them."""
    input:
        STEP_RESOURCES,
    output:
        report(JOBS_FILE, caption="captions/jobs.rst", category="Tables"),
    log:
        f"{LOGS}/jobs.log",
    localrule: True
    run:
        job(write_jobs, log[0], pool=None, files=list(input), out=output[0])


rule metrics:
    """metrics.csv (a line per cell), one DVC metrics file per cell (`dvc metrics show`), and the summary
    `dvc exp show` compares experiments by."""
    input:
        ROW_FILES,
    output:
        csv=report(METRICS_CSV, caption="captions/metrics.rst", category="Tables"),
        cells=directory(METRICS_DIR),  # the folder is the output: no other run's cell stays in it
        summary=SUMMARY_FILE,
    params:
        profile=PROFILE,
        datasets=P.datasets,
        rows=[r["id"] for r in P.rows],
    log:
        f"{LOGS}/metrics.log",
    localrule: True
    run:
        job(write_metrics, log[0], pool=None, files=list(input), profile=params.profile, datasets=params.datasets,
            rows=params.rows, csv=output.csv, metrics_dir=output.cells, summary=output.summary)


rule tables:
    """The study's tables, one per data set (Markdown, LaTeX), the run beside the study, its findings. The
    figures are linked by path: the tables do not wait for them."""
    input:
        rows=ROW_FILES,
        jobs=JOBS_FILE,
    output:
        md=report(TABLE_FILES[0], caption="captions/tables.rst", category="Tables"),
        tex=TABLE_FILES[1],
    params:
        profile=PROFILE,
        datasets=P.datasets,
        rows=[r["id"] for r in P.rows],
        study_rows={r["id"]: r["study_row"] for r in P.rows if "study_row" in r},
        figures=FIGURES,
    log:
        f"{LOGS}/tables.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/tables.py"


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
