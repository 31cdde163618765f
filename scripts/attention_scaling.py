"""Snakemake entry point: the attention scaling benchmark (see vitcompress.scaling)."""
from vitcompress.scaling import run
from vitcompress.workflow import logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    run(sm.params.cfg, sm.output.csv, sm.output.png, sm.params.measure, sm.params.fingerprint)
