"""Do a run's int8 rows give the same answer on this CPU? Every row whose last step makes an int8 model, evaluated
with this machine's kernels against its parent, for a machine that cannot run the workflow itself.

Where Snakemake runs, a new machine label does this (`VITCOMPRESS_MACHINE=... snakemake --cores 4`: the timing
jobs measure each int8 row's accuracy again, and `reports/hardware.md` shows it). This script makes the same
library calls for a machine with only the package's Python dependencies, after copying `results/<profile>/`
and `data/prepared/` there from a finished run (`make demo`):

    python docs/experiments/int8_rows_on_this_cpu.py eval OUT.json            # the copied int8 artifacts
    python docs/experiments/int8_rows_on_this_cpu.py rebuild OUT.json @here   # each int8 step run again here,
                                                                              # from its copied parent, into
                                                                              # <chain>@here, with the recipe
                                                                              # `auto` picks on this CPU
    ONEDNN_MAX_CPU_ISA=AVX512_CORE python ... eval OUT.json                    # as a CPU without VNNI would
                                                                              # (vitcompress.measure.non_vnni_cap)

Prints and writes, per data set and row: test top-1 of the int8 model and of its parent, their difference, the
test images it gained and lost against the parent, and the exact McNemar p-value of that split. ``THREADS``
(environment, default 4) sets the threads.
"""
import json
import os
import sys
import time
from pathlib import Path

import torch
from scipy.stats import binomtest

from vitcompress.config import read_params
from vitcompress.data import InputAdapter, PreparedData
from vitcompress.measure import evaluate, int8_flags
from vitcompress.methods import build_model, get_method
from vitcompress.pipeline import setup
from vitcompress.runtimes import load_artifact
from vitcompress.workflow import run_step

RECIPE_KEYS = ("overflow_fix", "attention", "reduce_range")


def correct(path: str, data: PreparedData):
    art = load_artifact(path)
    adapter = InputAdapter(data.meta, art.arch["kwargs"]["img_size"], "cpu")
    acc = evaluate(build_model(art), data.loader("test", 256), adapter, "cpu", per_image=True)
    return acc["top1"], torch.as_tensor(acc["correct1"]).bool()


def main(mode: str, out: Path, suffix: str = "") -> None:
    if mode not in ("eval", "rebuild") or (mode == "rebuild" and not suffix):
        sys.exit(__doc__)
    threads = int(os.environ.get("THREADS", "4"))
    torch.set_num_threads(threads)
    W = setup(read_params("params.yaml"), None, cache_dir=None)
    P = W.profile
    result = {"mode": mode, "suffix": suffix, "int8_flags": int8_flags(), "torch": torch.__version__,
              "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "rows": []}
    for ds in P.datasets:
        data_file = W.data.format(dataset=ds)
        data = PreparedData(data_file)
        for row in P.rows:
            chain = row["chain"]
            step = P.step_cfg(chain[-1], ds)
            if get_method(step["method"]).makes != "int8":
                continue
            parent = W.model_path(ds, "+".join(chain[:-1]))
            made = Path(W.model_path(ds, "+".join(chain)))  # results/<profile>/<ds>/<chain>/<file>
            path = str(made.parent.with_name(made.parent.name + suffix) / made.name)
            started = time.time()
            try:
                if mode == "rebuild":
                    run_step(step, ds, data_file, path, device="cpu", seed=P.seed, threads=threads, parent=parent)
                top1, c = correct(path, data)
                parent_top1, pc = correct(parent, data)
                gained, lost = int((c & ~pc).sum()), int((~c & pc).sum())
                spec = load_artifact(path).transforms[-1] or {}
                cell = {"dataset": ds, "row": row["id"], "top1": top1, "parent_top1": parent_top1,
                        "diff": top1 - parent_top1, "gained": gained, "lost": lost, "n": int(c.numel()),
                        "p": binomtest(gained, gained + lost).pvalue if gained + lost else 1.0,
                        "recipe": {k: v for k, v in spec.items() if k in RECIPE_KEYS},
                        "seconds": round(time.time() - started, 1)}
            except Exception as exc:  # noqa: BLE001  (one row's failure is that row's finding)
                cell = {"dataset": ds, "row": row["id"], "error": f"{type(exc).__name__}: {exc}"[:400]}
            result["rows"].append(cell)
            print(json.dumps(cell), flush=True)
            out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
