"""The architecture benchmark: each row's architecture with random weights, each step's structural change
and deployment applied without data, sized and timed beside the first row's.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

from vitcompress.artifacts import Artifact, buffers_only
from vitcompress.io import write_json
from vitcompress.measure import storage_sizes
from vitcompress.methods import build_model, get_method
from vitcompress.models import count_params
from vitcompress.runtimes import artifact_files, describe, get_runtime, load_artifact
from vitcompress.sections import MeasureSettings
from vitcompress.workflow.timing import input_shape_of, measure_model

log = logging.getLogger("vitcompress")


def bench_spec(profile, row_id: str) -> dict:
    """A row's architecture benchmark inputs: its chain's resolved steps and root architecture, and the
    baseline row's (the profile's first, timed beside it), built for the profile's first data set."""
    from vitcompress.data import data_shape
    from vitcompress.models import arch_for

    meta = data_shape(profile.dataset_cfg(profile.datasets[0]))

    def spec(row):
        steps = [profile.step_cfg(s) for s in row["chain"]]
        root = steps[0]
        return steps, arch_for(root["model_cfg"], meta, root["image_size"], root["image_scale"])

    steps, arch = spec(profile.row(row_id))
    base_steps, base_arch = spec(profile.rows[0])
    return {"chain_steps": steps, "arch": arch, "baseline_steps": base_steps, "baseline_arch": base_arch}


def build_untrained(chain_steps: list[dict], arch: dict) -> Artifact:
    """A row's deployable PyTorch artifact with random weights: each step's structural change, no data.
    (Steps that make ONNX artifacts follow in :func:`_deployed`.)"""
    from vitcompress.models import create

    model = create(arch)
    art = Artifact(arch=arch, state_dict={}, transforms=[], meta={})
    for step in chain_steps:
        change = get_method(step["method"]).untrained(model, step)
        model = change.model
        if change.spec:
            art.transforms.append(change.spec)
        art.meta.update(change.meta or {})
        art.quantized = change.quantized  # only the last step's counts
    # a quantized state holds the parameters itself: keep the buffers only
    art.state_dict = model.state_dict() if art.quantized is None else buffers_only(model)
    return art


@contextlib.contextmanager
def _deployed(chain_steps: list[dict], arch: dict):
    """A row's untrained artifact, the model a deployment would load from it, and its size on disk, for
    the duration of the block. Steps of another runtime (ONNX export, ORT quantization) each start from
    the saved file of the one before, as in the workflow."""
    torch_steps = [s for s in chain_steps if get_method(s["method"]).runtime == "pytorch"]
    with tempfile.TemporaryDirectory(prefix="vitcompress-bench-") as tmp:
        path = Path(tmp) / "model.pt"
        build_untrained(torch_steps, arch).save(path)
        for i, step in enumerate(chain_steps[len(torch_steps):]):
            method = get_method(step["method"])
            child = method.untrained_deploy(load_artifact(path), step)
            path = Path(tmp) / f"step{i}" / get_runtime(method.runtime).files[0]
            child.save(path)
        art = load_artifact(path)
        yield art, build_model(art), storage_sizes(artifact_files(path))


def bench_row(chain_steps: list[dict], arch: dict, measure: MeasureSettings | dict, fp: dict, out: str,
              baseline_steps: list[dict] | None = None, baseline_arch: dict | None = None) -> None:
    """Build a row's architecture (random weights, no data, no training), then size and time it.

    ``baseline_steps``/``baseline_arch``: the baseline row's chain and architecture (the profile's
    first row), built the same way and timed call by call beside this one for a side-by-side
    speed-up, as the cells' timings are; the baseline row itself is not timed twice. The chain minus
    its last step (the row's parent) joins the alternation for the last step's own speed-up."""
    baseline_arch = baseline_arch or arch
    is_baseline = (baseline_steps is not None and baseline_arch == arch
                   and [s["id"] for s in baseline_steps] == [s["id"] for s in chain_steps])
    timed_beside = baseline_steps is not None and not is_baseline
    parent_steps = chain_steps[:-1]
    parent_is_baseline = (timed_beside and baseline_arch == arch
                          and [s["id"] for s in baseline_steps] == [s["id"] for s in parent_steps])
    with contextlib.ExitStack() as stack:
        art, model, size = stack.enter_context(_deployed(chain_steps, arch))
        ref = stack.enter_context(_deployed(baseline_steps, baseline_arch))[1] if timed_beside else None
        par = None
        if parent_steps:
            par = ref if parent_is_baseline else stack.enter_context(_deployed(parent_steps, arch))[1]
        result = measure_model(model, art.meta, input_shape_of(arch), measure, fp, baseline=ref,
                               is_baseline=is_baseline, parent=par,
                               parent_cpu_only=bool(parent_steps) and get_method(parent_steps[-1]["method"]).runtime
                               != "pytorch")
        result.update(**size, params=count_params(model), arch=arch, chain=[s["id"] for s in chain_steps],
                      chain_methods={s["id"]: s["method"] for s in chain_steps},
                      runtime=describe(art.meta), settings=art.settings())
    write_json(out, result)
