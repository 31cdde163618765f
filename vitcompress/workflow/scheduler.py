"""One pending re-evaluation timer in Snakemake's scheduler, not one per scheduling round.

Snakemake (9.x, with its default ``--max-jobs-per-timespan 100/1s``) ends every scheduling round by starting a
``threading.Timer`` that wakes the scheduler after the timespan, whether or not one is already pending. A round
also runs whenever a job finishes, so each finished job starts one more endless chain of timers: after *n* jobs
the scheduler wakes about *n* times a second, and each wake checks the size of every ready job's inputs and
selects again. In the demo (about 200 jobs) that is over 12 000 rounds and about a minute of CPU in Snakemake's
own process, taken from the jobs on a 2-CPU machine and present beside every timing. The reproduction is
``docs/upstream/snakemake_reevaluation_timers.py``.

:func:`single_reevaluation_timer` keeps the rate limiter's purpose (a round at most a timespan after the last,
so jobs it held back start) with at most one timer pending, and makes that timer a daemon thread so that it
cannot delay Snakemake's exit.
"""
from __future__ import annotations

import threading

_LOCK = threading.Lock()  # guards each scheduler's pending timer


def single_reevaluation_timer() -> bool:
    """Patch Snakemake's scheduler (this process only) as the module docstring says; False, changing nothing,
    where this Snakemake has no such method (a release that reworked it)."""
    try:
        from snakemake.scheduling.job_scheduler import JobScheduler
    except ImportError:
        return False
    original = getattr(JobScheduler, "_schedule_reevalutation", None)  # sic: Snakemake's spelling
    if original is None:
        return False
    if getattr(original, "single_timer", False):
        return True

    def schedule_reevaluation(self, delay) -> None:
        def wake() -> None:
            with _LOCK:  # no longer pending before the round it starts asks for the next one
                self._vitcompress_timer = None
            self._open_jobs.release()

        with _LOCK:
            if getattr(self, "_vitcompress_timer", None) is not None:
                return
            timer = threading.Timer(delay, wake)
            timer.daemon = True
            self._vitcompress_timer = timer
            timer.start()

    schedule_reevaluation.single_timer = True
    JobScheduler._schedule_reevalutation = schedule_reevaluation
    return True

