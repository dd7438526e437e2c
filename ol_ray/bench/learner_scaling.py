"""`ol-ray bench learner-scaling`: the learner's trained samples/s with 1, 2, 4 data-parallel ranks, as a ratio to
one rank, and one rank's step against a bare Hugging Face training step at the same batch.

    ol-ray bench learner-scaling configs/sst2.yaml --workers 1 2 4 --updates 20

For each rank count: a fresh local Ray (or the one this process is connected to; a fresh one has at least as many
logical CPUs as the ranks ask for: on a small machine the ranks share its cores, which the table says), the run's
actors started as `ol-ray run` starts them (`learner.num_workers` = the count), and the learner fed directly with
tokenized rows of the configured stream, one batch (`batching.batch_size`, random selection, fixed policy) per call
with two calls in flight, so that the figure is the learner's own: no scoring, no stream, no evaluation, no
checkpoint. The first `--warmup` updates are left out. `step_samples_per_s` is the learner's step time alone (the
update records' step_s); `samples_per_s` is wall time from the driver, Ray calls included.

The bare step (in a Ray task with the learner's resources, after the one-rank learner is gone) is what a user
would write: pad the batch to its longest row, `model(**batch, labels=...).loss`, backward, clip, AdamW, at the
config's precision. It runs the same batches.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from ol_ray.bench.harness import write_results
from ol_ray.config.schema import Config
from ol_ray.data.tokenization import object_column

IN_FLIGHT = 2  # feeding calls queued at the learner (learner.max_in_flight's default)


def bench_config(cfg: Config, workers: int, run_dir: str) -> Config:
    """The run's config for one rank count: a learner fed batch by batch, evaluating and checkpointing nothing."""
    size = cfg.batching.batch_size
    return dataclasses.replace(
        cfg, selection=dataclasses.replace(cfg.selection, strategy="random", mix={}, pool_size=size),
        batching=dataclasses.replace(cfg.batching, policy="fixed", policies=()),
        learner=dataclasses.replace(cfg.learner, num_workers=workers, max_updates=0, publish_for_serving=False),
        eval=dataclasses.replace(cfg.eval, path="", sets=(), at_start=False),
        continual=dataclasses.replace(cfg.continual, drift_detector="none"),
        checkpoint=dataclasses.replace(cfg.checkpoint, every_updates=0),
        output=dataclasses.replace(cfg.output, run_dir=run_dir, progress=False))


def pools(head: Any, size: int, count: int, tag: str) -> list[dict[str, np.ndarray]]:
    """`count` candidate pools of `size` rows each, as scorers hand them over for random selection (rows reused
    in turn when the stream's head is shorter), each row with an id of its own."""
    rows = len(head.labels)
    out = []
    for index in range(count):
        positions = [(index * size + i) % rows for i in range(size)]
        out.append({"sample_id": np.array([f"{tag}-{index}-{i}" for i in range(size)], dtype=object),
                    "label": np.asarray(head.labels)[positions].astype(np.int64),
                    "window": np.zeros(size, np.int64),
                    "input_ids": object_column([head.input_ids[p] for p in positions])})
    return out


def feed(learner: Any, incarnation: str, batches: list[dict[str, np.ndarray]]) -> tuple[list[dict], list[float]]:
    """Hand the pools over, IN_FLIGHT at a time; the update records and when each reply came."""
    import ray

    records, times, pending = [], [], []

    def answer(ref: Any) -> None:
        reply, _ = ray.get(ref)
        records.extend(r for r in reply if r["kind"] == "update")
        times.append(time.perf_counter())

    for pool in batches:
        pending.append(learner.add_candidates.remote(pool, incarnation))
        if len(pending) >= IN_FLIGHT:
            answer(pending.pop(0))
    for ref in pending:
        answer(ref)
    return records, times


def bare_steps(cfg: Config, batches: list[dict[str, np.ndarray]], pad_id: int) -> list[float]:
    """Seconds of each bare Hugging Face training step on `batches` (padded whole, the model's own loss)."""
    import torch

    from ol_ray.data.tokenization import pad_batch
    from ol_ray.learner.update import make_optimizer
    from ol_ray.models.loading import autocast, device_for, load_model

    lcfg = cfg.learner
    torch.set_num_threads(lcfg.torch_threads)
    device = device_for(lcfg.num_gpus)
    model = load_model(cfg.model).to(device)
    model.train()
    optimizer = make_optimizer(model, lcfg.lr, lcfg.weight_decay, device)
    seconds = []
    for pool in batches:
        started = time.perf_counter()
        inputs = pad_batch(list(pool["input_ids"]), pad_id, device)
        with autocast(device, lcfg.precision):
            loss = model(**inputs, labels=torch.as_tensor(pool["label"], device=device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), lcfg.grad_clip or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - started)
    return seconds


def measure(cfg: Config, count: int, batches: list[dict[str, np.ndarray]], warmup: int, bare: bool,
            pad_id: int) -> tuple[dict[str, Any], list[float]]:
    """One rank count on a fresh local Ray (or the one this process is connected to, which it leaves running): its
    row, and the bare steps' seconds (with `bare`)."""
    import ray

    from ol_ray.driver.cluster import NAMESPACE, start_actors, stop_actors, wait_for_learner

    run_dir = tempfile.mkdtemp(prefix=f"ol-ray-learner-scaling-{count}-")  # its ledger and monitor readings
    run_cfg = bench_config(cfg, count, run_dir)
    lcfg = run_cfg.learner
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
                 num_cpus=max(os.cpu_count() or 1, int(np.ceil(count * lcfg.num_cpus)) + 1))
    try:
        actors = start_actors(run_cfg, run_cfg.output.run_dir)
        try:
            info = wait_for_learner(actors["learner"], run_cfg)
            records, times = feed(actors["learner"], info["incarnation"], batches)
        finally:
            stop_actors(actors)
        kept = records[warmup:]
        trained = sum(r["batch_size"] for r in kept)
        row = {"ranks": count, "device": info["device"], "updates": len(kept), "batch_size": cfg.batching.batch_size,
               "samples_per_s": trained / (times[-1] - times[warmup - 1]) if warmup else float("nan"),
               "step_samples_per_s": trained / sum(r["step_s"] for r in kept),
               "step_s_median": float(np.median([r["step_s"] for r in kept])),
               "loss_last": kept[-1]["loss"], "cpus": os.cpu_count(), "torch_threads": lcfg.torch_threads,
               "precision": lcfg.precision}
        seconds = []
        if bare:
            task = ray.remote(num_cpus=lcfg.num_cpus, num_gpus=lcfg.num_gpus, resources=lcfg.resources or None)(
                bare_steps)
            seconds = ray.get(task.remote(run_cfg, batches, pad_id))[warmup:]
        return row, seconds
    finally:
        if started:
            ray.shutdown()
        shutil.rmtree(run_dir, ignore_errors=True)


def learner_scaling(cfg: Config, workers: Sequence[int] = (1, 2, 4), updates: int = 20, warmup: int = 3,
                    out_dir: str = "runs/bench-learner-scaling") -> list[dict[str, Any]]:
    """Trained samples/s for each rank count, the ratio to the first, and the bare step's row."""
    from ol_ray.bench.loop import read_stream
    from ol_ray.driver.preflight import resolve_paths
    from ol_ray.models.loading import load_tokenizer, pad_id_of

    cfg = resolve_paths(cfg)
    size = cfg.batching.batch_size
    head = read_stream(cfg, size * (updates + warmup), 0.0, 0)
    pad_id = pad_id_of(load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code))
    rows, bare = [], []
    for count in workers:
        batches = pools(head, size, updates + warmup, f"r{count}")
        row, seconds = measure(cfg, count, batches, warmup, bare=not bare, pad_id=pad_id)
        rows.append(row)
        bare = bare or seconds
    for row in rows:
        row["speedup"] = row["samples_per_s"] / rows[0]["samples_per_s"]
        row["step_speedup"] = row["step_samples_per_s"] / rows[0]["step_samples_per_s"]
    if bare:
        rows.append({"ranks": "bare HF step", "device": rows[0]["device"], "updates": len(bare), "batch_size": size,
                     "step_samples_per_s": size * len(bare) / sum(bare), "step_s_median": float(np.median(bare)),
                     "cpus": os.cpu_count(), "torch_threads": cfg.learner.torch_threads,
                     "precision": cfg.learner.precision})
        rows[0]["step_vs_bare"] = rows[0]["step_samples_per_s"] / rows[-1]["step_samples_per_s"]
    print(write_results(rows, out_dir, "learner_scaling"))
    return rows


HELP = "the learner's trained samples/s with 1, 2, 4 data-parallel ranks, and against a bare HF step"
DESCRIPTION = ("Feeds the learner batches of tokenized rows directly (random selection, fixed batch size, no "
               "scoring or evaluation) with learner.num_workers set to each --workers count, on a fresh local Ray "
               "each, and times a bare Hugging Face training step on the same batches.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ol-ray bench learner-scaling` (after the config and its overrides)."""
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="rank counts (default 1 2 4)")
    parser.add_argument("--updates", type=int, default=20, help="updates measured per count (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="first updates left out (default 3)")
    parser.add_argument("--out", default="runs/bench-learner-scaling", help="where the CSV and markdown go")


def main(cfg: Config, args: argparse.Namespace) -> int:
    """`ol-ray bench learner-scaling` with parsed arguments."""
    learner_scaling(cfg, workers=args.workers, updates=args.updates, warmup=max(1, args.warmup), out_dir=args.out)
    return 0
