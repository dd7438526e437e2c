"""The learner: owns the model and optimizer, selects from scored candidates, applies weighted batched updates.

The update itself is `ol_ray.learner.update.weighted_step`, a plain function. `OnlineLearner` is plain Python too:
it buffers candidates, asks the batch policy for B (and so how large a pool to read), the selection strategy for
indices and weights, steps (halving the micro-batch on out-of-memory errors), evaluates, and checkpoints at window
boundaries. The Ray actor around it is `ol_ray.learner.actor.LearnerActor`; this module imports no Ray.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import time
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from ol_ray.batching.base import BatchContext
from ol_ray.batching.policies import clamp_batch_size, make_policy, pool_for
from ol_ray.config.schema import Config
from ol_ray.continual.learning import ContinualLearning
from ol_ray.data.tokenization import ragged
from ol_ray.learner.candidates import CandidateBuffer, take
from ol_ray.learner.checkpointing import carried_memory_ceiling, restore_newest, save
from ol_ray.learner.update import lr_factor, make_optimizer
from ol_ray.learner.updating import apply_update
from ol_ray.models.loading import device_for, load_model, load_tokenizer, pad_id_of
from ol_ray.observe.evaluation import evaluate, load_domain_sets, load_eval_set
from ol_ray.records import EvalRecord
from ol_ray.selection.base import pool_length
from ol_ray.selection.selector import make_strategy
from ol_ray.state.ledger import Ledger, SeenIds, append_ledger_log, rewind_ledger_log
from ol_ray.tasks import task_for

Columns = dict[str, np.ndarray]
logger = logging.getLogger(__name__)
MEMORY_WINDOW = 20  # recent updates whose largest memory per sample the resource policy plans with


def _no_op(*args: Any, **kwargs: Any) -> Any:
    return None


class OnlineLearner:
    """Plain-Python learner (no Ray): feed it scored candidates, it trains.

    Callbacks, all doing nothing by default for use without Ray: publish(model, version, force=, reset=) after every
    update (the publisher decides whether to really publish); snapshot() returns the resource monitor's latest
    snapshot for the batch policy; report(stats) hands step statistics to the monitor; quarantine(records) takes
    rejected samples (duplicate ids). `group(learner)`, when given, makes the data-parallel group that takes every
    update's step (`ol_ray.learner.group.LearnerGroup`).

    With a run directory that already holds checkpoints, it restores the newest readable one (falling back past
    unreadable ones with a warning; failing on any other error): model, optimizer, scheduler, RNG states, counters,
    ledger, buffered candidates and stream cursor (`ol_ray.learner.checkpointing`); `resume_point()` tells the driver
    where the stream continues.
    """

    def __init__(self, cfg: Config, run_dir: Optional[str] = None, publish: Callable[..., Any] = _no_op,
                 snapshot: Callable[[], Mapping[str, Any]] = dict, report: Callable[..., Any] = _no_op,
                 quarantine: Callable[..., Any] = _no_op, group: Optional[Callable[..., Any]] = None):
        torch.set_num_threads(cfg.learner.torch_threads)
        torch.manual_seed(cfg.model.seed)
        self.cfg = cfg
        self.run_dir = run_dir
        if run_dir:
            os.makedirs(run_dir, exist_ok=True)
        self.publish, self.snapshot, self.report, self.quarantine = publish, snapshot, report, quarantine
        self.device = device_for(cfg.learner.num_gpus)
        self.tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
        self.pad_id = pad_id_of(self.tokenizer)
        self.classes = task_for(cfg.model.kind).label_classes(cfg.model)  # label counts (0: no labels)
        self.strategy = make_strategy(cfg.selection)
        self.policy = make_policy(cfg.batching)
        self.rng = np.random.default_rng(cfg.selection.seed)
        self.eval_set = load_eval_set(cfg)
        self.domain_sets = load_domain_sets(cfg)  # eval.sets: one per domain, for the accuracy matrix
        self.continual = ContinualLearning(cfg, self.classes)  # replay, EWC, prequential accuracy, drift, phases
        self.ledger = Ledger(seen=SeenIds(cfg.learner.duplicate_window))
        self.buffer = CandidateBuffer()  # scored candidates waiting for an update, oldest first
        self.updates = 0
        self.counts = {"received": 0, "text_truncated": 0, "tokens_truncated": 0, "nonfinite_updates": 0,
                       "oom_retries": 0, "labels_received": [0] * self.classes,
                       "labels_trained": [0] * self.classes}
        self.staleness_sum = 0
        self.staleness_max = 0
        self.score_version_max = 0  # the newest weight version any trained sample was scored with
        self.busy_s = 0.0
        self.started = time.time()
        self.first_update_s: Optional[float] = None
        self.last_update_time = time.time()
        self.oom_ceiling: Optional[int] = None  # most samples per micro-batch since an out-of-memory error
        self.memory_per_sample: collections.deque = collections.deque(maxlen=MEMORY_WINDOW)  # MiB per sample
        self.last_eval: dict[str, Any] = {}
        self.updates_at_checkpoint = 0
        self.checkpoint_path: Optional[str] = None
        self.restored_from: Optional[str] = None
        self.changed_since_checkpoint = False
        self.cursor: Optional[dict[str, Any]] = None
        self.windows_done = 0
        self.checkpoint_due = False  # a drift asked for a checkpoint at the next window end
        self.pool_wanted = pool_for(cfg.batching.batch_size, cfg.batching, cfg.selection.pool_size)  # next update's
        self.duplicates: dict[int, int] = {}  # per open window: repeats this learner sent to quarantine
        self.prequential_source = "none"  # "scores": the scorers' predictions; "learner": its own, before each step
        self._build()
        if restore_newest(self):
            self.publish(self.model, self.updates, reset=True)  # scorers drop any newer version from before the crash
            self.start_records: list[dict[str, Any]] = []
        else:
            # version 0, the starting weights; a reset, in case this is a restart before the first checkpoint
            self.publish(self.model, 0, force=True, reset=True)
            self.start_records = [self.run_evaluation()] if self.evaluates and cfg.eval.at_start else []
        carried_memory_ceiling(self)  # a group that failed of an out-of-memory error left a lower ceiling
        # learner.num_workers > 1: the data-parallel group (`ol_ray.learner.group`) takes every step from here on,
        # starting from this (restored) model, optimizer and EWC state
        self.group = group(self) if group is not None else None

    def _build(self, path: Optional[str] = None) -> None:
        """Model (the configured one, or a checkpoint's), optimizer and learning-rate schedule."""
        self.model = load_model(self.cfg.model, pretrained=True, path=path).to(self.device)
        self.optimizer = make_optimizer(self.model, self.cfg.learner.lr, self.cfg.learner.weight_decay, self.device)
        schedule = self.cfg.learner
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda update: lr_factor(
            update, schedule.warmup_updates, schedule.decay_updates, schedule.final_lr_fraction))

    # --- resuming ----------------------------------------------------------------------------------------------
    def rewind_ledger_log(self) -> None:
        rewind_ledger_log(self.run_dir, self.updates, self.ledger)

    def optimizer_state(self) -> dict[str, Any]:
        """The optimizer state a checkpoint saves (a sharded group's gathered into the single learner's format)."""
        return self.group.optimizer_state() if self.group is not None else self.optimizer.state_dict()

    def stateful_parts(self) -> dict[str, Any]:
        """The parts whose JSON state a checkpoint saves by name (`ol_ray.state.contract`); the model, optimizer,
        schedule, RNG states, ledger and buffered candidates are saved beside them (`ol_ray.learner.checkpointing`)."""
        return {"strategy": self.strategy, "policy": self.policy, "continual": self.continual}

    def resume_point(self) -> dict[str, Any]:
        """Where the stream continues: the cursor and window index after the last checkpointed window."""
        phases = self.continual.phases
        return {"cursor": self.cursor, "windows_done": self.windows_done, "updates": self.updates,
                "samples_read": self.ledger.totals()["read"], "restored_from": self.restored_from,
                "phase": phases[-1]["name"] if phases else None}

    # --- feeding -----------------------------------------------------------------------------------------------
    @property
    def evaluates(self) -> bool:
        return self.eval_set is not None or bool(self.domain_sets)

    @property
    def done(self) -> bool:
        return bool(self.cfg.learner.max_updates) and self.updates >= self.cfg.learner.max_updates

    def add_candidates(self, candidates: Columns) -> list[dict[str, Any]]:
        """Take scored candidates; run an update for every full pool. Returns the metric records produced."""
        self.changed_since_checkpoint = True
        candidates = {key: ragged(value) if key in ("input_ids", "target_mask") else value
                      for key, value in candidates.items()}
        candidates = self._drop_duplicates(candidates)
        size = pool_length(candidates)
        self.counts["received"] += size
        if size:  # the stream's label mix, against which the report sets what selection chose
            self.count_labels("labels_received", candidates["label"])
        self.counts["text_truncated"] += int(np.sum(candidates.get("text_truncated", 0)))
        self.counts["tokens_truncated"] += int(np.sum(candidates.get("tokens_truncated", 0)))
        records, self.start_records = self.start_records, []
        records.extend(self._observe(candidates))  # test, then train: prequential accuracy and drift
        if self.done:  # past max_updates: accounted for, not trained
            self.ledger.record(candidates["window"], "not_selected")
            return records
        self.buffer.add(candidates)
        records.extend(self._train_while_due())
        return records

    def _observe(self, candidates: Columns) -> list[dict[str, Any]]:
        """Prequential figures and drift detection on received candidates the scorers predicted (none when
        unscored: `_update` observes the learner's own predictions then), and the configured drift reactions."""
        if "loss" in candidates and pool_length(candidates):
            self.prequential_source = "scores"
        return self.react(*self.continual.observe(candidates, self.updates))

    def react(self, records: list[dict[str, Any]], reactions: set[str]) -> list[dict[str, Any]]:
        for record in records:
            logger.warning("ol_ray: drift detected at sample %d (update %d): prequential loss rose; reactions: %s",
                           record["sample"], record["update"], ", ".join(record["reactions"]) or "none")
        if records:
            records.extend(self.refresh_ewc("drift"))
        if "reset_batch_policy" in reactions:
            self.policy = make_policy(self.cfg.batching)
        if "checkpoint" in reactions:
            self.checkpoint_due = True
        return records

    def refresh_ewc(self, reason: str) -> list[dict[str, Any]]:
        records = self.continual.refresh_ewc(self.model, self.pad_id, self.device, self.cfg.learner.precision,
                                             self.updates, reason)
        if records and self.group is not None:  # every rank adds the same penalty
            self.group.set_penalty(self.continual.ewc.state_dict())
        self.busy_s += sum(record["seconds"] for record in records)
        return records

    def begin_phase(self, name: str) -> list[dict[str, Any]]:
        """A phase of the stream starts (its first window comes next): the previous phase's end is evaluated (a
        row of the accuracy matrix) and EWC re-anchors there."""
        records, self.start_records = self.start_records, []
        self.changed_since_checkpoint = True
        if self.continual.phases and self.continual.phases[-1]["name"] != name:
            records.extend(self._train_leftovers())  # the old phase's last samples belong to it
            if self.evaluates and self.last_eval.get("update") != self.updates:
                records.append(self.run_evaluation())
        ended, phase_records = self.continual.begin_phase(name, self.updates, self.counts["received"])
        if ended:
            records.extend(self.refresh_ewc("phase"))
        return records + phase_records

    def count_labels(self, key: str, labels: np.ndarray) -> None:
        if not self.classes:  # a causal LM has no labels to count
            return
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=self.classes)
        self.counts[key] = [int(a + b) for a, b in zip(self.counts[key], counts)]

    def tick(self) -> list[dict[str, Any]]:
        """No new candidates, but time has passed: a time-driven policy (periodic) may be due."""
        records, self.start_records = self.start_records, []
        return records + self._train_while_due()

    def _train_while_due(self) -> list[dict[str, Any]]:
        """Update as long as the policy asks for a batch and enough candidates are buffered for its pool."""
        records: list[dict[str, Any]] = []
        while len(self.buffer) and not self.done:
            batch_size = self._decide_batch_size()
            # replay takes its share of the batch; the pool is read for the new samples only, so none is dropped
            replay_count = self.continual.replay_count(batch_size, self.updates) if batch_size else 0
            pool_size = (pool_for(batch_size - replay_count, self.cfg.batching, self.cfg.selection.pool_size)
                         if batch_size else 0)
            if pool_size:
                self.pool_wanted = pool_size
            if not batch_size or len(self.buffer) < pool_size:
                break
            pool = self.buffer.take(pool_size)
            records.extend(apply_update(self, pool, batch_size, replay_count))
        return records

    def _train_leftovers(self) -> list[dict[str, Any]]:
        """Train on the buffered candidates that do not fill a pool (at the end of the stream or of a phase)."""
        if not len(self.buffer) or self.done:
            return []
        self.changed_since_checkpoint = True  # the leftovers' update must reach the next checkpoint
        pool = self.buffer.take_all()
        batch_size = self._decide_batch_size() or self.cfg.batching.batch_size
        return apply_update(self, pool, batch_size, self.continual.replay_count(batch_size, self.updates),
                            evaluate_now=False)

    def _context(self) -> BatchContext:
        """What the batch policy sees: the monitor's snapshot refreshed with this learner's own memory readings,
        its measured memory per sample and out-of-memory ceiling, and the buffered candidates' uncertainty."""
        import psutil

        from ol_ray.observe.monitor import own_memory

        snapshot = {**self.snapshot(), **{"learner_" + k: v for k, v in own_memory(self.device).items()},
                    "available_mb": psutil.virtual_memory().available / 2**20,
                    "memory_per_sample_mb": max(self.memory_per_sample, default=0.0),
                    "memory_ceiling": self.oom_ceiling}
        entropy = self.buffer.column("entropy")
        uncertainty = (0.0 if entropy is None else
                       float(np.mean(entropy)) / math.log(self.classes or self.model.config.vocab_size))
        return BatchContext(pool_size=len(self.buffer), updates=self.updates, snapshot=snapshot,
                            uncertainty=uncertainty,
                            seconds_since_update=time.time() - self.last_update_time,
                            pool_ratio=self.cfg.selection.pool_size / self.cfg.batching.batch_size)

    def status(self) -> dict[str, Any]:
        """What the driver's admission control needs after each call: whether the learner is done, how many
        candidates it buffers and how large a pool its next update reads."""
        return {"done": self.done, "buffered": len(self.buffer), "pool": self.pool_wanted, "updates": self.updates}

    def _decide_batch_size(self) -> int:
        """The policy's batch size, within the configured bounds; 0 while the policy waits."""
        requested = self.policy.batch_size(self._context())
        if requested <= 0:
            return 0
        return clamp_batch_size(requested, self.cfg.batching, self.cfg.batching.max_batch_size)

    def _drop_duplicates(self, candidates: Columns) -> Columns:
        """Samples whose id was seen before go to quarantine (a replayed or repeated row must not train twice)."""
        keep = np.array([self.ledger.seen.add(sample_id) for sample_id in candidates["sample_id"]], dtype=bool)
        if keep.all():
            return candidates
        rejected = []
        for sample_id, window in zip(candidates["sample_id"][~keep], candidates["window"][~keep]):
            repeat = self.duplicates.get(int(window), 0)  # its number among the window's repeats: a resent record
            self.duplicates[int(window)] = repeat + 1  # (a retried call) has the same one, so the sink skips it
            rejected.append({"sample_id": str(sample_id), "code": "duplicate_id", "window": int(window),
                             "repeat": repeat, "reason": f"sample id {sample_id!r} was already received", "raw": ""})
        self.quarantine(rejected)
        return take(candidates, np.flatnonzero(keep))

    def end_window(self, window_index: int, cursor: dict[str, Any], read: int, quarantined: int) -> list[dict]:
        """Every sample of window `window_index` has been handed over (`read` rows, `quarantined` of them rejected
        before the learner; the repeats it rejected itself are added): the stream may resume after `cursor`, so
        this is where a due checkpoint is consistent."""
        self.changed_since_checkpoint = True
        quarantined += self.duplicates.pop(window_index, 0)
        self.ledger.finish_window(window_index, read, quarantined)
        self.cursor = cursor
        self.windows_done = window_index + 1
        every = self.cfg.checkpoint.every_updates
        if (every and self.updates - self.updates_at_checkpoint >= every) or self.checkpoint_due:
            self.checkpoint_due = False
            return [save(self)]
        return []

    def finish(self) -> list[dict[str, Any]]:
        """End of stream: train on the leftovers, evaluate and checkpoint one last time."""
        records, self.start_records = self.start_records, []
        if len(self.buffer) and not self.done:
            records.extend(self._train_leftovers())
        elif len(self.buffer):
            self.ledger.record(self.buffer.take_all()["window"], "not_selected")
        if self.evaluates and self.last_eval.get("update") != self.updates:
            records.append(self.run_evaluation())
        self.continual.end_phase()
        if self.changed_since_checkpoint or self.checkpoint_path is None:
            records.append(save(self))
        return records

    def log_ledger(self, entry: dict[str, Any]) -> None:
        if self.run_dir:
            append_ledger_log(self.run_dir, entry)

    def run_evaluation(self) -> dict[str, Any]:
        """The dev set (eval.path: the dev_* figures) and every domain set of eval.sets (their figures by name)."""
        started = time.perf_counter()
        sets = {"dev": self.eval_set} if self.eval_set is not None else {}
        results = {name: evaluate(self.model, eval_set, self.pad_id, self.device, self.cfg.eval.batch_size,
                                  self.cfg.learner.precision, self.cfg.scoring.micro_batch_tokens)
                   for name, eval_set in {**sets, **self.domain_sets}.items()}
        self.busy_s += time.perf_counter() - started
        trained = self.ledger.totals()["trained"]
        self.continual.record_eval(self.updates, trained, results)
        result = results.get("dev", {})
        self.last_eval = {"update": self.updates, **result}
        return EvalRecord(update=self.updates, time=time.time(), samples_trained=trained,
                          eval_s=time.perf_counter() - started,
                          sets={name: results[name] for name in self.domain_sets} if self.domain_sets else None,
                          extra={"dev_" + name: value for name, value in result.items()}).to_json()

    # --- reporting ---------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Counters and positions for the run summary."""
        totals = self.ledger.totals()
        wall = time.time() - self.started
        return {
            "updates": self.updates,
            "samples_received": self.counts["received"],
            "samples_trained": totals["trained"],
            "samples_not_selected": totals["not_selected"],
            "samples_nonfinite": totals["nonfinite"],
            "samples_trained_twice": totals["trained_twice"],
            "samples_buffered": len(self.buffer),
            "nonfinite_updates": self.counts["nonfinite_updates"],
            "oom_retries": self.counts.get("oom_retries", 0),
            "labels_received": self.counts["labels_received"],
            "labels_trained": self.counts["labels_trained"],
            "memory_ceiling": self.oom_ceiling,
            "ledger_totals": totals,
            "ledger_balanced": self.ledger.balanced(),
            "text_truncated": self.counts["text_truncated"],
            "tokens_truncated": self.counts["tokens_truncated"],
            "staleness_mean": self.staleness_sum / totals["trained"] if totals["trained"] else 0.0,
            "staleness_max": self.staleness_max,
            "score_version_max": self.score_version_max,
            "learner_busy_s": self.busy_s,
            "learner_utilisation": self.busy_s / wall if wall > 0 else 0.0,
            "first_update_s": self.first_update_s,
            "last_eval": self.last_eval,
            "eval_rows_rejected": (self.eval_set.rows_rejected if self.eval_set else 0)
            + sum(eval_set.rows_rejected for eval_set in self.domain_sets.values()),
            "continual": self.continual.summary(),
            "prequential_source": self.prequential_source,
            "cursor": self.cursor,
            "windows_done": self.windows_done,
            "device": str(self.device),
            "learner_ranks": self.group.world if self.group is not None else 1,
            "checkpoint_path": self.checkpoint_path,
            "restored_from": self.restored_from,
        }
