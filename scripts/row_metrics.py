"""Snakemake entry point: the metrics JSON of one (dataset, row) cell."""
from vitcompress.workflow import logging_to, row_metrics

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    row_metrics(sm.params.row, sm.wildcards.dataset, sm.input.accuracy, sm.input.speed, sm.output[0], sm.params.profile)
