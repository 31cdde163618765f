"""Snakemake entry point: run the last step of a chain and evaluate its artifact (vitcompress.workflow.run_step)."""
from vitcompress.workflow import logging_to, run_step

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    run_step(
        step=sm.params.step, dataset=sm.wildcards.dataset, data_file=sm.input.data, out=sm.output.model,
        accuracy_out=sm.output.accuracy, eval_batch_size=sm.params.eval_batch_size,
        device=sm.params.device, seed=sm.params.seed, threads=sm.params.threads,
        parent=sm.input.get("parent"),
        extra={k[len("extra_"):]: v for k, v in sm.input.items() if k.startswith("extra_")},
    )
