"""The pipeline: stream windows through Ray Data (validate, tokenize, score) into the learner actor.

    StreamSource --windows--> Ray Data: validate -> tokenize -> score (actor pool) --candidates--> LearnerActor
                                  |                                   ^ newest weights             | publish vN
                                  v quarantine.jsonl                  +-------- WeightStore <-------+

A producer thread runs the Ray Data execution of each window and queues scored candidate blocks; the main thread
feeds them to the learner with at most `learner.max_in_flight` calls outstanding, so the next window's scorers start
while the learner still has work. The run directory gets metrics.jsonl, quarantine.jsonl, monitor.jsonl,
checkpoints/ and summary.json.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import queue
import threading
import time
from typing import Any, Iterator, Optional, Sequence

import yaml

from ol_ray.config import Config, to_dict
from ol_ray.stream import Window, make_source, windows

START, END = "start", "end"


class PipelineError(RuntimeError):
    """The run could not complete; the message says which part failed."""


def resolve_paths(cfg: Config, base: Optional[str] = None) -> Config:
    """Make data, dev-set and run-directory paths absolute (against the working directory), so actors on other
    processes or nodes read the same files."""
    base = base or os.getcwd()

    def absolute(path: str) -> str:
        return path if not path or os.path.isabs(path) else os.path.normpath(os.path.join(base, path))

    stream = dataclasses.replace(cfg.stream, path=absolute(cfg.stream.path))
    evaluation = dataclasses.replace(cfg.eval, path=absolute(cfg.eval.path))
    name_or_path = cfg.model.name_or_path
    if os.path.exists(os.path.join(base, name_or_path)):
        name_or_path = absolute(name_or_path)
    model = dataclasses.replace(cfg.model, name_or_path=name_or_path)
    return dataclasses.replace(cfg, stream=stream, eval=evaluation, model=model)


def make_run_dir(cfg: Config) -> str:
    run_dir = cfg.output.run_dir.format(name=cfg.output.name, time=time.strftime("%Y%m%d-%H%M%S"))
    run_dir = os.path.abspath(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    return run_dir


def start_ray(cfg: Config) -> bool:
    """Connect to the configured cluster (or RAY_ADDRESS, as `ray job submit` sets it), else start a local Ray.
    Returns whether this call started it (and so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus,
                 object_store_memory=cfg.ray.object_store_mb * 2**20 if cfg.ray.object_store_mb else None,
                 include_dashboard=cfg.ray.include_dashboard, log_to_driver=True)
    return True


def quiet_ray_data() -> None:
    """Our progress bar and metrics replace Ray Data's per-execution bars and banners."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def scored_window(window: Window, cfg: Config, weight_store: Any, monitor: Any, quarantine: Any):
    """One window as a Ray Data pipeline: validate and tokenize (Ray tasks, fused), then score (actor pool)."""
    from ray.data import ActorPoolStrategy

    from ol_ray.scoring import Scorer
    from ol_ray.tokenization import tokenize_batch
    from ol_ray.validation import FieldSpec, validate_batch

    sc = cfg.scoring
    dataset = window.to_dataset(rows_per_block=sc.batch_size)
    dataset = dataset.map_batches(
        validate_batch, batch_format="numpy", num_cpus=sc.task_num_cpus,
        fn_kwargs={"record_format": window.record_format, "spec": FieldSpec.from_config(cfg),
                   "window": window.index, "quarantine": quarantine})
    dataset = dataset.map_batches(
        tokenize_batch, batch_format="numpy", num_cpus=sc.task_num_cpus,
        fn_kwargs={"name_or_path": cfg.model.name_or_path, "max_length": cfg.model.max_length})
    return dataset.map_batches(
        Scorer, batch_format="numpy", batch_size=sc.batch_size, num_cpus=sc.num_cpus, num_gpus=sc.num_gpus,
        compute=ActorPoolStrategy(size=sc.num_scorers),
        fn_constructor_kwargs={"cfg": cfg, "weight_store": weight_store, "monitor": monitor})


class Producer(threading.Thread):
    """Runs each window's Ray Data execution and queues, per window, (START, window), ("pool", candidates) items and
    (END, window); (END, None) ends the stream.
    Stops at a window boundary when asked, so every sample read is handed to the learner."""

    def __init__(self, windows_iter: Iterator[Window], cfg: Config, actors: dict[str, Any], depth: int):
        super().__init__(name="ol-ray-producer", daemon=True)
        self.windows_iter = windows_iter
        self.cfg = cfg
        self.actors = actors
        self.items: queue.Queue = queue.Queue(maxsize=depth)
        self.stop_requested = threading.Event()

    def run(self) -> None:
        try:
            for window in self.windows_iter:
                self.items.put((START, window))
                dataset = scored_window(window, self.cfg, self.actors["weights"], self.actors["monitor"],
                                        self.actors["quarantine"])
                for candidates in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
                    self.items.put(("pool", candidates))
                self.items.put((END, window))
                if self.stop_requested.is_set():
                    break
            self.items.put((END, None))
        except BaseException as error:  # surfaced in the main thread
            self.items.put(("error", error))


class RunOutputs:
    """metrics.jsonl and the console progress bar."""

    def __init__(self, run_dir: str, total: Optional[int], progress: bool):
        self.metrics = open(os.path.join(run_dir, "metrics.jsonl"), "a", encoding="utf-8")
        self.samples_read = 0
        self.samples_trained = 0
        self.dev_accuracy: Optional[float] = None
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="sample", desc="read", dynamic_ncols=True)

    def window_read(self, size: int) -> None:
        self.samples_read += size
        if self.bar is not None:
            self.bar.update(size)

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            record = {**record, "samples_read": self.samples_read}
            self.metrics.write(json.dumps(record) + "\n")
            if record["kind"] == "update":
                self.samples_trained = record["samples_trained"]
            elif record["kind"] == "eval":
                self.dev_accuracy = record["dev_accuracy"]
        self.metrics.flush()
        if self.bar is not None and records:
            postfix = {"trained": self.samples_trained}
            if self.dev_accuracy is not None:
                postfix["dev_acc"] = f"{self.dev_accuracy:.4f}"
            self.bar.set_postfix(postfix)

    def close(self) -> None:
        self.metrics.close()
        if self.bar is not None:
            self.bar.close()


def start_actors(cfg: Config, run_dir: str) -> dict[str, Any]:
    """Weight store, resource monitor and quarantine sink (small, CPU-free, on this node) and the learner."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ol_ray.learner import LearnerActor
    from ol_ray.monitor import ResourceMonitor
    from ol_ray.quarantine import QuarantineSink
    from ol_ray.weights import WeightStore

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    actors: dict[str, Any] = {
        "weights": ray.remote(num_cpus=0)(WeightStore).remote(),
        "monitor": ray.remote(num_cpus=0)(ResourceMonitor).remote(),
        "quarantine": ray.remote(num_cpus=0)(QuarantineSink).options(scheduling_strategy=here).remote(
            os.path.join(run_dir, "quarantine.jsonl")),
    }
    actors["learner"] = ray.remote(LearnerActor).options(
        num_cpus=cfg.learner.num_cpus, num_gpus=cfg.learner.num_gpus).remote(
        cfg, run_dir, actors["weights"], actors["monitor"])
    return actors


def run_pipeline(cfg: Config, rows: Optional[Sequence[dict[str, Any]]] = None) -> dict[str, Any]:
    """Run the configured pipeline to the end of the stream (or its budget) and return the run summary."""
    import ray

    cfg = resolve_paths(cfg)
    source = make_source(cfg.stream, rows=rows)  # a missing file fails here, before Ray starts
    run_dir = make_run_dir(cfg)
    with open(os.path.join(run_dir, "config.yaml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(to_dict(cfg), handle, sort_keys=False)
    started_ray = start_ray(cfg)
    quiet_ray_data()
    started = time.time()
    actors = start_actors(cfg, run_dir)
    outputs = RunOutputs(run_dir, cfg.stream.max_samples or None, cfg.output.progress)
    try:
        learner = actors["learner"]
        producer = Producer(windows(source, cfg.stream), cfg, actors, depth=4)
        producer.start()  # scorers start while the learner loads and evaluates; they wait for its version 0
        info = ray.get(learner.info.remote())
        windows_done = feed_learner(producer, learner, actors["monitor"], outputs, cfg.learner.max_in_flight)
        records, learner_state = ray.get(learner.finish.remote())
        outputs.write(records)
        summary = summarize(cfg, run_dir, started, info, outputs.samples_read, windows_done, learner_state,
                            ray.get(actors["quarantine"].close.remote()), ray.get(actors["weights"].stats.remote()))
        history = ray.get(actors["monitor"].stop.remote())
        with open(os.path.join(run_dir, "monitor.jsonl"), "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(sample) + "\n" for sample in history)
        with open(os.path.join(run_dir, "summary.json"), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2, default=str)
        return summary
    finally:
        outputs.close()
        for actor in actors.values():
            ray.kill(actor)
        if started_ray:
            ray.shutdown()


def feed_learner(producer: Producer, learner: Any, monitor: Any, outputs: RunOutputs, max_in_flight: int) -> int:
    """Hand queued candidates to the learner, keeping at most `max_in_flight` calls outstanding; returns the
    number of windows completed."""
    import ray

    from ol_ray.monitor import process_rss_mb

    in_flight: collections.deque = collections.deque()
    windows_done = 0

    def collect_oldest() -> None:
        records, done = ray.get(in_flight.popleft())
        outputs.write(records)
        if done:
            producer.stop_requested.set()

    while True:
        kind, item = producer.items.get()
        if kind == "error":
            raise PipelineError(f"scoring a window failed: {item}") from item
        if kind == START:
            outputs.window_read(len(item))
            continue
        if kind == END:
            while in_flight:
                collect_oldest()
            if item is None:
                return windows_done
            outputs.write(ray.get(learner.end_window.remote(item.index, item.cursor)))
            windows_done += 1
            continue
        while len(in_flight) >= max_in_flight:
            collect_oldest()
        in_flight.append(learner.add_candidates.remote(item))
        monitor.report.remote("driver", {"queue_depth": producer.items.qsize() + len(in_flight),
                                         "rss_mb": process_rss_mb()})


def summarize(cfg: Config, run_dir: str, started: float, info: dict[str, Any], samples_read: int, windows_done: int,
              learner: dict[str, Any], quarantine: dict[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    """summary.json: the accounting identity, the final evaluation, throughput and where things went."""
    wall = time.time() - started
    accounted = learner["samples_trained"] + learner["samples_not_selected"] + quarantine["samples_quarantined"]
    return {
        "run_dir": run_dir,
        "samples_read": samples_read,
        **quarantine,
        "samples_trained": learner["samples_trained"],
        "samples_not_selected": learner["samples_not_selected"],
        "accounting_ok": accounted == samples_read,
        "updates": learner["updates"],
        "windows": windows_done,
        "dev_accuracy": learner["last_eval"].get("accuracy"),
        "dev_loss": learner["last_eval"].get("loss"),
        "dev_macro_f1": learner["last_eval"].get("macro_f1"),
        "wall_s": wall,
        "trained_samples_per_s": learner["samples_trained"] / wall if wall > 0 else 0.0,
        **weights,
        **{key: learner[key] for key in ("staleness_mean", "staleness_max", "score_version_max", "text_truncated",
                                         "tokens_truncated", "learner_utilisation", "first_update_s",
                                         "eval_rows_rejected", "cursor")},
        "learner_device": info["device"],
        "model_parameters": info["parameters"],
        "checkpoint": learner.get("checkpoint_path"),
        "config": to_dict(cfg),
    }
