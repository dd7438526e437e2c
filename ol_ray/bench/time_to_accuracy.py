"""`ol-ray bench time-to-accuracy`: wall time and trained samples until dev accuracy first reaches each target, for
plain fine-tuning, the pipeline selecting at random, and the pipeline as configured (the default job).

    ol-ray bench time-to-accuracy configs/sst2.yaml --targets 0.80 0.83 0.85 0.87 --seeds 0 1 2

The arms, each seed in turn on the same machine, each from a cold start (its clock includes loading the model and,
for the pipeline, starting Ray):
- `finetune`: the method's own example: one process, random batches of `--finetune-batch` (32), no scoring, AdamW at
  `--finetune-lr` (5e-5) with no schedule, fp32, torch on every core (`bench_loop.run_plain` with random selection
  and a pool equal to the batch); it stops after `--samples` trained samples;
- `pipeline_random`: the configured pipeline with `selection.strategy=random` and a pool equal to the batch (no
  scorer model: stream -> tokenize -> learner), the same `--samples` budget;
- `pipeline`: the configured pipeline as it is, with its own stream budget.
Every arm evaluates on the configured dev set after each `--eval-every` trained samples; evaluations count in the
wall time. A target's time and samples are those of the first evaluation at or above it.

Writes `time_to_accuracy.csv` (every evaluation), `time_to_accuracy_table.md` and `.csv` (per arm and target: seeds
that reached it, mean wall seconds and trained samples to it, and both as a ratio to `finetune`'s) and
`time_to_accuracy.png`, and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from typing import Any, Sequence

import numpy as np

from ol_ray.bench.harness import seeded, write_csv, write_results
from ol_ray.config.schema import Config
from ol_ray.errors import ConfigError
from ol_ray.observe.plots import Panel, plot_panels

ARMS = ("finetune", "pipeline_random", "pipeline")


def arm_config(cfg: Config, arm: str, seed: int, samples: int, eval_every: int, finetune_batch: int,
               finetune_lr: float) -> Config:
    """The config an arm runs for one seed."""
    cfg = seeded(cfg, seed)
    output = dataclasses.replace(cfg.output, progress=False)
    if arm == "finetune":  # fp32 on every core, as a plain script would run it
        cfg = dataclasses.replace(
            cfg, selection=dataclasses.replace(cfg.selection, strategy="random", pool_size=finetune_batch),
            batching=dataclasses.replace(cfg.batching, policy="fixed", batch_size=finetune_batch),
            learner=dataclasses.replace(cfg.learner, lr=finetune_lr, warmup_updates=0, decay_updates=0,
                                        precision="fp32", torch_threads=cfg.ray.num_cpus or os.cpu_count() or 1))
    elif arm == "pipeline_random":
        cfg = dataclasses.replace(
            cfg, selection=dataclasses.replace(cfg.selection, strategy="random", pool_size=cfg.batching.batch_size))
    if arm != "pipeline":
        cfg = dataclasses.replace(cfg, stream=dataclasses.replace(cfg.stream, max_samples=samples, rate=0.0))
    every = max(1, eval_every // cfg.batching.batch_size)
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, every_updates=every), output=output)


def run_finetune(cfg: Config, samples: int) -> list[dict[str, Any]]:
    from ol_ray.bench.loop import read_stream, run_plain

    started = time.perf_counter()
    stream = read_stream(cfg, samples, 0.0, cfg.model.seed)
    evals, _ = run_plain(cfg, stream, chunk=cfg.batching.batch_size, max_samples=samples, started=started)
    return [{"samples_trained": r["samples_trained"], "wall_s": r["wall_s"], "dev_accuracy": r["dev_accuracy"]}
            for r in evals]


def run_pipeline_arm(cfg: Config, run_dir: str) -> list[dict[str, Any]]:
    from ol_ray.driver.pipeline import run_pipeline
    from ol_ray.observe.report import read_run

    cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, run_dir=run_dir))
    started = time.time()
    run_pipeline(cfg)
    records, _ = read_run(run_dir)
    return [{"samples_trained": r["samples_trained"], "wall_s": r["time"] - started,
             "dev_accuracy": r["dev_accuracy"]} for r in records if r["kind"] == "eval"]


def first_reach(evals: Sequence[dict[str, Any]], target: float) -> tuple[float, float]:
    """(wall seconds, trained samples) at the first evaluation at or above `target`; NaN, NaN if none was."""
    hit = next((r for r in evals if r["dev_accuracy"] >= target), None)
    return (float(hit["wall_s"]), float(hit["samples_trained"])) if hit else (math.nan, math.nan)


def summarise(curves: dict[tuple[str, int], list[dict[str, Any]]], targets: Sequence[float]) -> list[dict]:
    """Per arm and target: seeds that reached it and the means over those of wall time and samples, with the ratio
    of their sums to finetune's over the seeds where both reached it."""
    arms = list(dict.fromkeys(arm for arm, _ in curves))
    rows = []
    for target in targets:
        reached = {arm: {seed: first_reach(evals, target) for (name, seed), evals in curves.items() if name == arm}
                   for arm in arms}
        for arm in arms:
            hits = {seed: value for seed, value in reached[arm].items() if not math.isnan(value[0])}
            row: dict[str, Any] = {"target": target, "arm": arm, "reached": f"{len(hits)}/{len(reached[arm])}",
                                   "wall_s": float(np.mean([w for w, _ in hits.values()])) if hits else math.nan,
                                   "samples": float(np.mean([s for _, s in hits.values()])) if hits else math.nan}
            base = reached.get("finetune", {})
            both = [seed for seed in hits if seed in base and not math.isnan(base[seed][0])]
            for key, index in (("wall_s", 0), ("samples", 1)):  # a ratio of means: a start at 0 s divides nothing
                ours, theirs = (sum(hits[s][index] for s in both), sum(base[s][index] for s in both))
                row[f"{key}_vs_finetune"] = ours / theirs if both and theirs > 0 else math.nan
            rows.append(row)
    return rows


def time_to_accuracy(cfg: Config, targets: Sequence[float] = (0.80, 0.83, 0.85, 0.87), seeds: Sequence[int] = (0,),
                     arms: Sequence[str] = ARMS, samples: int = 12_800, eval_every: int = 800,
                     finetune_batch: int = 32, finetune_lr: float = 5e-5,
                     out_dir: str = "runs/bench-time-to-accuracy") -> list[dict[str, Any]]:
    """Run every arm for every seed, write the CSVs, table and plot, and return the table's rows."""
    from ol_ray.config.checks import check
    from ol_ray.driver.preflight import resolve_paths

    cfg = resolve_paths(cfg)
    if not cfg.eval.path:
        raise ConfigError("bench time-to-accuracy needs a dev set: set eval.path")
    used = [d for d in os.listdir(out_dir) if d.startswith("pipeline")] if os.path.isdir(out_dir) else []
    if used:
        raise ConfigError(f"{out_dir} already holds pipeline runs ({', '.join(sorted(used))}); give another --out")
    os.makedirs(out_dir, exist_ok=True)
    curves: dict[tuple[str, int], list[dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for arm in arms:
            run_cfg = arm_config(cfg, arm, seed, samples, eval_every, finetune_batch, finetune_lr)
            check(run_cfg)
            evals = (run_finetune(run_cfg, samples) if arm == "finetune"
                     else run_pipeline_arm(run_cfg, os.path.join(out_dir, f"{arm}-seed{seed}")))
            curves[(arm, seed)] = evals
            rows.extend({"arm": arm, "seed": seed, **r} for r in evals)
            write_csv(os.path.join(out_dir, "time_to_accuracy.csv"), rows)
            print(f"{arm} seed {seed}: dev accuracy {evals[-1]['dev_accuracy']:.3f} after "
                  f"{evals[-1]['samples_trained']} samples, {evals[-1]['wall_s']:.0f} s", flush=True)
    table = summarise(curves, targets)
    print(write_results(table, out_dir, "time_to_accuracy_table"))
    plot(curves, os.path.join(out_dir, "time_to_accuracy.png"), targets)
    return table


def plot(curves: dict[tuple[str, int], list[dict[str, Any]]], path: str, targets: Sequence[float]) -> None:
    by_time, by_samples = Panel("wall seconds", "dev accuracy"), Panel("samples trained", "dev accuracy")
    for (arm, seed), evals in curves.items():
        label = f"{arm} (seed {seed})"
        by_time.add(label, [r["wall_s"] for r in evals], [r["dev_accuracy"] for r in evals])
        by_samples.add(label, [r["samples_trained"] for r in evals], [r["dev_accuracy"] for r in evals])
    plot_panels([by_time, by_samples], path, f"time to accuracy (targets {', '.join(map(str, targets))})", columns=2)


HELP = "wall time and samples to dev-accuracy targets: fine-tuning vs the pipeline"
DESCRIPTION = ("Plain fine-tuning (random batches, no scoring, AdamW), the pipeline selecting at random and the "
               "pipeline as configured, each seed from a cold start: wall time and trained samples until the "
               "dev accuracy first reaches each target.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ol-ray bench time-to-accuracy` (after the config and its overrides)."""
    parser.add_argument("--targets", type=float, nargs="+", default=[0.80, 0.83, 0.85, 0.87], help="dev accuracies")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--arms", nargs="+", default=["finetune", "pipeline_random", "pipeline"],
                        choices=["finetune", "pipeline_random", "pipeline"], help="arms to run")
    parser.add_argument("--samples", type=int, default=12_800,
                        help="trained samples of finetune and pipeline_random (the pipeline keeps its config's budget)")
    parser.add_argument("--eval-every", type=int, default=800, help="evaluate every this many trained samples")
    parser.add_argument("--finetune-batch", type=int, default=32, help="fine-tuning's batch size (default 32)")
    parser.add_argument("--finetune-lr", type=float, default=5e-5, help="fine-tuning's AdamW learning rate")
    parser.add_argument("--out", default="runs/bench-time-to-accuracy",
                        help="where the CSVs, markdown, PNG and runs go")


def main(cfg: Config, args: argparse.Namespace) -> int:
    """`ol-ray bench time-to-accuracy` with parsed arguments."""
    time_to_accuracy(cfg, args.targets, seeds=args.seeds, arms=args.arms, samples=args.samples,
                     eval_every=args.eval_every, finetune_batch=args.finetune_batch,
                     finetune_lr=args.finetune_lr, out_dir=args.out)
    return 0
