"""Snakemake entry point: the first row's training under every seed (vitcompress.report.reference.write_training_reference)."""
from vitcompress.joblog import logging_to
from vitcompress.report.reference import write_training_reference

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    write_training_reference(list(sm.input), sm.params.seeds, sm.params.datasets, sm.params.step, sm.params.profile,
                             sm.params.fingerprint, out=sm.output[0])
