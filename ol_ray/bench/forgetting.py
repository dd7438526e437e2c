"""`ol-ray bench forgetting`: how much of the first domain a model forgets while it learns the next, and how much
replay and EWC keep, in a plain single-process loop.

    ol-ray bench forgetting configs/forgetting.yaml --updates 60 180 --seeds 0 1 2

The config's `stream.phases` (SST-2 reviews, then airline tweets) and `eval.sets` (one per phase, named alike).
For each arm and seed: a fresh copy of the configured model, each phase's first `--updates` x pool rows in the
seed's shuffled order (`--updates` gives each phase's updates, or one number for all), fed to the learner's own
code (`OnlineLearner`: selection, replay, EWC, weighted update, evaluation of every set every
`eval.every_updates`) as pools scored with its current weights. Arms:

- `finetune`: no replay, no EWC (continual.replay_size=0);
- `replay`: the config's replay buffer and fraction (reservoir by default);
- `replay_ewc`: the same, plus EWC at `--ewc-lambda` (the config's continual.ewc_lambda when it sets one).

Every arm makes the same number of updates of the same batch size per phase (plus, at a phase's end, one update
of the candidates left over, which replay arms have since they read fewer new samples per update): equal samples
trained, to within a batch per phase. With replay a share of each batch is replayed, so fewer new samples are read
and trained (the table says how many). Writes `forgetting.csv` (every
evaluation), `forgetting_table.md` and `.csv` (per arm, means over seeds: final accuracy and balanced accuracy on
every set and its mean over the last three evaluations (steadier than one), forgetting of each earlier domain (from
the final evaluation, and from that mean), average accuracy, backward and forward transfer, samples trained, new
and replayed, wall time, and forgetting and new-domain accuracy against `finetune`) and `forgetting.png` (each
set's accuracy against samples trained, one panel per arm), and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from typing import Any, Sequence

import numpy as np

from ol_ray.bench.harness import mean_curve, seeded, write_csv, write_results
from ol_ray.config.schema import Config
from ol_ray.errors import ConfigError
from ol_ray.observe.plots import Panel, plot_panels

ARMS = ("finetune", "replay", "replay_ewc")


def arm_config(cfg: Config, arm: str, ewc_lambda: float) -> Config:
    """The config of one arm: no replay, the config's replay, or its replay with EWC."""
    c = cfg.continual
    size = c.replay_size or 1000
    settings = {"finetune": dict(replay_size=0, ewc_lambda=0.0),
                "replay": dict(replay_size=size, ewc_lambda=0.0),
                "replay_ewc": dict(replay_size=size, ewc_lambda=ewc_lambda)}[arm]
    return dataclasses.replace(cfg, continual=dataclasses.replace(c, **settings))


def read_phases(cfg: Config, rows: Sequence[int]) -> list[tuple[str, Any]]:
    """Each phase's first `rows[i]` valid rows (in the stream's order), tokenized, ids prefixed by phase."""
    from ol_ray.data.phases import domain_stream
    from ol_ray.learner.irreducible import read_head

    phases = []
    for domain, count in zip(cfg.stream.phases, rows):
        head = read_head(dataclasses.replace(cfg, stream=domain_stream(cfg.stream, domain)), count,
                         until_valid=True)
        head.sample_ids = np.asarray([f"{domain.name}/{i}" for i in head.sample_ids], dtype=object)
        phases.append((domain.name, head))
    return phases


def run_arm(cfg: Config, phases: Sequence[tuple[str, Any]], updates: Sequence[int]) -> dict[str, Any]:
    """One arm on the phases: per phase, pools of selection.pool_size scored with the learner's weights, until
    that phase's `updates` (or its rows) are done. Returns the learner's continual summary, its
    counters and the wall time."""
    from ol_ray.bench.loop import scored_pool
    from ol_ray.learner.core import OnlineLearner
    from ol_ray.models.loading import head_layer

    started = time.perf_counter()
    learner = OnlineLearner(cfg)
    head = head_layer(learner.model, cfg.model.num_labels)
    pool_size = cfg.selection.pool_size
    for index, ((name, head_rows), phase_updates) in enumerate(zip(phases, updates)):
        learner.begin_phase(name)
        first_update, start = learner.updates, 0
        while learner.updates - first_update < phase_updates and start + pool_size <= len(head_rows.labels):
            part = slice(start, start + pool_size)
            learner.add_candidates(scored_pool(learner, head, head_rows.input_ids[part], head_rows.labels[part],
                                               head_rows.sample_ids[part], index, cfg.scoring.micro_batch_tokens))
            start += pool_size
    learner.finish()
    state = learner.state()
    return {**state["continual"], "samples_trained": state["samples_trained"], "updates": state["updates"],
            "wall_s": time.perf_counter() - started}


def last_mean(run: dict[str, Any], name: str, count: int = 3) -> float:
    """The mean accuracy on set `name` over a run's last `count` evaluations."""
    return float(np.mean([entry["accuracy"][name] for entry in run["accuracy_history"][-count:]]))


def summarise(results: dict[str, list[dict[str, Any]]], names: Sequence[str], batch: int) -> list[dict[str, Any]]:
    """One row per arm, means over seeds, with forgetting and new-domain accuracy against `finetune`."""
    rows = []
    for arm, runs in results.items():
        row: dict[str, Any] = {"arm": arm, "seeds": len(runs)}
        for name in names:
            row[f"final_{name}"] = float(np.mean([run["final_accuracy"][name] for run in runs]))
        for name in names:  # steadier than one evaluation: the mean of the last three
            row[f"last3_{name}"] = float(np.mean([last_mean(run, name) for run in runs]))
        for name in names:
            balanced = [run["final_balanced_accuracy"].get(name) for run in runs]
            if None not in balanced:
                row[f"final_{name}_balanced"] = float(np.mean(balanced))
        metrics = [run["continual_metrics"] for run in runs]
        for j, name in enumerate(names[:-1]):
            row[f"forgetting_{name}"] = float(np.mean([m["forgetting"][j] for m in metrics]))
            row[f"forgetting_{name}_sd"] = float(np.std([m["forgetting"][j] for m in metrics]))
        for j, name in enumerate(names[:-1]):  # the same, from the mean of the last three evaluations
            row[f"forgetting_{name}_last3"] = float(np.mean([run["task_matrix"][j][j] - last_mean(run, name)
                                                             for run in runs]))
        for key in ("average_accuracy", "backward_transfer", "forward_transfer"):
            values = [m[key] for m in metrics if m[key] is not None]
            row[key] = float(np.mean(values)) if values else math.nan
        row["samples_trained_total"] = int(np.mean([run["samples_trained"] + run["samples_replayed"] for run in runs]))
        row["updates"] = float(np.mean([run["updates"] for run in runs]))
        row["samples_new"] = int(np.mean([run["samples_trained"] for run in runs]))
        row["samples_replayed"] = int(np.mean([run["samples_replayed"] for run in runs]))
        row["wall_s"] = float(np.mean([run["wall_s"] for run in runs]))
        rows.append(row)
    base = next((row for row in rows if row["arm"] == "finetune"), None)
    first, last = names[0], names[-1]
    for row in rows:
        if base is None:
            continue
        for suffix in ("", "_last3"):
            forgot = base[f"forgetting_{first}{suffix}"]
            row[f"forgetting_{first}{suffix}_vs_finetune"] = (row[f"forgetting_{first}{suffix}"] / forgot
                                                              if forgot > 0 else math.nan)
        row[f"final_{last}_minus_finetune_points"] = 100 * (row[f"final_{last}"] - base[f"final_{last}"])
    return rows


def curves(results: dict[str, list[dict[str, Any]]], names: Sequence[str], batch: int) -> list[Panel]:
    """Per arm, each evaluation set's accuracy against samples trained (means over seeds)."""
    panels = []
    for arm, runs in results.items():
        panel = Panel("samples trained (new + replayed)", f"{arm}: accuracy")
        histories = [[{"x": entry["update"] * batch, **{n: entry["accuracy"][n] for n in names}}
                      for entry in run["accuracy_history"]] for run in runs]
        for name in names:
            panel.add(name, *mean_curve(histories, "x", name))
        panels.append(panel)
    return panels


def forgetting(cfg: Config, arms: Sequence[str] = ARMS, seeds: Sequence[int] = (0, 1, 2),
               updates: Sequence[int] = (60,),
               ewc_lambda: float = 0.0, out_dir: str = "runs/bench-forgetting") -> list[dict[str, Any]]:
    """Run every arm and seed, write the CSVs, table and plot, print the table; returns the table's rows."""
    names = [domain.name for domain in cfg.stream.phases]
    if len(names) < 2 or [domain.name for domain in cfg.eval.sets][:len(names)] != names:
        raise ConfigError("ol-ray bench forgetting needs stream.phases (at least two) and eval.sets naming an "
                          "evaluation set for each phase, in the same order (configs/forgetting.yaml)")
    if len(updates) not in (1, len(names)):
        raise ConfigError(f"--updates takes one number, or one per phase ({len(names)}); got {list(updates)}")
    updates = list(updates) * len(names) if len(updates) == 1 else list(updates)
    ewc_lambda = ewc_lambda or cfg.continual.ewc_lambda or 100.0
    batch = cfg.batching.batch_size
    os.makedirs(out_dir, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    evaluations = []
    for seed in seeds:
        seed_cfg = seeded(cfg, seed)
        phases = read_phases(seed_cfg, [count * cfg.selection.pool_size for count in updates])
        for arm in arms:
            run = run_arm(arm_config(seed_cfg, arm, ewc_lambda), phases, updates)
            results[arm].append(run)
            evaluations.extend({"arm": arm, "seed": seed, "update": entry["update"], "phase": entry["phase"],
                                "samples_trained_total": entry["update"] * batch,
                                **{name: entry["accuracy"][name] for name in names},
                                **{f"{name}_balanced": entry["balanced_accuracy"].get(name) for name in names}}
                               for entry in run["accuracy_history"])
            finals = ", ".join(f"{name} {run['final_accuracy'][name]:.3f}" for name in names)
            print(f"{arm} seed {seed}: final {finals}; forgetting {run['continual_metrics']['forgetting']} "
                  f"({run['wall_s']:.0f} s)", flush=True)
            write_csv(os.path.join(out_dir, "forgetting.csv"), evaluations)  # after each run: a long one shows
    rows = summarise(results, names, batch)
    table = write_results(rows, out_dir, "forgetting_table")
    plot_panels(curves(results, names, batch), os.path.join(out_dir, "forgetting.png"),
                title=f"{' then '.join(names)}: accuracy per domain ({len(seeds)} seeds; "
                      f"{' + '.join(map(str, updates))} updates of {batch})")
    print(table)
    return rows


HELP = "forgetting of earlier domains without replay, with replay, with replay and EWC"
DESCRIPTION = ("The config's stream.phases in order, each evaluated on the eval.sets entry of its name: for "
               "each arm and seed the same number of updates per phase; final accuracy per domain, forgetting "
               "of earlier ones, average accuracy, backward and forward transfer, samples trained (new and "
               "replayed), against fine-tuning without replay.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ol-ray bench forgetting` (after the config and its overrides)."""
    parser.add_argument("--arms", nargs="+", default=["finetune", "replay", "replay_ewc"],
                        choices=["finetune", "replay", "replay_ewc"], help="arms to compare (finetune: baseline)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--updates", type=int, nargs="+", default=[60, 180],
                        help="updates of each phase, or one number for all (default 60 180)")
    parser.add_argument("--ewc-lambda", type=float, default=0.0,
                        help="EWC strength of replay_ewc (default: continual.ewc_lambda, else 100)")
    parser.add_argument("--out", default="runs/bench-forgetting", help="where the CSVs, markdown and PNG go")


def main(cfg: Config, args: argparse.Namespace) -> int:
    """`ol-ray bench forgetting` with parsed arguments."""
    forgetting(cfg, args.arms, seeds=args.seeds, updates=args.updates, ewc_lambda=args.ewc_lambda,
               out_dir=args.out)
    return 0
