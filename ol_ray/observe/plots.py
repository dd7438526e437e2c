"""Tables and charts shared by `ol-ray report` and the benchmarks: a Markdown table of rows, and panels of lines or
bars in one PNG (matplotlib, the `bench` extra)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import numpy as np


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of the rows (floats to three significant digits)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] +
                     ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows])


def cell(value: Any) -> str:
    """A table cell: floats to three significant digits, without exponents below a billion."""
    if not isinstance(value, float):
        return str(value)
    if value != value or abs(value) < 1000:  # NaN, or small enough for three significant digits
        return f"{value:.3g}"
    return f"{value:,.0f}" if abs(value) < 1e9 else f"{value:.3g}"



@dataclasses.dataclass
class Panel:
    """One plot: labelled lines (x, y) and its axes' labels."""
    xlabel: str
    ylabel: str
    lines: list[tuple[str, Sequence[float], Sequence[float]]] = dataclasses.field(default_factory=list)
    step: bool = False  # draw the lines as steps (values that hold until the next point)
    log_y: bool = False
    kind: str = "line"  # or "bar": lines are then (label, categories, heights), drawn side by side

    def add(self, label: str, x: Sequence[float], y: Sequence[float]) -> "Panel":
        self.lines.append((label, x, y))
        return self


def plot_panels(panels: Sequence[Panel], path: str, title: str = "", columns: int = 3,
                legend: Optional[Callable[[int], bool]] = None) -> str:
    """The panels side by side (wrapping after `columns`) in one PNG; returns its path. Legends go on every panel
    unless `legend(index)` says otherwise."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the benchmarks and `ol-ray report` draw with matplotlib: "
                          "pip install 'ol_ray[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(panels) + columns - 1) // columns
    width = min(columns, len(panels))
    figure, axes = plt.subplots(rows, width, figsize=(6 * width, 4.5 * rows), squeeze=False)
    for index, (panel, axis) in enumerate(zip(panels, axes.flat)):
        if panel.kind == "bar":
            offset = 0.8 / max(len(panel.lines), 1)
            for number, (label, categories, heights) in enumerate(panel.lines):
                axis.bar(np.arange(len(heights)) + number * offset, heights, width=offset, label=label)
                axis.set_xticks(np.arange(len(heights)) + 0.4 - offset / 2, [str(c) for c in categories])
        for label, x, y in panel.lines if panel.kind == "line" else []:
            if panel.step:
                axis.step(x, y, where="post", label=label)
            else:
                axis.plot(x, y, label=label)
        axis.set_xlabel(panel.xlabel)
        axis.set_ylabel(panel.ylabel)
        if panel.log_y:
            axis.set_yscale("log", base=2)
        axis.grid(alpha=0.3)
        if panel.lines and (legend is None or legend(index)):
            axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
