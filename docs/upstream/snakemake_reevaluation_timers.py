"""Reproduction for Snakemake: the scheduler's re-evaluation timers multiply with every finished job.

With a job rate limit (Snakemake's default ``--max-jobs-per-timespan 100/1s``), every scheduling round ends by
starting a ``threading.Timer`` that wakes the scheduler one timespan later, whether or not one is pending
(``JobScheduler._schedule_reevalutation``). A finished job wakes the scheduler too, and that round starts one
more timer, so each finished job adds an endless chain: after n finished jobs the scheduler runs about n
rounds a second, each checking the inputs of every ready job and selecting again. This script runs a workflow
of ``--jobs`` jobs that each sleep ``--sleep`` seconds on ``--cores`` cores, twice in fresh processes, and prints
the scheduling rounds (calls of ``job_selector``) with Snakemake as it is and with vitcompress's fix
(:func:`vitcompress.workflow.scheduler.single_reevaluation_timer`: at most one timer pending):

    python docs/upstream/snakemake_reevaluation_timers.py [--jobs 60] [--sleep 0.3] [--cores 2]

Expected: rounds near the number of jobs plus one a second of run time, in both. Seen with Snakemake 9.27.1
(60 jobs of 0.3 s on 2 cores, 10 s): 286 rounds as it is, 68 with the fix; the demo profile's workflow
(about 200 jobs, 5 minutes) ran over 12 000 rounds, about a minute of CPU in Snakemake's own process.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SNAKEFILE = """
import os, sys
if os.environ.get("FIX"):
    sys.path.insert(0, {repo!r})
    from vitcompress.workflow.scheduler import single_reevaluation_timer
    single_reevaluation_timer()
from snakemake.scheduling import job_scheduler as js
_select = js.JobScheduler.job_selector
ROUNDS = [0]
def counted(self, jobs):
    ROUNDS[0] += 1
    return _select(self, jobs)
js.JobScheduler.job_selector = counted
onsuccess:
    print("ROUNDS", ROUNDS[0])
rule all:
    input: expand("out/{{i}}.txt", i=range({jobs}))
rule one:
    output: "out/{{i}}.txt"
    run:
        import time
        time.sleep({sleep})
        open(output[0], "w").write("x")
"""


def rounds(jobs: int, sleep: float, cores: int, fix: bool) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "Snakefile").write_text(SNAKEFILE.format(repo=str(REPO), jobs=jobs, sleep=sleep))
        env = dict(os.environ, FIX="1" if fix else "")
        proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores), "--force-use-threads",
                               "--scheduler", "greedy", "-q"], cwd=tmp, env=env, capture_output=True, text=True)
        found = re.search(r"ROUNDS (\d+)", proc.stdout + proc.stderr)
        if proc.returncode or not found:
            raise SystemExit(proc.stdout + proc.stderr)
        return int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=60)
    ap.add_argument("--sleep", type=float, default=0.3)
    ap.add_argument("--cores", type=int, default=2)
    a = ap.parse_args()
    for fix in (False, True):
        print(f"{'with the fix' if fix else 'as it is':13s} {rounds(a.jobs, a.sleep, a.cores, fix):6d} scheduling rounds")


if __name__ == "__main__":
    main()
