"""Snakemake entry point: accuracy vs CPU speed-up and vs size, Pareto front marked, for one data set."""
from vitcompress.joblog import logging_to
from vitcompress.report.figures import tradeoff_figure

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    tradeoff_figure(list(sm.input), sm.output[0], f"Trade-offs: {sm.wildcards.dataset} ({sm.params.profile} profile)",
                    methods=sm.params.methods)
