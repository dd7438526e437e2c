"""What the learner does so that learning new data does not erase old knowledge (the `continual` config section).

`ContinualLearning` is plain Python held by `OnlineLearner`:

- **prequential accuracy**: every received sample was predicted by a scorer before it could be trained on (test,
  then train); its running accuracy, balanced accuracy and loss, over the run and per phase
  (`ol_ray.continual.metrics`);
- **drift detection**: a Page-Hinkley test on the prequential loss; on drift it logs a `drift` record and reacts as
  configured: `replay_boost` (raise the replay fraction for a while), `reset_batch_policy` (start the batch-size
  policy over) and `checkpoint` (at the next window end); EWC re-anchors at every drift;
- **replay**: each update takes `replay_fraction` of its batch from the replay buffer (`ol_ray.continual.replay`),
  rescored with the current weights and picked by the selection strategy like new candidates;
- **EWC** (`ol_ray.continual.ewc`): the Fisher diagonal estimated on the buffer at phase boundaries, drifts and every
  `ewc_every_updates` updates;
- **phases and the evaluation history**: where each stream phase began and which evaluation closed it, for the
  accuracy matrix and the continual-learning metrics of the summary.
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ol_ray.config.schema import Config
from ol_ray.continual.ewc import ElasticWeights, empirical_fisher
from ol_ray.continual.metrics import PageHinkley, Prequential, continual_metrics, task_matrix
from ol_ray.continual.replay import ReplayBuffer
from ol_ray.records import DriftRecord, EwcRefreshRecord, PhaseRecord
from ol_ray.tasks import task_for
from ol_ray.tasks.losses import TrainBatch

Columns = dict[str, np.ndarray]


def accuracy_of(result: dict[str, Any]) -> Optional[float]:
    """An evaluation's accuracy: a classifier's, or a causal LM's next-token accuracy."""
    value = result.get("accuracy", result.get("token_accuracy"))
    return None if value is None else float(value)


class ContinualLearning:
    def __init__(self, cfg: Config, classes: int):
        c = self.settings = cfg.continual
        self.replay = ReplayBuffer(c.replay_size, c.replay_policy, classes, c.seed) if c.replay_size else None
        self.ewc = ElasticWeights(c.ewc_lambda, c.ewc_decay) if c.ewc_lambda else None
        self.prequential = Prequential(classes, c.prequential_fading)
        self.phase_prequential = Prequential(classes, c.prequential_fading)
        self.drift = (PageHinkley(c.drift_delta, c.drift_threshold, c.drift_min_samples)
                      if c.drift_detector == "page_hinkley" else None)
        self.classes = classes
        self.kind = cfg.model.kind  # whose task rescores replayed samples
        self.boost_until = 0  # replay_boost: the boosted replay fraction applies before this update
        self.drifts: list[dict[str, Any]] = []
        self.phases: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []  # one entry per evaluation: update, samples trained, accuracies
        self.replayed = 0
        self.samples_seen = 0  # received samples, in stream order (where a drift was detected)

    # --- the stream --------------------------------------------------------------------------------------------
    def observe(self, candidates: Columns, updates: int) -> tuple[list[dict[str, Any]], set[str]]:
        """Prequential figures and the drift test on received (scored, not yet trained) candidates. Returns the
        drift records and the reactions the learner must carry out."""
        size = len(candidates["sample_id"])
        if not size or "loss" not in candidates or not {"predicted", "token_accuracy"} & set(candidates):
            return [], set()  # unscored candidates: the learner observes its own predictions before each step
        if "token_accuracy" in candidates:
            correct = np.asarray(candidates["token_accuracy"], dtype=np.float64)
        else:
            correct = (np.asarray(candidates["predicted"]) == np.asarray(candidates["label"])).astype(np.float64)
        return self.observe_predictions(candidates["sample_id"], correct, candidates["loss"],
                                        candidates["label"], updates)

    def observe_predictions(self, sample_ids: np.ndarray, correct: np.ndarray, losses: np.ndarray,
                            labels: np.ndarray, updates: int) -> tuple[list[dict[str, Any]], set[str]]:
        """Prequential figures and the drift test on predictions made before training on them: 1/0 (a causal LM:
        token accuracy) and the loss per sample, in stream order."""
        size = len(sample_ids)
        losses = np.asarray(losses, dtype=np.float64)
        labels = labels if self.classes else None
        self.prequential.update(correct, losses, labels)
        self.phase_prequential.update(correct, losses, labels)
        records, reactions = [], set()
        for offset, loss in enumerate(losses):
            if self.drift is not None and self.drift.update(float(loss)):
                reactions.update(self.settings.drift_reactions)
                event = DriftRecord(update=updates, time=time.time(), sample=self.samples_seen + offset + 1,
                                    sample_id=str(sample_ids[offset]), detector="page_hinkley",
                                    reactions=list(self.settings.drift_reactions),
                                    extra=self.prequential.metrics()).to_json()
                self.drifts.append({key: event[key] for key in ("update", "sample", "sample_id")})
                records.append(event)
        self.samples_seen += size
        if "replay_boost" in reactions:
            self.boost_until = updates + self.settings.drift_boost_updates
        return records, reactions

    # --- replay ------------------------------------------------------------------------------------------------
    def replay_count(self, batch_size: int, updates: int) -> int:
        """How many of an update's `batch_size` samples come from the buffer (at least one stays new)."""
        if self.replay is None or not len(self.replay):
            return 0
        fraction = self.settings.drift_replay_fraction if updates < self.boost_until else self.settings.replay_fraction
        return max(0, min(math.floor(fraction * batch_size + 0.5), batch_size - 1, len(self.replay)))

    def replay_candidates(self, count: int, model: nn.Module, head: nn.Module, pad_id: int, device: torch.device,
                          precision: str, micro_batch_tokens: int, version: int) -> Columns:
        """`count` x replay_pool_ratio samples drawn from the buffer and rescored with the current weights, as a
        candidate pool for the selection strategy."""
        drawn = self.replay.take(self.replay.sample(math.ceil(count * self.settings.replay_pool_ratio)))
        drawn.update(task_for(self.kind).score(model, head, drawn, pad_id, device, precision, micro_batch_tokens))
        drawn["weight_version"] = np.full(len(drawn["sample_id"]), version, dtype=np.int64)
        return drawn

    def after_update(self, pool: Columns, chosen: Columns, replayed: int) -> None:
        """Offer the update's samples to the buffer: the whole pool (reservoir, class_balanced) or what was
        selected (selected)."""
        self.replayed += replayed
        if self.replay is not None:
            self.replay.add(pool if self.replay.feeds_on == "received" else chosen)

    # --- EWC ---------------------------------------------------------------------------------------------------
    def ewc_due(self, updates: int) -> bool:
        every = self.settings.ewc_every_updates
        return self.ewc is not None and bool(every) and updates % every == 0

    def refresh_ewc(self, model: nn.Module, pad_id: int, device: torch.device, precision: str, updates: int,
                    reason: str) -> list[dict[str, Any]]:
        """Re-estimate the Fisher diagonal on a sample of the buffer and anchor at the current weights."""
        if self.ewc is None or self.replay is None or not len(self.replay):
            return []
        started = time.perf_counter()
        drawn = self.replay.take(self.replay.sample(self.settings.ewc_samples))
        batch = TrainBatch(drawn["input_ids"], drawn["label"], np.ones(len(drawn["label"]), dtype=np.float32),
                           drawn.get("target_mask"))
        self.ewc.refresh(model, empirical_fisher(model, batch, pad_id, device, precision))
        return [EwcRefreshRecord(update=updates, time=time.time(), reason=reason, samples=len(drawn["label"]),
                                 refreshes=self.ewc.refreshes, seconds=time.perf_counter() - started).to_json()]

    # --- phases and evaluations --------------------------------------------------------------------------------
    def begin_phase(self, name: str, updates: int, received: int) -> tuple[bool, list[dict[str, Any]]]:
        """A stream phase starts. Returns whether an earlier phase just ended (so the learner evaluates and
        re-anchors EWC), and the phase record."""
        if self.phases and self.phases[-1]["name"] == name:
            return False, []  # a resumed run announcing the phase it stopped in
        ended = bool(self.phases)
        if ended:
            self.end_phase()
        self.phases.append({"name": name, "index": len(self.phases), "start_update": updates,
                            "start_received": received})
        return ended, [PhaseRecord(update=updates, time=time.time(), phase=name, index=len(self.phases) - 1,
                                   samples_received=received).to_json()]

    def end_phase(self) -> None:
        """The current phase is over: its closing evaluation is the newest, and its prequential figures final. A
        phase closes once (a run finished and then resumed, or restarted after its final checkpoint, keeps them)."""
        if not self.phases or self.phases[-1].get("closed"):
            return
        self.phases[-1]["closed"] = True
        self.phases[-1]["end_eval"] = len(self.history) - 1 if self.history else None
        self.phases[-1].update(self.phase_prequential.metrics())
        self.phase_prequential = Prequential(self.classes, self.settings.prequential_fading)

    def record_eval(self, update: int, samples_trained: int, results: dict[str, dict[str, Any]]) -> None:
        """An evaluation of every set (name -> its figures) at `update`."""
        self.history.append({
            "update": update, "samples_trained": samples_trained,
            "phase": self.phases[-1]["name"] if self.phases else None,
            "accuracy": {name: accuracy_of(result) for name, result in results.items()},
            "balanced_accuracy": {name: result["balanced_accuracy"] for name, result in results.items()
                                  if "balanced_accuracy" in result},
        })

    def summary(self) -> dict[str, Any]:
        """For summary.json: phases, the evaluation history (the accuracy matrix over time), the phase x set
        matrix and its metrics when every phase has an evaluation set of its name, prequential figures, drifts."""
        names = [phase["name"] for phase in self.phases]
        ends = [phase.get("end_eval") for phase in self.phases]
        matrix = task_matrix(self.history, ends, names) if ends and None not in ends else None
        metrics = None
        if matrix is not None:
            start = self.history[0]
            # forward transfer compares with the untrained model: the evaluation at update 0, when there is one
            baseline = [start["accuracy"][name] for name in names] if start["update"] == 0 else None
            metrics = continual_metrics(matrix, baseline)
        final = self.history[-1] if self.history else {}
        over_time = {name: max(entry["accuracy"].get(name) or 0.0 for entry in self.history) - value
                     for name, value in final.get("accuracy", {}).items() if value is not None}
        return {"phases": self.phases, "accuracy_history": self.history, "task_matrix": matrix,
                "continual_metrics": metrics, "final_accuracy": final.get("accuracy"),
                "final_balanced_accuracy": final.get("balanced_accuracy"),
                "forgetting_since_best": over_time, "samples_replayed": self.replayed,
                "replay_buffer_size": len(self.replay) if self.replay is not None else 0,
                "drift_events": self.drifts, **self.prequential.metrics()}

    # --- checkpoints -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (the buffer's samples and EWC's tensors are saved apart)."""
        return {"prequential": self.prequential.state_dict(), "phase_prequential": self.phase_prequential.state_dict(),
                "drift": self.drift.state_dict() if self.drift else None, "boost_until": self.boost_until,
                "drifts": self.drifts, "phases": self.phases, "history": self.history, "replayed": self.replayed,
                "samples_seen": self.samples_seen,
                "replay": self.replay.state_dict() if self.replay is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """What `state_dict` gave, with the buffer's samples under "replay_columns" (the checkpoint keeps them
        beside state.json)."""
        self.prequential.load_state_dict(state["prequential"])
        self.phase_prequential.load_state_dict(state["phase_prequential"])
        if self.drift is not None and state["drift"]:
            self.drift.load_state_dict(state["drift"])
        self.boost_until, self.drifts = state["boost_until"], state["drifts"]
        self.phases, self.history = state["phases"], state["history"]
        self.replayed, self.samples_seen = state["replayed"], state["samples_seen"]
        if self.replay is not None and state["replay"] is not None:
            self.replay.load(state["replay"], state.get("replay_columns"))
