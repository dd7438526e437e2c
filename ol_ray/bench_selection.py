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

import dataclasses
import math
import os
from typing import Any, Optional, Sequence

import numpy as np

from ol_ray.bench import write_results
from ol_ray.bench_loop import Stream, read_stream, run_plain
from ol_ray.config import Config


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
    import csv

    runs: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for point in csv.DictReader(handle):
                key = (point["strategy"], int(point["pool"]), int(point["seed"]))
                runs.setdefault(key, []).append({"update": int(point["update"]),
                                                 "samples_trained": int(point["samples_trained"]),
                                                 "wall_s": float(point["wall_s"]),
                                                 "dev_accuracy": float(point["dev_accuracy"])})
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(18, 5), sharey=True)
    for (strategy, pool), runs in curves.items():
        length = min(len(run) for run in runs)
        accuracy = np.mean([[r["dev_accuracy"] for r in run[:length]] for run in runs], axis=0)
        for axis, key in zip(axes, ("samples_trained", "update", "wall_s")):
            x = np.mean([[r[key] for r in run[:length]] for run in runs], axis=0)
            axis.plot(x, accuracy, label=f"{strategy} (pool {pool})")
    for axis, label in zip(axes, ("samples trained", "updates", "wall time (s)")):
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("dev accuracy")
    axes[2].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def selection(cfg: Config, strategies: Sequence[str], seeds: Sequence[int] = (0, 1, 2), updates: int = 200,
              pools: Sequence[int] = (64,), batch_size: int = 16, eval_every: int = 20, target: float = 0.85,
              label_noise: float = 0.0, out_dir: str = "runs/bench-selection", mode: Optional[str] = None,
              dev_from_stream: int = 0) -> list[dict[str, Any]]:
    """Run every (strategy, pool, seed), write the CSV, markdown table and PNG, and return the table's rows.
    `dev_from_stream` > 0: the dev set is that many rows read after the training rows of the same stream (clean
    labels), for data sets without a separate dev file."""
    import csv

    from ol_ray.config import check
    from ol_ray.pipeline import resolve_paths

    cfg = resolve_paths(cfg)
    os.makedirs(out_dir, exist_ok=True)
    curves: dict[tuple[str, int], list[list[dict[str, Any]]]] = {}
    points: list[dict[str, Any]] = []
    for seed in seeds:
        needed = cfg.selection.holdout_size + updates * max(pools)
        seeded = dataclasses.replace(cfg, stream=dataclasses.replace(cfg.stream, shuffle_seed=seed))
        stream = read_stream(seeded, needed + dev_from_stream, label_noise, seed)
        dev = None
        if dev_from_stream:
            clean = read_stream(seeded, needed + dev_from_stream, 0.0, seed)
            dev = Stream(clean.input_ids[needed:], clean.labels[needed:], clean.sample_ids[needed:])
            stream = Stream(stream.input_ids[:needed], stream.labels[:needed], stream.sample_ids[:needed])
        for pool in pools:
            for strategy in strategies:
                run_cfg = dataclasses.replace(
                    cfg, model=dataclasses.replace(cfg.model, seed=seed),
                    selection=dataclasses.replace(cfg.selection, strategy=strategy, pool_size=pool, seed=seed,
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
                with open(os.path.join(out_dir, "selection.csv"), "w", newline="", encoding="utf-8") as handle:
                    writer = csv.DictWriter(handle, fieldnames=list(points[0]))
                    writer.writeheader()
                    writer.writerows(points)
    noise = f", {label_noise:.0%} of labels flipped" if label_noise else ""
    return report(curves, target, out_dir, f"{len(seeds)} seed(s), {updates} updates of {batch_size}{noise}")
