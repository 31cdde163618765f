"""The training reference: the first row trained under several seeds on one machine, committed so that
another machine's retraining can be read against the seeds' spread (``snakemake training_reference --config
seeds=3`` writes it; the training check reads it).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vitcompress.io import read_json, write_json

TRAINING_REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "training_reference.json"


def write_training_reference(accuracies: list[str], seeds: list[int], datasets: list[str], step: str, profile: str,
                             fp: dict, out: str) -> None:
    """The first row's training under several seeds on this machine, as a reference another machine's training
    check compares with (``snakemake training_reference --config seeds=3``; copy the file to
    ``vitcompress/reference/`` to commit it). ``accuracies``: per data set, one accuracy.json per seed."""
    if len(seeds) < 2:
        raise ValueError("a training reference needs the seeds' spread: run it with --config seeds=3 (or more)")
    record = {"profile": profile, "step": step, "seeds": list(seeds),
              "command": f"snakemake training_reference --config profile={profile} seeds={len(seeds)}",
              "fingerprint": {k: fp.get(k) for k in ("cpu", "cpu_flags", "cpu_threads", "torch", "timm", "label")},
              "datasets": {}}
    for i, ds in enumerate(datasets):
        accs = [read_json(f) for f in accuracies[i * len(seeds):(i + 1) * len(seeds)]]
        record["datasets"][ds] = {"accuracy_by_seed": [float(a["accuracy"]) for a in accs],
                                  "train_epochs": accs[0].get("train_epochs"),
                                  "test_images": accs[0].get("test_images"),
                                  "per_image": accs[0].get("per_image")}  # groups: the retrained model's own
    write_json(out, record)


def against_reference(accuracy: dict, reference: dict, level: float = 0.95) -> dict:
    """This machine's first-row training (an accuracy.json, the profile's seed) against the reference run's
    (one data set of :func:`write_training_reference`): the change from the reference's model of the same seed
    (paired on the test images when both kept them) and the range one more trained model falls in with
    probability ``level`` by the reference's seeds alone, mean ± t·sd·√(1 + 1/S): a retraining on another machine
    rounds differently, which training amplifies like another seed. {"accuracy", "reference", "change",
    "expected_lo", "expected_hi", "within"}."""
    from scipy.stats import t as student_t

    from vitcompress.measure import accuracy_change

    by_seed = np.asarray(reference["accuracy_by_seed"], dtype=float)
    s = len(by_seed)
    sd = float(by_seed.std(ddof=1))
    half = float(student_t.ppf(0.5 + level / 2, s - 1)) * sd * math.sqrt(1 + 1 / s)
    lo, hi = max(0.0, float(by_seed.mean()) - half), min(100.0, float(by_seed.mean()) + half)
    mine = float(accuracy["accuracy"])
    return {"accuracy": mine, "reference": float(by_seed[0]), "change": accuracy_change(accuracy, reference),
            "expected_lo": lo, "expected_hi": hi, "half_width": half, "seeds": s,
            "within": None if sd == 0 else lo <= mine <= hi}  # seeds that agree exactly give no spread to judge by
