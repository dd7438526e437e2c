"""Each sample's loss and its prediction before the step, for either kind of model: a classifier's label
cross-entropy and hit, a causal LM's mean target-token NLL and token accuracy. The batch they are computed on is a
`TrainBatch`, what the learner hands the weighted step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ol_ray.data.tokenization import pad_masks
from ol_ray.tasks.causal_lm import sample_token_losses, shifted_targets


@dataclass(frozen=True)
class TrainBatch:
    input_ids: Sequence[np.ndarray]  # token ids per sample, unpadded
    labels: np.ndarray  # int64 class per sample
    weights: np.ndarray  # float32 importance weight per sample
    target_masks: Optional[Sequence[np.ndarray]] = None  # causal LM: which tokens are targets, per sample


def sample_losses(logits: torch.Tensor, inputs: dict[str, torch.Tensor], batch: TrainBatch, group: np.ndarray,
                   device: torch.device) -> torch.Tensor:
    """Each sample's loss in float32: the label's cross-entropy, or a causal LM's mean target-token NLL."""
    if batch.target_masks is None:
        labels = torch.as_tensor(batch.labels[group], dtype=torch.long, device=device)
        return F.cross_entropy(logits.float(), labels, reduction="none")
    masks = pad_masks([batch.target_masks[i] for i in group], device)
    return sample_token_losses(logits, inputs["input_ids"], inputs["attention_mask"], masks)[0]


@torch.no_grad()
def sample_correct(logits: torch.Tensor, inputs: dict[str, torch.Tensor], batch: TrainBatch, group: np.ndarray,
                   device: torch.device) -> torch.Tensor:
    """Each sample's prediction before the step, as prequential accuracy counts it: 1/0 for a classifier's label, a
    causal LM's share of target tokens predicted (its token accuracy)."""
    if batch.target_masks is None:
        labels = torch.as_tensor(batch.labels[group], dtype=torch.long, device=device)
        return (logits.argmax(dim=-1) == labels).float()
    masks = pad_masks([batch.target_masks[i] for i in group], device)
    targets, mask = shifted_targets(inputs["input_ids"], inputs["attention_mask"], masks)
    hits = (logits[:, :-1].argmax(dim=-1) == targets).float() * mask
    return hits.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
