"""How every number and label is written in every output: one place for signs, ratios, intervals, LaTeX
escaping and the Jinja environment the templates render in.

    >>> fmt_delta(-0.4)
    '−0.40'
    >>> fmt_ratio_ci({"cpu_speedup": 1.29, "cpu_speedup_lo": 1.25, "cpu_speedup_hi": 1.33})
    '1.29× (1.25–1.33)'
    >>> tex("1.29× (−0.40) 10%")
    '1.29$\\\\times$ ($-$0.40) 10\\\\%'
"""
from __future__ import annotations

import math
from pathlib import Path

import jinja2

DEFAULT_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"  # package data: an installed vitcompress renders
# LaTeX: its special characters escaped, and the Unicode signs the Markdown uses written in math mode, the
# same way in every .tex output.
TEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
               "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
               "×": r"$\times$", "−": r"$-$", "†": r"$^\dagger$", "±": r"$\pm$", "≥": r"$\geq$", "≤": r"$\leq$",
               "–": "--", "√": r"$\surd$", "·": r"$\cdot$"}
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "digits": "digits (scikit-learn)",
                  "digit_pairs": "digit pairs (100 classes)"}


def dataset_title(dataset: str) -> str:
    """A data set's name as the tables print it (its id where it has no title)."""
    return DATASET_TITLES.get(dataset, dataset)


def missing(v) -> bool:
    """None or NaN: a cell with no value (printed "-")."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v, digits: int = 2) -> str:
    return "-" if missing(v) else f"{v:.{digits}f}"


def fmt_ratio(v) -> str:
    return "-" if missing(v) else f"{v:.2f}×"


def fmt_speed(v) -> str:
    """Speeds span 0.05 (ViT-B on CPU) to thousands (tiny models): keep three significant digits."""
    if missing(v):
        return "-"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def fmt_delta(v, digits: int = 2) -> str:
    """A signed change: +1.20, −0.40 (a real minus sign), 0.00."""
    if missing(v):
        return "-"
    text = f"{abs(v):.{digits}f}"
    return text if float(text) == 0 else ("+" if v > 0 else "−") + text


def fmt_change(r: dict, key: str = "delta_first") -> str:
    """A paired accuracy change with its 95% interval, ``−0.74 (−1.85, +0.37)``, and † when the interval
    contains 0 (not distinguishable); "-" where there is none (the first row, a root row's parent)."""
    if missing(r.get(key)):
        return "-"
    text = f"{fmt_delta(r[key])} ({fmt_delta(r[key + '_lo'])}, {fmt_delta(r[key + '_hi'])})"
    return text if r.get(key + "_distinguishable") else text + " †"


def fmt_interval(d: dict) -> str:
    """A change and its interval, ``−0.40 (−1.10, +0.30)``, or the change alone where it has none (lo = hi)."""
    return fmt_delta(d["delta"]) + ("" if d["lo"] == d["hi"] else f" ({fmt_delta(d['lo'])}, {fmt_delta(d['hi'])})")


def fmt_ratio_ci(r: dict, key: str = "cpu_speedup") -> str:
    """A speed-up with its interval: ``1.29× (1.25–1.33)``."""
    if missing(r.get(key)):
        return "-"
    if missing(r.get(key + "_lo")):
        return fmt_ratio(r[key])
    return f"{r[key]:.2f}× ({r[key + '_lo']:.2f}–{r[key + '_hi']:.2f})"


def tex(s) -> str:
    """Text made safe for LaTeX (see :data:`TEX_ESCAPES`)."""
    return "".join(TEX_ESCAPES.get(c, c) for c in str(s))


def environment(templates: str | Path | None = None) -> jinja2.Environment:
    """The Jinja environment every table renders in: strict (an unknown name is an error, not a blank), the
    filters of this module by short names (``fmt``, ``speed``, ``ratio``, ``ratio_ci``, ``delta``, ``change``,
    ``tex``, ``title``)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates or DEFAULT_TEMPLATES)),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(fmt=fmt, speed=fmt_speed, ratio=fmt_ratio, tex=tex, delta=fmt_delta, change=fmt_change,
                       ratio_ci=fmt_ratio_ci, title=dataset_title)
    return env


def render(template: str, out: str | Path, templates: str | Path | None = None, **context) -> None:
    """Render one template to ``out``, whole or not at all."""
    from vitcompress.io import atomic_path

    text = environment(templates).get_template(template).render(**context)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
