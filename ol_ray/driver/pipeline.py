"""The pipeline: the stream, admitted in chunks to persistent scorer actors, into the learner actor.

    StreamSource --windows--> Feeder --chunks--> ScorerPool: validate -> tokenize -> score --block refs--> LearnerActor
                                 ^ admission control           | newest weights ^                      | publish vN
                                 |                             v quarantine.jsonl +------ WeightStore <-+
                                 +------------------- learner status (buffered, pool, done) -----------+

The scorer pool starts once per run (`ol_ray.scoring.pool`) and stays up across windows, checkpoints and learner
restarts; the feeder (`ol_ray.driver.feeding`) admits chunks only while few enough are ahead of the learner
(`ol_ray.driver.admission`: the staleness bound) and routes references, never data. The run directory gets
metrics.jsonl, quarantine.jsonl, ledger.jsonl, monitor.jsonl, checkpoints/ and summary.json.

Crashes: the learner actor restarts (`learner.max_restarts`) and restores the newest checkpoint; the driver then
drops what was in flight, rewinds the quarantine and metrics to that checkpoint, and replays the stream from its
cursor. A killed job resumes the same way with `run_pipeline(cfg, resume=True)` (`ol-ray run --resume RUN_DIR`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Optional, Sequence

import ray
import yaml

from ol_ray.batching.policies import pool_for
from ol_ray.config import to_dict
from ol_ray.config.schema import Config
from ol_ray.data.factory import make_source
from ol_ray.data.kafka import GroupCommitter
from ol_ray.driver.cluster import (check_resources, joins_a_cluster, start_actors, start_ray, start_scorers,
                                   stop_actors, wait_for_learner)
from ol_ray.driver.feeding import Feeder, LearnerLost, StreamReader, learner_reply
from ol_ray.driver.outputs import RunOutputs, summarize, write_accuracy_matrix, write_traceback
from ol_ray.driver.preflight import preflight, resolve_paths
from ol_ray.learner.irreducible import holdout_start, prepare_irreducible
from ol_ray.observe.tracking import make_trackers
from ol_ray.records import RunSummary
from ol_ray.selection.config import uses_rho_loss

__all__ = ["run_pipeline"]
logger = logging.getLogger(__name__)


























def run_pipeline(cfg: Config, rows: Optional[Sequence[dict[str, Any]]] = None, resume: bool = False) -> RunSummary:
    """Run the configured pipeline to the end of the stream (or its budget) and return the run summary. With
    `resume`, continue the run in `output.run_dir` from its newest checkpoint."""
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
        committer = GroupCommitter(cfg.stream)
    outputs = RunOutputs(run_dir, cfg.stream.max_samples or None, cfg.output.progress,
                         [committer.records] if committer else ())
    finished = False
    try:
        # a missing package or an unreachable tracking server fails here, and Ray and the files are closed
        outputs.trackers = make_trackers(cfg)
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
                            ray.get(actors["quarantine"].close.remote()), ray.get(actors["weights"].stats.remote()),
                            ray.get(actors["monitor"].stop.remote())["scorer_nodes"], len(pool))
        write_accuracy_matrix(os.path.join(run_dir, "accuracy_matrix.csv"), summary.get("accuracy_history", []))
        with open(os.path.join(run_dir, "summary.json"), "w", encoding="utf-8") as handle:
            json.dump(summary.to_json(), handle, indent=2, default=str)
        finished = True
        return summary
    except Exception as error:
        error.add_note(f"traceback: {write_traceback(run_dir, error)}")
        raise
    finally:
        outputs.close(finished)
        if committer is not None:
            committer.close()
        if pool is not None:
            pool.kill()
        stop_actors(actors)
        if started_ray:
            ray.shutdown()




def fresh_start(cfg: Config, run_dir: str) -> dict[str, Any]:
    """Where a new run's stream starts, known before the learner is up: the beginning, or after the rho_loss
    holdout. (A new run's directory holds no checkpoint, so the learner starts there too; it is checked.)"""
    holdout = holdout_start(run_dir) if uses_rho_loss(cfg.selection) else None
    return {"cursor": holdout["cursor"] if holdout else None, "windows_done": 0, "samples_read": 0, "updates": 0,
            "restored_from": None, "buffered": 0, "phase": None,
            "pool": pool_for(cfg.batching.batch_size, cfg.batching, cfg.selection.pool_size)}


def run_segments(cfg: Config, rows: Optional[Sequence[dict[str, Any]]], actors: dict[str, Any], pool: Any,
                 outputs: RunOutputs, point: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any], dict]:
    """Stream from `point` to the end and finish; after a learner crash, replay from the checkpoint it restored
    (the scorers stay). A `point` without the learner's incarnation is a new run's start: its first chunks are
    admitted while the learner loads, and the learner's own resume point is checked against it. Returns the number
    of learner restarts, the source's final cursor, the learner's final state and its info."""
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




