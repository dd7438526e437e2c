"""The learner's Ray actor: a thin shell connecting `OnlineLearner` to the weight store, the resource monitor, the
quarantine sink and Ray's metrics. Every decision is the core's (`ol_ray.learner.core`)."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Callable, Mapping, Optional

import ray
from ray.util.metrics import Counter, Gauge

from ol_ray.batching.base import POLICIES
from ol_ray.config.schema import Config
from ol_ray.learner.checkpointing import save_memory_ceiling
from ol_ray.learner.core import Columns, OnlineLearner
from ol_ray.learner.distributed import GroupFailed
from ol_ray.learner.group import LearnerGroup, start_workers
from ol_ray.observe.monitor import own_memory
from ol_ray.scoring.pool import columns_needed
from ol_ray.selection.base import STRATEGIES, pool_length
from ol_ray.weights.store import WeightPublisher, next_learner_epoch

logger = logging.getLogger(__name__)


def ewc_state(learner: OnlineLearner) -> Optional[dict[str, Any]]:
    ewc = learner.continual.ewc
    return ewc.state_dict() if ewc is not None else None


class LearnerActor:
    """Ray shell around OnlineLearner. Create with ray.remote(num_cpus=..., num_gpus=..., max_restarts=...): a
    restarted actor runs __init__ again and OnlineLearner restores the run's newest checkpoint."""

    def __init__(self, cfg: Config, run_dir: str, weight_store: Any, monitor: Any, quarantine: Any,
                 plugins: Optional[dict[str, dict[str, Any]]] = None, placement: Any = None):
        # the strategies and policies the config names, from the driver's registries (plug-ins included)
        STRATEGIES.adopt((plugins or {}).get("strategies", {}))
        POLICIES.adopt((plugins or {}).get("policies", {}))
        self.incarnation = uuid.uuid4().hex  # a restarted actor is a new incarnation: the driver must replay
        os.makedirs(run_dir, exist_ok=True)
        # with no scorer reading them (random selection), weights are published only at the start and on restore;
        # the epoch fences this incarnation's publishes against a dead one's late calls
        readers = bool(columns_needed(cfg)) or cfg.learner.publish_for_serving
        self.publisher = WeightPublisher(weight_store, cfg.learner.publish_every, scoring=readers,
                                         epoch=next_learner_epoch(run_dir))
        self.monitor = monitor
        self.weight_store = weight_store
        self.snapshot_ref = monitor.snapshot.remote()
        self.metrics = {
            "trained": Counter("ol_ray_samples_trained", description="Samples used in learner updates."),
            "updates": Counter("ol_ray_updates", description="Learner updates applied."),
            "dev_accuracy": Gauge("ol_ray_dev_accuracy", description="Latest dev-set accuracy."),
            "dev_perplexity": Gauge("ol_ray_dev_perplexity", description="Latest dev-set perplexity (causal LM)."),
            "batch_size": Gauge("ol_ray_batch_size", description="Batch size of the latest update."),
            "staleness": Gauge("ol_ray_staleness", description="Mean weight staleness of the latest batch."),
        }
        # learner.num_workers > 1: this process is rank 0 of a data-parallel group in `placement`'s bundles; the
        # other ranks start now, while this one loads and restores
        workers = start_workers(cfg, placement, run_dir) if placement is not None else None
        group = (lambda learner: LearnerGroup(cfg, learner.model, learner.optimizer, learner.device, learner.pad_id,
                                              workers, ewc_state(learner))) if workers is not None else None
        # a group that does not form fails the actor's creation with the reason (a config error, usually)
        self.learner = OnlineLearner(cfg, run_dir, publish=self.publisher.maybe_publish, snapshot=self._snapshot,
                                     report=self._report, group=group,
                                     quarantine=lambda records: ray.get(quarantine.write.remote(records)))

    def _guarded(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`call`, but a failed learner group ends this process: Ray restarts the actor, which forms a new group
        from the newest checkpoint (the driver replays from there). A group cannot go on short of a rank."""
        try:
            return call(*args, **kwargs)
        except GroupFailed as error:
            logger.error("ol_ray: %s; the learner restarts from its newest checkpoint", error)
            try:
                if error.out_of_memory > 1:  # the restarted group starts with that micro-batch halved
                    save_memory_ceiling(self.learner.run_dir, error.out_of_memory // 2)
            finally:
                os._exit(1)

    def _snapshot(self) -> Mapping[str, Any]:
        """The monitor's snapshot requested one update ago (ready by now), and a request for the next one."""
        snapshot = ray.get(self.snapshot_ref)
        self.snapshot_ref = self.monitor.snapshot.remote()
        return snapshot

    def _report(self, stats: dict[str, Any]) -> None:
        self.monitor.report.remote("learner", {**stats, **own_memory(self.learner.device), "pid": os.getpid()})

    def _record(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for record in records:
            if record["kind"] == "update":
                self.metrics["trained"].inc(record["batch_size"] - record.get("replayed", 0))
                self.metrics["updates"].inc()
                self.metrics["batch_size"].set(record["batch_size"])
                self.metrics["staleness"].set(record["staleness_mean"])
            elif record["kind"] == "eval" and record.get("dev_accuracy") is not None:
                self.metrics["dev_accuracy"].set(record["dev_accuracy"])
            elif record["kind"] == "eval" and record.get("dev_perplexity") is not None:
                self.metrics["dev_perplexity"].set(record["dev_perplexity"])
        return records

    def info(self) -> dict[str, Any]:
        """Device, node, size and process of the learner, and where the stream continues."""
        return {"device": str(self.learner.device), "node_id": ray.get_runtime_context().get_node_id(),
                "parameters": sum(p.numel() for p in self.learner.model.parameters()), "pid": os.getpid(),
                "incarnation": self.incarnation, **self.learner.status(), **self.learner.resume_point()}

    # Each call names the incarnation the driver is feeding. After a restart (which Ray may complete before the
    # driver notices), calls meant for the old incarnation return None instead of mixing a stream position the
    # restored learner has not reached into its state; the driver then replays from the restored checkpoint.
    # Each feeding call answers (records, status): the metric records it produced and `OnlineLearner.status()`.

    def _answer(self, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return self._record(records), self.learner.status()

    def group_info(self) -> dict[str, Any]:
        """The data-parallel group: its workers' process ids, each rank's parameter sums (equal when in step) and the
        updates made."""
        group = self.learner.group
        return ({"worker_pids": group.pids, "parameter_sums": group.parameter_sums(), "updates": self.learner.updates}
                if group else {})

    def add_candidates(self, candidates: Columns, incarnation: str) -> Optional[tuple[list[dict], dict]]:
        if incarnation != self.incarnation:
            return None
        self.weight_store.consumed.remote(pool_length(candidates))
        return self._answer(self._guarded(self.learner.add_candidates, candidates))

    def tick(self, incarnation: str) -> Optional[tuple[list[dict], dict]]:
        if incarnation != self.incarnation:
            return None
        return self._answer(self._guarded(self.learner.tick))

    def begin_phase(self, name: str, incarnation: str) -> Optional[tuple[list[dict], dict]]:
        if incarnation != self.incarnation:
            return None
        return self._answer(self._guarded(self.learner.begin_phase, name))

    def end_window(self, window_index: int, cursor: dict[str, Any], read: int, quarantined: int,
                   incarnation: str) -> Optional[tuple[list[dict], dict]]:
        if incarnation != self.incarnation:
            return None
        return self._answer(self._guarded(self.learner.end_window, window_index, cursor, read, quarantined))

    def finish(self, incarnation: str) -> Optional[tuple[list[dict[str, Any]], dict[str, Any]]]:
        if incarnation != self.incarnation:
            return None
        records = self._record(self._guarded(self.learner.finish))
        return records, self.learner.state()
