"""Snakemake entry point: every row's speed-up on every machine whose timings are present, side by side."""
from vitcompress.joblog import logging_to
from vitcompress.report.tables import render_hardware

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    render_hardware(list(sm.input.speed), sm.params.profile, sm.params.datasets, sm.params.rows, md=sm.output.md,
                    csv=sm.output.csv, tex=sm.output.tex, cells=list(sm.input.cells))
