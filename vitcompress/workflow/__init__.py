"""What each workflow rule does, as plain functions (scripts/ only forwards Snakemake's arguments), by concern:

- :mod:`~vitcompress.workflow.jobs`: how a job runs (worker, log, threads, device, slots, priority);
- :mod:`~vitcompress.workflow.steps`: a step of a chain, run, saved and evaluated; the FQ-ViT ablation;
- :mod:`~vitcompress.workflow.timing`: a row timed beside the first row on this machine;
- :mod:`~vitcompress.workflow.cells`: a (data set, row) cell's metrics;
- :mod:`~vitcompress.workflow.bench`: the architecture benchmark.

Outputs are written atomically, so a killed job leaves nothing a later run would take as complete.
"""
from vitcompress.workflow.bench import bench_row, bench_spec, build_untrained
from vitcompress.workflow.cells import row_metrics
from vitcompress.workflow.jobs import job, job_priority, logging_to, resolve_device, slots_for, use_threads
from vitcompress.workflow.steps import artifact_notes, evaluate_artifact, fq_vit_ablation, run_step
from vitcompress.workflow.timing import (
    SLOWER_INT8,
    machine_accuracy,
    machine_dependent,
    measure_model,
    measure_speed,
    slower_int8_note,
)

__all__ = ["SLOWER_INT8", "artifact_notes", "bench_row", "bench_spec", "build_untrained", "evaluate_artifact", "fq_vit_ablation", "job", "job_priority", "logging_to", "machine_accuracy", "machine_dependent", "measure_model", "measure_speed", "resolve_device", "row_metrics", "run_step", "slots_for", "slower_int8_note", "use_threads"]
