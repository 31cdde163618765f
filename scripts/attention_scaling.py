"""Snakemake entry point: the attention scaling benchmark (see vitcompress.scaling)."""
from vitcompress.joblog import logging_to
from vitcompress.scaling import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    run(sm.params.cfg, sm.output.csv, sm.output.png, sm.params.measure, sm.params.fingerprint)
