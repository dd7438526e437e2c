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
from typing import Any, Sequence

import numpy as np

from ol_ray.config.schema import Config
from ol_ray.observe.plots import markdown_table


def seeded(cfg: Config, seed: int) -> Config:
    """The config of one seed's run: the stream in the seed's shuffled order, the head and the selection seeded."""
    return dataclasses.replace(cfg, stream=dataclasses.replace(cfg.stream, shuffle_seed=seed),
                               model=dataclasses.replace(cfg.model, seed=seed),
                               selection=dataclasses.replace(cfg.selection, seed=seed))


def first_window(cfg: Config, samples: int):
    """The first `samples` rows of the configured stream, as one window."""
    from ol_ray.data.factory import make_source
    from ol_ray.data.source import windows

    stream = dataclasses.replace(cfg.stream, window_size=samples, max_samples=samples, rate=0.0)
    return next(windows(make_source(stream), stream))


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
