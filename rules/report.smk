# The study's tables, one per data set, from every (dataset, row) metrics JSON.


rule report:
    input:
        rows=ROW_FILES,
        figures=FIGURES,
    output:
        md=REPORT_FILES[0],
        tex=REPORT_FILES[1],
        csv=REPORT_FILES[2],
        json=REPORT_FILES[3],
    params:
        profile=PROFILE,
        datasets=P.datasets,
        rows=[r["id"] for r in P.rows],
    log:
        f"{LOGS}/report.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/report.py"


rule prune_figure:
    """The study's Figure 3: parameters against importance score, from a gate-training artifact."""
    input:
        f"{RESULTS}/{{dataset}}/{{chain}}/model.pt",
    output:
        "reports/figures/prune_importance_{dataset}_{chain}.png",
    log:
        f"{LOGS}/{{dataset}}/{{chain}}/prune_figure.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/prune_figure.py"
