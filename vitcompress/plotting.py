"""One matplotlib set-up for every figure the project draws: figures on the Agg canvas, made without pyplot (no
global figure registry, so two jobs may draw at once in one process's threads, and no display is needed), and
PNGs written atomically.

    >>> fig, ax = subplots(figsize=(6, 4))
    >>> save_png(fig, "reports/figures/example.png")
"""
from __future__ import annotations

from pathlib import Path


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, **kwargs):
    """``(figure, axes)`` as ``pyplot.subplots`` returns them, on an Agg canvas of the figure's own
    (matplotlib imported on first use: a module that plots stays cheap to import)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_png(fig, out: str | Path, dpi: int = 110) -> None:
    """Write ``fig`` to ``out`` as a PNG, whole or not at all."""
    from vitcompress.io import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
