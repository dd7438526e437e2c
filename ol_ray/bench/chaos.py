"""`ol-ray bench chaos`: one run with every part killed at seeded random points, against the same run without faults.

    ol-ray bench chaos configs/sst2.yaml stream.max_samples=6400 --seed 0

Starts a local Ray (2 CPUs unless `ray.num_cpus` says otherwise) and runs the configured job twice as real drivers
joined to it (`ol_ray.bench.faults`): once without faults, once with the learner killed twice and a scorer, the weight
store, the monitor, the quarantine sink and the driver killed once each (the driver then resumed with
`ol-ray run --resume`). Writes `chaos_faults.md/.csv` (fault, the update and second it came, seconds until the next
update, updates undone) and `chaos.md/.csv` (per run: finished, accounting, samples read and trained, trained twice,
final dev accuracy, wall time), and prints both.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Optional, Sequence

from ol_ray.bench.faults import FAULTS, event_rows, run_with_faults, schedule
from ol_ray.bench.harness import write_results
from ol_ray.config.schema import Config


def chaos(cfg: Config, config: str, overrides: Sequence[str], seed: int = 0, out_dir: str = "runs/bench-chaos",
          faults: Sequence[str] = FAULTS, timeout_s: float = 1800.0) -> tuple[list[dict], list[dict]]:
    """Run the job without and with faults; returns (the per-run rows, the fault rows)."""
    import ray

    expected = _expected_updates(cfg)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    ray.init(address="local", num_cpus=cfg.ray.num_cpus or 2, include_dashboard=False, log_to_driver=False,
             object_store_memory=cfg.ray.object_store_mb * 2**20 if cfg.ray.object_store_mb else None)
    try:
        address = ray.get_runtime_context().gcs_address
        runs, fault_rows = [], []
        for name, plan in (("no faults", []), ("chaos", schedule(seed, expected, faults))):
            run_dir = os.path.abspath(os.path.join(out_dir, f"{name.replace(' ', '-')}-{stamp}"))
            started = time.monotonic()
            summary, events = run_with_faults(config, overrides, run_dir, plan, address, timeout_s=timeout_s)
            runs.append(_run_row(name, summary, time.monotonic() - started, len(events)))
            fault_rows.extend(event_rows(events))
    finally:
        ray.shutdown()
    print(write_results(runs, out_dir, "chaos"))
    print()
    print(write_results(fault_rows, out_dir, "chaos_faults"))
    return runs, fault_rows


def _expected_updates(cfg: Config) -> int:
    """About how many updates the run makes: its stream budget over the pool each update consumes."""
    from ol_ray.batching.policies import pool_for

    budget = cfg.learner.max_updates or (cfg.stream.max_samples // pool_for(cfg.batching.batch_size, cfg.batching,
                                                                            cfg.selection.pool_size))
    if not budget:
        raise ValueError("bench chaos needs a bounded run: set stream.max_samples or learner.max_updates")
    return int(budget)


def _run_row(name: str, summary: dict[str, Any], wall_s: float, faults: int) -> dict[str, Any]:
    accuracy: Optional[float] = summary.get("dev_accuracy")
    return {"run": name, "faults": faults, "accounting_ok": summary["accounting_ok"],
            "samples_read": summary["samples_read"], "samples_trained": summary["samples_trained"],
            "samples_trained_twice": summary["samples_trained_twice"],
            "samples_quarantined": summary["samples_quarantined"], "updates": summary["updates"],
            "dev_accuracy": accuracy, "wall_s": wall_s}


HELP = "one run with every part killed at random points, against the same run without faults"
DESCRIPTION = ("Run the job twice as real drivers on a local Ray: without faults, and with the learner killed "
               "twice and a scorer, the weight store, the monitor, the quarantine sink and the driver (then "
               "resumed) killed once each, at seeded random points: how each recovered, the ledger, the "
               "samples trained twice and the final dev accuracy of both.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ol-ray bench chaos` (after the config and its overrides)."""
    parser.add_argument("--seed", type=int, default=0, help="the fault schedule's seed (default 0)")
    parser.add_argument("--out", default="runs/bench-chaos", help="where the tables and runs go")


def main(cfg: Config, args: argparse.Namespace) -> int:
    """`ol-ray bench chaos` with parsed arguments."""
    chaos(cfg, args.config, args.overrides, seed=args.seed, out_dir=args.out)
    return 0
