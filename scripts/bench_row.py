"""Snakemake entry point: size and time one row's architecture without data or training."""
from vitcompress.workflow import bench_row, logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    spec = sm.params.spec
    bench_row(spec["chain_steps"], spec["arch"], sm.params.measure, sm.params.fingerprint, sm.output[0],
              baseline_steps=spec["baseline_steps"], baseline_arch=spec["baseline_arch"])
