"""`ol-ray bench memory`: do the driver's and the learner's memory stay flat over a long stream?

    ol-ray bench memory configs/sst2.yaml --samples 100000

The configured pipeline (scorers, learner, selection, checkpoints, evaluation) with two changes, so that the
machinery and not the model's arithmetic is measured: a tiny classifier (`models.save_tiny_classifier`: 2 layers,
hidden size 32, the configured model's tokenizer), and the configured stream file repeated until it holds
`--samples` rows (each repeat is new rows with their own ids: row numbers; one row in 50 malformed, so the quarantine
grows as a real stream's does), read in file order as fast as the
pipeline takes it. The driver writes the resource monitor's readings (driver, learner and quarantine-sink resident
memory) every
`--every` seconds; the slope of each against samples read is fitted by least squares over the readings after the
first `--warmup` of the stream (allocators and caches fill first), and printed in MiB per 10,000 samples, with the
checkpoint's size and its `state.json` (the ledger and the set of ids seen) the same way.

Writes `memory.csv` (every reading), `memory_table.md` and `.csv`, `memory.png` (memory against samples read) and the
run itself under `run/`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any, Sequence

import numpy as np

from ol_ray.bench.harness import write_csv, write_results
from ol_ray.config.schema import Config
from ol_ray.errors import ConfigError
from ol_ray.observe.plots import Panel, plot_panels

PER_SAMPLES = 10_000


BAD_ROWS = {"tsv": b"a row without its label field\n", "csv": b"too,many,fields,for,this,file,1\n",
            "jsonl": b"{not json\n"}
BAD_EVERY = 50  # one malformed row in this many: the quarantine grows through the run, as a real stream's does


def repeat_stream_file(path: str, kind: str, samples: int, out_path: str, bad_every: int = BAD_EVERY) -> str:
    """Write `samples` data rows to `out_path`: the rows of the TSV, CSV or JSONL file at `path` over and over, under
    its header line (TSV, CSV), every `bad_every`-th a malformed one (0: none). Returns `out_path`."""
    if kind not in ("tsv", "csv", "jsonl"):
        raise ConfigError(f"bench memory repeats a TSV, CSV or JSONL stream file; {path} is {kind}")
    with open(path, "rb") as handle:
        header = handle.readline() if kind != "jsonl" else b""
        rows = [line if line.endswith(b"\n") else line + b"\n" for line in handle if line.strip()]
    if kind == "jsonl" and header.strip():
        rows.insert(0, header if header.endswith(b"\n") else header + b"\n")
    if not rows:
        raise ConfigError(f"stream file {path} has no rows to repeat")
    with open(out_path, "wb") as handle:
        if kind != "jsonl":
            handle.write(header)
        for index in range(samples):
            bad = bad_every and index % bad_every == bad_every - 1
            handle.write(BAD_ROWS[kind] if bad else rows[index % len(rows)])
    return out_path


def slope_per_samples(samples: Sequence[float], values: Sequence[float]) -> float:
    """The least-squares slope of `values` against `samples`, per PER_SAMPLES samples (0 with under two points)."""
    if len(samples) < 2 or np.ptp(samples) == 0:
        return 0.0
    return float(np.polyfit(np.asarray(samples, float), np.asarray(values, float), 1)[0] * PER_SAMPLES)


SERIES = (("driver RSS", "monitor", "driver_rss_mb"), ("learner RSS", "monitor", "learner_rss_mb"),
          ("quarantine sink RSS", "monitor", "quarantine_rss_mb"),
          ("checkpoint", "checkpoint", "checkpoint_mb"), ("checkpoint state.json", "checkpoint", "state_mb"))


def series_points(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """(samples read, MiB) of each series: the monitor's readings and the checkpoints' sizes in metrics.jsonl."""
    return {name: [(r["samples_read"], r[key]) for r in records if r["kind"] == kind and r.get(key)]
            for name, kind, key in SERIES}


def memory_rows(records: list[dict[str, Any]], samples: int, warmup: float) -> list[dict[str, Any]]:
    """Per series (driver RSS, learner RSS, checkpoint size, its state.json), the value after the warm-up, at the
    end and at peak, and the fitted slope per PER_SAMPLES samples after the warm-up."""
    rows = []
    for name, points in series_points(records).items():
        late = [(x, y) for x, y in points if x >= warmup * samples]
        if not late:
            continue
        xs, ys = zip(*late)
        rows.append({"series": name, "readings": len(late), "after_warmup_mb": ys[0], "end_mb": ys[-1],
                     "peak_mb": max(y for _, y in points),
                     f"slope_mb_per_{PER_SAMPLES // 1000}k_samples": slope_per_samples(xs, ys)})
    return rows


def memory(cfg: Config, samples: int = 100_000, every_s: float = 2.0, warmup: float = 0.2,
           out_dir: str = "runs/bench-memory") -> list[dict[str, Any]]:
    """Run the long stream, write the CSVs, table and plot, and return the table's rows."""
    from ol_ray.config.checks import check
    from ol_ray.data.source import detect_format
    from ol_ray.driver.pipeline import run_pipeline
    from ol_ray.driver.preflight import resolve_paths
    from ol_ray.models.loading import save_tiny_classifier
    from ol_ray.observe.report import read_run

    cfg = resolve_paths(cfg)
    if cfg.stream.source != "file":
        raise ConfigError(f"bench memory repeats a stream file; stream.source is {cfg.stream.source}")
    os.makedirs(out_dir, exist_ok=True)
    kind = detect_format(cfg.stream.path, cfg.stream.format)
    long_path = repeat_stream_file(cfg.stream.path, kind, samples, os.path.join(out_dir, f"stream.{kind}"))
    tiny = save_tiny_classifier(os.path.join(out_dir, "tiny-model"), cfg.model.name_or_path, cfg.model.num_labels)
    run_dir = os.path.join(out_dir, "run")
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        raise ConfigError(f"{run_dir} holds an earlier run; give another --out or remove it")
    run_cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, name_or_path=tiny),
        stream=dataclasses.replace(cfg.stream, path=long_path, format=kind, shuffle_seed=None, max_samples=samples,
                                   rate=0.0, id_field=""),  # ids from row numbers: a repeat is a new row
        learner=dataclasses.replace(cfg.learner, max_updates=0),
        output=dataclasses.replace(cfg.output, run_dir=run_dir, progress=False, monitor_every_s=every_s))
    check(run_cfg)
    started = time.perf_counter()
    summary = run_pipeline(run_cfg)
    wall = time.perf_counter() - started
    records, _ = read_run(run_dir)
    write_csv(os.path.join(out_dir, "memory.csv"),
              [{key: r.get(key) for key in ("kind", "samples_read", "update", "driver_rss_mb", "learner_rss_mb",
                                            "quarantine_rss_mb", "checkpoint_mb", "state_mb", "time")}
               for r in records if r["kind"] in ("monitor", "checkpoint")])
    rows = memory_rows(records, summary["samples_read"], warmup)
    print(f"{summary['samples_read']} samples read, {summary['samples_trained']} trained in {summary['updates']} "
          f"updates, {wall:.0f} s ({summary['samples_read'] / wall:.0f} samples/s read)")
    print(write_results(rows, out_dir, "memory_table"))
    plot(records, os.path.join(out_dir, "memory.png"), f"{summary['samples_read']} samples, tiny model")
    return rows


def plot(records: list[dict[str, Any]], path: str, title: str) -> None:
    rss, saved = Panel("samples read", "resident memory (MiB)"), Panel("samples read", "checkpoint size (MiB)")
    for name, points in series_points(records).items():
        if points:
            (rss if name.endswith("RSS") else saved).add(name, *zip(*points))
    plot_panels([panel for panel in (rss, saved) if panel.lines], path, title, columns=2)


HELP = "driver and learner memory over a long stream (a tiny model)"
DESCRIPTION = ("The configured pipeline with a tiny model over the configured stream file repeated to "
               "--samples rows: resident memory of the driver and the learner and the checkpoint size against "
               "samples read, and their slopes per 10,000 samples after the warm-up.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ol-ray bench memory` (after the config and its overrides)."""
    parser.add_argument("--samples", type=int, default=100_000, help="rows to stream (default 100000)")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between memory readings (default 2)")
    parser.add_argument("--warmup", type=float, default=0.2, help="share of the stream before the slope is fitted "
                                                                  "(default 0.2)")
    parser.add_argument("--out", default="runs/bench-memory", help="where the CSVs, markdown, PNG and run go")


def main(cfg: Config, args: argparse.Namespace) -> int:
    """`ol-ray bench memory` with parsed arguments."""
    memory(cfg, samples=args.samples, every_s=args.every, warmup=args.warmup, out_dir=args.out)
    return 0
