"""Snakemake entry point: CPU (and GPU) timings of one artifact."""
from vitcompress.workflow import logging_to, measure_speed

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    measure_speed(sm.input.model, sm.output[0], sm.params.measure, sm.params.fingerprint)
