"""Snakemake entry point: the training check's table (vitcompress.report.tables.render_training_check)."""
from vitcompress.joblog import logging_to
from vitcompress.report.tables import render_training_check

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    render_training_check(list(sm.input.base), list(sm.input.variants), sm.params.datasets, sm.params.step,
                          sm.params.profile, sm.params.fingerprint, md=sm.output.md, csv=sm.output.csv,
                          seed=sm.params.seed)
