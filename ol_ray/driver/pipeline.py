"""The pipeline: the stream, admitted in chunks to persistent scorer actors, into the learner actor.

    StreamSource --windows--> Feeder --chunks--> ScorerPool: validate -> tokenize -> score --block refs--> LearnerActor
                                 ^ admission control           | newest weights ^                      | publish vN
                                 |                             v quarantine.jsonl +------ WeightStore <-+
                                 +------------------- learner status (buffered, pool, done) -----------+

The scorer pool starts once per run (`ol_ray.scoring.pool`) and stays up across windows, checkpoints and learner
restarts; the feeder (`ol_ray.driver.feeding`) admits chunks only while few enough are ahead of the learner
(`ol_ray.driver.admission`: the staleness bound) and routes references, never data. The run directory gets metrics.jsonl,
quarantine.jsonl, ledger.jsonl, monitor.jsonl, checkpoints/ and summary.json.

Crashes: the learner actor restarts (`learner.max_restarts`) and restores the newest checkpoint; the driver then
drops what was in flight, rewinds the quarantine and metrics to that checkpoint, and replays the stream from its
cursor. A killed job resumes the same way with `run_pipeline(cfg, resume=True)` (`ol-ray run --resume RUN_DIR`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Optional, Sequence

import yaml

from ol_ray.config import to_dict
from ol_ray.config.schema import Config
from ol_ray.observe.evaluation import headline
from ol_ray.jsonl import read_jsonl
from ol_ray.records import ResumeRecord
from ol_ray.learner.irreducible import holdout_start, prepare_irreducible, uses_rho_loss
from ol_ray.scoring.pool import columns_needed
from ol_ray.driver.admission import staleness_bound
from ol_ray.driver.feeding import Feeder, LearnerLost, PipelineError, StreamReader, learner_reply, one_line
from ol_ray.data.factory import make_source
from ol_ray.data.source import SourceError

__all__ = ["run_pipeline", "PipelineError", "LearnerLost", "one_line", "resolve_paths", "actor_name",
           "learner_actor_name"]
logger = logging.getLogger(__name__)
NAMESPACE = "ol_ray"  # the Ray namespace of a run this process connects: its actors are found there by name


def resolve_paths(cfg: Config, base: Optional[str] = None) -> Config:
    """Make data, dev-set and run-directory paths absolute (against the working directory), so actors on other
    processes or nodes read the same files."""
    base = base or os.getcwd()

    def absolute(path: str) -> str:
        return path if not path or os.path.isabs(path) else os.path.normpath(os.path.join(base, path))

    phases = tuple(dataclasses.replace(phase, path=absolute(phase.path)) for phase in cfg.stream.phases)
    stream = dataclasses.replace(cfg.stream, path=absolute(cfg.stream.path), phases=phases)
    sets = tuple(dataclasses.replace(domain, path=absolute(domain.path)) for domain in cfg.eval.sets)
    evaluation = dataclasses.replace(cfg.eval, path=absolute(cfg.eval.path), sets=sets)
    name_or_path = cfg.model.name_or_path
    if os.path.exists(os.path.join(base, name_or_path)):
        name_or_path = absolute(name_or_path)
    model = dataclasses.replace(cfg.model, name_or_path=name_or_path)
    run_dir = cfg.output.run_dir.format(name=cfg.output.name, time=time.strftime("%Y%m%d-%H%M%S"))
    output = dataclasses.replace(cfg.output, run_dir=absolute(run_dir))
    return dataclasses.replace(cfg, stream=stream, eval=evaluation, model=model, output=output)


def preflight(cfg: Config, rows: Optional[Sequence[dict[str, Any]]], resume: bool) -> None:
    """Fail before Ray starts, in one sentence, on a missing stream, dev set or model, an evaluation set that does
    not parse with the configured fields, a run directory that
    already holds another run (resuming one without a checkpoint starts it over), or a resume whose config cannot
    take the checkpoint's strategy or policy state."""
    from ol_ray.state.checkpoint import latest_checkpoint, newest_readable_state
    from ol_ray.observe.evaluation import check_eval_sets
    from ol_ray.models.loading import check_model
    from ol_ray.state.fit import check_state_fits

    try:
        source = make_source(cfg.stream, rows=rows)  # opens the file, folder, dataset or Kafka topics, or says why
        getattr(source, "close", lambda: None)()
        check_eval_sets(cfg)  # exists, and parses with the configured fields
    except SourceError as error:
        if "does not exist" not in str(error):
            raise
        raise SourceError(f"{error} (relative paths in a config resolve against the working directory, "
                          f"{os.getcwd()}; under `ray job submit --working-dir` that is the job's own copy of it, "
                          f"so give absolute paths on storage the head node reads"
                          + (", or set stream.hub_fallback=true to read stream.hub_dataset from the hub"
                             if cfg.stream.hub_dataset and not cfg.stream.hub_fallback else "") + ")") from None
    check_model(cfg.model)
    has_checkpoint = latest_checkpoint(os.path.join(cfg.output.run_dir, "checkpoints")) is not None
    if has_checkpoint and not resume:
        raise PipelineError(f"{cfg.output.run_dir} already holds a run: resume it with `ol-ray run --resume "
                            f"{cfg.output.run_dir}`, or set another output.run_dir")
    state = newest_readable_state(os.path.join(cfg.output.run_dir, "checkpoints")) if resume else None
    if state is not None:
        check_state_fits(cfg, state)


def joins_a_cluster(cfg: Config) -> bool:
    """Whether the run joins an existing Ray (ray.address, or RAY_ADDRESS as `ray job submit` sets it) rather than
    starting a local one."""
    return bool(cfg.ray.address or os.environ.get("RAY_ADDRESS"))


def start_ray(cfg: Config) -> bool:
    """Connect to the configured cluster (or RAY_ADDRESS, as `ray job submit` sets it), else start a local Ray with
    its dashboard on loopback. Returns whether this call connected or started Ray (and so should disconnect)."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=True)
    else:  # "local": a Ray of our own, even where `ray start` left a cluster running on this machine
        ray.init(address="local", namespace=NAMESPACE, num_cpus=cfg.ray.num_cpus,
                 object_store_memory=cfg.ray.object_store_mb * 2**20 if cfg.ray.object_store_mb else None,
                 include_dashboard=cfg.ray.include_dashboard, dashboard_host="127.0.0.1", log_to_driver=True)
    return True


def check_resources(cfg: Config, strict: bool) -> None:
    """Compare what the learner and scorers ask for with what the cluster has: an error on a Ray this run started
    (nothing will add resources), a warning on a cluster (an autoscaler may)."""
    import ray

    have = ray.cluster_resources()
    wants = {"CPU": max(cfg.learner.num_cpus, cfg.scoring.num_cpus),
             "GPU": max(cfg.learner.num_gpus, cfg.scoring.num_gpus)}
    for name, amount in [*cfg.learner.resources.items(), *cfg.scoring.resources.items()]:
        wants[name] = max(wants.get(name, 0), amount)
    for resource, amount in wants.items():
        if amount > have.get(resource, 0):
            message = (f"the learner or scorers ask for {amount:g} {resource} but the Ray cluster has "
                       f"{have.get(resource, 0):g}; change the learner's or scoring's num_cpus / num_gpus / "
                       f"resources, or add nodes that have it")
            if strict:
                raise PipelineError(message)
            logger.warning("ol_ray: %s", message)


class RunOutputs:
    """metrics.jsonl, the console progress bar, and whoever else follows the records (`followers`, called with each
    list of records once they are written: the Kafka group committer)."""

    def __init__(self, run_dir: str, total: Optional[int], progress: bool,
                 followers: Sequence[Callable[[list[dict[str, Any]]], None]] = ()):
        self.followers = followers
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.metrics = open(self.path, "a", encoding="utf-8")
        self.samples_read = 0
        self.samples_trained = 0
        self.dev_figure: tuple[str, Optional[float]] = ("dev_accuracy", None)
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="sample", desc="read", dynamic_ncols=True)

    def rewind(self, point: dict[str, Any]) -> None:
        """Continue from where the learner stands (a checkpoint, or the start): reset the counters to it, keep the
        records up to its update and note the resume (no records: a fresh run, nothing to rewrite)."""
        self.samples_read = point["samples_read"]
        if self.bar is not None:
            self.bar.n = self.samples_read
            self.bar.refresh()
        if os.path.getsize(self.path) == 0:
            return
        self.metrics.close()
        kept = kept_records(read_jsonl(self.path), point)
        with open(self.path + ".tmp", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in kept)
        os.replace(self.path + ".tmp", self.path)
        self.metrics = open(self.path, "a", encoding="utf-8")
        self.write([ResumeRecord(update=point["updates"], time=time.time(),
                                 restored_from=point["restored_from"]).to_json()])

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
                self.dev_figure = headline(record)
        self.metrics.flush()
        for follower in self.followers:
            follower(records)
        if self.bar is not None and records:
            postfix = {"trained": self.samples_trained}
            name, value = self.dev_figure
            if value is not None:
                postfix[{"dev_accuracy": "dev_acc", "dev_perplexity": "dev_ppl"}[name]] = f"{value:.4f}"
            self.bar.set_postfix(postfix)

    def close(self) -> None:
        self.metrics.close()
        if self.bar is not None:
            self.bar.close()


def kept_records(records: list[dict[str, Any]], point: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics.jsonl records a resume keeps: up to the record of the checkpoint it restored (records written
    after it, even at the same update number, such as a phase's start or a drift, are written again as the stream
    is replayed). Without a checkpoint the learner starts over (its start evaluation included), so nothing is kept."""
    if point.get("restored_from"):
        for index, record in enumerate(records):
            if record["kind"] == "checkpoint" and record.get("path") == point["restored_from"]:
                return records[:index + 1]
    return []


def actor_name(role: str, run_dir: str) -> str:
    """The name of a run's actor (learner, weights, monitor, quarantine), so operators and tests can find it with
    ray.get_actor."""
    return f"ol_ray_{role}:{run_dir}"


def learner_actor_name(run_dir: str) -> str:
    return actor_name("learner", run_dir)


def start_actors(cfg: Config, run_dir: str) -> dict[str, Any]:
    """Weight store, resource monitor and quarantine sink (small, CPU-free, on this node, restarted whenever they
    die) and the learner, which restarts up to learner.max_restarts times and restores the newest checkpoint."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ol_ray.learner.actor import LearnerActor
    from ol_ray.observe.monitor import ResourceMonitor
    from ol_ray.data.quarantine import QuarantineSink
    from ol_ray.weights.store import WeightStore

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    # restarted by Ray whenever they die, their calls retried: each recovers its state from the run directory
    # (the quarantine from its file, the store's fence and counters from its state file, its weights at the
    # learner's next publish; the monitor's readings within a second)
    small = {"num_cpus": 0, "scheduling_strategy": here, "max_restarts": -1, "max_task_retries": -1}
    store_state = os.path.join(run_dir, "weight_store.json")
    if os.path.exists(store_state):  # a store's state is its own run's (this driver's); a resume starts a new one
        os.remove(store_state)
    actors: dict[str, Any] = {
        "weights": ray.remote(WeightStore).options(name=actor_name("weights", run_dir), **small).remote(store_state),
        "monitor": ray.remote(ResourceMonitor).options(name=actor_name("monitor", run_dir), **small).remote(
            path=os.path.join(run_dir, "monitor.jsonl"), export=True),
    }
    actors["quarantine"] = ray.remote(QuarantineSink).options(name=actor_name("quarantine", run_dir), **small).remote(
        os.path.join(run_dir, "quarantine.jsonl"), actors["monitor"])
    actors["learner"] = ray.remote(LearnerActor).options(
        num_cpus=cfg.learner.num_cpus, num_gpus=cfg.learner.num_gpus, resources=cfg.learner.resources or None,
        max_restarts=cfg.learner.max_restarts, name=learner_actor_name(run_dir)).remote(
        cfg, run_dir, actors["weights"], actors["monitor"], actors["quarantine"])
    return actors


def wait_for_learner(learner: Any, cfg: Config) -> dict[str, Any]:
    """The learner's info once it has started (or restarted and restored its checkpoint): a call made while Ray
    restarts the actor is made again."""
    import ray

    deadline = time.monotonic() + cfg.learner.start_timeout_s
    try:
        while True:
            try:
                return ray.get(learner.info.remote(), timeout=max(0.0, deadline - time.monotonic()))
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise ray.exceptions.GetTimeoutError() from None
                time.sleep(0.2)
    except ray.exceptions.GetTimeoutError:
        raise PipelineError(f"the learner actor did not start within {cfg.learner.start_timeout_s:g} s "
                            f"(learner.num_cpus={cfg.learner.num_cpus:g}, learner.num_gpus={cfg.learner.num_gpus:g}; "
                            f"the cluster has {ray.cluster_resources()})") from None
    except ray.exceptions.RayError as error:
        raise PipelineError(f"the learner actor failed: {one_line(error)}") from None


def start_scorers(cfg: Config, actors: dict[str, Any], irreducible: Any = None) -> Any:
    """The run's scorer pool: `scoring.num_scorers` actors spread over the nodes that have what they ask for,
    restarted by Ray when one dies (and the chunk it held retried). With random selection they validate and
    tokenize only (no model)."""
    import ray

    from ol_ray.scoring.pool import ScorerPool, columns_needed
    from ol_ray.scoring.scorer import Scorer

    sc = cfg.scoring
    columns = columns_needed(cfg)
    options = ray.remote(Scorer).options(num_cpus=sc.num_cpus, num_gpus=sc.num_gpus if columns else 0,
                                         resources=sc.resources or None, max_restarts=-1, max_task_retries=-1,
                                         scheduling_strategy="SPREAD")

    def make_scorer() -> Any:
        return options.remote(cfg, actors["weights"], actors["monitor"], actors["quarantine"], irreducible, columns)

    return ScorerPool(make_scorer, sc.num_scorers, sc.max_scorers)


def run_pipeline(cfg: Config, rows: Optional[Sequence[dict[str, Any]]] = None, resume: bool = False) -> dict:
    """Run the configured pipeline to the end of the stream (or its budget) and return the run summary. With
    `resume`, continue the run in `output.run_dir` from its newest checkpoint."""
    import ray

    cfg = resolve_paths(cfg)
    preflight(cfg, rows, resume)
    run_dir = cfg.output.run_dir
    os.makedirs(run_dir, exist_ok=True)
    # a resume's overrides become the run's config, so the next resume keeps them
    with open(os.path.join(run_dir, "config.yaml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(to_dict(cfg), handle, sort_keys=False)
    started_ray = start_ray(cfg)
    started = time.time()
    actors: dict[str, Any] = {}
    pool = None
    committer = None
    if cfg.stream.source == "kafka" and cfg.stream.kafka_group_id:
        from ol_ray.data.kafka import GroupCommitter

        committer = GroupCommitter(cfg.stream)
    outputs = RunOutputs(run_dir, cfg.stream.max_samples or None, cfg.output.progress,
                         [committer.records] if committer else ())
    try:
        # strict only on a Ray this run started: a cluster's autoscaler may still be adding the nodes it needs
        check_resources(cfg, strict=started_ray and not joins_a_cluster(cfg))
        # rho_loss only, and before the learner picks its cursor
        irreducible = prepare_irreducible(cfg, run_dir, rows, resume=resume)
        actors = start_actors(cfg, run_dir)
        # the scorers start while the learner loads; they wait for its first published weights
        pool = start_scorers(cfg, actors, ray.put(irreducible) if irreducible is not None else None)
        # a new run's first chunks are admitted while the learner loads; a resumed one waits to hear where it stopped
        point = wait_for_learner(actors["learner"], cfg) if resume else fresh_start(cfg, run_dir)
        restarts, stream_cursor, learner_state, info = run_segments(cfg, rows, actors, pool, outputs, point)
        summary = summarize(cfg, started, info, outputs.samples_read, stream_cursor, restarts, learner_state,
                            ray.get(actors["quarantine"].close.remote()), ray.get(actors["weights"].stats.remote()))
        summary["scorer_nodes"] = ray.get(actors["monitor"].stop.remote())["scorer_nodes"]
        summary["scorers"] = len(pool)
        write_accuracy_matrix(os.path.join(run_dir, "accuracy_matrix.csv"), summary.get("accuracy_history", []))
        with open(os.path.join(run_dir, "summary.json"), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2, default=str)
        return summary
    except Exception as error:
        error.add_note(f"traceback: {write_traceback(run_dir, error)}")
        raise
    finally:
        outputs.close()
        if committer is not None:
            committer.close()
        if pool is not None:
            pool.kill()
        for actor in actors.values():
            ray.kill(actor)
        if started_ray:
            ray.shutdown()


def write_traceback(run_dir: str, error: BaseException) -> str:
    """Append the driver's traceback of a failed run to <run_dir>/error.log (the console gets one line); returns
    the file's path."""
    import traceback

    path = os.path.join(run_dir, "error.log")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.writelines(traceback.format_exception(error))
    return path


def fresh_start(cfg: Config, run_dir: str) -> dict[str, Any]:
    """Where a new run's stream starts, known before the learner is up: the beginning, or after the rho_loss
    holdout. (A new run's directory holds no checkpoint, so the learner starts there too; it is checked.)"""
    from ol_ray.batching.policies import pool_for

    holdout = holdout_start(run_dir) if uses_rho_loss(cfg.selection) else None
    return {"cursor": holdout["cursor"] if holdout else None, "windows_done": 0, "samples_read": 0, "updates": 0,
            "restored_from": None, "buffered": 0, "pool": pool_for(cfg.batching.batch_size, cfg.batching, cfg.selection.pool_size), "phase": None}


def run_segments(cfg: Config, rows: Optional[Sequence[dict[str, Any]]], actors: dict[str, Any], pool: Any,
                 outputs: RunOutputs, point: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any], dict]:
    """Stream from `point` to the end and finish; after a learner crash, replay from the checkpoint it restored
    (the scorers stay). A `point` without the learner's incarnation is a new run's start: its first chunks are
    admitted while the learner loads, and the learner's own resume point is checked against it. Returns the number
    of learner restarts, the source's final cursor, the learner's final state and its info."""
    import ray

    restarts = 0
    info = point if "incarnation" in point else None
    while True:
        ray.get(actors["quarantine"].rewind.remote(point["windows_done"]))
        outputs.rewind(point)
        source = make_source(cfg.stream, cursor=point["cursor"], rows=rows)
        reader = StreamReader(source, point, cfg)
        reader.start()
        try:
            if info is None:  # a new run: the learner is still loading; read ahead meanwhile
                info = wait_for_learner(actors["learner"], cfg)
                if any(info[key] != point[key] for key in ("cursor", "windows_done", "samples_read")):
                    reader.cancel()  # not where this run was expected to start: go where the learner is
                    point = info
                    continue
                point = info
            Feeder(cfg, actors, pool, reader, point, outputs.write, outputs.window_read).run()
            records, state = learner_reply(actors["learner"].finish.remote(point["incarnation"]))
            outputs.write(records)
            return restarts, source.cursor(), state, info
        except LearnerLost as lost:
            reader.cancel()
            pool.drain()  # chunks read before the crash finish before their windows' quarantine is rewound
            restarts += 1
            logger.warning("ol_ray: the learner died (%s); it restarts from its newest checkpoint (restart %d of at "
                           "most %d)", lost, restarts, cfg.learner.max_restarts)
            previous = point["incarnation"]
            point = wait_for_learner(actors["learner"], cfg)
            if point["incarnation"] == previous:  # the call failed but the actor lives on: its memory is ahead of
                ray.kill(actors["learner"], no_restart=False)  # any checkpoint, so make it restore one
                point = wait_for_learner(actors["learner"], cfg)
        finally:
            reader.cancel()


def write_accuracy_matrix(path: str, history: list[dict[str, Any]]) -> None:
    """accuracy_matrix.csv: one row per evaluation (update, samples trained, phase), one accuracy column per
    evaluation set (and balanced accuracy where it applies). Nothing when the run evaluated nothing."""
    import csv

    if not history:
        return
    names = list(history[0]["accuracy"])
    balanced = list(history[0].get("balanced_accuracy", {}))
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["update", "samples_trained", "phase", *names, *(f"{name}_balanced" for name in balanced)])
        for entry in history:
            writer.writerow([entry["update"], entry["samples_trained"], entry["phase"] or "",
                             *(entry["accuracy"].get(name) for name in names),
                             *(entry.get("balanced_accuracy", {}).get(name) for name in balanced)])


def summarize(cfg: Config, started: float, info: dict[str, Any], samples_read: int, stream_cursor: dict[str, Any],
              restarts: int, learner: dict[str, Any], quarantine: dict[str, Any],
              weights: dict[str, Any]) -> dict[str, Any]:
    """summary.json: the ledger and its identity, the final evaluation, throughput and where things went."""
    wall = time.time() - started
    totals = learner["ledger_totals"]
    accounted = totals["quarantined"] + totals["not_selected"] + totals["trained"] + totals["nonfinite"]
    return {
        "run_dir": cfg.output.run_dir,
        "samples_read": samples_read,
        **quarantine,
        "samples_trained": learner["samples_trained"],
        "samples_not_selected": learner["samples_not_selected"],
        "samples_nonfinite": learner["samples_nonfinite"],
        "samples_trained_twice": learner["samples_trained_twice"],
        "accounting_ok": (learner["ledger_balanced"] and totals["read"] == samples_read == accounted
                          and totals["quarantined"] == quarantine["samples_quarantined"]),
        "ledger": totals,
        "updates": learner["updates"],
        "nonfinite_updates": learner["nonfinite_updates"],
        "oom_retries": learner["oom_retries"],
        "labels_received": learner["labels_received"],
        "labels_trained": learner["labels_trained"],
        "memory_ceiling": learner["memory_ceiling"],
        "windows": learner["windows_done"],
        "learner_restarts": restarts,
        "restored_from": info.get("restored_from"),
        "dev_accuracy": None, "dev_loss": None, "dev_macro_f1": None,  # a classifier's; a causal LM's below
        **{"dev_" + name: value for name, value in learner["last_eval"].items() if name != "update"},
        "wall_s": wall,
        "trained_samples_per_s": learner["samples_trained"] / wall if wall > 0 else 0.0,
        **weights,
        **{key: learner[key] for key in ("staleness_mean", "staleness_max", "score_version_max", "text_truncated",
                                         "tokens_truncated", "learner_utilisation", "first_update_s",
                                         "eval_rows_rejected", "cursor", "prequential_source")},
        "staleness_bound": staleness_bound(cfg.scoring.max_lead_updates, cfg.learner.publish_every),
        "scored": bool(columns_needed(cfg)),
        "files_rejected": stream_cursor.get("rejected", []),
        "learner_device": info["device"],
        "learner_node": info["node_id"],
        "model_parameters": info["parameters"],
        "samples_holdout": (holdout_start(cfg.output.run_dir) or {}).get("read", 0) if uses_rho_loss(cfg.selection)
        else 0,
        "checkpoint": learner.get("checkpoint_path"),
        **learner.get("continual", {}),
        "config": to_dict(cfg),
    }
