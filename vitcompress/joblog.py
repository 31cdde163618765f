"""A job's log: the library's log records sent to the job's log file for the duration of the job.

Its own module of the standard library only, so a rule's script that renders a table or a figure does not
import torch, timm and the methods (seconds per job) to open its log.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

log = logging.getLogger("vitcompress")


@contextlib.contextmanager
def logging_to(path: str | Path | None):
    """Send the library's log records to ``path`` (and stderr) for the duration of a job."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.INFO)
    for h in handlers:
        h.setFormatter(fmt)
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
        root.setLevel(old_level)
