"""Snakemake entry point: test accuracy, size and parameters of one artifact."""
from vitcompress.workflow import evaluate_artifact, logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    evaluate_artifact(sm.input.model, sm.input.data, sm.output[0], sm.params.eval_batch_size,
                      device=sm.params.device, threads=sm.threads)
