"""`ol-ray bench pipeline`: the Ray pipeline against a plain single-process loop doing the same work, in one run.

    ol-ray bench pipeline configs/sst2.yaml --updates 200 --pool 32 --batch 16 --seeds 0

Both sides get the same model, the same stream rows in the same order (the seed's shuffle), the same selection rule
(`--strategy` scoring a pool of `--pool` candidates and training on `--batch` of them), the same number of updates,
the same evaluation schedule and the same cores. The plain loop is `bench_loop.run_plain`: read and tokenize, score
with the current weights, select, update, in one process, torch using as many threads as the pipeline has CPUs, no
Ray. The pipeline is `run_pipeline`: Ray Data validation, tokenization and scorer actors, the learner actor, weight
publishing, checkpoints. Each side's clock starts before anything is loaded (the pipeline's includes starting Ray).

Both sides' figures come from their learners' own records, measured the same way: wall time to the last update or
evaluation; trained samples per second over it, and between the first and the last update (`steady`); time to the
first update; learner utilisation (the share of the wall time spent in update steps and evaluations); mean and max
staleness of the scores trained on (the plain loop's are fresh: 0); final dev accuracy. The pipeline's speed figures
are ratios to the plain loop's. Writes `pipeline.csv` (a row per seed and side) and `pipeline_table.md` and `.csv`
(means over seeds, and the ratios), and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any, Sequence

import numpy as np

from ol_ray.bench.harness import seeded, write_csv, write_results
from ol_ray.config.schema import Config
from ol_ray.errors import ConfigError

SPEED = ("trained_samples_per_s", "steady_samples_per_s")


def side_figures(records: Sequence[dict[str, Any]], started: float) -> dict[str, Any]:
    """The figures of one side from its learner's update and eval records (each with `time`, epoch seconds) and the
    epoch second its clock started."""
    updates = [r for r in records if r["kind"] == "update"]
    evals = [r for r in records if r["kind"] == "eval"]
    if not updates:
        raise ValueError("the run made no update, so there is nothing to compare")
    ended = max(r["time"] for r in updates + evals)
    wall = ended - started
    trained = updates[-1]["samples_trained"]
    steady_s = updates[-1]["time"] - updates[0]["time"]
    busy = sum(r["step_s"] for r in updates) + sum(r.get("eval_s", 0.0) for r in evals)
    staleness_mean = sum(r["staleness_mean"] * r["batch_size"] for r in updates) / sum(r["batch_size"] for r in updates)
    return {"updates": len(updates), "samples_trained": trained, "wall_s": wall,
            "trained_samples_per_s": trained / wall,
            "steady_samples_per_s": (trained - updates[0]["samples_trained"]) / steady_s if steady_s > 0 else 0.0,
            "first_update_s": updates[0]["time"] - started, "learner_utilisation": busy / wall,
            "staleness_mean": staleness_mean, "staleness_max": max(r["staleness_max"] for r in updates),
            "dev_accuracy": evals[-1]["dev_accuracy"] if evals else float("nan")}


def bench_config(cfg: Config, updates: int, pool: int, batch: int, strategy: str, seed: int) -> Config:
    """The config both sides run: the seed's stream order, the pool and batch, `updates` updates' worth of rows."""
    cfg = seeded(cfg, seed)
    return dataclasses.replace(
        cfg, stream=dataclasses.replace(cfg.stream, max_samples=pool * updates, rate=0.0),
        selection=dataclasses.replace(cfg.selection, strategy=strategy, pool_size=pool),
        batching=dataclasses.replace(cfg.batching, policy="fixed", batch_size=batch),
        learner=dataclasses.replace(cfg.learner, max_updates=updates),
        output=dataclasses.replace(cfg.output, progress=False))


def run_plain_side(cfg: Config, updates: int, pool: int, cores: int) -> dict[str, Any]:
    from ol_ray.bench.loop import read_stream, run_plain

    cfg = dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, torch_threads=cores))
    started, clock = time.time(), time.perf_counter()
    stream = read_stream(cfg, pool * updates, 0.0, cfg.model.seed)
    evals, steps = run_plain(cfg, stream, chunk=pool, max_updates=updates, started=clock)
    return side_figures([dict(r, kind="eval") for r in evals] + [dict(r, kind="update") for r in steps], started)


def run_pipeline_side(cfg: Config, run_dir: str) -> dict[str, Any]:
    from ol_ray.driver.pipeline import run_pipeline
    from ol_ray.observe.report import read_run

    cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, run_dir=run_dir))
    started = time.time()
    summary = run_pipeline(cfg)
    records, _ = read_run(run_dir)
    return {**side_figures(records, started), "accounting_ok": summary["accounting_ok"],
            "weight_publishes": summary.get("weight_publishes", 0)}


def pipeline(cfg: Config, updates: int = 200, pool: int = 32, batch: int = 16, strategy: str = "entropy",
             seeds: Sequence[int] = (0,), out_dir: str = "runs/bench-pipeline",
             plain_threads: int = 0) -> list[dict[str, Any]]:
    """Run both sides for every seed, write the CSVs and the markdown table, and return the table's rows. The plain
    loop's torch uses `plain_threads` threads (0: as many as the pipeline has CPUs)."""
    from ol_ray.config.checks import check
    from ol_ray.driver.preflight import resolve_paths

    cfg = resolve_paths(cfg)
    os.makedirs(out_dir, exist_ok=True)
    cores = cfg.ray.num_cpus or os.cpu_count() or 1
    used = [seed for seed in seeds if os.path.isdir(os.path.join(out_dir, f"pipeline-seed{seed}"))]
    if used:  # before the plain side spends minutes: a run directory is never overwritten
        raise ConfigError(f"{out_dir} already holds pipeline runs of seeds {used}; give another --out")
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        run_cfg = bench_config(cfg, updates, pool, batch, strategy, seed)
        check(run_cfg)
        plain = run_plain_side(run_cfg, updates, pool, plain_threads or cores)
        rows.append({"seed": seed, "side": "plain loop", **plain})
        print(f"plain loop seed {seed}: {plain['trained_samples_per_s']:.1f} trained samples/s over "
              f"{plain['wall_s']:.0f} s", flush=True)
        piped = run_pipeline_side(run_cfg, os.path.join(out_dir, f"pipeline-seed{seed}"))
        rows.append({"seed": seed, "side": "pipeline", **piped})
        print(f"  pipeline seed {seed}: {piped['trained_samples_per_s']:.1f} trained samples/s over "
              f"{piped['wall_s']:.0f} s", flush=True)
        write_csv(os.path.join(out_dir, "pipeline.csv"), rows)
    table = summarise(rows)
    print(write_results(table, out_dir, "pipeline_table"))
    return table


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per side, means over seeds; the pipeline's speed figures also as ratios to the plain loop's, seed by seed."""
    keys = ("updates", "samples_trained", "wall_s", *SPEED, "first_update_s", "learner_utilisation",
            "staleness_mean", "staleness_max", "dev_accuracy")
    table = []
    for side in ("plain loop", "pipeline"):
        runs = [r for r in rows if r["side"] == side]
        table.append({"side": side, "seeds": len(runs), **{k: float(np.mean([r[k] for r in runs])) for k in keys}})
    for key in SPEED:
        ratios = [p[key] / q[key] for p, q in zip([r for r in rows if r["side"] == "pipeline"],
                                                  [r for r in rows if r["side"] == "plain loop"]) if q[key]]
        table[0][f"{key}_ratio"] = 1.0
        table[1][f"{key}_ratio"] = float(np.mean(ratios)) if ratios else float("nan")
    return table


HELP = "the Ray pipeline against a plain single-process loop doing the same work"
DESCRIPTION = ("For each seed, a plain single-process loop (no Ray) and the Ray pipeline, both scoring pools "
               "of --pool with the current weights and training on --batch chosen by --strategy, for --updates "
               "updates, on the same cores: trained samples/s and their ratio, learner utilisation, staleness, "
               "time to the first update.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ol-ray bench pipeline` (after the config and its overrides)."""
    parser.add_argument("--updates", type=int, default=200, help="updates per side (default 200)")
    parser.add_argument("--pool", type=int, default=32, help="candidates scored per update (default 32)")
    parser.add_argument("--batch", type=int, default=16, help="samples trained per update (default 16)")
    parser.add_argument("--strategy", default="entropy", help="the selection strategy (default entropy: the top "
                                                              "--batch of each pool by uncertainty)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default 0)")
    parser.add_argument("--plain-threads", type=int, default=0,
                        help="torch threads of the plain loop (default 0: as many as the pipeline has CPUs; the "
                             "pipeline's learner thread count makes both sides do the same arithmetic)")
    parser.add_argument("--out", default="runs/bench-pipeline", help="where the CSVs, markdown and runs go")


def main(cfg: Config, args: argparse.Namespace) -> int:
    """`ol-ray bench pipeline` with parsed arguments."""
    pipeline(cfg, updates=args.updates, pool=args.pool, batch=args.batch, strategy=args.strategy,
             seeds=args.seeds, out_dir=args.out, plain_threads=args.plain_threads)
    return 0
