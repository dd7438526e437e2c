"""The learner: owns the model and optimizer, selects from scored candidates, applies weighted batched updates.

The update itself is `ol_ray.learner.update.weighted_step`, a plain function. `OnlineLearner` is plain Python too: it buffers
candidates, asks the batch policy for B (and so how large a pool to read), the selection strategy for indices and
weights, steps (halving the micro-batch on out-of-memory errors), evaluates, and checkpoints at window boundaries.
`LearnerActor` is the thin Ray shell that connects it to the weight store, the resource monitor and Ray's metrics.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import time
import uuid
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from ol_ray.batching.base import BatchContext
from ol_ray.batching.policies import clamp_batch_size, lr_scale, make_policy, pool_for
from ol_ray.learner.candidates import CandidateBuffer, take
from ol_ray.state.checkpoint import CheckpointError, checkpoints_newest_first, folder_mb, load_checkpoint, save_checkpoint
from ol_ray.config.schema import Config
from ol_ray.continual.learning import ContinualLearning
from ol_ray.observe.evaluation import evaluate, load_domain_sets, load_eval_set
from ol_ray.state.ledger import Ledger, SeenIds, append_ledger_log, rewind_ledger_log
from ol_ray.models.lora import check_resumable
from ol_ray.models.loading import device_for, load_model, load_tokenizer, output_layer, pad_id_of
from ol_ray.learner.irreducible import holdout_start, uses_rho_loss
from ol_ray.selection.base import pool_length
from ol_ray.selection.selector import make_strategy
from ol_ray.state.fit import check_state_fits, component_names
from ol_ray.data.tokenization import ragged
from ol_ray.learner.update import (TrainBatch, is_out_of_memory, lr_factor, make_optimizer, micro_batch_plan,
                           weighted_step)

Columns = dict[str, np.ndarray]
logger = logging.getLogger(__name__)


def _no_op(*args: Any, **kwargs: Any) -> Any:
    return None


def _state_of(component: Any) -> Optional[dict[str, Any]]:
    """A stateful strategy or policy offers state_dict() (JSON-able); a stateless one has nothing to save."""
    return component.state_dict() if hasattr(component, "state_dict") else None


def _restore_state(component: Any, state: Optional[dict[str, Any]]) -> None:
    if state is not None and hasattr(component, "load_state_dict"):
        component.load_state_dict(state)


class OnlineLearner:
    """Plain-Python learner (no Ray): feed it scored candidates, it trains.

    Callbacks, all doing nothing by default for use without Ray: publish(model, version, force=, reset=) after every
    update (the publisher decides whether to really publish); snapshot() returns the resource monitor's latest
    snapshot for the batch policy; report(stats) hands step statistics to the monitor; quarantine(records) takes
    rejected samples (duplicate ids).

    With a run directory that already holds checkpoints, it restores the newest readable one (falling back past
    unreadable ones with a warning; failing on any other error): model, optimizer, scheduler, RNG states, counters, ledger, buffered candidates and stream
    cursor; `resume_point()` tells the driver where the stream continues.
    """

    def __init__(self, cfg: Config, run_dir: Optional[str] = None, publish: Callable[..., Any] = _no_op,
                 snapshot: Callable[[], Mapping[str, Any]] = dict, report: Callable[..., Any] = _no_op,
                 quarantine: Callable[..., Any] = _no_op):
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
        self.classes = cfg.model.num_labels if cfg.model.kind == "sequence_classification" else 0  # label counts
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
        self.memory_per_sample: collections.deque = collections.deque(maxlen=20)  # MiB, over recent updates
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
        if self._restore():
            self.publish(self.model, self.updates, reset=True)  # scorers drop any newer version from before the crash
            self.start_records: list[dict[str, Any]] = []
        else:
            # version 0, the starting weights; a reset, in case this is a restart before the first checkpoint
            self.publish(self.model, 0, force=True, reset=True)
            self.start_records = [self._evaluate()] if self.evaluates and cfg.eval.at_start else []

    def _build(self, path: Optional[str] = None) -> None:
        """Model (the configured one, or a checkpoint's), optimizer and learning-rate schedule."""
        self.model = load_model(self.cfg.model, pretrained=True, path=path).to(self.device)
        self.optimizer = make_optimizer(self.model, self.cfg.learner.lr, self.cfg.learner.weight_decay, self.device)
        schedule = self.cfg.learner
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda update: lr_factor(
            update, schedule.warmup_updates, schedule.decay_updates, schedule.final_lr_fraction))

    # --- resuming ----------------------------------------------------------------------------------------------
    def _restore(self) -> bool:
        """Load the newest readable checkpoint of the run directory, if any. Only an unreadable one (a file missing,
        truncated or failing its checksum: CheckpointError) is skipped for the one before; any other failure (a
        code error, CUDA, out of memory) fails the restore. When checkpoints exist and none is readable, the learner
        starts over only with checkpoint.start_over_if_unreadable."""
        if not self.run_dir:
            return False
        unreadable = []
        for path in checkpoints_newest_first(os.path.join(self.run_dir, "checkpoints")):
            try:
                state, training_state, candidates = load_checkpoint(path)
            except CheckpointError as error:
                logger.warning("ol_ray: cannot resume from %s (%s); trying an older checkpoint", path, error)
                unreadable.append(str(error))
                continue
            check_resumable(os.path.join(path, "model"), self.cfg.model)  # a config mismatch is no corrupt file
            check_state_fits(self.cfg, state, self.strategy, self.policy)
            self._load_checkpoint(path, state, training_state, candidates)
            return True
        if unreadable and not self.cfg.checkpoint.start_over_if_unreadable:
            raise CheckpointError(f"no checkpoint in {self.run_dir} is readable ({'; '.join(unreadable)}); to "
                                  f"start this run over from the configured model, set "
                                  f"checkpoint.start_over_if_unreadable=true")
        if unreadable:
            logger.warning("ol_ray: no readable checkpoint in %s; starting from the beginning, as "
                           "checkpoint.start_over_if_unreadable asks", self.run_dir)
        # rho_loss: the stream starts after the irreducible-loss model's holdout
        holdout = holdout_start(self.run_dir) if uses_rho_loss(self.cfg.selection) else None
        self.cursor = holdout["cursor"] if holdout else None
        self._rewind_ledger_log()  # a restart before any checkpoint: everything trained so far is replayed
        return False

    def _load_checkpoint(self, path: str, state: dict[str, Any], training_state: dict[str, Any],
                         candidates: Columns) -> None:
        """Take every part's state from a checkpoint that was read whole."""
        self._build(os.path.join(path, "model"))
        self.optimizer.load_state_dict(training_state["optimizer"])
        self.scheduler.load_state_dict(training_state["scheduler"])
        torch.set_rng_state(training_state["torch_rng"])
        if "cuda_rng" in training_state and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(training_state["cuda_rng"])
        if "continual" in state:  # absent in checkpoints from before continual learning
            self.continual.load_state_dict(state["continual"], state.get("replay_columns"))
        if self.continual.ewc is not None and "ewc" in training_state:
            self.continual.ewc.load_state_dict(training_state["ewc"], self.device)
        self.rng.bit_generator.state = state["selection_rng"]
        _restore_state(self.strategy, state.get("strategy_state"))
        _restore_state(self.policy, state.get("policy_state"))
        self.oom_ceiling = state.get("oom_ceiling")
        self.memory_per_sample.extend(state.get("memory_per_sample", []))
        self.updates = self.updates_at_checkpoint = state["updates"]
        self.counts = state["counts"]
        for key in ("labels_received", "labels_trained"):  # absent in checkpoints from before the label counts
            self.counts.setdefault(key, [0] * self.classes)
        self.staleness_sum, self.staleness_max = state["staleness_sum"], state["staleness_max"]
        self.score_version_max = state["score_version_max"]
        self.last_eval = state["last_eval"]
        self.ledger = Ledger.from_json(state["ledger"], state.get("arrays", {}).get("seen_ids"),
                                       self.cfg.learner.duplicate_window)
        self.cursor, self.windows_done = state["cursor"], state["windows_done"]
        self.buffer = CandidateBuffer(candidates)
        self.checkpoint_path = self.restored_from = path
        self._rewind_ledger_log()

    def _rewind_ledger_log(self) -> None:
        rewind_ledger_log(self.run_dir, self.updates, self.ledger)

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
            self._count_labels("labels_received", candidates["label"])
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
        return self._react(*self.continual.observe(candidates, self.updates))

    def _react(self, records: list[dict[str, Any]], reactions: set[str]) -> list[dict[str, Any]]:
        for record in records:
            logger.warning("ol_ray: drift detected at sample %d (update %d): prequential loss rose; reactions: %s",
                           record["sample"], record["update"], ", ".join(record["reactions"]) or "none")
        if records:
            records.extend(self._refresh_ewc("drift"))
        if "reset_batch_policy" in reactions:
            self.policy = make_policy(self.cfg.batching)
        if "checkpoint" in reactions:
            self.checkpoint_due = True
        return records

    def _refresh_ewc(self, reason: str) -> list[dict[str, Any]]:
        records = self.continual.refresh_ewc(self.model, self.pad_id, self.device, self.cfg.learner.precision,
                                             self.updates, reason)
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
                records.append(self._evaluate())
        ended, phase_records = self.continual.begin_phase(name, self.updates, self.counts["received"])
        if ended:
            records.extend(self._refresh_ewc("phase"))
        return records + phase_records

    def _count_labels(self, key: str, labels: np.ndarray) -> None:
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
            records.extend(self._update(pool, batch_size, replay_count))
        return records

    def _train_leftovers(self) -> list[dict[str, Any]]:
        """Train on the buffered candidates that do not fill a pool (at the end of the stream or of a phase)."""
        if not len(self.buffer) or self.done:
            return []
        self.changed_since_checkpoint = True  # the leftovers' update must reach the next checkpoint
        pool = self.buffer.take_all()
        batch_size = self._decide_batch_size() or self.cfg.batching.batch_size
        return self._update(pool, batch_size, self.continual.replay_count(batch_size, self.updates),
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
        return BatchContext(pool_size=len(self.buffer), updates=self.updates, snapshot=snapshot, uncertainty=uncertainty,
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
            return [self._checkpoint()]
        return []

    def finish(self) -> list[dict[str, Any]]:
        """End of stream: train on the leftovers, evaluate and checkpoint one last time."""
        records, self.start_records = self.start_records, []
        if len(self.buffer) and not self.done:
            records.extend(self._train_leftovers())
        elif len(self.buffer):
            self.ledger.record(self.buffer.take_all()["window"], "not_selected")
        if self.evaluates and self.last_eval.get("update") != self.updates:
            records.append(self._evaluate())
        self.continual.end_phase()
        if self.changed_since_checkpoint or self.checkpoint_path is None:
            records.append(self._checkpoint())
        return records

    # --- the update --------------------------------------------------------------------------------------------
    def _update(self, pool: Columns, batch_size: int, replay_count: int = 0,
                evaluate_now: bool = True) -> list[dict[str, Any]]:
        """An update of `batch_size` samples: `replay_count` from the replay buffer, the rest selected from the pool
        (all of a smaller pool)."""
        started = time.perf_counter()
        pool_size = pool_length(pool)
        selection = self.strategy.select(pool, min(batch_size - replay_count, pool_size), self.rng)
        chosen = take(pool, selection.indices)
        rest = np.setdiff1d(np.arange(pool_size), selection.indices)
        self.ledger.record(pool["window"][rest], "not_selected")
        not_selected_ids = [str(i) for i in pool["sample_id"][rest]]
        replayed, replay_weights = self._replayed(replay_count)
        batch = TrainBatch(np.concatenate([chosen["input_ids"], replayed["input_ids"]]),
                           np.concatenate([chosen["label"], replayed["label"]]),
                           np.concatenate([selection.weights, replay_weights]),
                           np.concatenate([chosen["target_mask"], replayed["target_mask"]])
                           if "target_mask" in chosen else None)
        scheduled_lr = self.scheduler.get_last_lr()
        scale = lr_scale(len(batch.labels), self.cfg.batching.batch_size, self.cfg.batching.lr_scaling)
        for group, lr in zip(self.optimizer.param_groups, scheduled_lr):  # the scheduler resets it next step
            group["lr"] = lr * scale
        stats, oom_records = self._step_within_memory(batch)
        step_s = time.perf_counter() - started
        self.busy_s += step_s
        trained_ids = [str(i) for i in chosen["sample_id"]]
        if stats["skipped"]:
            self.counts["nonfinite_updates"] += 1
            self.ledger.record(chosen["window"], "nonfinite")
            # numbered as the update it would have been, so a rewind to the checkpoint before it drops it
            self._log_ledger({"update": self.updates + 1, "nonfinite": trained_ids, "not_selected": not_selected_ids})
            logger.warning("ol_ray: update skipped: non-finite loss %s or gradient norm %s", stats["loss"],
                           stats["grad_norm"])
            return oom_records + [{"kind": "skipped_update", "update": self.updates + 1,
                                   "batch_size": len(trained_ids), "loss": stats["loss"],
                                   "grad_norm": stats["grad_norm"], "time": time.time()}]
        lr = scheduled_lr[0] * scale
        self.scheduler.step()
        self.last_update_time = time.time()
        if hasattr(self.policy, "observe"):
            self.policy.observe({**stats, "batch_size": len(batch.labels)})
        scored = "weight_version" in chosen
        # unscored samples: no score to be stale; their test-then-train figures are the step's own predictions
        staleness = self.updates - chosen["weight_version"] if scored else np.zeros(len(chosen["label"]), np.int64)
        drift_records: list[dict[str, Any]] = []
        if not scored:
            new = len(chosen["label"])
            self.prequential_source = "learner"
            drift_records = self._react(*self.continual.observe_predictions(
                chosen["sample_id"], stats["sample_correct"][:new], stats["sample_losses"][:new], chosen["label"],
                self.updates))
        self.updates += 1
        self.ledger.record(chosen["window"], "trained", trained_ids)
        self._count_labels("labels_trained", chosen["label"])
        replayed_ids = [str(i) for i in replayed["sample_id"]]
        self._log_ledger({"update": self.updates, "trained": trained_ids, "not_selected": not_selected_ids,
                          **({"replayed": replayed_ids} if replayed_ids else {})})
        self.continual.after_update(pool, chosen, len(replayed_ids))
        if scored:
            self.score_version_max = max(self.score_version_max, int(chosen["weight_version"].max()))
        self.staleness_sum += int(staleness.sum())
        self.staleness_max = max(self.staleness_max, int(staleness.max()))
        self.publish(self.model, self.updates)
        if self.first_update_s is None:
            self.first_update_s = time.time() - self.started
        trained = len(trained_ids) + len(replayed_ids)
        self.report({"samples": trained, "seconds": step_s, "batch_size": trained, "updates": self.updates,
                     "memory_per_sample_mb": max(self.memory_per_sample, default=None),
                     "memory_ceiling": self.oom_ceiling})
        totals = self.ledger.totals()
        records = [{
            "kind": "update", "update": self.updates, "samples_received": self.counts["received"],
            "samples_trained": totals["trained"], "samples_not_selected": totals["not_selected"],
            "pool_size": pool_size, "batch_size": trained, "loss": stats["loss"],
            "weight_mean": float(selection.weights.mean()), "weight_max": float(selection.weights.max()),
            "sample_loss_mean": stats["sample_loss_mean"], "grad_norm": stats["grad_norm"], "lr": lr,
            "weight_version": self.updates, "staleness_mean": float(staleness.mean()),
            "staleness_max": int(staleness.max()), "step_s": step_s, "samples_per_s": trained / step_s,
            "micro_batches": stats["micro_batches"], "time": time.time(),
            **self.continual.prequential.metrics(),
        }]
        if self.continual.replay is not None:
            records[0].update(replayed=len(replayed_ids), samples_replayed=self.continual.replayed,
                              replay_loss_mean=float(np.mean(replayed["loss"])) if replayed_ids else None)
        if self.continual.phases:
            records[0]["phase"] = self.continual.phases[-1]["name"]
        for key in ("memory_per_sample_mb", "noise_small_sq", "noise_big_sq", "penalty"):
            if key in stats:
                records[0][key] = stats[key]
        if self.classes:
            records[0]["selected_labels"] = np.bincount(chosen["label"], minlength=self.classes).tolist()
        if "target_tokens" in chosen:
            records[0]["target_tokens"] = int(chosen["target_tokens"].sum())
        noise_scale = getattr(self.policy, "noise_scale", None)
        if noise_scale is not None and noise_scale() is not None and math.isfinite(noise_scale()):
            records[0]["noise_scale"] = noise_scale()  # unbounded (noise swamps the gradient): left out
        records = oom_records + records + drift_records
        if self.continual.ewc_due(self.updates):
            records.extend(self._refresh_ewc("interval"))
        if evaluate_now and self.evaluates and self.updates % self.cfg.eval.every_updates == 0:
            records.append(self._evaluate())
        return records

    def _replayed(self, count: int) -> tuple[Columns, np.ndarray]:
        """`count` samples from the replay buffer, rescored with the current weights and picked by the selection
        strategy among `count` x replay_pool_ratio drawn; empty columns when nothing is replayed."""
        if not count:
            empty = np.empty(0, dtype=object)
            return {"input_ids": empty, "label": np.zeros(0, dtype=np.int64), "target_mask": empty,
                    "sample_id": empty}, np.zeros(0, dtype=np.float32)
        drawn = self.continual.replay_candidates(count, self.model, output_layer(self.model, self.cfg.model),
                                                 self.pad_id, self.device, self.cfg.learner.precision,
                                                 self.cfg.scoring.micro_batch_tokens, self.updates)
        # picked like new candidates, but not observed: diversity's memory and coverage's clusters follow the stream
        selection = self.strategy.select(drawn, count, self.rng, observe=False)
        return take(drawn, selection.indices), selection.weights

    def _step_within_memory(self, batch: TrainBatch) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The weighted step in micro-batches that fit: on an out-of-memory error, halve the largest micro-batch,
        remember that as the ceiling (later steps and the `resource` policy stay under it) and retrain the same
        samples, so no sample is lost; a single sample that does not fit is an error."""
        lcfg = self.cfg.learner
        records = []
        wants_noise = getattr(self.policy, "wants_gradient_noise", False)
        while True:
            limit = min(filter(None, (lcfg.micro_batch_size, self.oom_ceiling)), default=0)
            try:
                ewc = self.continual.ewc
                stats = weighted_step(self.model, self.optimizer, batch, self.pad_id, self.device, lcfg.grad_clip,
                                      lcfg.precision, lcfg.micro_batch_tokens, limit, noise_probe=wants_noise,
                                      measure_memory=True, penalty=ewc.penalty if ewc is not None else None)
                break
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                plan, _ = micro_batch_plan([len(ids) for ids in batch.input_ids], lcfg.micro_batch_tokens, limit,
                                           wants_noise)
                largest = max(len(group) for group in plan)
                if largest <= 1:
                    raise
                self.oom_ceiling = largest // 2
                self.counts["oom_retries"] = self.counts.get("oom_retries", 0) + 1
                logger.warning("ol_ray: out of memory with micro-batches of %d samples; retrying the same %d "
                               "samples in micro-batches of at most %d", largest, len(batch.labels), self.oom_ceiling)
                records.append({"kind": "oom", "update": self.updates + 1, "micro_batch": largest,
                                "ceiling": self.oom_ceiling, "batch_size": len(batch.labels), "time": time.time()})
        if stats.get("memory_per_sample_mb"):
            self.memory_per_sample.append(stats["memory_per_sample_mb"])
        return stats, records

    def _log_ledger(self, entry: dict[str, Any]) -> None:
        if self.run_dir:
            append_ledger_log(self.run_dir, entry)

    def _evaluate(self) -> dict[str, Any]:
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
        record = {"kind": "eval", "update": self.updates, "samples_trained": trained,
                  **{"dev_" + name: value for name, value in result.items()},
                  "eval_s": time.perf_counter() - started, "time": time.time()}
        if self.domain_sets:
            record["sets"] = {name: results[name] for name in self.domain_sets}
        return record

    def _checkpoint(self) -> dict[str, Any]:
        started = time.perf_counter()
        if not self.run_dir:
            return {"kind": "checkpoint", "update": self.updates, "path": None, "time": time.time()}
        candidates = self.buffer.columns()
        state = {
            "updates": self.updates, "counts": self.counts, "staleness_sum": self.staleness_sum,
            "staleness_max": self.staleness_max, "score_version_max": self.score_version_max,
            "last_eval": self.last_eval, "ledger": self.ledger.to_json(), "cursor": self.cursor,
            "windows_done": self.windows_done, "selection_rng": self.rng.bit_generator.state,
            "strategy_state": _state_of(self.strategy), "policy_state": _state_of(self.policy),
            "oom_ceiling": self.oom_ceiling, "memory_per_sample": list(self.memory_per_sample),
            "continual": self.continual.state_dict(), **component_names(self.cfg),
        }
        training_state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                          "torch_rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            training_state["cuda_rng"] = torch.cuda.get_rng_state_all()
        if self.continual.ewc is not None:
            training_state["ewc"] = self.continual.ewc.state_dict()
        replay = self.continual.replay
        self.checkpoint_path = save_checkpoint(os.path.join(self.run_dir, "checkpoints"), self.updates, self.model,
                                               self.tokenizer, training_state, candidates, state,
                                               self.cfg.checkpoint.keep, {"seen_ids": self.ledger.seen.hashes()},
                                               replay.columns() if replay is not None else None)
        self.updates_at_checkpoint = self.updates
        self.changed_since_checkpoint = False
        return {"kind": "checkpoint", "update": self.updates, "path": self.checkpoint_path, "cursor": self.cursor,
                "checkpoint_s": time.perf_counter() - started, "checkpoint_mb": folder_mb(self.checkpoint_path),
                "state_mb": os.path.getsize(os.path.join(self.checkpoint_path, "state.json")) / 2**20,
                "time": time.time()}

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
            "checkpoint_path": self.checkpoint_path,
            "restored_from": self.restored_from,
        }


class LearnerActor:
    """Ray shell around OnlineLearner. Create with ray.remote(num_cpus=..., num_gpus=..., max_restarts=...): a
    restarted actor runs __init__ again and OnlineLearner restores the run's newest checkpoint."""

    def __init__(self, cfg: Config, run_dir: str, weight_store: Any, monitor: Any, quarantine: Any):
        import ray
        from ray.util.metrics import Counter, Gauge

        from ol_ray.scoring.pool import columns_needed
        from ol_ray.weights.store import WeightPublisher, next_learner_epoch

        self.incarnation = uuid.uuid4().hex  # a restarted actor is a new incarnation: the driver must replay
        os.makedirs(run_dir, exist_ok=True)
        # with no scorer reading them (random selection), weights are published only at the start and on restore;
        # the epoch fences this incarnation's publishes against a dead one's late calls
        self.publisher = WeightPublisher(weight_store, cfg.learner.publish_every, scoring=bool(columns_needed(cfg)),
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
        self.learner = OnlineLearner(cfg, run_dir, publish=self.publisher.maybe_publish, snapshot=self._snapshot,
                                     report=self._report,
                                     quarantine=lambda records: ray.get(quarantine.write.remote(records)))

    def _snapshot(self) -> Mapping[str, Any]:
        """The monitor's snapshot requested one update ago (ready by now), and a request for the next one."""
        import ray

        snapshot = ray.get(self.snapshot_ref)
        self.snapshot_ref = self.monitor.snapshot.remote()
        return snapshot

    def _report(self, stats: dict[str, Any]) -> None:
        from ol_ray.observe.monitor import own_memory

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
        import ray

        return {"device": str(self.learner.device), "node_id": ray.get_runtime_context().get_node_id(),
                "parameters": sum(p.numel() for p in self.learner.model.parameters()), "pid": os.getpid(),
                "incarnation": self.incarnation, **self.learner.status(), **self.learner.resume_point()}

    # Each call names the incarnation the driver is feeding. After a restart (which Ray may complete before the
    # driver notices), calls meant for the old incarnation return None instead of mixing a stream position the
    # restored learner has not reached into its state; the driver then replays from the restored checkpoint.
    # Each feeding call answers (records, status): the metric records it produced and `OnlineLearner.status()`.

    def _answer(self, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return self._record(records), self.learner.status()

    def add_candidates(self, candidates: Columns, incarnation: str) -> Optional[tuple[list[dict], dict]]:
        if incarnation != self.incarnation:
            return None
        self.weight_store.consumed.remote(pool_length(candidates))
        return self._answer(self.learner.add_candidates(candidates))

    def tick(self, incarnation: str) -> Optional[tuple[list[dict], dict]]:
        if incarnation != self.incarnation:
            return None
        return self._answer(self.learner.tick())

    def begin_phase(self, name: str, incarnation: str) -> Optional[tuple[list[dict], dict]]:
        if incarnation != self.incarnation:
            return None
        return self._answer(self.learner.begin_phase(name))

    def end_window(self, window_index: int, cursor: dict[str, Any], read: int, quarantined: int,
                   incarnation: str) -> Optional[tuple[list[dict], dict]]:
        if incarnation != self.incarnation:
            return None
        return self._answer(self.learner.end_window(window_index, cursor, read, quarantined))

    def finish(self, incarnation: str) -> Optional[tuple[list[dict[str, Any]], dict[str, Any]]]:
        if incarnation != self.incarnation:
            return None
        records = self._record(self.learner.finish())
        return records, self.learner.state()
