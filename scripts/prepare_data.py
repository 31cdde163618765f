"""Snakemake entry point: prepare one data set (see vitcompress.data)."""
from vitcompress.workflow import logging_to, prepare_dataset

with logging_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    prepare_dataset(snakemake.params.cfg, snakemake.output[0], seed=snakemake.params.seed)  # noqa: F821
