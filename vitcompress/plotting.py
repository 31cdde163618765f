"""One matplotlib set-up for every figure the project draws: the non-interactive Agg backend (jobs run
without a display) chosen once, before pyplot is first imported, and PNGs written atomically.

    >>> plt = pyplot()
    >>> fig, ax = plt.subplots()
    >>> save_png(fig, "reports/figures/example.png")
"""
from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: a module that plots stays cheap to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, out: str | Path, dpi: int = 110) -> None:
    """Write ``fig`` to ``out`` as a PNG, whole or not at all, and close it."""
    from vitcompress.io import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
