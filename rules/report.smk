# The study's tables, one per data set, from every (dataset, row) metrics JSON.


rule report:
    input:
        ROW_FILES,
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
