"""Snakemake entry point: FQ-ViT's PTF/LIS ablation and the study's Figure 1 for one data set."""
from vitcompress.methods.fq_vit import ablation
from vitcompress.workflow import logging_to, resolve_device, use_threads

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    use_threads(sm.params.threads)
    ablation(sm.input.model, sm.input.data, sm.params.step, csv=sm.output.csv, md=sm.output.md,
             figure=sm.output.figure, dataset=sm.wildcards.dataset, device=resolve_device(sm.params.device),
             seed=sm.params.seed, eval_batch_size=sm.params.eval_batch_size)
