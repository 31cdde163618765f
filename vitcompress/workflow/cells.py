"""A cell: one (data set, row)'s metrics JSON from its accuracy and timing files (means and intervals over
training seeds, the paired changes against the first row and the row's parent).
"""
from __future__ import annotations

import logging

from vitcompress.config import row_labels
from vitcompress.io import read_json, write_json
from vitcompress.measure import accuracy_change_over_seeds, accuracy_with_interval, speed_columns
from vitcompress.stats import across_seeds

log = logging.getLogger("vitcompress")


def row_metrics(row: dict, dataset: str, accuracy: str, speed_json: str, out: str, profile: str,
                settings: dict | None = None, baseline_accuracy: str | None = None,
                parent_accuracy: str | None = None, seed_accuracy: list[str] = (), seed_baseline: list[str] = (),
                seed_parent: list[str] = (), methods: list[str] | None = None) -> None:
    """The metrics JSON of one (dataset, row) cell. ``settings``: the row's step settings from params.yaml,
    for its labels' ``{name}`` fields; the values the artifact resolved (on this data set) win.
    ``baseline_accuracy`` / ``parent_accuracy``: the first row's and the row's parent's (its chain minus
    the last step) accuracy JSONs, for the paired intervals of the accuracy changes against them.
    ``seed_accuracy`` / ``seed_baseline`` / ``seed_parent``: the same three under the profile's other training
    seeds, in one order: the cell's accuracy and changes are then the means over seeds, with intervals that
    cover the seeds' spread too (``seeds`` says how many); speed and size stay the first seed's model's.
    ``methods``: the method of each step of the row's chain (the reports' families and findings)."""
    acc, spd = read_json(accuracy), read_json(speed_json)
    cpu, gpu = spd.get("cpu"), spd.get("gpu")
    labels = row_labels(row, settings or {}, acc.get("settings"))
    base = read_json(baseline_accuracy) if baseline_accuracy else None
    parent = read_json(parent_accuracy) if parent_accuracy else None
    accs = [acc] + [read_json(f) for f in seed_accuracy]
    if len(seed_baseline) != len(seed_accuracy) or (parent and len(seed_parent) != len(seed_accuracy)):
        raise ValueError(f"row {row['id']!r}: every other seed needs its own first-row and parent accuracy "
                         f"({len(seed_accuracy)} seeds, {len(seed_baseline)} first-row, "
                         f"{len(seed_parent)} parent files)")
    bases = None if base is None else [base] + [read_json(f) for f in seed_baseline]
    parents = None if parent is None else [parent] + [read_json(f) for f in seed_parent]
    intervals = [accuracy_with_interval(a) for a in accs]
    accuracy_ci = None if any(i is None for i in intervals) else across_seeds(intervals, "value")
    mean_accuracy = sum(float(a["accuracy"]) for a in accs) / len(accs)
    write_json(out, {
        "profile": profile,
        "dataset": dataset,
        "row": row["id"],
        **labels,
        "chain": row["chain"],
        "chain_methods": list(methods or []),  # each step's method: the reports' families and findings
        "runtime": acc.get("runtime", "PyTorch"),
        "accuracy": mean_accuracy,  # over the training seeds (one: that model's)
        "seeds": len(accs),
        "accuracy_ci": None if accuracy_ci is None else [accuracy_ci["lo"], accuracy_ci["hi"]],
        "accuracy_by_seed": [float(a["accuracy"]) for a in accs],
        "accuracy_sd_seeds": None if accuracy_ci is None else accuracy_ci["sd"],
        "top5": acc.get("top5"),
        "test_images": acc.get("test_images"),
        "size_mb": acc["size_mb"],
        "compressed_mb": acc.get("compressed_mb"),
        "diffq_true_size_mb": acc.get("diffq_true_size_mb"),
        "diffq_compressed_mb": acc.get("diffq_compressed_mb"),
        "params": acc["params"],
        "train_epochs": acc.get("train_epochs"),
        **speed_columns(gpu, "gpu"),
        **speed_columns(cpu, "cpu"),  # with the speed-up over the parent: the last step's own gain
        "cpu_iqr_s": cpu["batch"]["iqr_s"] if cpu else None,
        "delta_first": None if base is None or baseline_accuracy == accuracy else
        accuracy_change_over_seeds(accs, bases),
        "delta_parent": accuracy_change_over_seeds(accs, parents),
        "per_image": acc.get("per_image"),
        "per_image_by_seed": [a.get("per_image") for a in accs] if len(accs) > 1 else None,
        "groups": acc.get("groups"),
        "batch_size": (cpu or gpu or {}).get("batch_size"),
        "notes": [f"{labels['model']}: {n}" for n in (acc.get("notes") or []) + spd.get("row_notes", [])]
        + spd.get("notes", []),
        "fingerprint": spd["fingerprint"],
    })
