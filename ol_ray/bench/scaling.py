"""`ol-ray bench scaling`: scoring throughput with 1, 2, ... scorer nodes, as a ratio to the first count.

    ol-ray bench scaling configs/sst2.yaml --nodes 1 2 --samples 2048

Each count gets a fresh multi-node Ray on this machine (`ray.cluster_utils.Cluster`: a head for the driver, plus N
nodes of 1 CPU that carry the custom resource `scorer`), the configured model and the first `--samples` rows of the
configured stream, and a scorer pool (one scorer a node) that may only run where `scorer` is. The rows go to the
pool in chunks of scoring.batch_size, as fast as it takes them (no admission control: this measures scoring).
The scorers compute what the configured strategy reads, or every statistic for a strategy that reads none.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any, Optional, Sequence

from ol_ray.bench.harness import first_window, write_results
from ol_ray.config.schema import Config


def scaling(cfg: Config, nodes: Sequence[int] = (1, 2), samples: int = 2048, out_dir: str = "runs/bench-scaling",
            node_cpus: int = 1) -> list[dict[str, Any]]:
    """Scoring samples/s with each number of scorer nodes, and the ratio to the first count.

    Long because each node count is one measurement from cluster start to teardown whose steps share
    the cluster and its actors.
    """
    import ray
    from ray.cluster_utils import Cluster

    from ol_ray.data.quarantine import QuarantineSink
    from ol_ray.driver.preflight import resolve_paths
    from ol_ray.models.loading import load_model
    from ol_ray.observe.monitor import ResourceMonitor
    from ol_ray.scoring.chunks import Chunk
    from ol_ray.scoring.pool import ScorerPool, columns_needed
    from ol_ray.scoring.scorer import Scorer
    from ol_ray.weights.store import WeightPublisher, WeightStore

    cfg = resolve_paths(cfg)
    os.makedirs(out_dir, exist_ok=True)
    window = first_window(cfg, samples)
    size = cfg.scoring.batch_size
    chunks = [Chunk(i, 0, tuple(window.records[start:start + size]), window.record_format)
              for i, start in enumerate(range(0, len(window), size))]
    model = load_model(cfg.model)
    columns = columns_needed(cfg) or None
    rows: list[dict[str, Any]] = []
    for count in nodes:
        scoring = dataclasses.replace(cfg.scoring, num_scorers=count, max_scorers=0, num_cpus=node_cpus,
                                      num_gpus=0.0, resources={"scorer": 1})
        run_cfg = dataclasses.replace(cfg, scoring=scoring)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        scorer_nodes = {cluster.add_node(num_cpus=node_cpus, resources={"scorer": 1}).node_id for _ in range(count)}
        ray.init(address=cluster.address)
        try:
            store = ray.remote(num_cpus=0)(WeightStore).remote()
            monitor = ray.remote(num_cpus=0)(ResourceMonitor).remote()
            sink = ray.remote(num_cpus=0)(QuarantineSink).remote(os.path.join(out_dir, f"quarantine-{count}.jsonl"))
            WeightPublisher(store, every=1).maybe_publish(model, 0, force=True)
            options = ray.remote(Scorer).options(num_cpus=node_cpus, resources={"scorer": 1}, max_restarts=-1,
                                                 max_task_retries=-1, scheduling_strategy="SPREAD")
            started = time.perf_counter()
            pool = ScorerPool(lambda: options.remote(run_cfg, store, monitor, sink, None, columns), count)
            outstanding: list[Any] = []
            first_at, first_count, scored = 0.0, 0, 0

            def collect(timeout: Optional[float]) -> None:
                nonlocal first_at, first_count, scored
                done, _ = ray.wait(outstanding, num_returns=1, timeout=timeout)
                for ref in done:
                    outstanding.remove(ref)
                    scored += ray.get(ref).kept
                    if not first_at:  # the first chunk is back: the scorers have started and warmed up
                        first_at, first_count = time.perf_counter(), scored

            for chunk in chunks:
                while not pool.has_room():
                    collect(0.05)
                outstanding.append(pool.submit(chunk)[0])
            while outstanding:
                collect(None)
            ended = time.perf_counter()
            wall, steady_s = ended - started, ended - first_at
            used = set(ray.get(monitor.stop.remote())["scorer_nodes"])
            rows.append({"scorer_nodes": count, "samples_scored": scored, "wall_s": wall,
                         "samples_per_s": scored / wall,
                         "steady_samples_per_s": (scored - first_count) / steady_s if scored > first_count else 0.0,
                         "nodes_that_scored": len(used), "only_on_scorer_nodes": bool(used) and used <= scorer_nodes,
                         "scorer_starts": ray.get(store.stats.remote())["scorer_starts"]})
            pool.kill()
        finally:
            ray.shutdown()
            cluster.shutdown()
    for row in rows:
        row["speedup"] = row["samples_per_s"] / rows[0]["samples_per_s"]
        row["steady_speedup"] = (row["steady_samples_per_s"] / rows[0]["steady_samples_per_s"]
                                 if rows[0]["steady_samples_per_s"] else 0.0)
    print(write_results(rows, out_dir, "scaling"))
    return rows


HELP = "scoring samples/s with 1, 2, ... scorer nodes (a multi-node Ray on this machine)"
DESCRIPTION = ("Scoring throughput with each number of scorer nodes: for each, a fresh ray.cluster_utils "
               "Cluster with a head and N nodes of --node-cpus CPUs carrying the resource `scorer`; scores "
               "the first --samples rows of the config's stream with its model.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ol-ray bench scaling` (after the config and its overrides)."""
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2], help="scorer node counts (default 1 2)")
    parser.add_argument("--samples", type=int, default=2048, help="rows to score per count (default 2048)")
    parser.add_argument("--node-cpus", type=int, default=1, help="CPUs of each scorer node (default 1)")
    parser.add_argument("--out", default="runs/bench-scaling", help="where the CSV and markdown go")


def main(cfg: Config, args: argparse.Namespace) -> int:
    """`ol-ray bench scaling` with parsed arguments."""
    scaling(cfg, nodes=args.nodes, samples=args.samples, out_dir=args.out, node_cpus=args.node_cpus)
    return 0
