"""Snakemake entry point: the pruning importance histogram (study Figure 3) of one data set."""
from vitcompress.joblog import logging_to
from vitcompress.pruning.gates import histogram_from_artifact

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    histogram_from_artifact(sm.input[0], sm.output[0],
                            f"Importance of prunable dimensions: {sm.wildcards.dataset} ({sm.wildcards.chain})")
