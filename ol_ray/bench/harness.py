"""The harness every `ol-ray bench ...` shares: seeded configs, CSV files in and out, markdown tables and plots.

Benchmarks print their figures and write them as CSV, markdown and PNG; every speed figure is a ratio against a
baseline measured in the same run, since machines are noisy. They are never asserted in tests (a smoke run of each
keeps the harness from rotting).

    ol-ray bench pipeline configs/sst2.yaml      # the Ray pipeline against a plain loop doing the same work
    ol-ray bench memory configs/sst2.yaml        # RSS of the driver and the learner over a long stream
    ol-ray bench scaling configs/sst2.yaml       # scoring throughput with 1, 2, ... scorer nodes
    ol-ray bench selection configs/sst2.yaml     # sample efficiency of the selection strategies
    ol-ray bench batching configs/sst2.yaml      # batch-size policies on the same sample budget
    ol-ray bench forgetting configs/forgetting.yaml  # forgetting of a first domain: no replay, replay, replay + EWC
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ol_ray.config.schema import Config


def seeded(cfg: Config, seed: int) -> Config:
    """The config of one seed's run: the stream in the seed's shuffled order, the head and the selection seeded."""
    return dataclasses.replace(cfg, stream=dataclasses.replace(cfg.stream, shuffle_seed=seed),
                               model=dataclasses.replace(cfg.model, seed=seed),
                               selection=dataclasses.replace(cfg.selection, seed=seed))


def write_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """Rows as CSV, with every key any row has as a column (missing cells empty)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: str) -> list[dict[str, Any]]:
    """The rows of a CSV that `write_csv` wrote, with numbers as numbers again."""
    with open(path, encoding="utf-8") as handle:
        return [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


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


def write_results(rows: list[dict[str, Any]], out_dir: str, name: str) -> str:
    """`<name>.csv` and `<name>.md` (a markdown table) in `out_dir`; returns the markdown."""
    os.makedirs(out_dir, exist_ok=True)
    write_csv(os.path.join(out_dir, f"{name}.csv"), rows)
    table = markdown_table(rows)
    with open(os.path.join(out_dir, f"{name}.md"), "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    return table


def mean_curve(runs: Sequence[Sequence[dict[str, Any]]], x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray]:
    """x and y averaged point by point over several seeds' runs, cut to the shortest run."""
    length = min(len(run) for run in runs)
    return (np.mean([[point[x_key] for point in run[:length]] for run in runs], axis=0),
            np.mean([[point[y_key] for point in run[:length]] for run in runs], axis=0))


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
