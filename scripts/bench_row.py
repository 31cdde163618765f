"""Snakemake entry point: size and time one row's architecture without data or training."""
from vitcompress.workflow import bench_row, logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    bench_row(sm.params.spec["chain_steps"], sm.params.spec["arch"], sm.params.measure, sm.params.fingerprint, sm.output[0])
