"""Snakemake entry point: render the tables (Markdown, LaTeX), metrics.csv, the per-cell DVC metrics and the summary."""
from vitcompress.report import render_tables
from vitcompress.workflow import logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    render_tables(list(sm.input.rows), sm.params.profile, sm.params.datasets, sm.params.rows,
                  md=sm.output.md, tex=sm.output.tex, csv=sm.output.csv, metrics_dir=sm.params.metrics_dir,
                  figures=list(sm.input.figures), benchmarks=list(sm.input.benchmarks), jobs_csv=sm.output.jobs,
                  study_rows=sm.params.study_rows, summary=sm.output.summary)
