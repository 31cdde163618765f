"""Snakemake entry point: the study's tables (Markdown, LaTeX), the run beside the study, its findings."""
from vitcompress.joblog import logging_to
from vitcompress.report.tables import render_tables

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    render_tables(list(sm.input.rows), sm.params.profile, sm.params.datasets, sm.params.rows, md=sm.output.md,
                  tex=sm.output.tex, figures=sm.params.figures, jobs_csv=sm.input.jobs, study_rows=sm.params.study_rows)
