"""The learner: owns the model and optimizer, selects from scored candidates, applies weighted batched updates.

    theta_{t+1} = theta_t - eta * grad( sum_i w_i L(theta_t; x_i, y_i) / B )

`weighted_step` is that update as a plain function. `OnlineLearner` is plain Python too: it buffers candidates into
pools, asks the batch policy for B and the selection strategy for indices and weights, steps, evaluates, and
checkpoints at window boundaries. `LearnerActor` is the thin Ray shell that connects it to the weight store, the
resource monitor and Ray's metrics.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ol_ray.batching import BatchContext, clamp_batch_size, make_policy
from ol_ray.checkpoint import save_checkpoint
from ol_ray.config import Config
from ol_ray.evaluation import evaluate, load_eval_set
from ol_ray.models import autocast, device_for, load_model, load_tokenizer
from ol_ray.selection import make_strategy, pool_length
from ol_ray.tokenization import length_groups, pad_batch

Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class TrainBatch:
    input_ids: Sequence[np.ndarray]  # token ids per sample, unpadded
    labels: np.ndarray  # int64 class per sample
    weights: np.ndarray  # float32 importance weight per sample


def weighted_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: TrainBatch, pad_id: int,
                  device: torch.device, grad_clip: float = 0.0, precision: str = "fp32",
                  micro_batch_tokens: int = 0) -> dict[str, float]:
    """One weighted update: loss = sum_i w_i CE_i / B, B the batch size (not the sum of weights, which would bias
    the estimate and drift the effective learning rate). The gradient is accumulated over length-sorted
    micro-batches of at most `micro_batch_tokens` padded tokens: the same gradient as one padded batch, less work."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    size = len(batch.labels)
    loss_sum = torch.zeros((), device=device)
    sample_loss_sum = torch.zeros((), device=device)
    for group in length_groups([len(ids) for ids in batch.input_ids], micro_batch_tokens):
        inputs = pad_batch([batch.input_ids[i] for i in group], pad_id, device)
        labels = torch.as_tensor(batch.labels[group], dtype=torch.long, device=device)
        weights = torch.as_tensor(batch.weights[group], dtype=torch.float32, device=device)
        with autocast(device, precision):
            logits = model(**inputs).logits
        per_sample = F.cross_entropy(logits.float(), labels, reduction="none")
        loss = (weights * per_sample).sum() / size
        loss.backward()
        loss_sum += loss.detach()
        sample_loss_sum += per_sample.detach().sum()
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
    optimizer.step()
    return {"loss": float(loss_sum), "sample_loss_mean": float(sample_loss_sum) / size, "grad_norm": float(grad_norm)}


def lr_factor(update: int, warmup: int, decay: int, final_fraction: float) -> float:
    """Learning-rate multiplier at `update` (0-based): linear warmup, linear decay to `final_fraction`, hold."""
    if update < warmup:
        return (update + 1) / warmup
    if decay <= 0:
        return 1.0
    progress = min(1.0, (update - warmup + 1) / decay)
    return 1.0 - (1.0 - final_fraction) * progress


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused where torch supports it on this device (several times faster than the per-tensor loop)."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type in ("cuda", "cpu"))
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def concat_columns(parts: list[Columns]) -> Columns:
    """Join candidate column dicts end to end (object columns such as token ids stay 1-d object arrays)."""
    if len(parts) == 1:
        return parts[0]
    out = {}
    for key in parts[0]:
        values = [part[key] for part in parts]
        if values[0].dtype == object:
            joined = np.empty(sum(len(v) for v in values), dtype=object)
            joined[:] = [item for v in values for item in v]
            out[key] = joined
        else:
            out[key] = np.concatenate(values)
    return out


def take(columns: Columns, indices: np.ndarray) -> Columns:
    return {key: value[indices] for key, value in columns.items()}


def split_at(columns: Columns, size: int) -> tuple[Columns, Columns]:
    return ({key: value[:size] for key, value in columns.items()},
            {key: value[size:] for key, value in columns.items()})


class OnlineLearner:
    """Plain-Python learner (no Ray): feed it scored candidates, it trains.

    publish(model, version) is called after every update (the publisher decides whether to really publish);
    snapshot() returns the resource monitor's latest snapshot for the batch policy; report(stats) hands step
    statistics to the monitor. All three default to doing nothing, for use without Ray.
    """

    def __init__(self, cfg: Config, run_dir: Optional[str] = None,
                 publish: Callable[[nn.Module, int, bool], bool] = lambda model, version, force: False,
                 snapshot: Callable[[], Mapping[str, Any]] = dict,
                 report: Callable[[dict[str, Any]], None] = lambda stats: None):
        torch.set_num_threads(cfg.learner.torch_threads)
        torch.manual_seed(cfg.model.seed)
        self.cfg = cfg
        self.run_dir = run_dir
        self.publish, self.snapshot, self.report = publish, snapshot, report
        self.device = device_for(cfg.learner.num_gpus)
        self.model = load_model(cfg.model, pretrained=True).to(self.device)
        self.tokenizer = load_tokenizer(cfg.model.name_or_path)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.optimizer = make_optimizer(self.model, cfg.learner.lr, cfg.learner.weight_decay, self.device)
        schedule = cfg.learner
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda update: lr_factor(
            update, schedule.warmup_updates, schedule.decay_updates, schedule.final_lr_fraction))
        self.strategy = make_strategy(cfg.selection)
        self.policy = make_policy(cfg.batching)
        self.rng = np.random.default_rng(cfg.selection.seed)
        self.eval_set = load_eval_set(cfg)
        self.buffer: list[Columns] = []
        self.buffered = 0
        self.updates = 0
        self.counts = {"received": 0, "trained": 0, "not_selected": 0, "text_truncated": 0, "tokens_truncated": 0}
        self.staleness_sum = 0
        self.staleness_max = 0
        self.score_version_max = 0  # the newest weight version any trained sample was scored with
        self.busy_s = 0.0
        self.started = time.time()
        self.first_update_s: Optional[float] = None
        self.last_eval: dict[str, float] = {}
        self.updates_at_checkpoint = 0
        self.checkpoint_path: Optional[str] = None
        self.cursor: dict[str, Any] = {}
        self.windows_done = 0
        self.publish(self.model, 0, True)  # version 0: the starting weights, before any scorer runs
        self.start_records = [self._evaluate()] if self.eval_set is not None and cfg.eval.at_start else []

    # --- feeding -----------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return bool(self.cfg.learner.max_updates) and self.updates >= self.cfg.learner.max_updates

    def add_candidates(self, candidates: Columns) -> list[dict[str, Any]]:
        """Take scored candidates; run an update for every full pool. Returns the metric records produced."""
        size = pool_length(candidates)
        self.counts["received"] += size
        self.counts["text_truncated"] += int(np.sum(candidates.get("text_truncated", 0)))
        self.counts["tokens_truncated"] += int(np.sum(candidates.get("tokens_truncated", 0)))
        if self.done:  # past max_updates: accounted for, not trained
            self.counts["not_selected"] += size
            return []
        self.buffer.append(candidates)
        self.buffered += size
        records, self.start_records = self.start_records, []
        pool_size = self.cfg.selection.pool_size
        while self.buffered >= pool_size and not self.done:
            pool, rest = split_at(concat_columns(self.buffer), pool_size)
            self.buffer, self.buffered = ([rest] if pool_length(rest) else []), self.buffered - pool_size
            records.extend(self._update(pool))
        return records

    def end_window(self, window_index: int, cursor: dict[str, Any]) -> list[dict[str, Any]]:
        """Every sample of window `window_index` has been handed over: the stream may resume after `cursor`, so
        this is where a due checkpoint is consistent (buffered leftovers go into it)."""
        self.cursor = cursor
        self.windows_done = window_index + 1
        every = self.cfg.checkpoint.every_updates
        if every and self.updates - self.updates_at_checkpoint >= every:
            return [self._checkpoint()]
        return []

    def finish(self) -> list[dict[str, Any]]:
        """End of stream: train on the leftovers, evaluate and checkpoint one last time."""
        records, self.start_records = self.start_records, []
        if self.buffered and not self.done:
            pool = concat_columns(self.buffer)
            self.buffer, self.buffered = [], 0
            records.extend(self._update(pool, evaluate_now=False))
        elif self.buffered:
            self.counts["not_selected"] += self.buffered
            self.buffer, self.buffered = [], 0
        if self.eval_set is not None and self.last_eval.get("update") != self.updates:
            records.append(self._evaluate())
        records.append(self._checkpoint())
        return records

    # --- the update --------------------------------------------------------------------------------------------
    def _update(self, pool: Columns, evaluate_now: bool = True) -> list[dict[str, Any]]:
        started = time.perf_counter()
        pool_size = pool_length(pool)
        context = BatchContext(pool_size=pool_size, updates=self.updates, snapshot=self.snapshot())
        batch_size = clamp_batch_size(self.policy.batch_size(context), self.cfg.batching, pool_size)
        selection = self.strategy.select(pool, batch_size, self.rng)
        chosen = take(pool, selection.indices)
        batch = TrainBatch(chosen["input_ids"], chosen["label"], selection.weights)
        stats = weighted_step(self.model, self.optimizer, batch, self.pad_id, self.device, self.cfg.learner.grad_clip,
                              self.cfg.learner.precision, self.cfg.learner.micro_batch_tokens)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        staleness = self.updates - chosen["weight_version"]
        self.updates += 1
        trained = len(selection.indices)
        self.counts["trained"] += trained
        self.counts["not_selected"] += pool_size - trained
        self.score_version_max = max(self.score_version_max, int(chosen["weight_version"].max()))
        self.staleness_sum += int(staleness.sum())
        self.staleness_max = max(self.staleness_max, int(staleness.max()))
        self.publish(self.model, self.updates, False)
        step_s = time.perf_counter() - started
        self.busy_s += step_s
        if self.first_update_s is None:
            self.first_update_s = time.time() - self.started
        self.report({"samples": trained, "seconds": step_s, "batch_size": trained, "updates": self.updates})
        records = [{
            "kind": "update", "update": self.updates, "samples_received": self.counts["received"],
            "samples_trained": self.counts["trained"], "samples_not_selected": self.counts["not_selected"],
            "pool_size": pool_size, "batch_size": trained, "loss": stats["loss"],
            "sample_loss_mean": stats["sample_loss_mean"], "grad_norm": stats["grad_norm"], "lr": lr,
            "weight_version": self.updates, "staleness_mean": float(staleness.mean()),
            "staleness_max": int(staleness.max()), "step_s": step_s, "samples_per_s": trained / step_s,
            "time": time.time(),
        }]
        if evaluate_now and self.eval_set is not None and self.updates % self.cfg.eval.every_updates == 0:
            records.append(self._evaluate())
        return records

    def _evaluate(self) -> dict[str, Any]:
        started = time.perf_counter()
        result = evaluate(self.model, self.eval_set, self.pad_id, self.device, self.cfg.eval.batch_size,
                          self.cfg.learner.precision)
        self.busy_s += time.perf_counter() - started
        self.last_eval = {"update": self.updates, **result}
        return {"kind": "eval", "update": self.updates, "samples_trained": self.counts["trained"],
                "dev_accuracy": result["accuracy"], "dev_loss": result["loss"], "dev_macro_f1": result["macro_f1"],
                "eval_s": time.perf_counter() - started, "time": time.time()}

    def _checkpoint(self) -> dict[str, Any]:
        started = time.perf_counter()
        root = os.path.join(self.run_dir, "checkpoints") if self.run_dir else None
        if root is None:
            return {"kind": "checkpoint", "update": self.updates, "path": None, "time": time.time()}
        self.checkpoint_path = save_checkpoint(
            root, self.updates, self.model, self.tokenizer,
            {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
             "rng": self.rng.bit_generator.state},
            self.buffer, self.state(), self.cfg.checkpoint.keep)
        self.updates_at_checkpoint = self.updates
        return {"kind": "checkpoint", "update": self.updates, "path": self.checkpoint_path,
                "checkpoint_s": time.perf_counter() - started, "time": time.time()}

    # --- reporting ---------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Counters and positions: what a checkpoint and the run summary record."""
        trained = self.counts["trained"]
        wall = time.time() - self.started
        return {
            "updates": self.updates,
            "weight_version": self.updates,
            "samples_received": self.counts["received"],
            "samples_trained": trained,
            "samples_not_selected": self.counts["not_selected"],
            "samples_buffered": self.buffered,
            "text_truncated": self.counts["text_truncated"],
            "tokens_truncated": self.counts["tokens_truncated"],
            "staleness_mean": self.staleness_sum / trained if trained else 0.0,
            "staleness_max": self.staleness_max,
            "score_version_max": self.score_version_max,
            "learner_busy_s": self.busy_s,
            "learner_utilisation": self.busy_s / wall if wall > 0 else 0.0,
            "first_update_s": self.first_update_s,
            "last_eval": self.last_eval,
            "eval_rows_rejected": self.eval_set.rows_rejected if self.eval_set else 0,
            "cursor": self.cursor,
            "windows_done": self.windows_done,
            "device": str(self.device),
            "checkpoint_path": self.checkpoint_path,
        }


class LearnerActor:
    """Ray shell around OnlineLearner. Create with ray.remote(num_cpus=..., num_gpus=...)(LearnerActor)."""

    def __init__(self, cfg: Config, run_dir: str, weight_store: Any, monitor: Any):
        from ray.util.metrics import Counter, Gauge

        from ol_ray.weights import WeightPublisher

        self.publisher = WeightPublisher(weight_store, cfg.learner.publish_every)
        self.monitor = monitor
        self.snapshot_ref = monitor.snapshot.remote()
        self.metrics = {
            "trained": Counter("ol_ray_samples_trained", description="Samples used in learner updates."),
            "updates": Counter("ol_ray_updates", description="Learner updates applied."),
            "dev_accuracy": Gauge("ol_ray_dev_accuracy", description="Latest dev-set accuracy."),
            "batch_size": Gauge("ol_ray_batch_size", description="Batch size of the latest update."),
            "staleness": Gauge("ol_ray_staleness", description="Mean weight staleness of the latest batch."),
        }
        self.learner = OnlineLearner(cfg, run_dir, publish=self.publisher.maybe_publish,
                                     snapshot=self._snapshot, report=self._report)
        self.weight_store = weight_store

    def _snapshot(self) -> Mapping[str, Any]:
        """The monitor's snapshot requested one update ago (ready by now), and a request for the next one."""
        import ray

        snapshot = ray.get(self.snapshot_ref)
        self.snapshot_ref = self.monitor.snapshot.remote()
        return snapshot

    def _report(self, stats: dict[str, Any]) -> None:
        from ol_ray.monitor import own_memory

        self.monitor.report.remote("learner", {**stats, **own_memory(self.learner.device)})

    def _record(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for record in records:
            if record["kind"] == "update":
                self.metrics["trained"].inc(record["batch_size"])
                self.metrics["updates"].inc()
                self.metrics["batch_size"].set(record["batch_size"])
                self.metrics["staleness"].set(record["staleness_mean"])
            elif record["kind"] == "eval":
                self.metrics["dev_accuracy"].set(record["dev_accuracy"])
        return records

    def info(self) -> dict[str, Any]:
        import ray

        return {"device": str(self.learner.device), "node_id": ray.get_runtime_context().get_node_id(),
                "parameters": sum(p.numel() for p in self.learner.model.parameters()), "pid": os.getpid()}

    def add_candidates(self, candidates: Columns) -> tuple[list[dict[str, Any]], bool]:
        self.weight_store.consumed.remote(pool_length(candidates))
        return self._record(self.learner.add_candidates(candidates)), self.learner.done

    def end_window(self, window_index: int, cursor: dict[str, Any]) -> list[dict[str, Any]]:
        return self.learner.end_window(window_index, cursor)

    def finish(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        records = self._record(self.learner.finish())
        return records, self.learner.state()
