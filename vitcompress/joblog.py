"""A job's log: the library's log records sent to the job's log file for the duration of the job.

Its own module of the standard library only, so a rule's script that renders a table or a figure does not
import torch, timm and the methods (seconds per job) to open its log.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
from pathlib import Path

log = logging.getLogger("vitcompress")


_lock = threading.Lock()
_active = 0  # jobs logging in this process now (several, in Snakemake's own process: its threads)
_saved_level = logging.WARNING


class _ThisThread(logging.Filter):
    """Only the records of the thread that runs the job: Snakemake runs cheap jobs side by side in threads of
    one process, and each job's log holds its own records alone."""

    def __init__(self):
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


@contextlib.contextmanager
def logging_to(path: str | Path | None):
    """Send the library's log records to ``path`` (and stderr) for the duration of a job: the records of the
    calling thread only, so jobs running at once in one process keep separate logs."""
    global _active, _saved_level
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    only_here = _ThisThread()
    with _lock:  # INFO while any job runs; the level before the first is restored after the last
        if _active == 0:
            _saved_level = root.level
            root.setLevel(logging.INFO)
        _active += 1
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(only_here)
        root.addHandler(h)
    try:
        yield
    except Exception:
        log.exception("job failed")
        raise
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        with _lock:
            _active -= 1
            if _active == 0:
                root.setLevel(_saved_level)
