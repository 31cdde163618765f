"""Snakemake entry point: the first row's root step with one thing changed (vitcompress.config.TRAINING_VARIANTS)."""
import os

sm = snakemake  # noqa: F821 (injected by Snakemake)
os.environ.update(sm.params.env)  # before torch loads: it reads ATEN_CPU_CAPABILITY once

from vitcompress.workflow import logging_to, run_step  # noqa: E402

with logging_to(sm.log[0]):
    run_step(step=sm.params.step, dataset=sm.wildcards.dataset, data_file=sm.input.data, out=sm.output.model,
             accuracy_out=sm.output.accuracy, eval_batch_size=sm.params.eval_batch_size, device=sm.params.device,
             seed=sm.params.seed, threads=sm.params.threads)
