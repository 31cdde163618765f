"""Snakemake entry point: the architecture benchmark table."""
from vitcompress.joblog import logging_to
from vitcompress.report.tables import render_bench

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    render_bench(list(sm.input), sm.params.rows, sm.params.profile, csv=sm.output.csv, md=sm.output.md,
                 settings=sm.params.settings, methods=sm.params.methods)
