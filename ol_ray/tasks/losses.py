"""Each sample's loss and its prediction before the step, for either kind of model: a classifier's label
cross-entropy and hit, a causal LM's mean target-token NLL and token accuracy. The batch they are computed on is a
`TrainBatch`, what the learner hands the weighted step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from ol_ray.tasks.base import Task, task_for


@dataclass(frozen=True)
class TrainBatch:
    input_ids: Sequence[np.ndarray]  # token ids per sample, unpadded
    labels: np.ndarray  # int64 class per sample
    weights: np.ndarray  # float32 importance weight per sample
    target_masks: Optional[Sequence[np.ndarray]] = None  # causal LM: which tokens are targets, per sample
    stand_in: bool = False  # data parallel: a rank without a sample of the update trains on one with weight 0


def batch_task(batch: TrainBatch) -> Task:
    """The task a batch belongs to: a causal LM's samples carry target masks."""
    return task_for("sequence_classification" if batch.target_masks is None else "causal_lm")


def group_masks(batch: TrainBatch, group: np.ndarray) -> Optional[list[np.ndarray]]:
    return None if batch.target_masks is None else [batch.target_masks[i] for i in group]


def sample_losses(logits: torch.Tensor, inputs: dict[str, torch.Tensor], batch: TrainBatch, group: np.ndarray,
                  device: torch.device) -> torch.Tensor:
    """Each sample of a micro-batch (`group`, positions in the batch): its loss in float32."""
    return batch_task(batch).sample_losses(logits, inputs, batch.labels[group], group_masks(batch, group), device)


@torch.no_grad()
def sample_correct(logits: torch.Tensor, inputs: dict[str, torch.Tensor], batch: TrainBatch, group: np.ndarray,
                   device: torch.device) -> torch.Tensor:
    """Each sample of a micro-batch: its prediction before the step, as prequential accuracy counts it."""
    return batch_task(batch).sample_correct(logits, inputs, batch.labels[group], group_masks(batch, group), device)
