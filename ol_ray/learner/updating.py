"""One weighted update of the learner: select from the pool (and the replay buffer), step in micro-batches that
fit (halving them on out-of-memory errors), account every sample in the ledger, and make the update record.
Functions of an `OnlineLearner` (`ol_ray.learner.core`), kept apart so that module reads as the feeding loop."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch

from ol_ray.batching.policies import lr_scale
from ol_ray.learner.candidates import take
from ol_ray.learner.update import is_out_of_memory, micro_batch_plan, weighted_step
from ol_ray.models.loading import output_layer
from ol_ray.records import OutOfMemoryRecord, SkippedUpdateRecord, UpdateRecord
from ol_ray.selection.base import pool_length
from ol_ray.tasks.losses import TrainBatch

Columns = dict[str, np.ndarray]
logger = logging.getLogger(__name__)


def apply_update(learner: Any, pool: Columns, batch_size: int, replay_count: int = 0,
            evaluate_now: bool = True) -> list[dict[str, Any]]:
    """An update of `batch_size` samples: `replay_count` from the replay buffer, the rest selected from the pool
    (all of a smaller pool)."""
    started = time.perf_counter()
    pool_size = pool_length(pool)
    selection = learner.strategy.select(pool, min(batch_size - replay_count, pool_size), learner.rng)
    chosen = take(pool, selection.indices)
    rest = np.setdiff1d(np.arange(pool_size), selection.indices)
    learner.ledger.record(pool["window"][rest], "not_selected")
    not_selected_ids = [str(i) for i in pool["sample_id"][rest]]
    replayed, replay_weights = _replayed(learner, replay_count)
    batch = TrainBatch(np.concatenate([chosen["input_ids"], replayed["input_ids"]]),
                       np.concatenate([chosen["label"], replayed["label"]]),
                       np.concatenate([rated(selection.weights, chosen), rated(replay_weights, replayed)]),
                       np.concatenate([chosen["target_mask"], replayed["target_mask"]])
                       if "target_mask" in chosen else None)
    lr = _scale_lr(learner, len(batch.labels))
    stats, records = _step_within_memory(learner, batch)
    step_s = time.perf_counter() - started
    learner.busy_s += step_s
    trained_ids = [str(i) for i in chosen["sample_id"]]
    if stats["skipped"]:
        return records + [_skip(learner, chosen, trained_ids, not_selected_ids, stats)]
    learner.scheduler.step()
    learner.last_update_time = time.time()
    if hasattr(learner.policy, "observe"):
        learner.policy.observe({**stats, "batch_size": len(batch.labels)})
    staleness, drift_records = _account(learner, pool, chosen, replayed, stats, trained_ids, not_selected_ids)
    trained = len(trained_ids) + len(replayed["sample_id"])
    learner.report({"samples": trained, "seconds": step_s, "batch_size": trained, "updates": learner.updates,
                 "memory_per_sample_mb": max(learner.memory_per_sample, default=None),
                 "memory_ceiling": learner.oom_ceiling})
    records.append(_update_record(learner, pool_size, chosen, replayed, selection.weights, stats, staleness, lr,
                                       step_s))
    records.extend(drift_records)
    if learner.continual.ewc_due(learner.updates):
        records.extend(learner.refresh_ewc("interval"))
    if evaluate_now and learner.evaluates and learner.updates % learner.cfg.eval.every_updates == 0:
        records.append(learner.run_evaluation())
    return records


def rated(weights: np.ndarray, columns: Columns) -> np.ndarray:
    """Selection weights times the rows' ratings (causal-LM feedback: 0 trains nothing on a row), where rated."""
    rating = columns.get("rating")
    if rating is None or len(rating) != len(weights):
        return weights
    return (weights * rating).astype(np.float32)


def _scale_lr(learner: Any, batch_size: int) -> float:
    """Set this step's learning rate: the schedule's, scaled for the batch size (the scheduler resets it next
    step); returns it."""
    scheduled_lr = learner.scheduler.get_last_lr()
    scale = lr_scale(batch_size, learner.cfg.batching.batch_size, learner.cfg.batching.lr_scaling)
    for group, lr in zip(learner.optimizer.param_groups, scheduled_lr):
        group["lr"] = lr * scale
    return scheduled_lr[0] * scale


def _skip(learner: Any, chosen: Columns, trained_ids: list[str], not_selected_ids: list[str],
          stats: dict[str, Any]) -> dict[str, Any]:
    """A step whose loss or gradient norm was not finite: nothing applied, its samples accounted as nonfinite."""
    learner.counts["nonfinite_updates"] += 1
    learner.ledger.record(chosen["window"], "nonfinite")
    # numbered as the update it would have been, so a rewind to the checkpoint before it drops it
    learner.log_ledger({"update": learner.updates + 1, "nonfinite": trained_ids, "not_selected": not_selected_ids})
    logger.warning("ol_ray: update skipped: non-finite loss %s or gradient norm %s", stats["loss"],
                   stats["grad_norm"])
    return SkippedUpdateRecord(update=learner.updates + 1, time=time.time(), batch_size=len(trained_ids),
                               loss=stats["loss"], grad_norm=stats["grad_norm"]).to_json()


def _account(learner: Any, pool: Columns, chosen: Columns, replayed: Columns, stats: dict[str, Any],
             trained_ids: list[str], not_selected_ids: list[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Count an applied update: ledger and its log, label mix, staleness, prequential figures of unscored
    samples (their test-then-train figures are the step's own predictions), the published version."""
    scored = "weight_version" in chosen
    staleness = learner.updates - chosen["weight_version"] if scored else np.zeros(len(chosen["label"]), np.int64)
    drift_records: list[dict[str, Any]] = []
    if not scored:
        new = len(chosen["label"])
        learner.prequential_source = "learner"
        drift_records = learner.react(*learner.continual.observe_predictions(
            chosen["sample_id"], stats["sample_correct"][:new], stats["sample_losses"][:new], chosen["label"],
            learner.updates))
    learner.updates += 1
    learner.ledger.record(chosen["window"], "trained", trained_ids)
    learner.count_labels("labels_trained", chosen["label"])
    replayed_ids = [str(i) for i in replayed["sample_id"]]
    learner.log_ledger({"update": learner.updates, "trained": trained_ids, "not_selected": not_selected_ids,
                      **({"replayed": replayed_ids} if replayed_ids else {})})
    learner.continual.after_update(pool, chosen, len(replayed_ids))
    if scored:
        learner.score_version_max = max(learner.score_version_max, int(chosen["weight_version"].max()))
    learner.staleness_sum += int(staleness.sum())
    learner.staleness_max = max(learner.staleness_max, int(staleness.max()))
    learner.publish(learner.model, learner.updates)
    if learner.first_update_s is None:
        learner.first_update_s = time.time() - learner.started
    return staleness, drift_records


def _update_record(learner: Any, pool_size: int, chosen: Columns, replayed: Columns, weights: np.ndarray,
                   stats: dict[str, Any], staleness: np.ndarray, lr: float, step_s: float) -> dict[str, Any]:
    totals = learner.ledger.totals()
    trained = len(chosen["sample_id"]) + len(replayed["sample_id"])
    replay = learner.continual.replay is not None
    noise_scale = getattr(learner.policy, "noise_scale", lambda: None)()
    return UpdateRecord(
        update=learner.updates, time=time.time(), samples_received=learner.counts["received"],
        samples_trained=totals["trained"], samples_not_selected=totals["not_selected"], pool_size=pool_size,
        batch_size=trained, loss=stats["loss"], weight_mean=float(weights.mean()),
        weight_max=float(weights.max()), sample_loss_mean=stats["sample_loss_mean"],
        grad_norm=stats["grad_norm"], lr=lr, weight_version=learner.updates,
        staleness_mean=float(staleness.mean()), staleness_max=int(staleness.max()), step_s=step_s,
        samples_per_s=trained / step_s, micro_batches=stats["micro_batches"],
        phase=learner.continual.phases[-1]["name"] if learner.continual.phases else None,
        replayed=len(replayed["sample_id"]) if replay else None,
        samples_replayed=learner.continual.replayed if replay else None,
        replay_loss_mean=float(np.mean(replayed["loss"])) if replay and len(replayed["sample_id"]) else None,
        selected_labels=np.bincount(chosen["label"], minlength=learner.classes).tolist() if learner.classes else None,
        target_tokens=int(chosen["target_tokens"].sum()) if "target_tokens" in chosen else None,
        # unbounded (noise swamps the gradient): left out
        noise_scale=noise_scale if noise_scale is not None and math.isfinite(noise_scale) else None,
        **{key: stats[key] for key in ("memory_per_sample_mb", "noise_small_sq", "noise_big_sq", "penalty")
           if key in stats},
        extra=learner.continual.prequential.metrics()).to_json()


def _replayed(learner: Any, count: int) -> tuple[Columns, np.ndarray]:
    """`count` samples from the replay buffer, rescored with the current weights and picked by the selection
    strategy among `count` x replay_pool_ratio drawn; empty columns when nothing is replayed."""
    if not count:
        empty = np.empty(0, dtype=object)
        return {"input_ids": empty, "label": np.zeros(0, dtype=np.int64), "target_mask": empty,
                "sample_id": empty}, np.zeros(0, dtype=np.float32)
    drawn = learner.continual.replay_candidates(count, learner.model, output_layer(learner.model, learner.cfg.model),
                                             learner.pad_id, learner.device, learner.cfg.learner.precision,
                                             learner.cfg.scoring.micro_batch_tokens, learner.updates)
    # picked like new candidates, but not observed: diversity's memory and coverage's clusters follow the stream
    selection = learner.strategy.select(drawn, count, learner.rng, observe=False)
    return take(drawn, selection.indices), selection.weights


def _step_within_memory(learner: Any, batch: TrainBatch) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The weighted step in micro-batches that fit: on an out-of-memory error, halve the largest micro-batch,
    remember that as the ceiling (later steps and the `resource` policy stay under it) and retrain the same
    samples, so no sample is lost; a single sample that does not fit is an error."""
    lcfg = learner.cfg.learner
    records = []
    wants_noise = getattr(learner.policy, "wants_gradient_noise", False)
    while True:
        limit = min(filter(None, (lcfg.micro_batch_size, learner.oom_ceiling)), default=0)
        ewc = learner.continual.ewc
        penalty = ewc.penalty if ewc is not None else None
        try:
            if learner.group is not None:  # data parallel: every rank steps its share
                stats = learner.group.step(batch, limit, penalty)
            else:
                stats = weighted_step(learner.model, learner.optimizer, batch, learner.pad_id, learner.device,
                                      lcfg.grad_clip, lcfg.precision, lcfg.micro_batch_tokens, limit,
                                      noise_probe=wants_noise, measure_memory=True, penalty=penalty)
            break
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            learner.optimizer.zero_grad(set_to_none=True)
            if learner.device.type == "cuda":
                torch.cuda.empty_cache()
            plan, _ = micro_batch_plan([len(ids) for ids in batch.input_ids], lcfg.micro_batch_tokens, limit,
                                       wants_noise)
            # a group's error names the largest micro-batch that failed on any rank
            largest = getattr(error, "largest", 0) or max(len(group) for group in plan)
            if largest <= 1:
                raise
            learner.oom_ceiling = largest // 2
            learner.counts["oom_retries"] = learner.counts.get("oom_retries", 0) + 1
            logger.warning("ol_ray: out of memory with micro-batches of %d samples; retrying the same %d "
                           "samples in micro-batches of at most %d", largest, len(batch.labels), learner.oom_ceiling)
            records.append(OutOfMemoryRecord(update=learner.updates + 1, time=time.time(), micro_batch=largest,
                                             ceiling=learner.oom_ceiling, batch_size=len(batch.labels)).to_json())
    if stats.get("memory_per_sample_mb"):
        learner.memory_per_sample.append(stats["memory_per_sample_mb"])
    return stats, records
