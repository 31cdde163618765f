"""The run's trade-off figures: accuracy against CPU speed-up and against size, the Pareto front marked,
each point in its method's family (:attr:`vitcompress.methods.base.Method.family`: a new method is placed
with no edit here). Every figure of the project is drawn through :mod:`vitcompress.plotting`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vitcompress.io import read_json
from vitcompress.report.cells import flat
from vitcompress.report.format import missing

TRADEOFFS = (("cpu_speedup", "CPU speed-up vs the first row, timed side by side (x, higher is better)", True),
             ("size_mb", "size (MB, lower is better)", False))
MARKERS = ("o", "s", "^", "D", "d", "p", "v", "P", "*", "h", "<", ">", "X")


def pareto_front(xs, ys, x_larger_is_better: bool) -> list[bool]:
    """Which points no other point beats: accuracy (``ys``) at least as high and ``xs`` at least as good,
    one of the two strictly better. Missing values are never on the front."""
    pts = [(x, y) for x, y in zip(xs, ys)]
    sign = 1.0 if x_larger_is_better else -1.0

    def beats(a, b):
        return (sign * a[0] >= sign * b[0] and a[1] >= b[1]) and (sign * a[0] > sign * b[0] or a[1] > b[1])

    ok = [not (missing(x) or missing(y)) for x, y in pts]
    return [ok[i] and not any(ok[j] and beats(pts[j], pts[i]) for j in range(len(pts)) if j != i)
            for i in range(len(pts))]


def families(methods: dict) -> dict[str, str]:
    """Row id -> the family of the method of its last step (``methods``: row id -> method name); a method
    the registry does not know is its own family."""
    from vitcompress.methods import METHODS

    return {row: getattr(METHODS.get(m), "family", None) or str(m) for row, m in methods.items()}


def place_labels(ax, points: list[tuple[float, float, str]], fontsize: float = 7) -> None:
    """Label each point where its text overlaps no other label and no point: the nearest free place on
    rings of growing radius around it (a leader line when it had to move away), in display pixels."""
    fig = ax.figure
    fig.canvas.draw()  # the axes' final scales, so data -> pixel is exact
    dpi = fig.dpi
    h = fontsize * dpi / 72 * 1.15
    marks = [ax.transData.transform((x, y)) for x, y, _ in points]
    placed: list[tuple[float, float, float, float]] = []

    def free(box) -> bool:
        x0, y0, x1, y1 = box
        if any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in placed):
            return False
        return not any(x0 - 5 < mx < x1 + 5 and y0 - 5 < my < y1 + 5 for mx, my in marks)

    order = sorted(range(len(points)), key=lambda i: -marks[i][1])
    for i in order:
        (px, py), text = marks[i], points[i][2]
        w = 0.62 * h * len(text) + 2
        chosen = None
        for radius in (7, 14, 22, 32, 44, 58):
            for angle in range(45, 405, 30):
                dx, dy = radius * np.cos(np.radians(angle)), radius * np.sin(np.radians(angle))
                box = (px + dx - w / 2, py + dy - h / 2, px + dx + w / 2, py + dy + h / 2)
                if free(box):
                    chosen = (dx, dy, box, radius)
                    break
            if chosen:
                break
        if chosen is None:  # crowded beyond every ring: on top of its point, as before
            chosen = (7, 7, (px, py, px + w, py + h), 7)
        dx, dy, box, radius = chosen
        placed.append(box)
        ax.annotate(text, points[i][:2], xytext=(dx * 72 / dpi, dy * 72 / dpi), textcoords="offset points",
                    fontsize=fontsize, ha="center", va="center", color="0.15", zorder=4,
                    arrowprops=None if radius <= 7 else {"arrowstyle": "-", "color": "0.55", "lw": 0.5})


def tradeoff_figure(files: list[str], out: str | Path, title: str, methods: dict | None = None) -> None:
    """Accuracy against CPU speed-up and against size for one data set's rows, the Pareto front marked:
    the rows worth shipping are on it; every row off it is beaten on both axes by one that is. Each point is
    numbered (the key lists the rows), its family shown by colour and marker (in the order the families first
    appear among ``methods``, so every data set's figure of a run draws a family alike), and drawn with the 95%
    intervals of its accuracy change (vertical) and of its speed-up (horizontal). ``methods``: row id -> the
    method of its last step."""
    from matplotlib import ticker
    from matplotlib.lines import Line2D

    from vitcompress.plotting import save_png, subplots

    cells = [flat(read_json(f)) for f in files]
    family = families(methods or {})
    order = list(dict.fromkeys([*family.values(), *(family.get(c["row"], "other") for c in cells)]))

    def style(cell):
        k = order.index(family.get(cell["row"], "other"))
        return MARKERS[k % len(MARKERS)], f"C{k % 10}", k

    fig, axes = subplots(1, len(TRADEOFFS), figsize=(13, 5.6))
    for ax, (key, label, larger) in zip(axes, TRADEOFFS):
        xs = [c.get(key) for c in cells]
        ys = [c.get("accuracy") for c in cells]
        front = pareto_front(xs, ys, larger)
        shown = [i for i, x in enumerate(xs) if not missing(x)]
        for i in shown:
            c = cells[i]
            marker, colour, _ = style(c)
            yerr = None if missing(c.get("delta_first_lo")) else \
                [[c["delta_first"] - c["delta_first_lo"]], [c["delta_first_hi"] - c["delta_first"]]]
            xerr = None if key != "cpu_speedup" or missing(c.get("cpu_speedup_lo")) else \
                [[xs[i] - c["cpu_speedup_lo"]], [c["cpu_speedup_hi"] - xs[i]]]
            ax.errorbar(xs[i], ys[i], yerr=yerr, xerr=xerr, fmt=marker, color=colour, ecolor=colour, alpha=0.9,
                        markersize=7, markeredgecolor="C3" if front[i] else "none", markeredgewidth=1.5,
                        elinewidth=0.8, capsize=2, zorder=3)
        place_labels(ax, [(xs[i], ys[i], str(i + 1)) for i in shown])
        on = sorted((xs[i], ys[i]) for i in shown if front[i])
        if on:
            ax.plot([p[0] for p in on], [p[1] for p in on], "--", color="C3", alpha=0.6)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 accuracy (%)")
        left_out = [str(i + 1) for i, x in enumerate(xs) if missing(x)]
        if left_out:
            ax.set_title(f"not plotted (not measured): {', '.join(left_out)}", fontsize=8)
    used = sorted({style(c)[2] for c in cells})
    handles = [Line2D([], [], marker=MARKERS[k % len(MARKERS)], color=f"C{k % 10}", linestyle="", label=order[k])
               for k in used]
    handles.append(Line2D([], [], color="C3", linestyle="--", label="Pareto front (outlined points)"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.95))
    key_text = "   ".join(f"{i + 1} {c['row']}" for i, c in enumerate(cells))
    fig.text(0.5, 0.01, key_text, ha="center", va="bottom", fontsize=7, wrap=True)
    fig.suptitle(title + " (error bars: 95% intervals)")
    fig.tight_layout(rect=(0, 0.07, 1, 0.92))
    save_png(fig, out)
