"""`ol-ray bench batching`: each batch-size policy on the same sample budget, in the shared plain loop.

    ol-ray bench batching configs/sst2.yaml --policies fixed adaptive uncertainty resource periodic min_of --seeds 0 1 2

For each (policy, seed): a fresh copy of the configured model (head seeded by the seed), the configured stream in the
seed's shuffled order, fed in chunks of `--chunk` candidates scored with the learner's current weights, trained until
`--samples` samples (every policy gets the same budget). The selection is what the config says, with a pool of
B x selection.pool_size / batching.batch_size at every B. Dev accuracy is measured every `--eval-every` trained
samples, so the curves of all policies share their x positions.

Writes `batching.csv` (every evaluation), `batching_updates.csv` (every update: batch size, learning rate, wall time,
RSS), `batching_table.md` and `.csv` (per policy, means over seeds: final accuracy and the mean of the last three
evaluations, updates, mean B, wall time and its ratio to `fixed`, peak RSS and measured memory per sample) and
`batching.png` (dev accuracy against samples and wall time, batch size against samples), and prints the table.
`--from-dir` re-summarises an earlier run's CSVs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from ol_ray.bench.harness import mean_curve, read_csv, seeded, write_csv, write_results
from ol_ray.bench.loop import read_stream, run_plain
from ol_ray.config.schema import Config
from ol_ray.observe.plots import Panel, plot_panels


def policy_config(cfg: Config, policy: str) -> Config:
    """The config with `policy` as its batch policy; min_of combines batching.policies, or adaptive and resource."""
    batching = dataclasses.replace(cfg.batching, policy=policy)
    if policy == "min_of" and not batching.policies:
        batching = dataclasses.replace(batching, policies=("adaptive", "resource"))
    return dataclasses.replace(cfg, batching=batching)


LAST_EVALS = 3  # the late accuracy averages the last evaluations: at a constant learning rate one point is noisy


def summarise(runs: dict[str, list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]]) -> list[dict[str, Any]]:
    """One row per policy: means over seeds (final accuracy, and the mean of the last LAST_EVALS evaluations), wall
    time as a ratio to `fixed` (or the first policy)."""
    rows = []
    for policy, seeds in runs.items():
        finals = [evals[-1]["dev_accuracy"] for evals, _ in seeds]
        lasts = [np.mean([e["dev_accuracy"] for e in evals[-LAST_EVALS:]]) for evals, _ in seeds]
        rows.append({
            "policy": policy, "seeds": len(seeds),
            "final_accuracy": float(np.mean(finals)), "final_accuracy_sd": float(np.std(finals)),
            "last_evals_accuracy": float(np.mean(lasts)), "last_evals_accuracy_sd": float(np.std(lasts)),
            "samples_trained": float(np.mean([updates[-1]["samples_trained"] for _, updates in seeds])),
            "updates": float(np.mean([len(updates) for _, updates in seeds])),
            "mean_batch": float(np.mean([np.mean([u["batch_size"] for u in updates]) for _, updates in seeds])),
            "max_batch": int(max(max(u["batch_size"] for u in updates) for _, updates in seeds)),
            "wall_s": float(np.mean([evals[-1]["wall_s"] for evals, _ in seeds])),
            "peak_rss_mb": float(max(max(u["rss_mb"] for u in updates) for _, updates in seeds)),
            "memory_per_sample_mb": float(np.mean([max(float(u.get("memory_per_sample_mb") or 0.0) for u in updates)
                                                   for _, updates in seeds])),
        })
    base = next((row for row in rows if row["policy"] == "fixed"), rows[0])
    for row in rows:
        row["wall_vs_fixed"] = row["wall_s"] / base["wall_s"] if base["wall_s"] else float("nan")
    return rows


def plot(runs: dict[str, list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]], path: str, title: str) -> None:
    """Dev accuracy (mean over seeds) against samples trained and wall time; batch size of seed 0 against samples."""
    panels = [Panel("samples trained", "dev accuracy"), Panel("wall time (s)", "dev accuracy"),
              Panel("samples trained", "batch size (seed 0)", step=True, log_y=True)]
    for policy, seeds in runs.items():
        evals = [evals for evals, _ in seeds]
        panels[0].add(policy, *mean_curve(evals, "samples_trained", "dev_accuracy"))
        panels[1].add(policy, *mean_curve(evals, "wall_s", "dev_accuracy"))
        updates = seeds[0][1]
        panels[2].add(policy, [u["samples_trained"] for u in updates], [u["batch_size"] for u in updates])
    plot_panels(panels, path, title, legend=lambda index: index == 2)


def runs_from_csv(out_dir: str) -> dict[str, list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]]:
    """The runs of an earlier `ol-ray bench batching`, from its batching.csv and batching_updates.csv."""
    points = read_csv(os.path.join(out_dir, "batching.csv"))
    steps = read_csv(os.path.join(out_dir, "batching_updates.csv"))
    runs: dict[str, list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]] = {}
    for policy in dict.fromkeys(p["policy"] for p in points):
        for seed in dict.fromkeys(p["seed"] for p in points if p["policy"] == policy):
            runs.setdefault(policy, []).append(
                ([p for p in points if (p["policy"], p["seed"]) == (policy, seed)],
                 [u for u in steps if (u["policy"], u["seed"]) == (policy, seed)]))
    return runs


def report(runs: dict[str, list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]], out_dir: str,
           title: str) -> list[dict[str, Any]]:
    """The markdown/CSV table and the PNG of a set of runs; prints the table."""
    rows = summarise(runs)
    print(write_results(rows, out_dir, "batching_table"))
    plot(runs, os.path.join(out_dir, "batching.png"), title)
    return rows


def batching(cfg: Config, policies: Sequence[str], seeds: Sequence[int] = (0, 1, 2), samples: int = 3200,
             chunk: int = 16, eval_every: int = 400, out_dir: str = "runs/bench-batching") -> list[dict[str, Any]]:
    """Run every (policy, seed), write the CSVs, markdown table and PNG, and return the table's rows."""
    from ol_ray.config.checks import check
    from ol_ray.driver.preflight import resolve_paths

    cfg = resolve_paths(cfg)
    os.makedirs(out_dir, exist_ok=True)
    ratio = cfg.selection.pool_size / cfg.batching.batch_size
    needed = int(samples * ratio) + 2 * int(cfg.batching.max_batch_size * ratio) + chunk
    runs: dict[str, list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]] = {}
    points: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for seed in seeds:
        seed_cfg = seeded(cfg, seed)
        stream = read_stream(seed_cfg, needed, 0.0, seed)
        for policy in policies:
            run_cfg = policy_config(dataclasses.replace(
                seed_cfg, learner=dataclasses.replace(cfg.learner, max_updates=0),
                eval=dataclasses.replace(cfg.eval, every_updates=10**9, at_start=True)), policy)
            check(run_cfg)
            evals, updates = run_plain(run_cfg, stream, chunk=chunk, max_samples=samples,
                                       eval_every_samples=eval_every)
            runs.setdefault(policy, []).append((evals, updates))
            points.extend({"policy": policy, "seed": seed, "update": e["update"],
                           "samples_trained": e["samples_trained"], "wall_s": e["wall_s"],
                           "dev_accuracy": e["dev_accuracy"], "dev_loss": e["dev_loss"]} for e in evals)
            steps.extend({"policy": policy, "seed": seed, "update": u["update"], "batch_size": u["batch_size"],
                          "pool_size": u["pool_size"], "samples_trained": u["samples_trained"], "lr": u["lr"],
                          "loss": u["sample_loss_mean"], "noise_scale": u.get("noise_scale", ""),
                          "memory_per_sample_mb": u.get("memory_per_sample_mb", ""), "rss_mb": u["rss_mb"],
                          "wall_s": u["wall_s"]} for u in updates)
            print(f"{policy:>12} seed {seed}: dev accuracy {evals[-1]['dev_accuracy']:.4f} after "
                  f"{evals[-1]['samples_trained']} samples in {len(updates)} updates, {evals[-1]['wall_s']:.0f} s",
                  flush=True)
            write_csv(os.path.join(out_dir, "batching.csv"), points)
            write_csv(os.path.join(out_dir, "batching_updates.csv"), steps)
    return report(runs, out_dir, f"{len(seeds)} seed(s), {samples} samples each, bounds "
                                 f"[{cfg.batching.min_batch_size}, {cfg.batching.max_batch_size}], reference batch "
                                 f"{cfg.batching.batch_size}")


HELP = "batch-size policies on the same sample budget (a plain loop, no Ray)"
DESCRIPTION = ("For each policy and seed: the config's stream scored with the current weights in chunks, "
               "trained until --samples samples; dev accuracy against samples and wall time, batch size over "
               "time, updates made and peak memory, wall time as a ratio to fixed.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ol-ray bench batching` (after the config and its overrides)."""
    parser.add_argument("--policies", nargs="+", default=["fixed", "adaptive", "uncertainty", "resource", "periodic",
                                                          "min_of"], help="policies to compare (fixed is the baseline)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--samples", type=int, default=3200, help="trained samples per run (default 3200)")
    parser.add_argument("--chunk", type=int, default=16, help="candidates scored per step of the stream (default 16)")
    parser.add_argument("--eval-every", type=int, default=400, help="trained samples between evaluations (400)")
    parser.add_argument("--out", default="runs/bench-batching", help="where the CSVs, markdown and PNG go")
    parser.add_argument("--from-dir", metavar="DIR",
                        help="run nothing: summarise and plot an earlier run's batching.csv and batching_updates.csv")


def main(cfg: Config, args: argparse.Namespace) -> int:
    """`ol-ray bench batching` with parsed arguments."""
    if args.from_dir:
        report(runs_from_csv(args.from_dir), args.out, f"from {args.from_dir}")
        return 0
    batching(cfg, args.policies, seeds=args.seeds, samples=args.samples, chunk=args.chunk,
             eval_every=args.eval_every, out_dir=args.out)
    return 0
