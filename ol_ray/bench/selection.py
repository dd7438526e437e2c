"""`ol-ray bench selection`: the sample efficiency of each selection strategy, in a plain single-process loop.

    ol-ray bench selection configs/sst2.yaml --strategies random entropy loss --seeds 0 1 2 --updates 200

For each (strategy, pool size, seed): a fresh copy of the configured model (head seeded by the seed), the configured
stream in the seed's shuffled order (optionally with a share of its labels flipped), and the learner's own code
(`OnlineLearner`: selection, weighted update, evaluation) fed pools scored with the learner's current weights by
`score_samples` (fresh scores, no staleness: what a strategy can do at best). Every run makes the same number of
updates of the same batch size; dev accuracy is measured every `--eval-every` updates. rho_loss first trains its
irreducible-loss model on the stream's first `selection.holdout_size` rows, which the run then skips.

Writes `selection.csv` (every evaluation), `selection_table.md` and `.csv` (per strategy and pool: final accuracy,
trained samples and wall time to reach `--target`, each as a ratio to `random` at the same pool size, and the
samples needed to reach random's final accuracy) and `selection.png` (dev accuracy against samples trained, updates
and wall time), and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from typing import Any, Optional, Sequence

import numpy as np

from ol_ray.bench.harness import mean_curve, read_csv, seeded, write_csv, write_results
from ol_ray.bench.loop import Stream, read_stream, run_plain
from ol_ray.config.schema import Config
from ol_ray.observe.plots import Panel, plot_panels


def reach(evals: list[dict[str, Any]], target: float, key: str) -> float:
    """`key` (samples trained, wall time) at the first evaluation at or above the target accuracy; NaN if never."""
    return next((float(r[key]) for r in evals if r["dev_accuracy"] >= target), math.nan)


def summarise(curves: dict[tuple[str, int], list[list[dict[str, Any]]]], target: float) -> list[dict[str, Any]]:
    """One row per (strategy, pool): means over seeds, ratios to random at the same pool size (or, where random
    did not run at that size, at any size), and the trained samples each strategy needed to reach random's final
    accuracy as a share of random's (the issue's target: at most 0.5), averaged over the seeds that reached it
(`reached_random_final` says how many)."""
    rows = []
    for (strategy, pool), runs in curves.items():
        finals = [run[-1]["dev_accuracy"] for run in runs]
        samples = [reach(run, target, "samples_trained") for run in runs]
        walls = [reach(run, target, "wall_s") for run in runs]
        reached = [s for s in samples if not math.isnan(s)]
        rows.append({"strategy": strategy, "pool": pool, "seeds": len(runs),
                     "final_accuracy": float(np.mean(finals)), "final_accuracy_sd": float(np.std(finals)),
                     "reached_target": f"{len(reached)}/{len(runs)}",
                     "samples_to_target": float(np.mean(reached)) if reached else math.nan,
                     "wall_s_to_target": float(np.nanmean(walls)) if reached else math.nan,
                     "wall_s": float(np.mean([run[-1]["wall_s"] for run in runs]))})
    for row in rows:
        randoms = [r for r in rows if r["strategy"] == "random"]
        base = next((r for r in randoms if r["pool"] == row["pool"]), randoms[0] if randoms else None)
        for key in ("samples_to_target", "wall_s_to_target", "final_accuracy"):
            row[f"{key}_vs_random"] = row[key] / base[key] if base and base[key] else math.nan
        runs = curves[(row["strategy"], row["pool"])]
        base_runs = curves[("random", base["pool"])] if base else []
        shares = []
        for seed_run, base_run in zip(runs, base_runs):  # seed by seed: random's final accuracy and its samples
            needed = reach(seed_run, base_run[-1]["dev_accuracy"], "samples_trained")
            shares.append(needed / base_run[-1]["samples_trained"] if base_run[-1]["samples_trained"] else math.nan)
        reached = [share for share in shares if not math.isnan(share)]
        row["samples_to_random_final_vs_random"] = float(np.mean(reached)) if reached else math.nan
        row["reached_random_final"] = f"{len(reached)}/{len(shares)}"
    return rows


def curves_from_csv(paths: Sequence[str]) -> dict[tuple[str, int], list[list[dict[str, Any]]]]:
    """The curves of earlier runs, from their selection.csv files (several runs' seeds merge)."""
    runs: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for path in paths:
        for point in read_csv(path):
            key = (point["strategy"], point["pool"], point["seed"])
            runs.setdefault(key, []).append({name: point[name] for name in ("update", "samples_trained", "wall_s",
                                                                            "dev_accuracy")})
    curves: dict[tuple[str, int], list[list[dict[str, Any]]]] = {}
    for (strategy, pool, seed), points in sorted(runs.items(), key=lambda item: item[0][2]):
        once = {p["update"]: p for p in reversed(points)}  # one point per update (older files repeat update 0)
        curves.setdefault((strategy, pool), []).append(sorted(once.values(), key=lambda p: p["update"]))
    return curves


def report(curves: dict[tuple[str, int], list[list[dict[str, Any]]]], target: float, out_dir: str,
           title: str) -> list[dict[str, Any]]:
    """The markdown/CSV table and the PNG of a set of curves; prints the table."""
    os.makedirs(out_dir, exist_ok=True)
    rows = summarise(curves, target)
    print(write_results(rows, out_dir, "selection_table"))
    plot(curves, os.path.join(out_dir, "selection.png"), title)
    return rows


def plot(curves: dict[tuple[str, int], list[list[dict[str, Any]]]], path: str, title: str) -> None:
    """Dev accuracy (mean over seeds) against samples trained, updates and wall time."""
    panels = [Panel(xlabel, "dev accuracy") for xlabel in ("samples trained", "updates", "wall time (s)")]
    for (strategy, pool), runs in curves.items():
        for panel, key in zip(panels, ("samples_trained", "update", "wall_s")):
            panel.add(f"{strategy} (pool {pool})", *mean_curve(runs, key, "dev_accuracy"))
    plot_panels(panels, path, title, legend=lambda index: index == 2)


def selection(cfg: Config, strategies: Sequence[str], seeds: Sequence[int] = (0, 1, 2), updates: int = 200,
              pools: Sequence[int] = (64,), batch_size: int = 16, eval_every: int = 20, target: float = 0.85,
              label_noise: float = 0.0, out_dir: str = "runs/bench-selection", mode: Optional[str] = None,
              dev_from_stream: int = 0) -> list[dict[str, Any]]:
    """Run every (strategy, pool, seed), write the CSV, markdown table and PNG, and return the table's rows.
    `dev_from_stream` > 0: the dev set is that many rows read after the training rows of the same stream (clean
    labels), for data sets without a separate dev file."""
    from ol_ray.config.checks import check
    from ol_ray.driver.preflight import resolve_paths

    cfg = resolve_paths(cfg)
    os.makedirs(out_dir, exist_ok=True)
    curves: dict[tuple[str, int], list[list[dict[str, Any]]]] = {}
    points: list[dict[str, Any]] = []
    for seed in seeds:
        needed = cfg.selection.holdout_size + updates * max(pools)
        seed_cfg = seeded(cfg, seed)
        stream = read_stream(seed_cfg, needed + dev_from_stream, label_noise, seed)
        dev = None
        if dev_from_stream:
            clean = read_stream(seed_cfg, needed + dev_from_stream, 0.0, seed)
            dev = Stream(clean.input_ids[needed:], clean.labels[needed:], clean.sample_ids[needed:])
            stream = Stream(stream.input_ids[:needed], stream.labels[:needed], stream.sample_ids[:needed])
        for pool in pools:
            for strategy in strategies:
                run_cfg = dataclasses.replace(
                    seed_cfg, selection=dataclasses.replace(seed_cfg.selection, strategy=strategy, pool_size=pool,
                                                            mode=mode or cfg.selection.mode),
                    batching=dataclasses.replace(cfg.batching, policy="fixed", batch_size=batch_size),
                    learner=dataclasses.replace(cfg.learner, max_updates=0, decay_updates=updates),
                    eval=dataclasses.replace(cfg.eval, every_updates=eval_every, at_start=True,
                                             path="" if dev_from_stream else cfg.eval.path))
                check(run_cfg)
                evals, _ = run_plain(run_cfg, stream, chunk=pool, max_updates=updates, dev=dev)
                curves.setdefault((strategy, pool), []).append(evals)
                points.extend({"strategy": strategy, "pool": pool, "seed": seed, "update": r["update"],
                               "samples_trained": r["samples_trained"], "wall_s": r["wall_s"],
                               "dev_accuracy": r["dev_accuracy"], "dev_loss": r["dev_loss"]} for r in evals)
                print(f"{strategy:>16} pool {pool:>4} seed {seed}: dev accuracy {evals[-1]['dev_accuracy']:.4f} "
                      f"after {evals[-1]['samples_trained']} samples, {evals[-1]['wall_s']:.0f} s", flush=True)
                write_csv(os.path.join(out_dir, "selection.csv"), points)
    noise = f", {label_noise:.0%} of labels flipped" if label_noise else ""
    return report(curves, target, out_dir, f"{len(seeds)} seed(s), {updates} updates of {batch_size}{noise}")


HELP = "sample efficiency of selection strategies against random (a plain loop, no Ray)"
DESCRIPTION = ("For each strategy, pool size and seed: the same number of updates of --batch samples chosen "
               "from pools of --pools candidates scored with the current weights; dev accuracy against "
               "samples trained, updates and wall time, and the samples and time to reach --target, as ratios "
               "to random.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ol-ray bench selection` (after the config and its overrides)."""
    parser.add_argument("--strategies", nargs="+", default=["random", "entropy", "loss"],
                        help="strategies to compare (random is the baseline)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--updates", type=int, default=200, help="updates per run (default 200)")
    parser.add_argument("--pools", type=int, nargs="+", default=[64], help="candidate pool sizes (default 64)")
    parser.add_argument("--batch", type=int, default=16, help="samples per update (default 16)")
    parser.add_argument("--eval-every", type=int, default=20, help="updates between evaluations (default 20)")
    parser.add_argument("--target", type=float, default=0.85, help="dev accuracy to reach (default 0.85)")
    parser.add_argument("--label-noise", type=float, default=0.0, help="share of stream labels flipped")
    parser.add_argument("--mode", choices=["hard", "soft", "importance"], help="weighting mode (default: config)")
    parser.add_argument("--dev-from-stream", type=int, default=0, metavar="N",
                        help="evaluate on N rows of the stream read after the training rows, not eval.path")
    parser.add_argument("--out", default="runs/bench-selection", help="where the CSV, markdown and PNG go")
    parser.add_argument("--from-csv", nargs="+", metavar="CSV",
                        help="run nothing: summarise and plot earlier runs' selection.csv files (seeds merge)")


def main(cfg: Config, args: argparse.Namespace) -> int:
    """`ol-ray bench selection` with parsed arguments."""
    if args.from_csv:
        report(curves_from_csv(args.from_csv), args.target, args.out, f"from {', '.join(args.from_csv)}")
        return 0
    selection(cfg, args.strategies, seeds=args.seeds, updates=args.updates, pools=args.pools,
              batch_size=args.batch, eval_every=args.eval_every, target=args.target,
              label_noise=args.label_noise, out_dir=args.out, mode=args.mode,
              dev_from_stream=args.dev_from_stream)
    return 0
